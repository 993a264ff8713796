"""Post-training quantization of a float Network, and BatchNorm folding.

``compress`` chooses types under a budget with fine-tuning; this module is the plain
conversion it (and the no-budget flow) starts from: per-layer types sized to the
weights and to the value ranges seen on calibration data.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from codesign.core import fixed, reference
from codesign.core.fixed import FixedType
from codesign.core.kinds import handler
from codesign.core.layers import (BatchNorm, Conv, Dense, Flatten, GlobalAvgPool, Layer, Merge, Output, Pool, Quant, ReLU,
                                  Weighted)
from codesign.core.network import Network
from codesign.core.reference import exact_accum_type
from codesign.errors import LayerError


def fold_batchnorm(net: Network) -> Network:
    """A copy of ``net`` with every float BatchNorm folded into the Dense/Conv it reads, where that layer feeds
    nothing else, or else into the one Dense or unpadded Conv that reads it (both exact: a padded convolution
    would see the BatchNorm's shift at its zero padding); any other BatchNorm stays a layer (quantized as its
    own affine stage)."""
    net = _fold_forward(net)
    sources, readers = net.sources(), net.consumers()
    alias: dict[str, str] = {}
    layers: list[Layer] = []
    by_name: dict[str, Layer] = {}
    for layer in copy.deepcopy(net.layers):
        layer.inputs = tuple(alias.get(s, s) for s in sources[layer.name])
        prev = by_name.get(layer.inputs[0]) if len(layer.inputs) == 1 else None
        if (isinstance(layer, BatchNorm) and not layer.quantized and isinstance(prev, Weighted) and not prev.quantized
                and readers[prev.name] == [layer.name]):
            scale, shift = layer.float_scale_shift()
            prev.weight = prev.weight * scale
            prev.bias = prev.bias * scale + shift
            alias[layer.name] = prev.name
            continue
        layers.append(layer)
        by_name[layer.name] = layer
    return Network(net.name, net.input_shape, layers, net.input_type, dict(net.metadata))


def _fold_forward(net: Network) -> Network:
    """Each float BatchNorm that no Dense/Conv of its own precedes, folded into the layer that alone reads it
    when that is a Dense on the same vector or an unpadded Conv: ``w' = scale[c] * w``, ``b' = b + sum(w * shift)``."""
    sources, readers = net.sources(), net.consumers()
    by_name = {l.name: l for l in net.layers}
    fold: dict[str, str] = {}  # BatchNorm -> the layer it folds into
    for layer in net.layers:
        if not isinstance(layer, BatchNorm) or layer.quantized:
            continue
        src = sources[layer.name][0]
        if isinstance(by_name.get(src), Weighted) and readers[src] == [layer.name]:
            continue  # folds backwards
        nxt = by_name.get(readers[layer.name][0]) if len(readers[layer.name]) == 1 else None
        ok = isinstance(nxt, Dense) and nxt.weight.shape[0] == layer.gamma.shape[0] or (
            isinstance(nxt, Conv) and nxt.padding == "valid")
        if ok and not nxt.quantized:
            fold[layer.name] = nxt.name
    if not fold:
        return net
    layers: list[Layer] = []
    alias: dict[str, str] = {}
    scales = {}
    for layer in copy.deepcopy(net.layers):
        layer.inputs = tuple(alias.get(s, s) for s in sources[layer.name])
        if layer.name in fold:
            scales[fold[layer.name]] = layer.float_scale_shift()
            alias[layer.name] = layer.inputs[0]
            continue
        if layer.name in scales:
            scale, shift = scales[layer.name]
            w = layer.weight
            layer.bias = layer.bias + np.tensordot(w, shift, axes=([w.ndim - 2], [0])).reshape(-1, w.shape[-1]).sum(0)
            layer.weight = w * scale[:, None]
        layers.append(layer)
    return Network(net.name, net.input_shape, layers, net.input_type, dict(net.metadata))


def integer_bits_for(max_abs: float, signed: bool = True) -> int:
    """Integer bits (sign included when signed) so that ``max_abs`` is below the type's range."""
    if max_abs <= 0:
        return 1 if signed else 0
    return max(math.floor(math.log2(max_abs)) + 1, -16) + (1 if signed else 0)


def fixed_for_values(values: np.ndarray, width: int, signed: bool = True, quant: str = "RND_CONV",
                     overflow: str = "SAT") -> FixedType:
    """A ``width``-bit type whose range covers ``values``."""
    return FixedType(width, integer_bits_for(float(np.max(np.abs(values), initial=0.0)), signed), signed, quant, overflow)


def quantize_params(layer: Weighted, weight_type: FixedType, bias_type: FixedType) -> Weighted:
    """A copy of a float layer with its weights rounded (half to even, saturating) to the types."""
    q = copy.deepcopy(layer)
    rw = weight_type.with_modes("RND_CONV", "SAT")
    rb = bias_type.with_modes("RND_CONV", "SAT")
    q.weight = np.where(layer.mask, fixed.quantize(layer.float_weight(), rw), 0).astype(np.int64)
    q.bias = fixed.quantize(layer.float_bias(), rb).astype(np.int64)
    q.weight_type, q.bias_type = weight_type, bias_type
    return q


CALIBRATION_SAMPLES = 512  # random inputs that size the result types when no data set is given


def calibration_inputs(input_type: FixedType, shape: tuple[int, ...], n: int = CALIBRATION_SAMPLES,
                       seed: int = 0) -> np.ndarray:
    """``n`` inputs drawn uniformly over the input type's range: the calibration set when there is no data."""
    rng = np.random.default_rng(seed)
    return rng.uniform(input_type.min_value, input_type.max_value, size=(n, *shape))


def constant_output(net: Network, X: np.ndarray) -> bool:
    """Whether ``net`` (float, or fixed point as it stands) gives every sample of ``X`` the same output, to a
    billionth of its magnitude (finer than any result type resolves): a network whose weights no longer pass its
    input through (hls4ml's 16-100^5-5 MLP: L1 = 0.01 left its hidden weights below 1.7e-6, its float64 output is
    one value), which any faithful hardware computes as a constant, and synthesis reduces to one."""
    X = np.asarray(X)
    if X.shape[1:] != net.input_shape and X[0].size == int(np.prod(net.input_shape)):
        X = X.reshape(len(X), *net.input_shape)
    out = np.asarray(net.forward(X)).reshape(len(X), -1)
    return len(X) > 1 and float(np.ptp(out, axis=0).max()) <= 1e-9 * float(np.abs(out).max())


def quantize_network(
    net: Network,
    input_type: FixedType | str,
    weight_bits: int = 8,
    bias_bits: int | None = None,
    result_bits: int = 16,
    calib: np.ndarray | None = None,
    quant: str = "RND_CONV",
    overflow: str = "SAT",
) -> Network:
    """Float network -> fixed point, each layer's result type sized to its calibration range."""
    if net.quantized:
        return net
    input_type = FixedType.parse(input_type) if isinstance(input_type, str) else input_type
    bias_bits = bias_bits or weight_bits
    net = fold_batchnorm(net)
    if calib is None:
        calib = calibration_inputs(input_type, net.input_shape)
    calib = np.asarray(calib)
    if calib.shape[1:] != net.input_shape and calib[0].size == int(np.prod(net.input_shape)):
        calib = calib.reshape(len(calib), *net.input_shape)  # flat samples of an image network (digits for a CNN)
    calib = fixed.to_float(fixed.quantize(calib, input_type), input_type)
    from codesign.core.network import INPUT
    from codesign.core.reference import Tensor, run_layer

    floats: dict[str, Tensor] = {INPUT: Tensor(calib, None)}  # each tensor over the calibration set, as quantized
    types: dict[str, FixedType] = {INPUT: input_type}
    sources = net.sources()
    layers: list[Layer] = []
    for layer, in_shapes in zip(net.layers, net.input_shapes()):
        ins = [floats[s] for s in sources[layer.name]]
        y = run_layer(layer, ins if layer.merge else ins[0])  # float ranges for sizing
        t_in = [types[s] for s in sources[layer.name]]
        q = _quantized_layer(layer, y.values, t_in, in_shapes[0], weight_bits, bias_bits, result_bits, quant, overflow)
        layers.append(q)
        t = reference.output_type(q, t_in if q.merge else t_in[0], in_shapes[0])
        types[layer.name] = t
        # propagate the quantized values so later ranges see the quantization
        floats[layer.name] = Tensor(fixed.to_float(fixed.quantize(y.values, t), t), None) if isinstance(
            q, (Weighted, BatchNorm)) or (q.merge and q.result_type is not None) else run_layer(q, ins if q.merge else ins[0])
    meta = dict(net.metadata, quantized_by="post-training", weight_bits=weight_bits, result_bits=result_bits)
    return Network(net.name, net.input_shape, layers, input_type, meta)


@dataclass
class _Q:
    """What quantizing one layer reads: the calibration outputs ``y``, the input types and the bit widths."""

    y: np.ndarray
    t_in: list[FixedType]
    weight_bits: int
    bias_bits: int
    result_bits: int
    quant: str
    overflow: str

    def result_type(self) -> FixedType:
        return fixed_for_values(self.y, self.result_bits, quant=self.quant, overflow=self.overflow)


def _quantized_layer(layer: Layer, y: np.ndarray, t_in: list[FixedType], in_shape: tuple[int, ...], weight_bits: int,
                     bias_bits: int, result_bits: int, quant: str, overflow: str) -> Layer:
    """One layer in fixed point: weights rounded to ``weight_bits``, results sized to the calibration values ``y``."""
    q = _Q(y, t_in, weight_bits, bias_bits, result_bits, quant, overflow)
    return handler(QUANTIZERS, layer, "post-training quantization", LayerError)(layer, q)


def _quantize_weighted(layer: Weighted, c: _Q) -> Weighted:
    wt = fixed_for_values(layer.float_weight(), c.weight_bits, quant="TRN", overflow="WRAP")
    bt = fixed_for_values(layer.float_bias(), c.bias_bits, quant="TRN", overflow="WRAP")
    q = quantize_params(layer, wt, bt)
    q.accum_type = exact_accum_type(q, c.t_in[0])
    q.result_type = c.result_type()
    return q


def _quantize_batchnorm(layer: BatchNorm, c: _Q) -> BatchNorm:
    """A BatchNorm with no Dense/Conv of its own before it: its own affine stage."""
    q = copy.deepcopy(layer)
    scale, shift = layer.float_scale_shift()
    st = fixed_for_values(scale, c.weight_bits, quant="TRN", overflow="WRAP")
    sht = fixed_for_values(shift, c.bias_bits, quant="TRN", overflow="WRAP")
    q.scale = fixed.quantize(scale, st.with_modes("RND_CONV", "SAT"))
    q.shift = fixed.quantize(shift, sht.with_modes("RND_CONV", "SAT"))
    q.scale_type, q.shift_type = st, sht
    q.result_type = c.result_type()
    return q


def _quantize_merge(layer: Merge, c: _Q) -> Merge:
    q = copy.deepcopy(layer)
    if layer.result_type is None:
        exact = reference.merge_exact_type(layer, c.t_in)
        if exact.width > c.result_bits:  # an Add grows a bit per operand pair: held to the results' width
            q.result_type = c.result_type()
    return q


def _keep(layer: Layer, c: _Q) -> Layer:
    """A layer whose type follows from its input's (or that has its own cast already)."""
    return copy.deepcopy(layer)


# Post-training quantization's kind table: each kind's fixed-point form.
QUANTIZERS: dict[type[Layer], Callable[[Any, _Q], Layer]] = {
    Weighted: _quantize_weighted, BatchNorm: _quantize_batchnorm, Merge: _quantize_merge, ReLU: _keep, Quant: _keep,
    Pool: _keep, GlobalAvgPool: _keep, Flatten: _keep, Output: _keep,
}
