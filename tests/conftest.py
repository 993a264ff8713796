"""Shared fixtures. The random seed is logged and every test derives its own from it."""

from __future__ import annotations

import os
import random
import signal
import zlib
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# a Ray instance started by a test stays on loopback and reports nothing home (Ray reads these at import)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Property tests draw the same cases on every run, so CI passes or fails on the code, never on the draw
# or on a loaded machine's generation speed. HYPOTHESIS_PROFILE=explore searches new cases.
settings.register_profile("codesign", derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "codesign"))

# A suite started in the background (`nohup pytest &`, a non-interactive shell's `&`) inherits SIGINT
# ignored, and Python then raises no KeyboardInterrupt, here or in the processes the tests start: the
# Ctrl-C tests would see nothing. Python's own handler is restored; a child gets the default on exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(__file__).resolve().parent / "models"  # third-party models, copied with their source (models/README.md)
SEED = int(os.environ.get("CODESIGN_TEST_SEED", "20261123"))


def pytest_report_header(config):
    return f"codesign test seed: {SEED} (set CODESIGN_TEST_SEED to change it)"


# `pytest -n 2` (pytest-xdist, the README's command): each file's tests run on one worker, so its module
# fixtures are built once, and the files that share one of these session fixtures run on the same worker, so
# it is built once too (the default flow takes about 100 s). Their group goes first: it is the longest.
SHARED_FIXTURES = ("default_run", "ray_session")


def _worker_groups(items: list) -> dict[Path, str]:
    """Each test file's xdist group: its own path, or the group of the files it shares a fixture with."""
    group = {it.path: str(it.path.name) for it in items}
    for name in SHARED_FIXTURES:
        sharing = {group[it.path] for it in items if name in it.fixturenames}
        for path, g in group.items():
            if g in sharing:
                group[path] = name
    return group


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    group = _worker_groups(items)
    first = {g: i for i, g in enumerate(SHARED_FIXTURES)}
    items.sort(key=lambda it: first.get(group[it.path], len(first)))  # stable: files keep their order
    for it in items:
        it.add_marker(pytest.mark.xdist_group(group[it.path]))


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the session seed and the test's name."""
    seed = (SEED + zlib.crc32(request.node.nodeid.encode())) % 2**32
    random.seed(seed)
    return np.random.default_rng(seed)


@pytest.fixture(scope="session", autouse=True)
def _fresh_cache(tmp_path_factory):
    """Built-in models and synthesis results go to a fresh cache, so first-use paths are tested."""
    os.environ["CODESIGN_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def digits():
    from codesign.importers.data import load_digits_dataset

    return load_digits_dataset()


@pytest.fixture(scope="session")
def digits_float():
    from codesign.importers.builtin import builtin_model

    return builtin_model("digits-mlp")


@pytest.fixture(scope="session")
def digits_q(digits, digits_float):
    """The digits MLP at the default precision (8-bit weights, 16-bit results)."""
    from codesign.compress.quantize import quantize_network

    return quantize_network(digits_float, digits.input_type, 8, result_bits=16, calib=digits.X_train)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """``codesign flow`` on the embedded default, run once: its exit code and its directory."""
    from codesign.app.cli import main

    out = tmp_path_factory.mktemp("flow") / "run"
    # the energy step (a Verilator build per layer's netlist) is tested on a copy, behind slow (test_energy)
    return main(["flow", "--out", str(out), "--quiet", "--no-energy"]), out


@pytest.fixture(scope="session")
def qkeras_net():
    """hls4ml's 6-bit QKeras jet tagger, imported."""
    import codesign

    return codesign.load(MODELS / "qkeras_3layer.json")


def jet_inputs(net, n: int, seed: int) -> np.ndarray:
    """Jet-tagger-like inputs (about standard normal features, some wide) quantized to the input type."""
    from codesign.core import fixed

    r = np.random.default_rng(seed)
    x = r.normal(0, 1.5, size=(n, *net.input_shape)) * r.choice([0.5, 1, 4], size=(n, 1))
    return fixed.to_float(net.quantize_input(x), net.input_type)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for every test that needs one (it takes seconds to start): 2 CPUs,
    loopback only, no dashboard. Its workers import this repository's test helpers too."""
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def small_mlp():
    """A three-layer quantized MLP (16-12-8-4, 6-bit weights, a third of them pruned) for the RTL tests
    that need several layers but not the digits network's size (its Verilator builds take a minute)."""
    from codesign.compress.calibration import small_mlp

    return small_mlp()
