"""Real model files the importers used to refuse (issue 29): an old torch's ONNX opset-6 BatchNorm MLP,
QKeras-for-Keras-3 archives with new no-op quantizer keys, and po2 weights on a rounding boundary."""

from __future__ import annotations

import re

import numpy as np
import pytest

import codesign
from codesign.errors import UnsupportedLayerError
from codesign.importers.onnx_import import network_from_onnx
from tests.conftest import MODELS
from tests.qonnx_graphs import Graph

BN_OPSET6 = MODELS / "onnx" / "bn_mlp_opset6.onnx"


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data / 16.0, d.target  # as make_bn_opset6.py trained it


# ---- ONNX: Unsqueeze/Squeeze are edges ---------------------------------------------------------------
def _onnx_float64(model, x: np.ndarray) -> np.ndarray:
    """The ONNX semantics of the nodes these files use, in float64 numpy."""
    from onnx import helper, numpy_helper

    env = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    env[model.graph.input[0].name] = x
    for n in model.graph.node:
        a = {at.name: helper.get_attribute_value(at) for at in n.attribute}
        v = [env[i] for i in n.input]
        if n.op_type == "Gemm":
            y = a.get("alpha", 1.0) * v[0] @ (v[1].T if a.get("transB") else v[1]) + a.get("beta", 1.0) * v[2]
        elif n.op_type in ("Unsqueeze", "Squeeze"):
            axes = tuple(int(i) for i in (a["axes"] if "axes" in a else v[1]))
            y = np.expand_dims(v[0], axes) if n.op_type == "Unsqueeze" else np.squeeze(v[0], axes)
        elif n.op_type == "BatchNormalization":
            g, b, m, var = (p.reshape((1, -1) + (1,) * (v[0].ndim - 2)) for p in v[1:5])
            y = (v[0] - m) / np.sqrt(var + a.get("epsilon", 1e-5)) * g + b
        elif n.op_type == "Relu":
            y = np.maximum(v[0], 0)
        else:
            raise AssertionError(n.op_type)
        env[n.output[0]] = y
    return env[model.graph.output[0].name]


def test_an_old_torch_opset6_batchnorm_mlp_imports_with_its_unsqueeze_and_squeeze_as_edges():
    import onnx

    net = codesign.load(BN_OPSET6)
    assert [l.kind for l in net.layers] == ["Dense", "BatchNorm", "ReLU"] * 2 + ["Dense", "Output"]
    x, y = _digits()
    ours = net.predict(x)
    np.testing.assert_allclose(ours, _onnx_float64(onnx.load(str(BN_OPSET6)), x), rtol=1e-9, atol=1e-9)
    assert np.mean(ours.argmax(-1) == y) > 0.95


def test_onnxruntime_refuses_opset6_so_the_file_converted_to_opset13_with_axes_inputs_is_checked_against_it():
    import onnx
    import onnxruntime as ort
    from onnx import version_converter

    m = onnx.load(str(BN_OPSET6))
    with pytest.raises(Exception, match=r"Could not find an implementation for Gemm\(6\)"):
        ort.InferenceSession(m.SerializeToString())
    m13 = version_converter.convert_version(m, 13)
    assert all(len(n.input) == 2 and not n.attribute for n in m13.graph.node if n.op_type in ("Unsqueeze", "Squeeze"))
    for v in (m13.graph.input[0], m13.graph.output[0]):
        v.type.tensor_type.shape.dim[0].dim_param = "N"  # the old exporter fixed the batch at the dummy input's 1
    x = _digits()[0].astype(np.float32)
    theirs = ort.InferenceSession(m13.SerializeToString()).run(None, {m13.graph.input[0].name: x})[0]
    ours = network_from_onnx(m13).predict(x.astype(np.float64))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ours, codesign.load(BN_OPSET6).predict(x.astype(np.float64)))


def test_squeezes_after_global_average_pooling_are_views_and_match_onnxruntime(rng):
    """torch's ``x.mean((2, 3), keepdim=True).squeeze(3).squeeze(2)``: no Flatten layer, the same result."""
    import onnxruntime as ort
    from onnx import numpy_helper

    g = Graph((2, 4, 4))
    g.data("Conv", "conv1", g.const(rng.normal(0, 0.5, (4, 2, 3, 3)), "conv1.weight"),
           g.const(rng.normal(0, 0.1, 4), "conv1.bias"), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g.data("Relu", "relu1").data("GlobalAveragePool", "gap")
    g.data("Squeeze", "sq3", g.const([3.0], "axes3")).data("Squeeze", "sq2", g.const([2.0], "axes2"))
    g.data("Gemm", "fc", g.const(rng.normal(0, 0.5, (3, 4)), "fc.weight"), g.const(rng.normal(0, 0.1, 3), "fc.bias"),
           transB=1)
    m = g.model()
    inits = [numpy_helper.from_array(numpy_helper.to_array(i).astype(np.int64), i.name) if i.name.startswith("axes")
             else i for i in m.graph.initializer]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    net = network_from_onnx(m)
    assert [l.kind for l in net.layers] == ["Conv2D", "ReLU", "GlobalAvgPool2D", "Dense", "Output"]
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    x = rng.normal(0, 1, (50, 2, 4, 4)).astype(np.float32)
    theirs = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(net.predict(np.moveaxis(x, 1, -1).astype(np.float64)), theirs, rtol=1e-5, atol=1e-6)


def _view_refused(kind: str) -> Graph:
    g = Graph(4)
    if kind == "dense_on_view":
        return g.data("Unsqueeze", "u", g.const([2.0])).data("Gemm", "fc", g.const(np.ones((1, 3))))
    if kind == "squeeze_nonunit":
        return g.data("Squeeze", "s", g.const([1.0]))
    if kind == "batch_axis":
        return g.data("Unsqueeze", "u", g.const([0.0]))
    if kind == "layout":
        return g.data("Reshape", "r", g.const([1.0, 2.0, 2.0]))
    raise AssertionError(kind)


VIEW_REFUSALS = {
    "dense_on_view": r"^node 'fc' \(Gemm\): Gemm on the ONNX shape \[4, 1\], a view with size-1 axes \(Unsqueeze, "
                     r"Reshape or GlobalAveragePool\) the IR does not have; Squeeze or Flatten it first$",
    "squeeze_nonunit": r"^node 's' \(Squeeze\): Squeeze of axes \[1\] of shape \[0, 4\]: only size-1 axes",
    "batch_axis": r"^node 'u' \(Unsqueeze\): axes \[0\] of a rank-3 tensor must not include the batch axis",
    "layout": r"^node 'r' \(Reshape\): only a reshape to \(N, features\) is supported, got \[1, 2, 2\]$",
}


@pytest.mark.parametrize("kind", VIEW_REFUSALS)
def test_a_shape_node_that_changes_the_layout_is_refused_naming_the_node(kind):
    with pytest.raises(UnsupportedLayerError, match=VIEW_REFUSALS[kind]):
        network_from_onnx(_view_refused(kind).model())


# ---- QKeras po2 weights on a rounding boundary: decided in TensorFlow's float32 --------------------------
MNIST_PO2 = MODELS / "qkeras_mnist_dense.json"


def _mnist_like(net) -> np.ndarray:
    """The digits drawn 3x larger in a 28x28 frame, and random images on the input type's grid."""
    from codesign.core import fixed
    from sklearn.datasets import load_digits

    img = np.kron(load_digits().images / 16.0, np.ones((3, 3)))
    img = np.pad(img, ((0, 0), (2, 2), (2, 2))).reshape(len(img), 784)
    rand = np.random.default_rng(7).random((300, 784))
    return np.concatenate([img, fixed.to_float(net.quantize_input(rand), net.input_type)])


def test_tf_log_f32_is_tensorflows_float32_log_bit_for_bit(rng):
    from codesign.importers.keras_live import import_tf
    from codesign.importers.qkeras_quant import tf_log_f32

    tf = import_tf()
    near = [(np.float32(2.0 ** (k + 0.5)).view(np.int32) + np.arange(-500, 500, dtype=np.int32)).view(np.float32)
            for k in range(-12, 2)]
    for x in [np.concatenate([*near, (rng.random(20000) * 4 + 1e-7).astype(np.float32)]),
              *[(rng.random(n) * 2 + 1e-7).astype(np.float32) for n in (1, 7, 13, 805)]]:
        assert np.array_equal(tf_log_f32(x), tf.math.log(tf.constant(x)).numpy())


def test_hls4ml_qkeras_mnist_po2_example_imports_equal_to_qkeras_and_notes_its_boundary_weight():
    from tests.keras_reference import keras_model

    net = codesign.load(MNIST_PO2)
    assert net.metadata["import_notes"] == [
        "layer 'q_dense_2': 1 kernel weight(s) of quantized_po2 lay within 1e-05 of a rounding boundary of log2|w|, "
        "decided by QKeras's float32 arithmetic (TensorFlow's x86-64 log): 1 up, 0 down: "
        "[688,11] -0.04419439658522606 -> 2**-4 (up)"]
    model = keras_model(MNIST_PO2, floatx="float32")  # QKeras's quantized_po2 does not run in float64
    for layer in (l for l in model.layers if getattr(l, "kernel_quantizer_internal", None) is not None):
        ours = net.layer(layer.name)
        want = layer.kernel_quantizer_internal(layer.kernel).numpy().astype(np.float64)
        assert np.array_equal(np.ldexp(ours.weight.astype(np.float64), -ours.weight_type.frac), want)
    x = _mnist_like(net)
    # every sum is exact in float32 here (2-bit inputs, 4-bit po2 weights, 784 terms), so QKeras's outputs are exact
    logits = type(model)(model.inputs, model.layers[-2].output)  # before the softmax
    assert np.array_equal(net.forward(x), logits(x.astype(np.float32)).numpy().astype(np.float64))


# ---- QKeras for Keras 3: new quantizer keys at their no-op values ------------------------------------------
KERNEL_Q = {"bits": 6, "integer": 0, "symmetric": 0, "alpha": 1, "keep_negative": True,
            "use_stochastic_rounding": False, "qnoise_factor": 1.0, "post_training_scale": None}


def _quantizer(cfg: dict) -> dict:
    """A quantizer as qkerasV3's layers serialize it (``keras.saving.serialize_keras_object``)."""
    return {"module": "qkeras.quantizers", "class_name": "quantized_bits", "config": cfg,
            "registered_name": "qkeras>quantized_bits"}


def _qkeras3_archive(path, kernel_q: dict, rng) -> tuple:
    """A ``.keras`` archive as QKeras for Keras 3 (github.com/fastmachinelearning/qkerasV3) writes it: Keras 3 itself
    saves the float twin (so metadata.json, config.json and model.weights.h5 are Keras 3's own), then each Dense entry
    becomes what ``QDense.get_config`` adds to it (quantizers serialized with their full config, ``post_training_scale``
    included; module ``qkeras.qlayers``), the Activation a ``QActivation``, and the weight groups take the names Keras 3
    gives those classes (``q_dense``, ``q_dense_1``, ``q_activation``)."""
    import json
    import zipfile

    import h5py
    import keras

    m = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="fc1"),
                          keras.layers.Activation("relu", name="relu1"), keras.layers.Dense(5, name="fc2")])
    for w in m.weights:
        w.assign(rng.normal(0, 0.6, size=w.shape).astype("float32"))
    twin = path.with_name("twin.keras")
    m.save(twin)
    with zipfile.ZipFile(twin) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Dense":
            layer.update(module="qkeras.qlayers", class_name="QDense", registered_name="qkeras>QDense")
            layer["config"].update(kernel_quantizer=_quantizer(kernel_q), kernel_range=None, bias_range=None,
                                   bias_quantizer=_quantizer({**KERNEL_Q, "bits": 8, "integer": 2}))
        elif layer["class_name"] == "Activation":
            layer.update(module="qkeras.qlayers", class_name="QActivation", registered_name="qkeras>QActivation")
            layer["config"]["activation"] = "quantized_relu(4,2)"
    files["config.json"] = json.dumps(config).encode()
    weights = path.with_name("w.h5")
    weights.write_bytes(files["model.weights.h5"])
    with h5py.File(weights, "r+") as f:
        for old, new in (("dense_1", "q_dense_1"), ("dense", "q_dense"), ("activation", "q_activation")):
            if f"layers/{old}" in f:
                f.move(f"layers/{old}", f"layers/{new}")
    files["model.weights.h5"] = weights.read_bytes()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return path, [w.numpy() for w in m.weights]


def test_a_qkeras3_archive_with_post_training_scale_null_imports_with_qkeras_09_arithmetic(tmp_path, rng):
    from codesign.importers.keras_live import import_tf

    path, (k1, b1, k2, b2) = _qkeras3_archive(tmp_path / "qk3.keras", KERNEL_Q, rng)
    net = codesign.load(path)
    assert [l.kind for l in net.layers] == ["Dense", "ReLU", "Dense", "Output"]
    assert net.layer("relu1").result_type.width == 4 and net.layer("relu1").result_type.integer == 2
    tf = import_tf()
    from qkeras.quantizers import quantized_bits

    q09 = {k: v for k, v in KERNEL_Q.items() if k != "post_training_scale"}
    for name, w, b in (("fc1", k1, b1), ("fc2", k2, b2)):
        layer = net.layer(name)
        want_w = quantized_bits(**q09)(tf.constant(w)).numpy()
        want_b = quantized_bits(**{**q09, "bits": 8, "integer": 2})(tf.constant(b)).numpy()
        assert np.array_equal(np.ldexp(layer.weight.astype(np.float64), -layer.weight_type.frac), want_w)
        assert np.array_equal(np.ldexp(layer.bias.astype(np.float64), -layer.bias_type.frac), want_b)


@pytest.mark.parametrize("key, value", [("post_training_scale", [0.5] * 8), ("min_po2_exponent", -3)])
def test_a_qkeras3_parameter_that_changes_the_arithmetic_is_refused_naming_it(key, value, tmp_path, rng):
    path, _ = _qkeras3_archive(tmp_path / "qk3.keras", {**KERNEL_Q, "alpha": "auto_po2", key: value}, rng)
    pattern = (rf"^layer 'fc1': kernel quantizer quantized_bits\({key}={re.escape(repr(value))}\) changes the "
               rf"arithmetic; only {key}=None")
    with pytest.raises(UnsupportedLayerError, match=pattern):
        codesign.load(path)


def _auto_po2_on_boundaries(shape: tuple[int, ...], rng) -> np.ndarray:
    """Weights whose quantized_bits(6, 0, alpha='auto_po2') scales start on rounding boundaries: each channel's
    largest magnitude (a bias: the largest, then each weight) is 31 * 2**(k + 0.5), give or take a few float32 ulps."""
    k = rng.integers(-8, 0, size=shape[-1])
    c = np.float32(31) * (2.0 ** (k + 0.5)).astype(np.float32)
    c = (c.view(np.int32) + rng.integers(-3, 4, size=c.shape).astype(np.int32)).view(np.float32)
    if len(shape) == 1:
        return (c * rng.choice([-1, 1], size=shape)).astype(np.float32)
    x = rng.uniform(-1, 1, size=shape).astype(np.float32) * c
    x[rng.integers(0, shape[0], size=shape[-1]), np.arange(shape[-1])] = c
    return x


@pytest.mark.parametrize("shape", [(40,), (12, 16)])
def test_auto_po2_scales_on_a_rounding_boundary_equal_qkeras(shape, rng):
    from codesign.importers.keras_live import import_tf
    from codesign.importers.qkeras_quant import parse_quantizer, weight_ints

    tf = import_tf()
    import qkeras.quantizers as qkq

    spec = "quantized_bits(6,0,alpha='auto_po2')"
    x = _auto_po2_on_boundaries(shape, rng)
    ints, t = weight_ints(x, parse_quantizer(spec, "fc", "kernel quantizer"), "fc", "kernel")
    assert np.array_equal(np.ldexp(ints.astype(np.float64), -t.frac), qkq.get_quantizer(spec)(tf.constant(x)).numpy())
