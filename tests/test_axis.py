"""The AXI4-Stream wrapper (rtl_sim/axis.py) in cocotb: tready honoured on both sides, so random tvalid and
tready gaps lose, duplicate and reorder no sample; the full rate and the latency stated in its header; tlast.

One small MLP (16-12-8-4) and the tiny CNN of test_rtl_stream (6x6x1 images, 36 pixel beats each), each fully
parallel and folded (the MLP at reuse 4: a sample every 4 cycles; the CNN at reuse 2: a pixel every 2 cycles, both
through the core's in_ready); each wrapper is built once per module and shared. The mutants are the emitted
wrapper with one handshake ignored.
"""

from __future__ import annotations

import numpy as np
import pytest

from codesign.app.fold_step import write_folded_rtl
from codesign.compress.fold_choice import with_reuse
from codesign.core.layers import Conv, Dense
from codesign.core.network import Network
from codesign.core.verify import verification_inputs
from codesign.tools import find_verilator
from rtl_sim.axis import axis_capacity, axis_latency, beat_pace, emit_axis_wrapper, sample_period
from rtl_sim.cosim import _bus_ints, _from_bus_ints, write_rtl
from rtl_sim.stream import emit_stream_verilog
from rtl_sim.wrapper_sim import run_axis
from tests.test_rtl_stream import tiny_cnn

STALLS = [0.0, 0.1, 0.5, 0.9, 1.0]  # per phase of 64 cycles: stopped, stuttering, full rate
ALL = ["mlp", "cnn", "mlp_folded", "cnn_folded"]


def folded(net: Network, r: int) -> Network:
    """``net`` with every convolution and Dense layer at reuse ``r``."""
    return with_reuse(net, {l.name: r for l in net.layers if isinstance(l, (Conv, Dense))})


@pytest.fixture(scope="module")
def verilator():
    return find_verilator()


@pytest.fixture(scope="module")
def built(small_mlp, tmp_path_factory):
    """Each network's RTL directory and its Design; the bench builds reuse one work directory per network."""
    root = tmp_path_factory.mktemp("axis")
    out = {}
    for key, net in (("mlp", small_mlp), ("cnn", tiny_cnn())):
        out[key] = (net, write_rtl(net, root / key / "rtl"), root / key)
    mlp = folded(small_mlp, 4)  # rtl_sim.folded through the flow's writer, as `codesign rtl --reuse 4` does
    out["mlp_folded"] = (mlp, write_folded_rtl(mlp, root / "mlp_folded" / "rtl"), root / "mlp_folded")
    cnn = folded(tiny_cnn(), 2)  # rtl_sim.stream_fold: a pixel every 2 cycles
    out["cnn_folded"] = (cnn, write_rtl(cnn, root / "cnn_folded" / "rtl"), root / "cnn_folded")
    assert (beat_pace(out["mlp_folded"][1]), beat_pace(out["cnn_folded"][1])) == (4, 2)
    return out


def _beats(net: Network, d, q: np.ndarray) -> tuple[list[int], list[int]]:
    """Bus words one beat each (a sample, or a pixel in raster order) and s_axis_tlast (an image's last pixel)."""
    words = _bus_ints(q.reshape(-1, d.n_in), d.in_type)
    per = getattr(d, "pixels", 1)
    return words, [int(i % per == per - 1) for i in range(len(words))]


def _stream(built, key: str, n: int, seed: int, p_valid, p_ready, axis_file=None, work: str = "bench"):
    net, d, root = built[key]
    q = verification_inputs(net, None, n, seed)
    words, lasts = _beats(net, d, q)
    res = run_axis(d, root / "rtl", root / work, words, lasts, seed, p_valid, p_ready, axis_file=axis_file)
    got = _from_bus_ints([int(v) for v in res["outputs"]], d.out_type, d.n_out) if res["outputs"] else np.zeros((0,))
    return net, d, q, res, got


@pytest.mark.parametrize("key, n", [("mlp", 10_000), ("cnn", 300), ("mlp_folded", 500), ("cnn_folded", 100)])
def test_random_valid_and_ready_gaps_lose_duplicate_and_reorder_no_sample(built, verilator, key, n):
    net, d, q, res, got = _stream(built, key, n, 11, STALLS, STALLS)
    assert got.tolist() == net.forward_int(q).values.tolist()  # every result, once, in order, bit-exact
    assert res["out_last"] == [1] * n and res["tlast_error"] == 0 and not res["stuck"]
    stalled = res["cycles"] - len(res["in_cycles"])
    assert stalled > n // 2, "the bench should have stalled the wrapper often"  # the gaps were exercised


@pytest.mark.slow
@pytest.mark.parametrize("key", ["cnn", "mlp_folded", "cnn_folded"])
def test_10000_samples_or_images_stream_through_random_gaps(built, verilator, key):
    net, d, q, res, got = _stream(built, key, 10_000, 12, STALLS, STALLS)
    assert got.tolist() == net.forward_int(q).values.tolist() and res["out_last"] == [1] * 10_000


@pytest.mark.parametrize("key", ALL)
def test_at_full_rate_the_wrapper_adds_one_cycle_and_keeps_the_cores_pace(built, verilator, key):
    """A beat every cycle (parallel) or every in_ready of the folded core; a result every sample or image."""
    net, d, q, res, got = _stream(built, key, 40, 3, [1.0], [1.0])
    assert got.tolist() == net.forward_int(q).values.tolist()
    assert np.all(np.diff(res["in_cycles"]) == beat_pace(d))  # s_axis_tready high at every beat the core can take
    assert res["out_cycles"][0] - res["in_cycles"][0] == axis_latency(d) == d.latency + 1
    assert np.all(np.diff(res["out_cycles"])[:-1] == sample_period(d))  # the last may be early


@pytest.mark.parametrize("key, mutant", [  # each mutant is a Verilator build of its own: two in CI
    ("mlp", "ignores m_axis_tready"), pytest.param("cnn", "ignores m_axis_tready", marks=pytest.mark.slow),
    pytest.param("mlp", "s_axis_tready tied high", marks=pytest.mark.slow),
    ("mlp_folded", "ignores the core's in_ready"),
    pytest.param("cnn_folded", "ignores the core's in_ready", marks=pytest.mark.slow)])
def test_a_wrapper_that_ignores_a_ready_loses_results(built, verilator, tmp_path, key, mutant):
    net, d, root = built[key]
    text = emit_axis_wrapper(d)
    old, new = {"ignores m_axis_tready": ("assign m_fire = m_axis_tvalid & m_axis_tready;",
                                          "assign m_fire = m_axis_tvalid;"),
                "s_axis_tready tied high": ("assign s_axis_tready = ~first | (used != ",
                                            "assign s_axis_tready = 1'b1; wire unused_credit = ~first | (used != "),
                "ignores the core's in_ready": ("assign s_axis_tready = core_ready & (~first | (used != ",
                                                "assign s_axis_tready = (~first | (used != ")}[mutant]
    assert text.count(old) == 1
    (tmp_path / "mutant_axis.v").write_text(text.replace(old, new))
    n = {"mlp": 2000, "mlp_folded": 300}.get(key, 60)
    _, _, q, res, got = _stream(built, key, n, 5, STALLS, STALLS, axis_file=tmp_path / "mutant_axis.v",
                                work=f"mutant_{mutant.split()[0]}")
    assert res["stuck"] or len(got) != n or got.tolist() != net.forward_int(q).values.tolist()


def test_a_misplaced_s_axis_tlast_sets_the_sticky_error_flag(built, verilator):
    net, d, root = built["cnn"]
    q = verification_inputs(net, None, 3, 1)
    words, lasts = _beats(net, d, q)
    lasts[40] = 1  # the fifth pixel of the second image
    res = run_axis(d, root / "rtl", root / "bench", words, lasts, 1, [1.0], [1.0])
    got = _from_bus_ints([int(v) for v in res["outputs"]], d.out_type, d.n_out)
    assert res["tlast_error"] == 1 and got.tolist() == net.forward_int(q).values.tolist()  # data flows by the count


def test_the_fifo_holds_every_result_in_flight_at_the_full_rate(small_mlp):
    """(latency + 1) // period + 1 results: latency + 2 for an MLP, 2 for the tiny CNN (46 cycles, 36 pixels)."""
    from rtl_sim.verilog import emit_verilog

    mlp, cnn = emit_verilog(small_mlp, adder_regs_every=1), emit_stream_verilog(tiny_cnn())
    assert axis_capacity(mlp) == mlp.latency + 2 and (cnn.latency, cnn.pixels, axis_capacity(cnn)) == (46, 36, 2)
    assert f"// FIFO    : {mlp.latency + 2} results" in emit_axis_wrapper(mlp)


def test_a_folded_core_needs_the_fifo_for_its_results_in_flight_at_its_ii(small_mlp):
    """At II 4 a result holds its credit 19 + 1 cycles: 20 // 4 + 1 = 6 results; the CNN at 72 cycles an image: 2."""
    from rtl_sim.folded import emit_folded_verilog

    mlp, cnn = emit_folded_verilog(small_mlp, 4), emit_stream_verilog(folded(tiny_cnn(), 2))
    assert (mlp.latency, sample_period(mlp), axis_capacity(mlp)) == (19, 4, 6)
    assert (cnn.latency, sample_period(cnn), axis_capacity(cnn)) == (100, 72, 2)
    assert "assign s_axis_tready = core_ready & (~first | (used != 3'd6));" in emit_axis_wrapper(mlp)
