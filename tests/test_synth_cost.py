"""Yosys synthesis counts, the cache, and the analytic model against them."""

import numpy as np
import pytest

from codesign.board import load_board
from codesign.cost import csd_count, network_cost, total_cost
from codesign.fixed import FixedType
from codesign.layers import Dense, Output, ReLU
from codesign.network import Network
from rtl_sim.synth import count_cells, synthesize
from rtl_sim.verilog import emit_verilog

LUT_TOLERANCE = 0.15  # issue 7: analytic LUTs within 15 % of Yosys


def layer_net(sparsity: float, seed: int = 11, n_in: int = 16, n_out: int = 8, wbits: int = 5, xbits: int = 8,
              signed: bool = True, relu: bool = True) -> Network:
    rng = np.random.default_rng(seed)
    wt = FixedType(wbits, 1)
    w = rng.integers(wt.min_int, wt.max_int + 1, size=(n_in, n_out))
    w[w == 0] = 1
    order = rng.permutation(w.size)[: int(round(sparsity * w.size))]
    w.ravel()[order] = 0
    d = Dense("fc", w, rng.integers(max(wt.min_int, -8), min(wt.max_int, 7) + 1, size=n_out), weight_type=wt, bias_type=wt,
              result_type=FixedType(10, 4, True, "RND_CONV", "SAT"), mult="lut")
    layers = [d] + ([ReLU("relu")] if relu else []) + [Output("o")]
    return Network(f"layer_s{int(sparsity * 100)}", (n_in,), layers, FixedType(xbits, min(xbits - 1, 2), signed))


# A fixed sample over the calibration sweep's space (bench/calibrate_cost.py prints the whole
# table): fan-in, fan-out, sparsity, weight bits, input bits, signed input, ReLU.
# Known miss, kept visible: with 12-16-bit inputs the model is off by up to ~20 % either way
# (dense layers over, very sparse ones under); 88 of the sweep's 96 layers are within 15 %.
WIDE_INPUT_MISS = pytest.mark.xfail(strict=True, reason="model over-predicts this wide-input layer by 18 %")
RANDOM_SAMPLE = [(16, 8, 0.5, 3, 4, False, True), (16, 16, 0.7, 4, 8, True, True), (32, 8, 0.7, 6, 6, True, False),
                 (8, 16, 0.5, 8, 6, False, True), pytest.param(16, 8, 0.7, 4, 12, True, False, marks=WIDE_INPUT_MISS),
                 (32, 4, 0.5, 3, 16, False, True), (16, 16, 0.8, 6, 8, False, False), (8, 8, 0.3, 8, 4, True, True)]


@pytest.fixture(scope="module")
def synth_by_sparsity():
    out = {}
    for s in (0.0, 0.5, 0.9):
        net = layer_net(s)
        d = emit_verilog(net)
        out[s] = (net, synthesize(d.verilog, d.top, "xc7", dsp=False))
    return out


def test_synthesized_luts_fall_with_sparsity_roughly_in_proportion(synth_by_sparsity):
    luts = {s: r["lut"] for s, (_, r) in synth_by_sparsity.items()}
    print(luts)
    assert luts[0.0] > luts[0.5] > luts[0.9]
    # roughly proportional to the nonzero weights: half the weights, about half the LUTs
    assert 0.35 < luts[0.5] / luts[0.0] < 0.65
    assert luts[0.9] / luts[0.0] < 0.2


def test_analytic_lut_estimate_is_within_15_percent_of_yosys(synth_by_sparsity):
    for s, (net, r) in synth_by_sparsity.items():
        est = total_cost(network_cost(net, load_board("arty-a7-35"), mapping="lut"))
        print(s, est, r["lut"], r["ff"])
        assert abs(est["lut"] - r["lut"]) <= LUT_TOLERANCE * r["lut"]
        assert abs(est["ff"] - r["ff"]) <= 0.05 * r["ff"] + 2  # the valid bit


@pytest.mark.parametrize("n_in, n_out, sparsity, wbits, xbits, signed, relu", RANDOM_SAMPLE)
def test_analytic_lut_estimate_is_within_15_percent_on_a_random_layer(n_in, n_out, sparsity, wbits, xbits, signed, relu):
    net = layer_net(sparsity, seed=n_in * n_out + wbits, n_in=n_in, n_out=n_out, wbits=wbits, xbits=xbits,
                    signed=signed, relu=relu)
    d = emit_verilog(net)
    r = synthesize(d.verilog, d.top, "xc7", dsp=False)
    est = total_cost(network_cost(net, load_board("arty-a7-35"), mapping="lut"))
    print(r["lut"], est["lut"], r["ff"], est["ff"])
    assert abs(est["lut"] - r["lut"]) <= LUT_TOLERANCE * r["lut"]
    assert abs(est["ff"] - r["ff"]) <= 0.05 * r["ff"]


def test_a_repeated_synthesis_comes_from_the_cache(synth_by_sparsity):
    net, first = synth_by_sparsity[0.5]
    d = emit_verilog(net)
    again = synthesize(d.verilog, d.top, "xc7", dsp=False)
    assert again["cached"] and again["lut"] == first["lut"]


def test_dsp_inference_maps_multiplies_to_dsp48():
    net = layer_net(0.9, wbits=12)
    net.layers[0].mult = "dsp"
    d = emit_verilog(net)
    with_dsp = synthesize(d.verilog, d.top, "xc7", dsp=True)
    without = synthesize(d.verilog, d.top, "xc7", dsp=False)
    assert with_dsp["dsp"] > 0 and without["dsp"] == 0 and without["lut"] > with_dsp["lut"]


def test_intel_synthesis_counts_alms():
    net = layer_net(0.9)
    d = emit_verilog(net)
    r = synthesize(d.verilog, d.top, "cyclonev", dsp=False)
    assert r["lut"] > 0 and r["ff"] > 0


def test_cell_counting():
    cells = {"LUT2": 3, "LUT6": 2, "FDRE": 5, "CARRY4": 1, "DSP48E1": 2, "RAMB36E1": 1, "IBUF": 9}
    assert count_cells(cells, "xc7") == {"lut": 5, "ff": 5, "dsp": 2, "carry": 1, "bram": 1}


def test_csd_count_is_vectorized_and_exact():
    from rtl_sim.verilog import csd_digits

    v = np.arange(-500, 500)
    assert np.array_equal(csd_count(v), [len(csd_digits(int(x))) for x in v])
