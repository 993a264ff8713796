"""HGQ's per-element formats through the backends: each element rounded and saturated on its own wire, at its
own binary point into the adder graph, bit-exact against the reference in Verilator."""

import json
from pathlib import Path

import numpy as np
import pytest

import codesign
from codesign.core.fixed import FixedType
from codesign.core.layers import Conv2D, Dense, Flatten, Output, Quant, ReLU
from codesign.core.network import Network
from codesign.core.verify import verification_inputs
from rtl_sim.cosim import cosimulate, describe_mismatch, write_rtl

MODELS = Path(__file__).parent / "models"


def tiny_hgq_cnn() -> Network:
    """A 4x4 image through every per-element case: formats per input column (a position counter picks them), per
    channel inside the stream (RND, SAT), per neuron after a Dense, and width 0 (the constant 0)."""
    r = np.random.default_rng(3)
    cols = np.array([3, 5, 4, 0])
    q_in = Quant("q_in", FixedType(6, 3, True, "RND", "WRAP"),
                 element_width=np.broadcast_to(cols[None, :, None], (4, 4, 1)),
                 element_integer=np.broadcast_to(np.array([1, 2, 2, 0])[None, :, None], (4, 4, 1)),
                 element_signed=np.broadcast_to(np.array([True, True, False, False])[None, :, None], (4, 4, 1)))
    conv = Conv2D("conv", r.integers(-7, 8, size=(2, 2, 1, 2)), r.integers(-3, 4, size=2), weight_type=FixedType(4, 1),
                  bias_type=FixedType(4, 2))
    q_ch = Quant("q_ch", FixedType(7, 3, True, "RND", "SAT"), element_width=np.broadcast_to([[[4, 6]]], (3, 3, 2)),
                 element_integer=np.broadcast_to([[[2, 3]]], (3, 3, 2)),
                 element_signed=np.broadcast_to([[[True, True]]], (3, 3, 2)))
    dense = Dense("fc", r.integers(-15, 16, size=(18, 4)), r.integers(-8, 8, size=4), weight_type=FixedType(5, 1),
                  bias_type=FixedType(5, 2))
    q_out = Quant("q_out", FixedType(8, 5, True, "TRN", "WRAP"), element_width=np.array([5, 0, 7, 4]),
                  element_integer=np.array([4, 0, 5, 2]), element_signed=np.array([True, False, True, False]))
    layers = [q_in, conv, q_ch, ReLU("relu"), Flatten("flat"), dense, q_out, Output("out")]
    return Network("tiny_hgq", (4, 4, 1), layers, FixedType(7, 2, True, "TRN", "WRAP"))


def tiny_hgq_mlp() -> Network:
    """The flat (MLP) emitter's case: a per-element Quant on the input and after each Dense."""
    r = np.random.default_rng(4)
    q_in = Quant("q_in", FixedType(6, 3, True, "RND", "SAT"), element_width=np.array([4, 2, 6, 0, 3]),
                 element_integer=np.array([2, 1, 3, 0, 2]), element_signed=np.array([True, False, True, True, False]))
    d1 = Dense("d1", r.integers(-31, 32, size=(5, 6)), r.integers(-8, 8, size=6), weight_type=FixedType(6, 2),
               bias_type=FixedType(4, 2))
    q1 = Quant("q1", FixedType(7, 4, False, "TRN", "WRAP"), element_width=np.array([3, 6, 2, 0, 4, 5]),
               element_integer=np.array([2, 4, 1, 0, 3, 2]), element_signed=np.zeros(6, dtype=bool))
    d2 = Dense("d2", r.integers(-7, 8, size=(6, 3)), np.zeros(3, dtype=np.int64), weight_type=FixedType(4, 1),
               bias_type=FixedType(2, 1))
    return Network("tiny_hgq_mlp", (5,), [q_in, d1, ReLU("r1"), q1, d2, Output("out")], FixedType(8, 4))


@pytest.mark.parametrize("quant, overflow", [("RND", "WRAP"), ("TRN", "WRAP"), ("RND", "SAT"), ("TRN", "SAT")])
def test_the_carrier_input_type_then_the_per_element_cast_rounds_floats_as_hgq_does(quant, overflow):
    """Truncating to one more fractional bit, then rounding per element, equals rounding the float per element."""
    from codesign.core import fixed
    from codesign.importers.hgq import carrier_type

    q = Quant("q", FixedType(7, 3, True, quant, overflow), element_width=np.array([3, 7, 5, 1, 0]),
              element_integer=np.array([1, 3, 2, 1, 0]), element_signed=np.array([False, True, True, False, False]))
    net = Network("n", (5,), [q, Output("out")], carrier_type(q))
    r = np.random.default_rng(6)
    x = np.concatenate([r.uniform(-20, 20, size=(4000, 5)), np.round(r.uniform(-20, 20, size=(2000, 5)) * 16) / 16])
    want = np.zeros_like(x)  # HGQ's forward: each element's float rounded straight to its own format
    for j in range(5):
        w, i, sg = int(q.element_width[j]), int(q.element_integer[j]), bool(q.element_signed[j])
        if w:
            t = FixedType(w, i, sg, quant, overflow)
            want[:, j] = fixed.to_float(fixed.quantize(x[:, j], t), t)
    assert np.array_equal(net.forward(x), want)


def test_a_half_to_even_per_element_input_quantizer_is_refused():
    from codesign.errors import UnsupportedLayerError
    from codesign.importers.hgq import carrier_type

    q = Quant("q", FixedType(4, 2, True, "RND_CONV", "WRAP"), element_width=np.array([3, 4]),
              element_integer=np.array([1, 2]), element_signed=np.array([True, True]))
    with pytest.raises(UnsupportedLayerError, match="layer 'q' .*half to even"):
        carrier_type(q)


@pytest.mark.parametrize("build", [tiny_hgq_cnn, pytest.param(tiny_hgq_mlp, marks=pytest.mark.slow)])  # the MLP's
# flat emitter shares cast_each and the adder-graph entry with the stream: one Verilator build in CI
def test_per_element_formats_cosimulate_bit_exact(build, tmp_path):
    net = build()
    write_rtl(net, tmp_path / "rtl")
    q = verification_inputs(net, None, 2000)
    r = cosimulate(net, tmp_path / "rtl", tmp_path / "cosim", q, mode="bulk")
    assert r.samples == 2000 and r.mismatches == 0 and r.bit_exact, describe_mismatch(r)


def test_elements_enter_the_adder_graph_at_their_own_binary_point():
    """An element held with k zero low bits enters the graph k bits narrower, its weights k bits up."""
    from rtl_sim.verilog import emit_verilog

    net = tiny_hgq_mlp()
    v = emit_verilog(net).verilog
    assert "_z_" in v  # the narrowed views of the per-element inputs


@pytest.mark.slow  # a project write and a g++ build each (~30 s here); CI co-simulates the per-element RTL above
@pytest.mark.parametrize("build", [tiny_hgq_cnn, tiny_hgq_mlp])  # the CNN through our io_stream layer, the MLP
# through hls4ml's own FixedPointQuantizer (fused into the next distributed-arithmetic kernel)
def test_per_element_formats_c_simulate_bit_exact(build, tmp_path):
    from codesign.board import load_board
    from hls.csim import csim_check
    from hls.project import write_project

    net = build()
    p = write_project(net, load_board("vcu118"), "vitis", tmp_path / "hls")
    r = csim_check(p, net, verification_inputs(net, None, 2000), cache=tmp_path / "cache")
    assert r["samples"] == 2000 and r["mismatches"] == 0 and r["csim_bit_exact"], r["first_mismatch"]


@pytest.mark.parametrize("build", [tiny_hgq_cnn, tiny_hgq_mlp])
def test_the_hls_project_keeps_each_per_element_quantizer_as_a_layer_in_its_envelope(build):
    """The hls4ml project's plan (no hls4ml run): each per-element Quant is a layer of its own, its result the
    envelope its cast is held in (the C simulation of the generated project is the slow test above)."""
    from hls.project import hls_layers, layer_precisions

    net = build()
    layers = hls_layers(net)
    per = [l for l in net.layers if isinstance(l, Quant) and l.per_element]
    assert [l.name for l in layers if isinstance(l, Quant)] == [l.name for l in per]
    precisions = layer_precisions(net, layers)
    assert all(precisions[l.name] == {"result": l.result_type.to_hls()} for l in per)


def test_per_element_formats_on_intel_backends_are_refused_naming_the_layer(tmp_path):
    from codesign.board import load_board
    from codesign.errors import BackendError
    from hls.project import write_project

    with pytest.raises(BackendError, match=r"layer 'q_in': per-element quantizer formats \(HGQ\) are built with"):
        write_project(tiny_hgq_cnn(), load_board("de10-nano"), "quartus", tmp_path / "hls")


@pytest.mark.parametrize("build", [tiny_hgq_cnn, tiny_hgq_mlp])
def test_per_layer_synthesis_units_build_the_same_adder_graphs_as_the_whole_design(build):
    """Each stage synthesized alone takes its inputs in their HGQ formats, not the tensor's envelope."""
    from rtl_sim.stream import emit_stream_verilog, is_streaming
    from rtl_sim.synth import stage_networks
    from rtl_sim.verilog import emit_verilog

    def emit(n, **kw):
        return emit_stream_verilog(n, **kw) if is_streaming(n) else emit_verilog(n)

    net = build()
    whole = emit(net).multipliers
    parts = {k: v for _, sub in stage_networks(net) for k, v in emit(sub, stream_out=True).multipliers.items()}
    assert parts == whole


def test_cost_model_drops_the_weights_of_width_0_elements():
    """An element of width 0 is the constant 0: the weights reading it are priced as the nothing they build."""
    from codesign.board import load_board
    from codesign.compress.cost import network_cost
    from codesign.compress.elements import constant_rows

    net = tiny_hgq_mlp()
    assert {k: list(np.flatnonzero(v)) for k, v in constant_rows(net).items()} == {"d1": [3], "d2": [3]}
    wide = tiny_hgq_mlp()
    for q in (wide.layers[0], wide.layers[3]):
        q.element_width = np.where(q.element_width == 0, 2, q.element_width)
        q.element_integer = np.where(q.element_width == 2, 1, q.element_integer)
    board = load_board("vcu118")
    assert network_cost(net, board)["d1"].lut < network_cost(wide, board)["d1"].lut


def test_qonnx_export_refuses_per_element_formats_saying_why(tmp_path):
    from codesign.core.onnx_export import network_to_onnx
    from codesign.errors import UnsupportedLayerError

    with pytest.raises(UnsupportedLayerError, match=r"layer 'q_in'.*one bit width and one signedness"):
        network_to_onnx(tiny_hgq_mlp(), tmp_path / "m.onnx")


@pytest.mark.slow  # two MNIST CNNs of 784-cycle images: about a minute of Verilator each
@pytest.mark.parametrize("name", ["hgq_mnist_homogeneous", "hgq_mnist_heterogeneous"])
def test_hgq_mnist_examples_cosimulate_bit_exact_on_2000_samples(name, tmp_path):
    net = codesign.load(MODELS / f"{name}.h5")
    write_rtl(net, tmp_path / "rtl")
    q = verification_inputs(net, None, 2000)
    r = cosimulate(net, tmp_path / "rtl", tmp_path / "cosim", q, mode="bulk")
    assert r.samples == 2000 and r.mismatches == 0 and r.bit_exact, describe_mismatch(r)


@pytest.mark.slow  # the whole flow on an MNIST CNN: HLS project, g++ build, Verilator build (about 6 minutes here)
def test_the_heterogeneous_hgq_example_goes_through_the_flow_bit_exact(tmp_path):
    from codesign.app.flow import run_flow

    run_flow(tmp_path / "run", str(MODELS / "hgq_mnist_heterogeneous.h5"), None, "vcu118", samples=2000, synth=False,
             energy=False)
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["hls"]["csim_bit_exact"] and rep["hls"]["samples"] == 2000 and rep["hls"]["mismatches"] == 0
    assert rep["cosim"]["bit_exact"] and rep["cosim"]["samples"] == 2000 and rep["cosim"]["mismatches"] == 0

