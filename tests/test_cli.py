"""The command line: every bad input is one clear line and exit code 2, with nothing left as if complete."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from codesign.app.cli import main


def run_cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, pattern):
    import re

    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("codesign: error: "), err
    assert re.search(pattern, lines[0]), lines[0]


def test_boards_table_lists_parts(capsys):
    code, out, _ = run_cli(["boards"], capsys)
    assert code == 0 and "xc7a35ticsg324-1L" in out and "5CSEBA6U23I7" in out


def test_boards_json(capsys):
    code, out, _ = run_cli(["boards", "--json"], capsys)
    assert code == 0 and {b["name"] for b in json.loads(out)} >= {"pynq-z2", "de10-nano"}


@pytest.mark.parametrize("args, pattern", [
    (["flow", "missing.pt2"], r"model file 'missing.pt2' does not exist"),
    (["flow", "digits-mlp", "--board", "nope"], r"unknown board 'nope'; known boards: agilex7-f014"),
    (["flow", "digits-mlp", "--budget", "lut==3"], r"malformed budget item 'lut==3'"),
    (["flow", "digits-mlp", "--backend", "quartus"], r"backend 'quartus' does not fit board 'arty-a7-35'.*use one of: vitis, vivado"),
    (["flow", "digits-mlp", "--data", "digits", "--budget", "lut=10,dsp=0"],
     r"budget lut=10,dsp=0 is infeasible on arty-a7-35: the smallest network .* costs lut=\d+.*; lut binds"),
])
def test_bad_flow_input_is_one_line_and_exit_2(args, pattern, capsys, tmp_path):
    code, _, err = run_cli(args + ["--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "o" / "report.html").exists()


def test_corrupt_model_file(capsys, tmp_path):
    bad = tmp_path / "m.h5"
    bad.write_bytes(b"garbage")
    code, _, err = run_cli(["flow", str(bad), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert_one_line_error(code, err, r"m.h5: not a readable Keras model")
    assert not (tmp_path / "o").exists()  # a model that cannot be read is refused before anything is written


def test_unsupported_layer_is_named(capsys, tmp_path):
    import torch
    from torch import nn

    torch.export.save(torch.export.export(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), (torch.zeros(2, 4),)), tmp_path / "m.pt2")
    code, _, err = run_cli(["flow", str(tmp_path / "m.pt2"), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert_one_line_error(code, err, r"module '1' \(Tanh\): unsupported operation 'tanh'")


def _npz(tmp_path, **kw):
    rng = np.random.default_rng(0)
    d = dict(X_train=rng.random((50, 64)), y_train=rng.integers(0, 10, 50), X_test=rng.random((10, 64)),
             y_test=rng.integers(0, 10, 10))
    d.update(kw)
    np.savez(tmp_path / "d.npz", **d)
    return str(tmp_path / "d.npz")


@pytest.mark.parametrize("kw, pattern", [
    ({"X_train": np.zeros((50, 8)), "X_test": np.zeros((10, 8))}, r"samples of shape \(8,\) but model 'digits-mlp' takes \(64,\)"),
    ({"y_train": np.full(50, 12)}, r"has label 12 but model 'digits-mlp' has only 10 outputs"),
    ({"X_test": np.full((10, 64), np.inf)}, r"X_test contains NaN or infinite values"),
])
def test_bad_data_is_refused(kw, pattern, capsys, tmp_path):
    code, _, err = run_cli(["flow", "digits-mlp", "--data", _npz(tmp_path, **kw), "--out", str(tmp_path / "o"),
                            "--quiet"], capsys)
    assert_one_line_error(code, err, pattern)


def test_an_output_directory_with_another_run_needs_force(capsys, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "report.json").write_text("{}")
    code, _, err = run_cli(["flow", "--out", str(out), "--quiet"], capsys)
    assert_one_line_error(code, err, r"already holds a run; pass --force to replace it")


def test_missing_verilator_is_reported_by_the_cli(capsys, tmp_path, monkeypatch, digits_q):
    from codesign.app.artifact import Artifact

    art = Artifact(tmp_path / "a")
    art.claim()
    digits_q.save(art.dir)
    art.update(board={"name": "arty-a7-35"}, data=None)
    assert main(["rtl", str(art.dir), "--quiet"]) == 0
    monkeypatch.setenv("CODESIGN_VERILATOR", "/nowhere/verilator")
    code, _, err = run_cli(["cosim", str(art.dir), "--quiet"], capsys)
    assert_one_line_error(code, err, r"CODESIGN_VERILATOR='/nowhere/verilator' is not a file")
    assert not (art.dir / "cosim").exists() and "cosim" in art.incomplete


def test_missing_yosys_is_reported_by_the_cli(capsys, tmp_path, monkeypatch, digits_q):
    from codesign.app.artifact import Artifact

    art = Artifact(tmp_path / "a")
    art.claim()
    digits_q.save(art.dir)
    art.update(board={"name": "arty-a7-35"})
    monkeypatch.setenv("CODESIGN_YOSYS", "/nowhere/yosys")
    code, _, err = run_cli(["estimate", str(art.dir), "--quiet"], capsys)
    assert_one_line_error(code, err, r"CODESIGN_YOSYS='/nowhere/yosys' is not a file")
    assert not (art.dir / "estimate").exists()


def test_an_interrupt_seen_by_an_extension_still_exits_130_under_python_m(tmp_path):
    # CPython kills a ``python -m`` process with SIGINT after a clean exit if an interrupt ever
    # crossed PyRun_String (as TensorFlow's and Ray's extensions use); seen in CI as returncode -2
    (tmp_path / "interrupted_probe.py").write_text(
        "import ctypes\n"
        "from codesign.app import cli\n"
        "def run(args):\n"
        "    ctypes.pythonapi.PyRun_SimpleString(b'raise KeyboardInterrupt')\n"
        "    raise KeyboardInterrupt\n"
        "cli.run = run\n"
        "cli.entry()\n")
    proc = subprocess.run([sys.executable, "-m", "interrupted_probe", "flow", "--quiet"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert "codesign: interrupted" in proc.stderr


def test_an_interrupt_an_extension_turned_into_an_import_error_exits_130(monkeypatch, capsys):
    from codesign.app import cli

    def run(args):  # scipy's HiGHS module, interrupted while sklearn imports it, raises this
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise ImportError("initialization failed") from e

    monkeypatch.setattr(cli, "run", run)
    assert cli.main(["flow", "--quiet"]) == 130
    assert "codesign: interrupted" in capsys.readouterr().err


def test_ctrl_c_leaves_the_directory_marked_incomplete(tmp_path, digits_float):
    out = tmp_path / "o"  # digits_float: the built-in model is in the cache, so the flow starts its steps at once
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "codesign.app.cli", "flow", "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / ".incomplete").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and (out / ".incomplete").exists()
    assert not (out / "report.html").exists()
