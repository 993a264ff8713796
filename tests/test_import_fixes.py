"""Real model files the importers used to refuse (issue 29): an old torch's ONNX opset-6 BatchNorm MLP,
QKeras-for-Keras-3 archives with new no-op quantizer keys, and po2 weights on a rounding boundary."""

from __future__ import annotations

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
    "dense_on_view": r"^node 'fc' \(Gemm\): Gemm on the ONNX shape \[4, 1\], which size-1 axes added by an Unsqueeze",
    "squeeze_nonunit": r"^node 's' \(Squeeze\): Squeeze of axes \[1\] of shape \[0, 4\]: only size-1 axes",
    "batch_axis": r"^node 'u' \(Unsqueeze\): axes \[0\] of a rank-3 tensor must not include the batch axis",
    "layout": r"^node 'r' \(Reshape\): only a reshape to \(N, features\) is supported, got \[1, 2, 2\]$",
}


@pytest.mark.parametrize("kind", VIEW_REFUSALS)
def test_a_shape_node_that_changes_the_layout_is_refused_naming_the_node(kind):
    with pytest.raises(UnsupportedLayerError, match=VIEW_REFUSALS[kind]):
        network_from_onnx(_view_refused(kind).model())
