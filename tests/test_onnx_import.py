"""ONNX import: hls4ml's float examples match onnxruntime, QONNX quantizers are exact, refusals name the node."""

import json

import numpy as np
import pytest

import codesign
from codesign.app.cli import main
from codesign.core.fixed import FixedType
from codesign.importers.onnx_import import network_from_onnx
from tests.conftest import MODELS
from tests.qonnx_graphs import Graph, run_onnxruntime, run_qonnx
from tests.test_cli import assert_one_line_error

EXAMPLES = {"two_layer_keras": ["Dense", "ReLU", "Dense", "Output"],
            "two_layer_pytorch": ["Dense", "ReLU", "Dense", "Output"],
            "conv1d_small_keras": ["Conv1D", "ReLU"] * 3 + ["Flatten", "Dense", "ReLU", "Dense", "Output"]}


@pytest.mark.parametrize("name", EXAMPLES)
def test_hls4ml_float_onnx_examples_match_onnxruntime(name, rng):
    path = MODELS / "onnx" / f"{name}.onnx"
    net = codesign.load(path)
    assert [l.kind for l in net.layers] == EXAMPLES[name]
    x = rng.normal(0, 1, size=(200, *net.input_shape)).astype(np.float32)
    theirs = run_onnxruntime(path, x)
    ours = net.predict(x.astype(np.float64))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert np.array_equal(ours.argmax(-1), theirs.argmax(-1)) and np.array_equal(ours > 0.5, theirs > 0.5)


def test_the_keras_conv1d_example_keeps_its_channels_last_input_and_same_padding():
    net = codesign.load(MODELS / "onnx" / "conv1d_small_keras.onnx")
    assert net.input_shape == (10, 4) and net.metadata["input_layout"] == "channels_last"
    assert [l.padding for l in net.layers if l.kind == "Conv1D"] == ["same"] * 3
    assert net.head == "softmax"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["two_layer_keras", "two_layer_pytorch"])
def test_hls4ml_float_onnx_examples_go_through_the_flow_without_data(name, tmp_path):
    out = tmp_path / "run"
    assert main(["flow", str(MODELS / "onnx" / f"{name}.onnx"), "--out", str(out), "--no-synth", "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["precision"].startswith("default precision")
    assert rep["hls"]["csim_bit_exact"] is True and rep["hls"]["samples"] >= 10000
    assert rep["cosim"]["bit_exact"] is True and rep["cosim"]["samples"] >= 10000


# ---- QONNX quantizers against qonnx's own executor ------------------------------------------------
def _mixed(rng):
    """Per-channel 4-bit narrow weights, a float bias, a 3-bit HALF_UP ReLU, bipolar weights, a 12-bit bias."""
    g = Graph(6).act_quant("in_q", 2**-4, 8)
    g.dense(rng.normal(0, 0.5, (6, 5)), "fc1", w_scale=[2**-2, 2**-3, 2**-2, 2**-1, 2**-3], w_bits=4, narrow=1,
            bias=np.round(rng.normal(0, 1, 5) * 1024) / 1024)
    g.data("Relu", "relu1").act_quant("q1", 0.5, 3, signed=0, mode="HALF_UP")
    g.dense(rng.normal(0, 1, (5, 3)), "fc2", w_scale=0.5, bipolar=True, bias=rng.normal(0, 1, 3), b_scale=2**-6,
            b_bits=12)
    return g


def _trunc(rng):
    """A Trunc (v2) that first rounds the accumulator to a coarser scale, then floors to 6 bits."""
    g = Graph(4).act_quant("in_q", 2**-5, 8)
    g.dense(rng.normal(0, 1, (4, 3)), "fc1", w_scale=2**-4, w_bits=6, bias=rng.normal(0, 1, 3), b_scale=2**-9)
    ins = [g.const(2**-6), g.const(0.0), g.const(16.0), g.const(2**-3), g.const(6.0)]
    g.data("Trunc", "trunc", *ins, rounding_mode="FLOOR", signed=1, narrow=0)
    return g


def _modes(rng):
    """FLOOR on signed values, narrow on values a ReLU made non-negative, DOWN on unsigned, IntQuant."""
    g = Graph(5).act_quant("in_q", 2**-3, 10, mode="FLOOR")
    g.dense(rng.normal(0, 1, (5, 4)), "fc1", w_scale=2**-3, w_bits=5, bias=rng.normal(0, 1, 4), b_scale=2**-6)
    g.act_quant("q_floor", 2**-2, 7, mode="FLOOR").data("Relu", "relu").act_quant("q_narrow", 2**-1, 4, narrow=1)
    g.act_quant("q_down", 2**-0, 3, signed=0, mode="DOWN", op="IntQuant")
    return g


def _cnn(rng):
    """Channels-first (N, 1, 8, 8): Conv 3x3 'same', ReLU to 4 bits, 2x2 max pooling, Flatten, Gemm."""
    g = Graph((1, 8, 8)).act_quant("in_q", 2**-4, 6)
    g.conv(rng.normal(0, 0.5, (4, 1, 3, 3)), "conv1", 2**-3, 5, rng.normal(0, 1, 4), 2**-7, pads=[1, 1, 1, 1])
    g.data("Relu", "relu1").act_quant("q1", 2**-2, 4, signed=0)
    g.data("MaxPool", "pool1", kernel_shape=[2, 2], strides=[2, 2]).data("Flatten", "flat", axis=1)
    g.dense(rng.normal(0, 0.3, (64, 3)), "fc1", w_scale=2**-4, w_bits=6, bias=rng.normal(0, 1, 3), b_scale=2**-6)
    return g


@pytest.mark.parametrize("build", [_mixed, _trunc, _modes, _cnn], ids=["mixed", "trunc", "modes", "cnn"])
def test_qonnx_quantizers_import_to_what_qonnx_executes(build, rng):
    g = build(rng)
    net = network_from_onnx(g.model())
    x = rng.normal(0, 3, (2000, *g.shape)) * rng.choice([0.1, 1, 4], (2000,) + (1,) * len(g.shape))
    x = x.astype(np.float32)
    ours = np.moveaxis(x, 1, -1) if net.metadata["input_layout"] == "channels_first" else x  # the IR is channels-last
    assert np.array_equal(net.forward(ours.astype(np.float64)), run_qonnx(g.model(), x))


def test_a_channels_first_cnn_becomes_channels_last_layers(rng):
    net = network_from_onnx(_cnn(rng).model())
    assert [l.kind for l in net.layers] == ["Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense", "Output"]
    assert net.input_shape == (8, 8, 1) and net.metadata["input_layout"] == "channels_first"
    assert net.layer("conv1").padding == "same" and net.layer("pool1").strides == (2, 2)


def test_qonnx_types_are_the_quantizers_types(rng):
    net = network_from_onnx(_mixed(rng).model())
    assert net.input_type == FixedType(8, 4, True, "RND_CONV", "SAT")
    fc1, relu, fc2 = net.layer("fc1"), net.layer("relu1"), net.layer("fc2")
    assert fc1.weight_type == FixedType(6, 3) and relu.result_type == FixedType(3, 2, False, "RND", "SAT")
    assert fc2.weight_type == FixedType(2, 1) and fc2.bias_type == FixedType(12, 6)
    assert set(np.unique(fc2.weight)) <= {-1, 1}


def test_a_graph_without_an_input_quant_gets_the_given_input_type(rng):
    g = Graph(3)
    g.dense(rng.normal(0, 1, (3, 2)), "fc1", w_scale=2**-4, w_bits=6)
    assert network_from_onnx(g.model()).input_type == FixedType(16, 6, True, "RND_CONV", "SAT")
    net = network_from_onnx(g.model(), input_type="ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
    assert net.input_type == FixedType(8, 3, True, "RND_CONV", "SAT") and "input_type_note" not in net.metadata


# ---- refusals: exit 2 and one line naming the node ---------------------------------------------------
def _refused(kind, rng):
    w = rng.normal(0, 1, (4, 3))
    if kind == "scale":
        return Graph(4).act_quant("in_q", 2**-4, 8).dense(w, "fc1", w_scale=0.3, w_bits=4)
    if kind == "zero_point":
        return Graph(4).act_quant("in_q", 2**-4, 8, zp=1.0)
    if kind == "op":
        return Graph(4).act_quant("in_q", 2**-4, 8).data("Tanh", "act")
    if kind == "pool":
        return Graph((1, 8, 8)).data("GlobalMaxPool", "pool")
    if kind == "narrow":
        return Graph(4).act_quant("in_q", 2**-4, 8, narrow=1)
    if kind == "bipolar":
        return Graph(4).act_quant("in_q", 2**-4, 8).data("BipolarQuant", "sign", Graph(1).const(1.0, "one"))
    if kind == "rounding":
        return Graph(4).act_quant("in_q", 2**-4, 8).dense(w, "fc1", w_scale=2**-3, w_bits=6).act_quant(
            "q1", 2**-2, 6, mode="CEIL")
    if kind == "trunc_v1":
        g = Graph(4, qonnx_version=1).act_quant("in_q", 2**-4, 8)
        return g.data("Trunc", "trunc", g.const(2**-4), g.const(0.0), g.const(8.0), g.const(4.0), rounding_mode="FLOOR")
    if kind == "per_channel":
        return Graph(4).act_quant("in_q", [2**-4, 2**-3, 2**-4, 2**-4], 8)
    if kind == "float_weights":
        return Graph(4).act_quant("in_q", 2**-4, 8).dense(w, "fc1")
    raise AssertionError(kind)


REFUSALS = {
    "scale": r"node 'fc1\.wq' \(Quant\): scale 0\.30000001\d* is not a power of two.*use power-of-two scales",
    "zero_point": r"node 'in_q' \(Quant\): zero-point 1\.0 is not zero.*use a symmetric quantizer",
    "op": r"node 'act' \(Tanh\): unsupported operation; supported: Gemm, MatMul",
    "pool": r"node 'pool' \(GlobalMaxPool\): GlobalMaxPool has no equivalent in the IR; use MaxPool, AveragePool",
    "narrow": r"node 'in_q' \(Quant\): narrow=1 clips to \[-127, 127\].*narrow_range=False",
    "bipolar": r"node 'sign' \(BipolarQuant\): BipolarQuant on activations is a sign function.*2-bit Quant",
    "rounding": r"node 'q1' \(Quant\): rounding_mode 'CEIL' has no ap_fixed equivalent.*use ROUND",
    "trunc_v1": r"node 'trunc' \(Trunc\): Trunc version 1 rescales.*opset 2",
    "per_channel": r"node 'in_q' \(Quant\): per-channel activation scales .*one power-of-two scale per tensor",
    "float_weights": r"node 'fc1' \(MatMul\): the weights have no Quant node.*quantize them",
}


@pytest.mark.parametrize("kind", REFUSALS)
def test_each_refusal_is_one_line_naming_the_node_and_exit_2(kind, rng, tmp_path, capsys):
    model = _refused(kind, rng).save(tmp_path / f"{kind}.onnx")
    code = main(["flow", str(model), "--out", str(tmp_path / "out"), "--quiet"])
    assert_one_line_error(code, capsys.readouterr().err, REFUSALS[kind])
    assert not (tmp_path / "out" / "network.json").exists()


def test_a_file_that_is_not_onnx_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00not a protobuf\xff" * 10)
    code = main(["flow", str(bad), "--out", str(tmp_path / "out"), "--quiet"])
    assert_one_line_error(code, capsys.readouterr().err, r"model\.onnx: not a readable ONNX file")


@pytest.mark.slow
def test_the_conv1d_example_goes_through_the_flow_bit_exact(tmp_path):
    code = main(["flow", str(MODELS / "onnx" / "conv1d_small_keras.onnx"), "--out", str(tmp_path / "out"), "--quiet"])
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert code == 0 and rep["hls"]["csim_bit_exact"] and rep["cosim"]["bit_exact"]
