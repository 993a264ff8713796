"""Corrupt, contradictory and absurd model files: one line and exit 2, nothing written, no memory blow-up.

The cases are made from the real example files in tests/models (and a .keras and a .pt2 made from
them here), without TensorFlow: truncated and bit-flipped files, weights that contradict their
architecture, NaN/inf weights, and sizes no FPGA network has.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import codesign
from codesign.app.cli import main
from codesign.errors import CodesignError
from codesign.importers.keras_files import snake_case
from tests.conftest import MODELS

QK_JSON, QK_W = MODELS / "qkeras_3layer.json", MODELS / "qkeras_3layer_weights.h5"
FLOAT_JSON, FLOAT_W = MODELS / "KERAS_3layer.json", MODELS / "KERAS_3layer_weights.h5"


def keras_archive(json_path: Path, weights: Path, out: Path) -> Path:
    """A Keras 3 style ``.keras`` zip (config.json + model.weights.h5 with ``layers/<snake>/vars/<i>``) of a model."""
    config = json.loads(json_path.read_text())
    wfile = out.with_suffix(".weights.h5")
    with h5py.File(weights, "r") as src, h5py.File(wfile, "w") as dst:
        used: dict[str, int] = {}
        for layer in config["config"]["layers"]:
            snake = snake_case(layer["class_name"])
            key = snake if snake not in used else f"{snake}_{used[snake] + 1}"
            used[snake] = used.get(snake, -1) + 1
            g = dst.create_group(f"layers/{key}/vars")
            name = layer["config"]["name"]
            if name in src:
                for i, wn in enumerate(src[name].attrs["weight_names"]):
                    g.create_dataset(str(i), data=src[name][wn.decode()][()])
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.write(wfile, "model.weights.h5")
    wfile.unlink()
    return out


@pytest.fixture(scope="session")
def examples(tmp_path_factory):
    """Real model files by name; a ``.json`` finds its ``_weights.h5`` beside it."""
    import torch
    from torch import nn

    d = tmp_path_factory.mktemp("fuzz_examples")
    torch.manual_seed(0)
    torch.export.save(torch.export.export(nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 5)),
                                          (torch.zeros(2, 16),)), d / "mlp.pt2")
    return {"hgq.h5": MODELS / "hgq_mnist_homogeneous.h5", "qkeras.json": QK_JSON, "qkeras_weights.h5": QK_W,
            "float.json": FLOAT_JSON, "qkeras.keras": keras_archive(QK_JSON, QK_W, d / "qkeras.keras"),
            "mlp.pt2": d / "mlp.pt2"}


def test_the_hand_made_keras_archive_is_the_same_network(examples):
    a, b = codesign.load(examples["qkeras.keras"]), codesign.load(QK_JSON)
    assert all(np.array_equal(la.arrays()[k], v) for la, lb in zip(a.layers, b.layers) for k, v in lb.arrays().items())


# ---- one case of each kind through the CLI -----------------------------------------------------
def _truncated(src: Path, d: Path, frac: float = 0.6) -> Path:
    p = d / f"cut{src.suffix}"
    p.write_bytes(src.read_bytes()[: int(src.stat().st_size * frac)])
    return p


def _flipped_config(d: Path) -> Path:
    """The HGQ file with one bit flipped inside its model_config JSON."""
    raw = bytearray((MODELS / "hgq_mnist_homogeneous.h5").read_bytes())
    i = raw.index(b'{"class_name"')
    raw[i] ^= 0x01
    (d / "flip.h5").write_bytes(raw)
    return d / "flip.h5"


def _json_with(d: Path, edit, weights: Path = FLOAT_W, name: str = "m") -> Path:
    config = json.loads(FLOAT_JSON.read_text())
    edit(config["config"]["layers"])
    (d / f"{name}.json").write_text(json.dumps(config))
    (d / f"{name}_weights.h5").write_bytes(weights.read_bytes())
    return d / f"{name}.json"


def _weights_with(d: Path, value: float) -> Path:
    p = d / "w.h5"
    p.write_bytes(FLOAT_W.read_bytes())
    with h5py.File(p, "r+") as f:
        k = f["fc1_relu/fc1_relu/kernel:0"]
        a = k[()]
        a[3, 7] = value
        k[...] = a
    return p


def _set(i: int, key: str, value):
    def edit(layers):
        layers[i]["config"][key] = value
    return edit


CASES = {
    "truncated h5": (lambda d, ex: _truncated(ex["hgq.h5"], d), r"cut.h5: not a readable Keras model \(OSError"),
    "bit-flipped h5": (lambda d, ex: _flipped_config(d), r"flip.h5: not a Keras model JSON \(JSONDecodeError"),
    "truncated keras": (lambda d, ex: _truncated(ex["qkeras.keras"], d), r"cut.keras: not a readable Keras archive"),
    "truncated pt2": (lambda d, ex: _truncated(ex["mlp.pt2"], d), r"cut.pt2: not a readable torch.export archive"),
    "truncated json": (lambda d, ex: _json_cut(d), r"m.json: not a Keras model JSON \(JSONDecodeError"),
    "shape contradicts config": (lambda d, ex: _json_with(d, _set(1, "units", 32)),
                                 r"layer 'fc1_relu': kernel has shape \(16, 64\) but the config implies \(16, 32\)"),
    "NaN weight": (lambda d, ex: _json_with(d, lambda l: None, _weights_with(d, np.nan)),
                   r"layer 'fc1_relu': kernel holds NaN or infinite values"),
    "inf weight": (lambda d, ex: _json_with(d, lambda l: None, _weights_with(d, np.inf)),
                   r"layer 'fc1_relu': kernel holds NaN or infinite values"),
    "1e9-unit Dense": (lambda d, ex: _json_with(d, _set(1, "units", 10**9)),
                       r"layer 'fc1_relu' \(Dense\): the model has 17,000,000,000 weights by this layer, more than"),
    "1e9-wide input": (lambda d, ex: _json_with(d, _set(0, "batch_input_shape", [None, 10**9])),
                       r"layer 'input_1': a tensor of shape \(1000000000,\) has more than 16,777,216 elements"),
}


def _json_cut(d: Path) -> Path:
    p = _json_with(d, lambda l: None)
    p.write_text(p.read_text()[:300])
    return p


@pytest.mark.parametrize("case", CASES)
def test_a_bad_model_file_is_one_line_exit_2_and_nothing_written(case, examples, tmp_path, capfd):
    make, pattern = CASES[case]
    path = make(tmp_path, examples)
    tracemalloc.start()
    try:
        code = main(["flow", str(path), "--out", str(tmp_path / "o"), "--quiet"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("codesign: error: "), lines
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "o").exists()
    assert peak < 200 << 20, f"{peak:,} bytes"


def test_a_fresh_process_prints_only_the_one_line(examples, tmp_path):
    """No native start-up line (absl, oneDNN, cudart) precedes the message."""
    path = _truncated(examples["hgq.h5"], tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-m", "codesign.app.cli", "flow", str(path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("codesign: error: "), proc.stderr


# ---- any truncation or bit flip of a real file ------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_truncation_or_bit_flip_of_a_real_model_file_loads_or_is_refused_in_one_line(examples, data):
    name = data.draw(st.sampled_from(sorted(examples)), label="file")
    raw = bytearray(examples[name].read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
    else:
        for pos, bit in data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 7)),
                                           min_size=1, max_size=8), label="flips"):
            raw[pos] ^= 1 << bit
    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / name
        target.write_bytes(raw)
        kw = {}
        if name.endswith(".json"):
            (Path(d) / f"{target.stem}_weights.h5").write_bytes(Path(str(examples[name])[:-5] + "_weights.h5")
                                                               .read_bytes())
        if name == "qkeras_weights.h5":
            kw, target = {"weights": target}, QK_JSON
        try:
            net = codesign.load(target, **kw)
        except CodesignError as e:
            assert str(e) and "\n" not in str(e)
        else:
            assert net.layers


# ---- the HDF5 library itself misbehaving -------------------------------------------------------
def test_a_file_the_hdf5_library_loops_on_is_refused_after_the_time_limit(monkeypatch):
    from codesign.importers import keras_files

    monkeypatch.setattr(keras_files, "READ_TIME_LIMIT_S", 2.0)
    with pytest.raises(CodesignError, match=r"hdf5_heap_loop.h5: reading it did not finish in 2 s; the file is corrupt"):
        codesign.load(MODELS / "fuzz" / "hdf5_heap_loop.h5")


@pytest.mark.parametrize("misbehave, pattern", [
    (lambda: bytearray(64 << 30), r"m.h5: reading it needed more than 4 GiB; the file is corrupt"),
    (lambda: os.kill(os.getpid(), 11), r"m.h5: reading it crashed the HDF5 library \(exit -11\)"),
])
def test_a_reader_that_blows_up_or_crashes_costs_one_line(misbehave, pattern, monkeypatch, tmp_path):
    from codesign.importers import keras_files

    monkeypatch.setattr(keras_files, "_read_full_h5", lambda path, check: misbehave())
    (tmp_path / "m.h5").write_bytes(b"")
    with pytest.raises(CodesignError, match=pattern):
        codesign.load(tmp_path / "m.h5")
