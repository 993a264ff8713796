"""Verilog emission and Verilator co-simulation: bit-exact, with the designed latency and II = 1."""

import json
import re
import subprocess

import numpy as np
import pytest

from codesign.errors import ToolFailedError, ToolNotFoundError
from codesign.core.fixed import FixedType
from codesign.core.layers import Dense, Output, ReLU
from codesign.core.network import Network
from codesign.core.verify import verification_inputs
from rtl_sim.cosim import cosimulate, describe_mismatch, write_rtl
from codesign.tools import find_verilator, find_yosys
from codesign.core.arith import csd_digits
from rtl_sim.verilog import emit_verilog


@pytest.fixture(scope="module")
def verilator():
    return find_verilator()


@pytest.mark.slow  # CI co-simulates the default flow's network on 12,000 samples (test_flow) and in shards below
def test_digits_network_cosimulates_bit_exact_on_10000_samples(digits_q, digits, tmp_path, verilator):
    d = write_rtl(digits_q, tmp_path / "rtl")
    q = verification_inputs(digits_q, digits.X_test, 10000)
    r = cosimulate(digits_q, tmp_path / "rtl", tmp_path / "cosim", q, mode="bulk")
    print(r.to_json())
    assert r.mismatches == 0 and r.samples >= 10000, describe_mismatch(r)
    assert r.latency_cycles == d.latency == 3 and r.ii == 1.0 and r.bit_exact


def test_a_large_sample_set_cosimulates_in_shards_as_jobs(default_run, digits, tmp_path, verilator):
    """Shards of the sample set run as jobs (local processes here); the driver compares every output.
    The default flow's design: its simulator is already built, so CI pays only the simulation."""
    out = default_run[1]
    net = Network.load(out)
    latency = json.loads((out / "report.json").read_text())["rtl"]["latency_cycles"]
    q = verification_inputs(net, digits.X_test, 10000)
    r = cosimulate(net, out / "rtl", tmp_path / "cosim", q, mode="bulk", shard_samples=4000)
    assert r.extra == {"shards": 3, "cluster": "local"}
    assert r.samples == len(q) and r.mismatches == 0 and r.latency_cycles == latency and r.ii == 1.0 and r.bit_exact


@pytest.mark.slow  # a 47k-LUT design: its Verilator build takes most of a minute; CI simulates it in C (test_hls)
def test_qkeras_jet_tagger_cosimulates_bit_exact_with_saturation_corners(qkeras_net, tmp_path, verilator):
    write_rtl(qkeras_net, tmp_path / "rtl", adder_regs_every=2)
    q = verification_inputs(qkeras_net, None, 10000)
    t = qkeras_net.input_type
    assert (q == t.max_int).all(axis=1).any() and (q == t.min_int).all(axis=1).any()
    r = cosimulate(qkeras_net, tmp_path / "rtl", tmp_path / "cosim", q, mode="bulk")
    print(r.to_json())
    assert r.mismatches == 0 and r.bit_exact, describe_mismatch(r)


def per_weight_tree_depths(net: Network) -> list[int]:
    """Adder levels of each layer's per-weight datapath: a tree over its widest output's products and bias."""
    return [int(np.ceil(np.log2(max(((l.weight != 0).sum(0) + (l.bias != 0)).max(), 1))))
            for l in net.layers if isinstance(l, Dense)]


@pytest.mark.parametrize("datapath, every", [pytest.param("csd", 0, marks=pytest.mark.slow), ("csd", 1),
                                             pytest.param("csd", 3, marks=pytest.mark.slow), ("cmvm", 2)])
def test_pipeline_depth_is_a_parameter_and_cocotb_measures_it(small_mlp, tmp_path, verilator, datapath, every):
    d = write_rtl(small_mlp, tmp_path / "rtl", adder_regs_every=every, datapath=datapath)
    # a register after each layer's products, and one every `every` adder levels of its tree
    depths = (per_weight_tree_depths(small_mlp) if datapath == "csd"
              else [m["adder_depth"] for m in d.multipliers.values()])  # the shared graph's own depth
    latency = sum(1 + (depth - 1) // every for depth in depths) if every else len(depths)
    assert d.latency == latency
    q = verification_inputs(small_mlp, None, 300)
    r = cosimulate(small_mlp, tmp_path / "rtl", tmp_path / "cosim", q, mode="cocotb")
    assert r.bit_exact and r.latency_cycles == latency and r.ii == 1.0, describe_mismatch(r)


def test_digits_per_weight_tree_depths_are_6_5_4(digits_q):
    assert per_weight_tree_depths(digits_q) == [6, 5, 4]
    assert emit_verilog(digits_q, adder_regs_every=1, datapath="csd").latency == 3 + 5 + 4 + 3


def test_a_changed_weight_constant_fails_and_names_the_layer(small_mlp, tmp_path, verilator):
    write_rtl(small_mlp, tmp_path / "rtl", mult="dsp")
    v = tmp_path / "rtl" / "small_mlp.v"
    text = v.read_text()
    # the first DSP multiply of fc2: "<width>'sh<const>" after a '*'
    m = re.search(r"(wire signed \[\d+:0\] fc2_m_\d+ = .*? \* (\d+)'sh)([0-9a-f]+);", text)
    assert m, "no DSP product in fc2"
    bits = int(m.group(2))
    new = (int(m.group(3), 16) + 1) % (1 << bits)
    v.write_text(text.replace(m.group(0), f"{m.group(1)}{new:x};", 1))
    q = verification_inputs(small_mlp, None, 2000)
    r = cosimulate(small_mlp, tmp_path / "rtl", tmp_path / "cosim", q, mode="bulk")
    assert not r.bit_exact and r.mismatches > 0
    msg = describe_mismatch(r)
    assert "first diverging layer 'fc2'" in msg and f"sample {r.first_mismatch['sample']}" in msg, msg


def _pruned_layer(rng, sparsity: float) -> Network:
    wt = FixedType(8, 1)
    w = rng.integers(-128, 128, size=(32, 16))
    w[rng.random(w.shape) < sparsity] = 0
    d = Dense("fc", w, rng.integers(-50, 50, size=16), weight_type=wt, bias_type=wt,
              result_type=FixedType(12, 6, True, "RND_CONV", "SAT"))
    return Network("pruned", (32,), [d, ReLU("relu"), Output("o")], FixedType(8, 3))


def test_a_90_percent_pruned_layer_emits_one_multiplier_per_nonzero_weight(rng):
    net = _pruned_layer(rng, 0.9)
    d = emit_verilog(net, datapath="csd")
    nonzero = int(np.count_nonzero(net.layers[0].weight))
    products = re.findall(r"wire signed \[\d+:0\] fc_m_\d+ =", d.verilog)
    assert len(products) == nonzero == d.multipliers["fc"]["nonzero"]
    counts = d.multipliers["fc"]
    assert counts["dsp"] + counts["lut"] + counts["shift"] == nonzero


@pytest.mark.parametrize("datapath", ["cmvm", "csd"])
@pytest.mark.parametrize("mult", ["lut", "dsp"])
def test_constant_multipliers_follow_the_mapping(rng, mult, datapath):
    d = emit_verilog(_pruned_layer(rng, 0.5), mult=mult, datapath=datapath)
    has_star = " * " in d.verilog
    assert has_star == (mult == "dsp")


def test_csd_digits_reconstruct_the_weight():
    for v in range(-300, 300):
        digits = csd_digits(v)
        assert sum(d << k for k, d in digits) == v
        assert all(digits[i + 1][0] - digits[i][0] >= 2 for i in range(len(digits) - 1))  # non-adjacent


def test_verilator_lint_is_clean(digits_q, qkeras_net, tmp_path, verilator):
    for net in (digits_q, qkeras_net):
        d = write_rtl(net, tmp_path / net.name, adder_regs_every=2)
        files = [str(tmp_path / net.name / f"{d.top}.v"), str(tmp_path / net.name / f"{d.top}_axis.v")]
        proc = subprocess.run([*verilator.command, "--lint-only", "-Wall", "--top-module", f"{d.top}_axis", *files],
                              capture_output=True, text=True, env=verilator.environ())
        assert proc.returncode == 0 and "%Warning" not in proc.stderr, proc.stderr[:2000]


def test_yosys_reads_the_verilog_without_warnings(qkeras_net, tmp_path):
    yosys = find_yosys()
    d = write_rtl(qkeras_net, tmp_path)
    proc = subprocess.run([*yosys.command, "-p", f"read_verilog -sv {d.top}.v {d.top}_axis.v; "
                           f"hierarchy -check -top {d.top}_axis; proc; check -assert"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "Warning" not in proc.stdout, [l for l in proc.stdout.splitlines() if "Warning" in l][:5]


def test_missing_verilator_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CODESIGN_VERILATOR", "/nonexistent/verilator")
    with pytest.raises(ToolNotFoundError, match=r"CODESIGN_VERILATOR='/nonexistent/verilator' is not a file"):
        find_verilator()


def test_too_old_verilator_is_a_clear_error(monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "verilator"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Verilator 4.038 2020-07-11 rev v4.036'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CODESIGN_VERILATOR", str(fake))
    with pytest.raises(ToolNotFoundError, match=r"Verilator 4.038 at .* is too old: cocotb needs 5.036 or newer"):
        find_verilator()


def test_a_build_failure_reports_the_compiler_line(digits_q, tmp_path, verilator):
    write_rtl(digits_q, tmp_path / "rtl")
    v = tmp_path / "rtl" / "digits_mlp.v"
    v.write_text(v.read_text().replace("endmodule", "endmodul", 1))
    with pytest.raises(ToolFailedError, match=r"Verilator build of digits_mlp.v failed: %Error"):
        cosimulate(digits_q, tmp_path / "rtl", tmp_path / "cosim", np.zeros((4, 64), dtype=np.int64))
