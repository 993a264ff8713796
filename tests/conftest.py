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


# `pytest -n 2` (pytest-xdist, in addopts): each test file runs on one worker, so its module fixtures are
# built once, and the files that share one of these session fixtures run on one worker, so it is built once
# too (the default flow takes about 100 s); their group goes first, being the longest. The scheduler sees only
# test ids, so the files are named here, and collection fails when a file uses the fixture but is not listed.
SHARED_FIXTURE_FILES = {
    "default_run": {"test_compress.py", "test_energy.py", "test_flow.py", "test_flow_fold.py", "test_folded.py",
                    "test_formal.py", "test_rtl.py", "test_uart.py"},
    "ray_session": {"test_jobs.py", "test_sweep.py"},
}


def worker_group(nodeid: str) -> str:
    """The xdist work unit a test belongs to: its file, or the group of files sharing a session fixture."""
    file = Path(nodeid.split("::", 1)[0]).name
    return next((f for f, files in SHARED_FIXTURE_FILES.items() if file in files), file)


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    for it in items:
        for name, files in SHARED_FIXTURE_FILES.items():
            if name in it.fixturenames and it.path.name not in files:
                raise pytest.UsageError(f"{it.path.name} uses the session fixture {name!r}: add the file to "
                                        f"SHARED_FIXTURE_FILES[{name!r}] in tests/conftest.py")
    order = list(SHARED_FIXTURE_FILES)
    items.sort(key=lambda it: order.index(g) if (g := worker_group(it.nodeid)) in order else len(order))


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
