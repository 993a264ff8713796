"""RTL of branched networks: in a residual CNN's pixel stream the shortcut waits in a FIFO sized from the schedule,
in a residual MLP it is a register delay; the merges are exact, then cast.

One small residual CNN (an identity block, a 1x1-projection block, a Concatenate, global average pooling, a Dense)
is built once for the bulk harness and once for cocotb, the latter with input gaps; one residual MLP once.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from codesign.core.fixed import FixedType
from codesign.core.layers import (Add, Concatenate, Conv1D, Conv2D, Dense, Flatten, GlobalAvgPool1D, GlobalAvgPool2D,
                                  Output, ReLU)
from codesign.core.network import INPUT, Network
from codesign.core.verify import verification_inputs
from codesign.errors import BackendError, ToolFailedError
from codesign.tools import find_verilator
from rtl_sim.branches import emit_graph_stream
from rtl_sim.cosim import _from_bus_ints, cosimulate, describe_mismatch, load_design, run_cocotb, write_rtl
from rtl_sim.stream import emit_stream_verilog

WT = FixedType(5, 1)  # weights: integers in [-16, 15]
ACT = FixedType(8, 3, True, "RND", "SAT")


def _conv(rng, name, k, c_in, c_out, **kw):
    w = rng.integers(-16, 16, size=(*k, c_in, c_out))
    w[rng.random(w.shape) < 0.3] = 0
    return Conv2D(name, w, rng.integers(-8, 8, size=c_out), weight_type=WT, bias_type=WT, result_type=ACT, **kw)


def residual_cnn(seed: int = 1) -> Network:
    """8x8x2 -> [conv 3x3 same, ReLU, conv 3x3 same] + identity -> ReLU -> [conv 3x3 same /2, ReLU, conv 3x3 same]
    + conv 1x1 /2 -> ReLU -> Concatenate with the 1x1 shortcut -> global average pooling (4x4) -> Dense 4; the first
    Add's result cast to its own type, the second's exact."""
    rng = np.random.default_rng(seed)
    layers = [
        _conv(rng, "b1_conv1", (3, 3), 2, 2, padding="same"), ReLU("b1_relu1"),
        _conv(rng, "b1_conv2", (3, 3), 2, 2, padding="same"),
        Add("b1_add", inputs=(INPUT, "b1_conv2"), result_type=FixedType(9, 4, True, "RND_CONV", "SAT")),
        ReLU("b1_relu2", FixedType(7, 3, False, "TRN", "SAT")),
        _conv(rng, "b2_conv1", (3, 3), 2, 3, padding="same", strides=(2, 2)), ReLU("b2_relu1"),
        _conv(rng, "b2_conv2", (3, 3), 3, 3, padding="same"),
        _conv(rng, "b2_proj", (1, 1), 2, 3, strides=(2, 2), inputs=("b1_relu2",)),
        Add("b2_add", inputs=("b2_conv2", "b2_proj")), ReLU("b2_relu2"),
        Concatenate("cat", inputs=("b2_relu2", "b2_proj")),
        GlobalAvgPool2D("gap", result_type=FixedType(10, 5, True, "RND", "SAT")),
        Dense("fc", rng.integers(-16, 16, size=(6, 4)), rng.integers(-8, 8, size=4), weight_type=WT, bias_type=WT,
              result_type=FixedType(12, 6, True, "RND_CONV", "SAT")),
        Output("out", "argmax"),
    ]
    return Network("residual_cnn", (8, 8, 2), layers, FixedType(6, 2, True))


@pytest.fixture(scope="module")
def verilator():
    return find_verilator()


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    net = residual_cnn()
    root = tmp_path_factory.mktemp("graph")
    return net, write_rtl(net, root / "rtl"), root


def test_residual_cnn_streams_bit_exact_at_one_cycle_per_input_pixel(residual, verilator):
    net, d, root = residual
    q = verification_inputs(net, None, 300, 0)  # corners of the input type, corner mixes, then random
    r = cosimulate(net, root / "rtl", root / "bulk", q, mode="bulk")
    print(r.to_json(), d.latency, d.fifos)
    assert r.mismatches == 0 and r.samples == 300, describe_mismatch(r)
    assert r.ii == d.cycles_per_image == 64 and r.latency_cycles == d.latency and r.bit_exact


def test_input_gaps_anywhere_leave_every_residual_result_unchanged(residual, verilator):
    """in_valid may drop at any beat; the FIFOs' guards ($fatal on overflow or an empty read) stay silent."""
    net, d, root = residual
    q = verification_inputs(net, None, 6, 2)
    rng = np.random.default_rng(5)
    gaps = (rng.random(len(q) * d.pixels) < 0.3) * rng.integers(1, 40, size=len(q) * d.pixels)
    res = run_cocotb(load_design(root / "rtl"), root / "rtl", root / "cosim", q, gaps=gaps.tolist())
    got = _from_bus_ints([int(v) for v in res["outputs"]], d.out_type, d.n_out)
    assert got.tolist() == net.forward_int(q).values.tolist()


def test_each_shortcut_fifo_is_sized_from_the_schedule():
    """The identity shortcut waits while the two 3x3 'same' convolutions fill (about two rows of 8 pixels); the
    projection's 1x1 output, on a 4x4 grid, waits about two of its rows; the latest operand needs none, and a
    second merge of the projection reuses the first one's FIFO."""
    d = emit_stream_verilog(residual_cnn())
    assert [(f["layer"], f["operand"]) for f in d.fifos] == [("b1_add", INPUT), ("b2_add", "b2_proj"),
                                                             ("cat", "b2_proj")]
    depth = {f["layer"]: f["depth"] for f in d.fifos}
    assert 2 * 8 + 2 <= depth["b1_add"] <= 3 * 8 + 4 and 2 * 4 <= depth["b2_add"] <= 3 * 4 + 4, d.fifos
    assert all(f["bits"] > 0 for f in d.fifos)
    # the Concatenate takes the projection one cycle after the Add: the Add's FIFO head through one register
    assert {k: d.fifos[2][k] for k in ("depth", "reuses", "delay_cycles")} == {
        "depth": 0, "reuses": d.fifos[1]["signal"], "delay_cycles": 1}


@pytest.mark.slow
def test_an_undersized_shortcut_fifo_stops_the_simulation_naming_the_merge(tmp_path, verilator):
    net = residual_cnn()
    d = emit_graph_stream(net, fifo_depths={"b1_add": {INPUT: 4}})
    rtl = tmp_path / "rtl"
    write_rtl(net, rtl)
    (rtl / f"{d.top}.v").write_text(d.verilog)
    with pytest.raises(ToolFailedError, match="layer b1_add operand input: FIFO .* of 4 pixels overflows"):
        cosimulate(net, rtl, tmp_path / "bulk", verification_inputs(net, None, 4, 0), mode="bulk")


def test_a_branch_after_global_pooling_is_refused_naming_the_layer():
    rng = np.random.default_rng(0)
    layers = [_conv(rng, "c", (3, 3), 1, 2, padding="same"), GlobalAvgPool2D("gap"),
              Dense("d1", np.ones((2, 2), int), weight_type=WT, bias_type=WT),
              Add("a", inputs=("gap", "d1")), Flatten("f")]
    net = Network("late_branch", (4, 4, 1), layers, FixedType(6, 2))
    with pytest.raises(BackendError, match=r"^layer 'a' \(Add\): after Flatten/GlobalAvgPool the streaming RTL "
                       "builds a chain of Dense stages; branches there are not built yet$"):
        emit_stream_verilog(net)


def test_concatenated_branches_hold_every_channel_exactly():
    """A Concatenate of the input and a convolution: one FIFO on the input, the union type, no arithmetic."""
    rng = np.random.default_rng(3)
    layers = [_conv(rng, "c", (3, 3), 1, 2, padding="same"), Concatenate("cat", inputs=(INPUT, "c")), Flatten("f")]
    net = Network("cat", (4, 4, 1), layers, FixedType(6, 2))
    d = emit_stream_verilog(net)
    assert d.n_out == 4 * 4 * 3 and [f["operand"] for f in d.fifos] == [INPUT]


def residual_mlp(seed: int = 2) -> Network:
    """16 -> Dense 8 -> ReLU -> [Dense 8, ReLU, Dense 8] + shortcut -> ReLU -> Concatenate with the first ReLU ->
    Dense 3: an Add whose shortcut waits two stages, and a Concatenate of tensors of different types."""
    rng = np.random.default_rng(seed)

    def dense(name, n_in, n_out, **kw):
        w = rng.integers(-16, 16, size=(n_in, n_out))
        w[rng.random(w.shape) < 0.3] = 0
        return Dense(name, w, rng.integers(-8, 8, size=n_out), weight_type=WT, bias_type=WT, result_type=ACT, **kw)

    layers = [dense("fc0", 16, 8), ReLU("r0"), dense("fc1", 8, 8), ReLU("r1"), dense("fc2", 8, 8),
              Add("add", inputs=("r0", "fc2"), result_type=FixedType(8, 4, True, "RND_CONV", "SAT")),
              ReLU("r2", FixedType(6, 3, False, "TRN", "SAT")), Concatenate("cat", inputs=("r0", "r2")),
              dense("fc3", 16, 3), Output("out", "argmax")]
    return Network("residual_mlp", (16,), layers, FixedType(6, 2, True))


@pytest.mark.slow
def test_residual_mlp_is_bit_exact_with_its_shortcut_delayed_by_registers(tmp_path, verilator):
    net = residual_mlp()
    d = write_rtl(net, tmp_path / "rtl")
    by = {st["name"]: st for st in d.stages}
    assert [(s["operand"], s["cycles"]) for s in by["add"]["shortcut_delays"]] == [("r0", 2)]
    assert [(s["operand"], s["cycles"]) for s in by["cat"]["shortcut_delays"]] == [("r0", 3)]
    r = cosimulate(net, tmp_path / "rtl", tmp_path / "bulk", verification_inputs(net, None, 300, 1), mode="bulk")
    assert r.bit_exact and r.samples == 300 and r.ii == 1.0 and r.latency_cycles == d.latency == 6, \
        describe_mismatch(r)


def test_twin_branches_presented_together_need_no_fifo():
    """Two 1x1 convolutions of one stream reach their Add on the same cycles: no FIFO, a guard in simulation."""
    rng = np.random.default_rng(4)
    layers = [_conv(rng, "a", (1, 1), 2, 2), _conv(rng, "b", (1, 1), 2, 2, inputs=(INPUT,)),
              Add("add", inputs=("a", "b")), Flatten("f")]
    d = emit_stream_verilog(Network("twins", (4, 4, 2), layers, FixedType(6, 2)))
    assert d.fifos == [] and "are not presented together" in d.verilog


@pytest.mark.parametrize("make", [residual_cnn, residual_mlp])
def test_branched_verilog_is_lint_clean(make, tmp_path, verilator):
    net = make()
    d = write_rtl(net, tmp_path / net.name)
    files = [str(tmp_path / net.name / f"{d.top}.v"), str(tmp_path / net.name / f"{d.top}_axis.v")]
    proc = subprocess.run([*verilator.command, "--lint-only", "-Wall", "--top-module", f"{d.top}_axis", *files],
                          capture_output=True, text=True, env=verilator.environ())
    assert proc.returncode == 0 and "%Warning" not in proc.stderr, proc.stderr[:2000]


@pytest.mark.parametrize("make", [residual_cnn, residual_mlp])
def test_per_layer_synthesis_takes_a_branched_network_whole(make):
    from rtl_sim.synth import layer_jobs, stage_networks

    net = make()
    assert [(name, sub is net) for name, sub in stage_networks(net)] == [(net.layers[0].name, True)]
    done, todo = layer_jobs(net, "xc7", (False,))
    assert len(done[False]) + len(todo) == 1


def random_residual_cnn(seed: int) -> Network:
    """A random small residual CNN: 1-D or 2-D, one or two blocks, each 1-2 'same' convolutions (random kernel,
    the first maybe strided) with an identity or 1x1-projection shortcut, merged by Add or Concatenate with random
    result types (every rounding and overflow mode), maybe a ReLU; then Flatten or GlobalAvgPool and a Dense."""
    r = np.random.default_rng(seed)
    nd = int(r.integers(1, 3))
    shape = ((int(r.integers(6, 17)),) if nd == 1 else (int(r.integers(4, 8)), int(r.integers(4, 8)))) + \
        (int(r.integers(1, 4)),)

    def rtype(signed=True):
        w = int(r.integers(5, 11))
        return FixedType(w, int(r.integers(2, w)), signed, str(r.choice(["TRN", "RND", "RND_CONV"])),
                         str(r.choice(["WRAP", "SAT"])))

    def conv(name, k, c_in, c_out, **kw):
        w = r.integers(-16, 16, size=(*k, c_in, c_out))
        w[r.random(w.shape) < 0.3] = 0
        return (Conv1D if nd == 1 else Conv2D)(name, w, r.integers(-8, 8, size=c_out), weight_type=WT, bias_type=WT,
                                               result_type=rtype(), **kw)

    layers, cur, src = [], shape, INPUT
    for b in range(int(r.integers(1, 3))):
        stride = int(r.integers(1, 3)) if min(cur[:-1]) >= 4 else 1
        project = stride > 1 or r.random() < 0.4
        c_out = int(r.integers(1, 4)) if project else cur[-1]
        main = src
        for j in range(int(r.integers(1, 3))):
            k = tuple(int(r.integers(1, min(3, n) + 1)) for n in cur[:-1])
            s = (stride,) * nd if j == 0 else (1,) * nd
            layers.append(conv(f"b{b}_c{j}", k, cur[-1] if j == 0 else c_out, c_out, padding="same", strides=s,
                               inputs=(main,)))
            main = layers[-1].name
            if r.random() < 0.5:
                layers.append(ReLU(f"b{b}_r{j}", rtype(False) if r.random() < 0.5 else None))
                main = layers[-1].name
        short = src
        if project:
            layers.append(conv(f"b{b}_proj", (1,) * nd, cur[-1], c_out, strides=(stride,) * nd, inputs=(src,)))
            short = layers[-1].name
        ops = (short, main) if r.random() < 0.5 else (main, short)
        merge = Add if r.random() < 0.7 else Concatenate
        layers.append(merge(f"b{b}_m", inputs=ops, result_type=rtype() if r.random() < 0.6 else None))
        if r.random() < 0.5:
            layers.append(ReLU(f"b{b}_out", rtype(False) if r.random() < 0.5 else None))
        src = layers[-1].name
        cur = Network("probe", shape, [*layers, Flatten("probe_f")], FixedType(6, 2)).shapes()[-2]
    n_pos = int(np.prod(cur[:-1]))
    if n_pos & (n_pos - 1) == 0 and r.random() < 0.6:
        layers.append((GlobalAvgPool1D if nd == 1 else GlobalAvgPool2D)("gap"))
        n = cur[-1]
    else:
        layers.append(Flatten("flat"))
        n = n_pos * cur[-1]
    layers.append(Dense("fc", r.integers(-16, 16, size=(n, 3)), r.integers(-8, 8, size=3), weight_type=WT,
                        bias_type=WT, result_type=rtype()))
    in_t = FixedType(int(r.integers(4, 8)), int(r.integers(1, 3)), bool(r.random() < 0.6))
    return Network(f"random_residual_{seed}", shape, layers, in_t)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_random_residual_cnns_stream_bit_exact_at_the_designed_latency(seed, tmp_path, verilator):
    net = random_residual_cnn(seed)
    print(net.summary())
    d = write_rtl(net, tmp_path / "rtl")
    r = cosimulate(net, tmp_path / "rtl", tmp_path / "cosim", verification_inputs(net, None, 300, seed), mode="bulk")
    assert r.bit_exact and r.ii == d.cycles_per_image and r.latency_cycles == d.latency, describe_mismatch(r)


@pytest.mark.parametrize("make", [residual_cnn, residual_mlp])
def test_yosys_reads_the_branched_verilog_without_warnings(make, tmp_path):
    """Synthesis skips the FIFOs' simulation guards (SYNTHESIS is defined) and finds no driver conflicts."""
    from codesign.tools import find_yosys

    d = write_rtl(make(), tmp_path)
    proc = subprocess.run([*find_yosys().command, "-p", f"read_verilog -sv {d.top}.v {d.top}_axis.v; "
                           f"hierarchy -check -top {d.top}_axis; proc; check -assert"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "Warning" not in proc.stdout, [l for l in proc.stdout.splitlines() if "Warning" in l][:5]


@pytest.mark.slow
@pytest.mark.parametrize("make, mhz", [(residual_cnn, 250), (residual_mlp, 300)])
def test_a_clock_target_pipelines_the_merges_and_stays_bit_exact(make, mhz, tmp_path, verilator):
    """Registers placed by the xc7 delay model in the kernels, the merges' casts and the fused ReLUs: the FIFOs and
    shortcut delays follow the longer schedule."""
    net = make()
    d = write_rtl(net, tmp_path / "rtl", clock_mhz=mhz, family="xc7")
    assert d.timing["meets_target"] and d.latency > write_rtl(net, tmp_path / "plain").latency, d.timing
    r = cosimulate(net, tmp_path / "rtl", tmp_path / "cosim", verification_inputs(net, None, 300, 7), mode="bulk")
    assert r.bit_exact and r.latency_cycles == d.latency, describe_mismatch(r)
