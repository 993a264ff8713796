"""The integer reference against an independent float evaluation of the same quantized network."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codesign.core import fixed
from codesign.errors import LayerError
from codesign.core.fixed import FixedType
from codesign.core.layers import Conv1D, Conv2D, Dense, Flatten, Output, Quant, ReLU
from codesign.core.network import Network
from codesign.core.reference import exact_accum_type
from tests.builders import random_dense


def float_eval(net: Network, x: np.ndarray) -> np.ndarray:
    """Float64 evaluation with each cast applied by fixed.quantize on real values (independent of reference.py)."""
    t = net.input_type
    v = fixed.to_float(fixed.quantize(x, t), t)
    for layer in net.layers:
        if isinstance(layer, Dense):
            v = v @ layer.float_weight() + layer.float_bias()
            if layer.result_type is not None:
                v = fixed.to_float(fixed.quantize(v, layer.result_type), layer.result_type)
        elif isinstance(layer, ReLU):
            v = np.maximum(v, 0)
            if layer.result_type is not None:
                v = fixed.to_float(fixed.quantize(v, layer.result_type), layer.result_type)
        elif isinstance(layer, Quant):
            v = fixed.to_float(fixed.quantize(v, layer.result_type), layer.result_type)
    return v


def random_dense_net(rng, sizes, wbits, rbits, quant, overflow, sparsity=0.5) -> Network:
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(random_dense(rng, f"d{i}", a, b, FixedType(wbits, 1), sparsity=sparsity,
                                   result_type=FixedType(rbits, 3, True, quant, overflow)))
        if i < len(sizes) - 2:
            layers.append(ReLU(f"r{i}", FixedType(rbits - 1, 2, False, quant, "SAT")))
    layers.append(Output("out", "linear"))
    return Network("rand", (sizes[0],), layers, FixedType(8, 2, True, "RND_CONV", "SAT"))


@pytest.mark.parametrize("quant", ["TRN", "RND", "RND_CONV"])
@pytest.mark.parametrize("overflow", ["WRAP", "SAT"])
def test_integer_reference_equals_float_evaluation(quant, overflow, rng):
    net = random_dense_net(rng, (12, 9, 5), 6, 10, quant, overflow)
    x = rng.normal(0, 3, size=(500, 12))
    assert np.array_equal(net.forward(x), float_eval(net, x))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), wbits=st.integers(2, 12), rbits=st.integers(4, 20),
       quant=st.sampled_from(["TRN", "RND", "RND_CONV"]), overflow=st.sampled_from(["WRAP", "SAT"]))
def test_random_networks_reference_equals_float_evaluation(seed, wbits, rbits, quant, overflow):
    rng = np.random.default_rng(seed)
    net = random_dense_net(rng, (6, 5, 4, 3), wbits, rbits, quant, overflow, sparsity=rng.random())
    x = rng.normal(0, 4, size=(64, 6))
    assert np.array_equal(net.forward(x), float_eval(net, x))


def test_exact_accumulator_holds_the_extreme_sums():
    w = np.array([[3], [-4]])
    d = Dense("d", w, np.array([1]), weight_type=FixedType(3, 3), bias_type=FixedType(3, 3))
    t_in = FixedType(4, 4)  # [-8, 7]
    acc = exact_accum_type(d, t_in)
    # extremes: 3*7 + -4*-8 + 1 = 54 and 3*-8 + -4*7 + 1 = -51
    assert acc.min_int <= -51 and 54 <= acc.max_int and acc.width == 7 and acc.frac == 0


def test_a_too_narrow_accumulator_is_refused():
    d = Dense("d", np.array([[3], [3]]), np.array([0]), weight_type=FixedType(3, 3), bias_type=FixedType(3, 3),
              accum_type=FixedType(4, 4))
    net = Network("n", (2,), [d], FixedType(4, 4))
    with pytest.raises(LayerError, match=r"layer 'd': accumulator ap_fixed<4,4,AP_TRN,AP_WRAP> cannot hold the exact sums"):
        net.forward_int(np.array([[7, 7]]))


def test_wide_accumulators_switch_to_python_integers():
    wt = FixedType(40, 40)
    d = Dense("d", np.full((4, 1), (1 << 39) - 1), np.array([0]), weight_type=wt, bias_type=wt)
    net = Network("n", (4,), [d], FixedType(32, 32))
    out = net.forward_int(np.full((1, 4), (1 << 31) - 1))
    assert int(out.values[0, 0]) == 4 * ((1 << 39) - 1) * ((1 << 31) - 1)  # 73 bits: no silent wrap


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_reference_matches_direct_loops(padding, rng):
    wt = FixedType(5, 1)
    w = rng.integers(-16, 16, size=(3, 3, 2, 4))
    conv = Conv2D("c", w, rng.integers(-16, 16, size=4), weight_type=wt, bias_type=wt, padding=padding)
    t = FixedType(6, 2)
    net = Network("c", (6, 6, 2), [conv, Flatten("f")], t)
    q = rng.integers(t.min_int, t.max_int + 1, size=(3, 6, 6, 2))
    got = net.trace_int(q)[0].values
    p = 1 if padding == "same" else 0
    qp = np.pad(q, ((0, 0), (p, p), (p, p), (0, 0)))
    n = 6 if padding == "same" else 4
    want = np.zeros((3, n, n, 4), dtype=np.int64)
    for i in range(n):
        for j in range(n):
            want[:, i, j, :] = np.einsum("bhwc,hwco->bo", qp[:, i:i + 3, j:j + 3, :], w)
    want += conv.bias * (1 << (t.frac + wt.frac - wt.frac))
    assert np.array_equal(got, want)


def test_conv1d_float_path_matches_numpy(rng):
    w = rng.normal(size=(3, 2, 5))
    net = Network("c", (8, 2), [Conv1D("c", w, np.zeros(5), strides=(2,))])
    x = rng.normal(size=(4, 8, 2))
    want = np.stack([np.einsum("bkc,kco->bo", x[:, i:i + 3, :], w) for i in range(0, 6, 2)], axis=1)
    assert np.allclose(net.forward(x), want)
