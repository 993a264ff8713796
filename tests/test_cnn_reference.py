"""The CNN layers of the IR and the exact reference: convolutions, pooling, global pooling, flatten.

The reference is checked against an independent evaluation: direct loops over windows in float64
(every sum here is far below 2**53, so float64 is exact) with each cast applied by ``fixed.quantize``
on the real values.
"""

import numpy as np
import pytest

from codesign.core import fixed
from codesign.core.fixed import FixedType
from codesign.core.layers import (CNN_LAYERS, AvgPool1D, AvgPool2D, BatchNorm, Conv1D, Conv2D, Dense, Flatten,
                                  GlobalAvgPool1D, GlobalAvgPool2D, MaxPool1D, MaxPool2D, Output, ReLU,
                                  check_supported)
from codesign.core.network import Network
from codesign.core.reference import avg_exact_type
from codesign.errors import LayerError, UnsupportedLayerError


def _cast(v: np.ndarray, t: FixedType | None) -> np.ndarray:
    return v if t is None else fixed.to_float(fixed.quantize(v, t), t)


def _windows(v: np.ndarray, kernel, strides, pads):
    """Every window of a channels-last batch, by loops: {output index: (N, *kernel, C)}."""
    v = np.pad(v, [(0, 0), *pads, (0, 0)])
    nd = len(kernel)
    out_n = [(v.shape[1 + a] - kernel[a]) // strides[a] + 1 for a in range(nd)]
    for idx in np.ndindex(*out_n):
        sl = tuple(slice(i * s, i * s + k) for i, s, k in zip(idx, strides, kernel))
        yield idx, out_n, v[(slice(None), *sl)]


def float_eval(net: Network, x: np.ndarray) -> np.ndarray:
    """Float64 loops, written without reference.py (Keras/TensorFlow 'same' padding spelled out here)."""
    v = _cast(np.asarray(x, dtype=np.float64), net.input_type)
    for layer in net.layers:
        if isinstance(layer, (Conv1D, Conv2D)):
            k, s = layer.kernel, layer.strides
            pads = []
            for n, kk, ss in zip(v.shape[1:-1], k, s):
                total = max((-(-n // ss) - 1) * ss + kk - n, 0) if layer.padding == "same" else 0
                pads.append((total // 2, total - total // 2))
            w, b = layer.float_weight(), layer.float_bias()
            res = None
            for idx, out_n, win in _windows(v, k, s, pads):
                if res is None:
                    res = np.zeros((len(v), *out_n, w.shape[-1]))
                res[(slice(None), *idx)] = np.tensordot(win, w, axes=len(k) + 1) + b
            v = _cast(res, layer.result_type)
        elif isinstance(layer, Dense):
            v = _cast(v @ layer.float_weight() + layer.float_bias(), layer.result_type)
        elif isinstance(layer, ReLU):
            v = _cast(np.maximum(v, 0), layer.result_type)
        elif isinstance(layer, (MaxPool1D, MaxPool2D, AvgPool1D, AvgPool2D)):
            res = None
            for idx, out_n, win in _windows(v, layer.pool, layer.strides, [(0, 0)] * layer.ndim):
                if res is None:
                    res = np.zeros((len(v), *out_n, v.shape[-1]))
                axes = tuple(range(1, 1 + layer.ndim))
                res[(slice(None), *idx)] = win.max(axis=axes) if "Max" in layer.kind else win.mean(axis=axes)
            v = res if "Max" in layer.kind else _cast(res, layer.result_type)
        elif isinstance(layer, (GlobalAvgPool1D, GlobalAvgPool2D)):
            v = _cast(v.mean(axis=tuple(range(1, v.ndim - 1))), layer.result_type)
        elif isinstance(layer, Flatten):
            v = v.reshape(len(v), -1)
    return v


def _ints(rng, t: FixedType, shape) -> np.ndarray:
    return rng.integers(t.min_int, t.max_int + 1, size=shape)


def random_cnn(rng, quant: str, overflow: str, padding: str, stride: int) -> Network:
    """conv -> relu -> avgpool -> conv -> maxpool -> relu -> global avg pool -> dense, 2-D, random types."""
    wt = FixedType(5, 1)
    rt = FixedType(10, 4, True, quant, overflow)
    layers = [
        Conv2D("c1", _ints(rng, wt, (3, 3, 2, 4)), _ints(rng, wt, 4), weight_type=wt, bias_type=wt, result_type=rt,
               strides=(stride, stride), padding=padding),
        ReLU("r1", FixedType(8, 3, False, quant, "SAT")),
        AvgPool2D("a1", (2, 2), result_type=FixedType(7, 3, False, quant, overflow)),
        Conv2D("c2", _ints(rng, wt, (2, 2, 4, 4)), _ints(rng, wt, 4), weight_type=wt, bias_type=wt, padding="same"),
        MaxPool2D("m1", (3, 3), (1, 1)),
        ReLU("r2"),
        GlobalAvgPool2D("g1"),
        Dense("d1", _ints(rng, wt, (4, 3)), _ints(rng, wt, 3), weight_type=wt, bias_type=wt, result_type=rt),
        Output("out"),
    ]
    size = 14 if stride == 1 else 24  # 12x12 after c1 (24: TF pads (0, 1)), global pooling over 4x4 positions
    return Network("cnn", (size, size, 2), layers, FixedType(6, 2, True, quant, overflow))


@pytest.mark.parametrize("quant", ["TRN", "RND", "RND_CONV"])
@pytest.mark.parametrize("overflow", ["WRAP", "SAT"])
@pytest.mark.parametrize("padding,stride", [("valid", 1), ("same", 2)])
def test_cnn_reference_equals_independent_float_loops(quant, overflow, padding, stride, rng):
    net = random_cnn(rng, quant, overflow, padding, stride)
    assert net.shapes()[2] == (6, 6, 4) and net.shapes()[4] == (4, 4, 4) and net.shapes()[6] == (4,)
    x = rng.normal(0, 3, size=(40, *net.input_shape))
    got = net.forward(x)
    assert np.array_equal(got, float_eval(net, x))
    assert net.tensor_types()[-1] == net.forward_int(net.quantize_input(x)).type


@pytest.mark.parametrize("n,k,s,pads", [(7, 3, 2, (1, 1)), (6, 3, 2, (0, 1)), (6, 4, 1, (1, 2)), (5, 1, 2, (0, 0))])
def test_same_padding_is_tensorflows(n, k, s, pads):
    conv = Conv1D("c", np.zeros((k, 1, 1)), strides=(s,), padding="same")
    assert conv.pads((n,)) == [pads]
    assert conv.output_shape((n, 1)) == (-(-n // s), 1)


def test_average_is_the_exact_sum_with_the_binary_point_moved():
    t = FixedType(4, 2, True, "TRN", "WRAP")  # values in steps of 0.25
    net = Network("a", (4, 1), [AvgPool1D("a", (4,))], t)
    out = net.forward_int(np.array([[[7], [7], [7], [6]]]))  # mean of 1.75, 1.75, 1.75, 1.5
    assert out.type == avg_exact_type(t, 2) == FixedType(6, 2)
    assert int(out.values[0, 0, 0]) == 27 and out.as_float()[0, 0, 0] == 1.6875


@pytest.mark.parametrize("quant,want", [("TRN", 6), ("RND", 7), ("RND_CONV", 6)])
def test_average_result_type_rounds_with_its_mode(quant, want):
    t = FixedType(4, 2)
    rt = FixedType(4, 2, True, quant, "SAT")  # drops the 2 added fractional bits: 26/4 = 6.5 LSBs
    net = Network("a", (2, 2, 1), [AvgPool2D("a", (2, 2), result_type=rt)], t)
    out = net.forward_int(np.array([[[[7], [7]], [[6], [6]]]]))
    assert out.type == rt and int(out.values[0, 0, 0, 0]) == want


def test_extreme_averages_fit_the_exact_type():
    t = FixedType(8, 3)
    net = Network("g", (8, 1), [GlobalAvgPool1D("g")], t)
    for v in (t.min_int, t.max_int):
        out = net.forward_int(np.full((1, 8, 1), v))
        assert int(out.values[0, 0]) == v * 8 and out.type.contains(t)


def test_wide_average_switches_to_python_integers():
    t = FixedType(62, 62)
    net = Network("g", (2, 2, 1), [GlobalAvgPool2D("g")], t)
    out = net.forward_int(np.full((1, 2, 2, 1), t.max_int))
    assert out.type.width == 64 and out.values.dtype == object and int(out.values[0, 0]) == 4 * t.max_int


def test_non_power_of_two_window_is_refused_naming_the_layer():
    with pytest.raises(LayerError, match=r"^layer 'p': AvgPool2D averages a 3x3 window \(9 values\); only a "
                                         r"power-of-two count \(1, 2, 4, 8, \.\.\.\) is exact in fixed point; choose"):
        AvgPool2D("p", (3, 3))


def test_non_power_of_two_global_pool_is_refused_when_the_shape_is_known():
    with pytest.raises(LayerError, match=r"^layer 'g': GlobalAvgPool2D averages 3x2 = 6 positions; only a "
                                         r"power-of-two count"):
        Network("n", (3, 2, 4), [GlobalAvgPool2D("g")])


def test_float_pools_are_plain_means_and_maxima(rng):
    x = rng.normal(size=(3, 8, 2))
    net = Network("f", (8, 2), [AvgPool1D("a", (2,)), MaxPool1D("m", (3,), (2,)), GlobalAvgPool1D("g")])
    assert net.shapes() == [(4, 2), (1, 2), (2,)]  # (4 - 3) // 2 + 1 = 1 window: the partial one is dropped
    means = x.reshape(3, 4, 2, 2).mean(axis=2)
    assert np.allclose(net.forward(x), means[:, 0:3].max(axis=1))


def test_cnn_layers_survive_save_and_load(rng, tmp_path):
    net = random_cnn(rng, "RND_CONV", "SAT", "same", 2)
    net.save(tmp_path)
    back = Network.load(tmp_path)
    assert [l.kind for l in back.layers] == [l.kind for l in net.layers]
    assert back.layer("a1").result_type == net.layer("a1").result_type and back.layer("m1").strides == (1, 1) and back.layer("m1").pool == (3, 3)
    q = net.quantize_input(rng.normal(0, 3, size=(8, *net.input_shape)))
    assert np.array_equal(back.forward_int(q).values, net.forward_int(q).values)
    assert back.tensor_types() == net.tensor_types()


@pytest.mark.parametrize("padding,stride", [("valid", 1), ("same", 2)])
def test_pooling_cnn_round_trips_through_qonnx_and_runs_in_qonnx_bit_exact(padding, stride, rng):
    pytest.importorskip("qonnx")
    from codesign.importers.onnx_import import network_from_onnx
    from tests.qonnx_graphs import run_qonnx

    net = random_cnn(rng, "RND_CONV", "SAT", padding, stride)
    model = net.to_onnx()
    back = network_from_onnx(model)
    assert [l.kind for l in back.layers] == [l.kind for l in net.layers]
    assert back.tensor_types() == net.tensor_types()
    x = fixed.to_float(net.quantize_input(rng.normal(0, 3, size=(64, *net.input_shape))), net.input_type)
    want = net.forward(x)
    assert np.array_equal(back.forward(x), want)
    assert np.array_equal(run_qonnx(model, x), want)  # the export takes channels-last inputs, as the IR


def test_onnx_export_refuses_an_average_float32_cannot_hold(rng):
    net = Network("g", (4, 4, 1), [GlobalAvgPool2D("g"), Output("out")], FixedType(22, 4, True, "RND_CONV", "SAT"))
    with pytest.raises(UnsupportedLayerError, match=r"^layer 'g': an average of 26-bit values is not exact in "
                                                    r"onnxruntime's float32 pooling; narrow the input to 20 bits"):
        net.to_onnx()


def test_backends_check_support_against_the_cnn_layer_list():
    layers = [Conv2D("c", np.zeros((3, 3, 1, 2))), BatchNorm("bn", np.ones(2), np.zeros(2), np.zeros(2), np.ones(2)),
              AvgPool2D("p", (2, 2))]
    check_supported(layers, CNN_LAYERS, "the reference")
    with pytest.raises(UnsupportedLayerError, match=r"^layer 'p' \(AvgPool2D\): not supported by the RTL; supported: "
                                                    r"Conv2D, BatchNorm, MaxPool2D$"):
        check_supported(layers, (Conv2D, BatchNorm, MaxPool2D), "the RTL")


def test_batchnorm_after_a_conv_folds_into_it(rng):
    from codesign.compress.quantize import fold_batchnorm

    conv = Conv2D("c", rng.normal(size=(3, 3, 2, 4)), rng.normal(size=4), padding="same")
    bn = BatchNorm("bn", rng.normal(size=4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, size=4))
    net = Network("n", (5, 5, 2), [conv, bn, ReLU("r"), Flatten("f")])
    folded = fold_batchnorm(net)
    assert [l.kind for l in folded.layers] == ["Conv2D", "ReLU", "Flatten"]
    x = rng.normal(size=(6, 5, 5, 2))
    assert np.allclose(folded.forward(x), net.forward(x), atol=1e-12)
