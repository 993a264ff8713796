"""Yosys synthesis counts, the cache, and the analytic model against them. The random-layer checks use the
per-weight datapath (`datapath="csd"`), the form the per-term model was fitted on; the shared graph's scaling
is fitted and checked on whole networks (bench/estimator_error.py): on layers of a few hundred LUTs it
under-prices by up to ~25 %."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from codesign.board import load_board
from codesign.compress.calibration import random_layers
from codesign.compress.cost import network_cost, total_cost
from codesign.core.arith import csd_count
from codesign.core.fixed import FixedType
from codesign.core.layers import Dense, Output, ReLU
from codesign.core.network import Network
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


# Layers drawn like the calibration sweep's (codesign.compress.calibration) from a seed the fit never saw
# (bench/calibrate_cost.py fits seeds 21-23 and holds out 24). At least 32 nonzero weights: a
# layer of a few dozen LUTs is 15 % off with a handful of LUTs; at most 200, so each
# synthesizes in seconds.
RANDOM_SAMPLE = random_layers(25, 20, min_nonzero=32, max_nonzero=200)
# Known misses, kept visible (strict: they fail the day the model gets them right): fan-in 8
# with 4-bit signed inputs, where ABC packs an output's few input bits into fewer LUTs than
# the per-term pricing expects (+41 % at 270 LUTs, +36 % at 445).
NARROW_INPUT_MISSES = {"s25_sweep5", "s25_sweep7"}
IN_CI = {"s25_sweep0"}  # all twenty (the two known misses among them) with -m slow


def random_sample_params() -> list:
    miss = pytest.mark.xfail(strict=True, reason="4-bit inputs, fan-in 8: the model over-predicts by 36-41 %")
    return [pytest.param(net, id=info["id"], marks=([miss] if info["id"] in NARROW_INPUT_MISSES else [])
                         + ([] if info["id"] in IN_CI else [pytest.mark.slow]))
            for net, info in RANDOM_SAMPLE]


def synth_csd(net: Network) -> dict:
    """Yosys counts of ``net`` on the per-weight datapath, xc7, no DSP."""
    d = emit_verilog(net, datapath="csd")
    return synthesize(d.verilog, d.top, "xc7", dsp=False)


@pytest.fixture(scope="module")
def synth_by_sparsity():
    nets = {s: layer_net(s) for s in (0.0, 0.5, 0.9)}
    with ThreadPoolExecutor(max_workers=2) as pool:  # Yosys is single-threaded
        return {s: (nets[s], r) for s, r in zip(nets, pool.map(synth_csd, nets.values()))}


def test_synthesized_luts_fall_with_sparsity_roughly_in_proportion(synth_by_sparsity):
    luts = {s: r["lut"] for s, (_, r) in synth_by_sparsity.items()}
    print(luts)
    assert luts[0.0] > luts[0.5] > luts[0.9]
    # roughly proportional to the nonzero weights: half the weights, about half the LUTs
    assert 0.35 < luts[0.5] / luts[0.0] < 0.65
    assert luts[0.9] / luts[0.0] < 0.2


def test_analytic_lut_estimate_is_within_15_percent_of_yosys(synth_by_sparsity):
    for s, (net, r) in synth_by_sparsity.items():
        est = total_cost(network_cost(net, load_board("arty-a7-35"), mapping="lut", datapath="csd"))
        print(s, est, r["lut"], r["ff"])
        assert abs(est["lut"] - r["lut"]) <= LUT_TOLERANCE * r["lut"]
        assert abs(est["ff"] - r["ff"]) <= 0.05 * r["ff"] + 2  # the valid bit


@pytest.fixture(scope="module")
def random_sample_synth(request) -> dict[str, dict]:
    """Yosys counts of the layers this run tests, two at a time (Yosys is single-threaded)."""
    wanted = {item.callspec.id for item in request.session.items
              if item.originalname == "test_analytic_lut_estimate_is_within_15_percent_on_a_random_layer"}
    sample = [(net, info["id"]) for net, info in RANDOM_SAMPLE if info["id"] in wanted]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip((i for _, i in sample), pool.map(synth_csd, (n for n, _ in sample))))


@pytest.mark.parametrize("net", random_sample_params())
def test_analytic_lut_estimate_is_within_15_percent_on_a_random_layer(net, random_sample_synth, request):
    r = random_sample_synth[request.node.callspec.id]
    est = total_cost(network_cost(net, load_board("arty-a7-35"), mapping="lut", datapath="csd"))
    print(r["lut"], est["lut"], r["ff"], est["ff"])
    assert abs(est["lut"] - r["lut"]) <= LUT_TOLERANCE * r["lut"]
    assert abs(est["ff"] - r["ff"]) <= 0.05 * r["ff"]


def test_a_repeated_synthesis_comes_from_the_cache(synth_by_sparsity):
    net, first = synth_by_sparsity[0.5]
    d = emit_verilog(net, datapath="csd")
    again = synthesize(d.verilog, d.top, "xc7", dsp=False)
    assert again["cached"] and again["lut"] == first["lut"]


def test_dsp_inference_maps_multiplies_to_dsp48():
    net = layer_net(0.9, wbits=12)
    net.layers[0].mult = "dsp"
    d = emit_verilog(net)
    with_dsp = synthesize(d.verilog, d.top, "xc7", dsp=True)
    without = synthesize(d.verilog, d.top, "xc7", dsp=False)
    assert with_dsp["dsp"] > 0 and without["dsp"] == 0 and without["lut"] > with_dsp["lut"]


def test_dsp_count_follows_yosys_sharing_and_width_rules():
    # input 0 times -45 in two outputs is one DSP (Yosys merges identical multiplies); 45 is
    # another; times 3 or 6 a 4-bit input gives a product narrower than 9 bits: LUT logic
    w = np.zeros((4, 4), dtype=np.int64)
    w[0, 0] = w[0, 1] = -45
    w[1, 2] = 45
    w[2, 0], w[3, 3], w[2, 3] = 3, 6, 5
    wt = FixedType(8, 1)
    d = Dense("fc", w, np.zeros(4, dtype=np.int64), weight_type=wt, bias_type=wt,
              result_type=FixedType(12, 4, True, "RND_CONV", "SAT"), mult="dsp")
    net = Network("dsp_rules", (4,), [d, Output("o")], FixedType(4, 2, True))
    v = emit_verilog(net)
    r = synthesize(v.verilog, v.top, "xc7", dsp=True)
    est = total_cost(network_cost(net, load_board("arty-a7-35")))
    assert r["dsp"] == est["dsp"] == 2


def test_intel_synthesis_counts_alms():
    net = layer_net(0.9)
    d = emit_verilog(net)
    r = synthesize(d.verilog, d.top, "cyclonev", dsp=False)
    assert r["lut"] > 0 and r["ff"] > 0


def test_cell_counting():
    cells = {"LUT2": 3, "LUT6": 2, "FDRE": 5, "CARRY4": 1, "DSP48E1": 2, "RAMB36E1": 1, "IBUF": 9}
    assert count_cells(cells, "xc7") == {"lut": 5, "ff": 5, "dsp": 2, "carry": 1, "bram": 1}


def test_csd_count_is_vectorized_and_exact():
    from codesign.core.arith import csd_digits

    v = np.arange(-500, 500)
    assert np.array_equal(csd_count(v), [len(csd_digits(int(x))) for x in v])
