"""Folded streaming CNNs (rtl_sim.stream_fold): a convolution's kernel and the Dense tail folded by their reuse,
bit-exact in Verilator at the cycles per image the design promises; their price (conv_cost) and the budget
search's fold of a CNN (fold_choice)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from codesign.board import load_board
from codesign.compress.conv_cost import cnn_parts
from codesign.compress.fold_choice import (candidate_iis, choose_fold, designed_ii, folded_price, foldable,
                                           require_foldable, reuse_at, with_reuse)
from codesign.core.fold import fold_cycles, stream_pace
from codesign.core.layers import Conv, Dense
from codesign.core.network import Network
from codesign.core.verify import verification_inputs
from codesign.errors import BackendError, ConfigError
from rtl_sim.cosim import cosimulate, describe_mismatch, run_cocotb, write_rtl
from rtl_sim.stream import emit_stream_verilog
from tests.test_rtl_stream import features_cnn, tiny_cnn

PYNQ = load_board("pynq-z2")


def folded(net: Network, reuse: dict[str, int]) -> Network:
    """``net`` with the given layers' reuse factors (the others 1)."""
    return with_reuse(net, {l.name: reuse.get(l.name, 1) for l in net.layers if isinstance(l, (Conv, Dense))})


def _cosim(net: Network, tmp_path, mode: str = "bulk", **emit):
    d = write_rtl(net, tmp_path / "rtl", **emit)
    r = cosimulate(net, tmp_path / "rtl", tmp_path / "work", verification_inputs(net, None, 24), mode=mode)
    return d, r


@pytest.mark.parametrize("r", [2, 5])
def test_a_tiny_cnn_folded_at_r_is_bit_exact_at_its_designed_cycles_per_image(r, tmp_path):
    net = folded(tiny_cnn(), {"conv1": r, "conv2": r, "fc": r})
    d, res = _cosim(net, tmp_path)
    pace = max(fold_cycles(l.weight, r) for l in net.layers if isinstance(l, Conv))
    assert 1 < d.cycles_per_pixel == pace <= r and d.cycles_per_image == 36 * pace
    assert res.bit_exact, describe_mismatch(res)
    assert (res.ii, res.latency_cycles) == (d.cycles_per_image, d.latency)


@pytest.mark.slow
def test_same_padding_strides_and_pooling_keep_their_tail_ticks_on_the_folded_pace(tmp_path):
    """'same' padding with stride 2, average and global average pooling, pipelined for a clock."""
    net = folded(features_cnn(), {"conv_s2": 4, "conv_same": 3, "fc": 2})
    d, res = _cosim(net, tmp_path, clock_mhz=250, family="xc7")
    assert d.cycles_per_pixel == 4 and res.bit_exact, describe_mismatch(res)
    assert (res.ii, res.latency_cycles) == (d.cycles_per_image, d.latency)


def test_a_dense_tail_folded_over_the_image_keeps_the_parallel_throughput(tmp_path):
    net = folded(tiny_cnn(), {"fc": 36})  # 36 cycles per vector, one vector per 36-pixel image
    d, res = _cosim(net, tmp_path)
    assert d.cycles_per_pixel == 1 and d.cycles_per_image == 36 and "in_ready" not in d.verilog and "_mem" in d.verilog
    assert res.bit_exact and res.ii == 36 and res.latency_cycles == d.latency


def _two_dense_tail(seed: int = 4) -> Network:
    """tiny_cnn with a Dense 4 -> ReLU -> Dense 3 -> Dense 3 tail: a folded Dense reading a folded one's held output,
    then a parallel one after it."""
    from codesign.core.fixed import FixedType
    from codesign.core.layers import ReLU
    from tests.builders import random_dense

    rng = np.random.default_rng(seed)
    base = tiny_cnn()
    dense = [random_dense(rng, n, i, o, "ap_fixed<6,1>", biases=(-10, 10),
                          result_type=FixedType(12, 5, True, "RND_CONV", "SAT")) for n, i, o in
             (("fc2", 4, 3), ("fc3", 3, 3))]
    layers = base.layers[:-1] + [ReLU("relu_fc"), dense[0], dense[1], base.layers[-1]]
    return Network("tail_cnn", base.input_shape, layers, base.input_type)


@pytest.mark.slow
def test_folded_dense_layers_after_the_stream_read_each_others_held_outputs(tmp_path):
    net = folded(_two_dense_tail(), {"conv2": 2, "fc": 40, "fc2": 9})
    d, res = _cosim(net, tmp_path)
    assert d.cycles_per_pixel == 2 and res.bit_exact, describe_mismatch(res)
    assert (res.ii, res.latency_cycles) == (d.cycles_per_image, d.latency)


def test_reuse_one_everywhere_is_the_parallel_design_unchanged():
    net = tiny_cnn()
    d = emit_stream_verilog(folded(net, {}))
    assert d.verilog == emit_stream_verilog(net).verilog
    assert "in_ready" not in d.verilog and "_mem" not in d.verilog and d.cycles_per_pixel == 1 and d.reuse == {}


def test_the_pace_is_the_slowest_kernel_or_a_dense_spread_over_the_image():
    net = folded(tiny_cnn(), {"conv1": 3, "conv2": 2, "fc": 200})
    fc = next(l for l in net.layers if l.name == "fc")
    assert stream_pace(net.layers, 36) == max(3, -(-fold_cycles(fc.weight, 200) // 36))


def test_a_branched_network_with_a_folded_layer_is_refused_naming_it():
    from tests.test_rtl_graph import residual_cnn  # a stream that branches and rejoins

    net = residual_cnn()
    conv = next(l for l in net.layers if isinstance(l, Conv))
    layers = [dataclasses.replace(l, reuse=2) if l is conv else l for l in net.layers]
    with pytest.raises(BackendError, match=f"layers {conv.name} have reuse > 1, but a branched streaming network"):
        emit_stream_verilog(Network(net.name, net.input_shape, layers, net.input_type))


@pytest.mark.slow
def test_cocotb_sees_every_stage_of_a_folded_cnn_bit_exact(tmp_path):
    net = folded(tiny_cnn(), {"conv1": 2, "conv2": 4, "fc": 8})
    d, res = _cosim(net, tmp_path, mode="cocotb")
    assert res.bit_exact and (res.ii, res.latency_cycles) == (d.cycles_per_image, d.latency)


# ---- cost and search ---------------------------------------------------------------------------
def test_the_cnn_cost_model_prices_a_folded_kernel_from_its_plan():
    net = tiny_cnn()
    parts = {p["name"]: p for p in cnn_parts(folded(net, {"conv2": 4, "fc": 8}), PYNQ)}
    conv2 = next(l for l in net.layers if l.name == "conv2")
    nnz = int(np.count_nonzero(conv2.weight))
    k = parts["conv2"]["kernel"]
    assert k["folded"] and k["units"] == -(-nnz // 4) and k["cycles"] == fold_cycles(conv2.weight, 4)
    assert parts["fc"]["kernel"]["folded"] and "folded" not in parts["conv1"]["kernel"]
    assert parts["conv2"]["stream"]["folded_window_ff"] > 0


def test_a_cnns_ii_ladder_is_in_cycles_per_image_and_folds_the_convolutions_per_pixel():
    net = tiny_cnn()
    iis = candidate_iis(net)
    assert iis[:4] == [1, 36, 72, 108] and all(t % 36 == 0 for t in iis[1:])
    r = reuse_at(net, 72)
    assert r["conv1"] == 2 and r["conv2"] == 2 and r["fc"] == min(72, int(np.count_nonzero(net.layers[6].weight)))
    assert designed_ii(with_reuse(net, r)) == 72 and designed_ii(net) == 1


def test_the_search_folds_a_cnn_over_its_budget_to_the_smallest_ii_that_fits():
    net = tiny_cnn()
    parallel = folded_price(net, 1, PYNQ.synth_family, False, PYNQ)
    iis = candidate_iis(net)
    aim = {"lut": folded_price(net, iis[8], PYNQ.synth_family, False, PYNQ)["lut"], "dsp": 0}
    c = choose_fold(net, parallel, aim, PYNQ.synth_family, False, iis[-1], PYNQ)
    assert parallel["lut"] > aim["lut"] and 36 < c.ii <= iis[8] and c.cost["lut"] <= aim["lut"] and c.bound_by == "lut"
    assert all(folded_price(net, t, PYNQ.synth_family, False, PYNQ)["lut"] > aim["lut"] for t in iis if 1 < t < c.ii)


def test_an_ii_budget_on_a_cnn_is_accepted_in_cycles_per_image():
    net = tiny_cnn()
    assert foldable(net)
    require_foldable(net, 36 * 4)
    assert candidate_iis(net, 36 * 4)[-1] == 36 * 4
    with pytest.raises(ConfigError, match=r"^budget ii=20: network 'tiny_cnn' streams 36 pixels per image, one a "
                                          r"cycle at most, so its II \(cycles per image\) is at least 36; give ii >= 36$"):
        require_foldable(net, 20)


@pytest.mark.slow
def test_hls4ml_c_simulation_of_a_folded_cnn_with_the_same_reuse_factor_is_bit_exact(tmp_path):
    from hls.csim import csim_check
    from hls.project import write_project

    net = folded(tiny_cnn(), {"conv1": 2, "conv2": 4, "fc": 8})
    p = write_project(net, PYNQ, "vitis", tmp_path / "prj")
    params = (p.directory / "firmware" / "parameters.h").read_text()
    assert "reuse_factor = 2;" in params and "reuse_factor = 4;" in params  # the convolutions' (hls4ml's own
    # rule may move a Dense's factor to one that divides its size: hls.project._valid_reuse)
    r = csim_check(p, net, verification_inputs(net, None, 500), cache=tmp_path / "csim")
    assert r["csim_bit_exact"] and r["samples"] == 500


@pytest.mark.slow
def test_flow_folds_the_digits_cnn_into_two_percent_of_a_pynq_z2(tmp_path):
    """docs/guide/folding.md's run and issue 32's: lut=0.02,dsp=0 (1,064 LUTs; fully parallel it needed 2,285 for
    95.8 %) fits folded at >= 95 % (96.9 % at II 12,608 with the recalibrated fold prices of 2026-12-08; 95.6 % at
    II 9,472 before them, 84.4 % with an earlier fold price)."""
    from codesign.app import flow

    rep = flow.run_flow(tmp_path / "run", "digits-cnn", "digits", "pynq-z2", "lut=0.02,dsp=0", samples=2000)
    assert rep["rtl"]["ii"] == rep["fold"]["ii"] > 64 and rep["rtl"]["cycles_per_pixel"] > 1
    assert rep["hls"]["csim_bit_exact"] and rep["cosim"]["bit_exact"] and rep["cosim"]["ii"] == rep["rtl"]["ii"]
    assert rep["fits_budget"] and rep["fits_judged_on"] == "synth" and rep["estimate"]["synth"]["dsp"] == 0
    assert rep["accuracy"]["compressed"] >= 0.95


def test_reuse_on_a_cnn_is_a_one_line_error_pointing_to_the_budgets_ii():
    from codesign.app.fold_step import parse_reuse

    with pytest.raises(ConfigError, match=r"^--reuse 4: network 'tiny_cnn' is a streaming CNN, which --reuse does not "
                                          r"fold yet; give the budget an ii"):
        parse_reuse("4", tiny_cnn())
