"""The golden reference: a Network evaluated in exact integer arithmetic.

Every other implementation (hls4ml C simulation, Verilog in Verilator, imported QKeras
models) is compared with this module's output with zero tolerance.

Semantics, layer by layer (the same as hls4ml's ``nnet_dense_latency.h`` when the
accumulator holds the exact sum, which ``exact_accum_type`` guarantees):
- Dense/Conv: ``acc = bias + sum(x * w)`` exactly, then ``result = cast<result_type>(acc)``.
- BatchNorm (quantized): ``cast<result_type>(x * scale + shift)``.
- ReLU: ``max(x, 0)``, then ``cast<result_type>`` if the layer has one.
- Quant: ``cast<result_type>(x)``; with per-element formats each element is cast to its own format
  (width 0: zero), then held exactly in ``result_type``.
- MaxPool: the maximum of each window (valid: windows every ``strides``, a partial one at the end
  dropped), in the input's type.
- AvgPool / GlobalAvgPool (the window count ``N = 2**k`` a power of two; the layers refuse any other):
  the window's exact sum ``s`` of the input integers, read with ``k`` more fractional bits, i.e. the
  exact mean ``s / N`` held in ``avg_exact_type(in_type, k)`` = ``ap_fixed<W + k, I>`` of an input
  ``ap_fixed<W, I>`` (signedness kept; every mean of values of the input type lies in it), then
  ``cast<result_type>`` if the layer has one (its quantization and overflow modes, as for every cast).
  GlobalAvgPool takes one window of every spatial position per channel (output ``(C,)``). On float
  tensors both are the plain mean (then the cast's quantization when a result type is set). A
  count that is not a power of two has no exact fixed-point mean with a moved binary point, so
  AvgPool refuses it when made and GlobalAvgPool when the input shape is known, naming the layer.
- Flatten: channels-last order (row-major over ``(..., C)``), the type passes through.
- Add: the exact sum of its inputs: each operand's integers shifted to the finest binary point among
  them (``merge_exact_type``: that many fractional bits, the integer range of the sum of the operand
  ranges), then ``cast<result_type>`` if the layer has one.
- Concatenate: the inputs joined on the channel axis, each held exactly in ``merge_exact_type`` (the
  finest binary point, the union of the ranges), then ``cast<result_type>`` if the layer has one.

``output_type`` gives the type of each layer's output from its input's, the same rule the
evaluation uses (``Network.tensor_types`` reads it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from codesign.core import fixed
from codesign.core.fixed import FixedType
from codesign.core.layers import (Add, AvgPool, BatchNorm, Concatenate, Conv, Dense, Flatten, GlobalAvgPool, Layer, MaxPool,
                                  Merge, Output, Quant, ReLU, Weighted)
from codesign.core.kinds import handler
from codesign.errors import LayerError


@dataclass
class Tensor:
    """Values of one tensor: integers of ``type``, or floats when ``type`` is None."""

    values: np.ndarray
    type: FixedType | None

    def as_float(self) -> np.ndarray:
        if self.type is None:
            return self.values
        return fixed.to_float(self.values, self.type)


def exact_accum_type(layer: Weighted | BatchNorm, in_type: FixedType) -> FixedType:
    """The narrowest type that holds every exact sum of ``layer`` for inputs of ``in_type``."""
    if isinstance(layer, BatchNorm):
        w = layer.scale.reshape(1, -1).astype(object)
        b = layer.shift.astype(object)
        wf, bf = layer.scale_type.frac, layer.shift_type.frac
    else:
        w = layer.weight.reshape(-1, layer.weight.shape[-1]).astype(object)
        b = layer.bias.astype(object)
        wf, bf = layer.weight_type.frac, layer.bias_type.frac
    pf = in_type.frac + wf
    frac = max(pf, bf)
    a, c = w * in_type.min_int, w * in_type.max_int
    lo = np.minimum(a, c).sum(axis=0) * (1 << (frac - pf)) + b * (1 << (frac - bf))
    hi = np.maximum(a, c).sum(axis=0) * (1 << (frac - pf)) + b * (1 << (frac - bf))
    return fixed.type_for_range(min(int(lo.min()), 0), max(int(hi.max()), 0), frac)


def avg_exact_type(in_type: FixedType, shift: int) -> FixedType:
    """The type of an exact mean of ``2**shift`` values of ``in_type``: ``shift`` more fractional bits."""
    return FixedType(in_type.width + shift, in_type.integer, in_type.signed)


def merge_exact_type(layer: Merge, in_types: list[FixedType]) -> FixedType:
    """The type that holds a merge's exact result: its inputs' sum (Add) or any of their values (Concatenate)."""
    frac = max(t.frac for t in in_types)
    lo = [t.min_int << (frac - t.frac) for t in in_types]
    hi = [t.max_int << (frac - t.frac) for t in in_types]
    if isinstance(layer, Add):
        return fixed.type_for_range(min(sum(lo), 0), max(sum(hi), 0), frac)
    if all(t == in_types[0] for t in in_types):
        return in_types[0]
    return fixed.type_for_range(min(min(lo), 0), max(max(hi), 0), frac)


def _merge_type(layer: Merge, in_types: list, in_shape: tuple[int, ...]) -> FixedType | None:
    if any(t is None for t in in_types):
        return None
    return layer.result_type or merge_exact_type(layer, in_types)


def _affine_type(layer: Weighted | BatchNorm, in_type: FixedType, in_shape: tuple[int, ...]) -> FixedType:
    return layer.result_type or getattr(layer, "accum_type", None) or exact_accum_type(layer, in_type)


def _avg_type(layer: AvgPool | GlobalAvgPool, in_type: FixedType, in_shape: tuple[int, ...]) -> FixedType:
    shift = layer.shift(in_shape) if isinstance(layer, GlobalAvgPool) else layer.shift
    return layer.result_type or avg_exact_type(in_type, shift)


def _cast_or_pass_type(layer: Layer, in_type: FixedType, in_shape: tuple[int, ...]) -> FixedType:
    return getattr(layer, "result_type", None) or in_type


# The type rule of each kind: (layer, input type (a merge: the list), input shape) -> output type; a float input
# (None) gives a float output.
OUTPUT_TYPES: dict[type[Layer], Callable[..., FixedType | None]] = {
    Merge: _merge_type, Weighted: _affine_type, BatchNorm: _affine_type, AvgPool: _avg_type,
    GlobalAvgPool: _avg_type, ReLU: _cast_or_pass_type, Quant: _cast_or_pass_type, MaxPool: _cast_or_pass_type,
    Flatten: _cast_or_pass_type, Output: _cast_or_pass_type,
}


def output_type(layer: Layer, in_type: FixedType | None | list, in_shape: tuple[int, ...]) -> FixedType | None:
    """The fixed-point type of ``layer``'s output for an input of ``in_type`` (None: float; a merge takes the list
    of its inputs' types) and shape ``in_shape``."""
    rule = handler(OUTPUT_TYPES, layer, "the reference's type rules", LayerError)
    if in_type is None:
        return None
    return rule(layer, in_type, in_shape)


def _im2col(x: np.ndarray, layer: Conv) -> tuple[np.ndarray, tuple[int, ...]]:
    """Windows of a channels-last batch ``x`` as rows: ``(N * positions, prod(kernel) * c_in)``."""
    pads = [(0, 0)] + layer.pads(x.shape[1:-1]) + [(0, 0)]
    if any(p != (0, 0) for p in pads):
        x = np.pad(x, pads)
    win = np.lib.stride_tricks.sliding_window_view(x, layer.kernel, axis=tuple(range(1, layer.ndim + 1)))
    # win: (N, *out_full, c_in, *kernel) -> take strides, move kernel before channels
    sl = (slice(None),) + tuple(slice(None, None, s) for s in layer.strides)
    win = win[sl]
    out_spatial = win.shape[1 : 1 + layer.ndim]
    k_axes = tuple(range(2 + layer.ndim, 2 + 2 * layer.ndim))
    win = np.moveaxis(win, k_axes, tuple(range(1 + layer.ndim, 1 + 2 * layer.ndim)))
    rows = win.reshape(x.shape[0] * int(np.prod(out_spatial)), -1)
    return rows, out_spatial


def _weighted_int(layer: Weighted, x: Tensor) -> Tensor:
    if not layer.quantized:
        raise LayerError(f"layer {layer.name!r} has float weights but receives a fixed-point input; quantize it first")
    acc_t = layer.accum_type or exact_accum_type(layer, x.type)
    exact_t = exact_accum_type(layer, x.type)
    if not acc_t.contains(exact_t) and layer.accum_type is not None:
        raise LayerError(
            f"layer {layer.name!r}: accumulator {acc_t} cannot hold the exact sums ({exact_t} needed); "
            "widen accum_type"
        )
    big = fixed.needs_object(exact_t.width)
    q = fixed.as_int_array(x.values, big)
    w = fixed.as_int_array(layer.weight, big)
    b = fixed.as_int_array(layer.bias, big)
    pf = x.type.frac + layer.weight_type.frac
    frac = exact_t.frac
    if isinstance(layer, Dense):
        n = q.shape[0]
        acc = q.reshape(n, -1) @ w
        out_shape = (n, w.shape[1])
    else:
        rows, out_spatial = _im2col(q, layer)
        acc = rows @ w.reshape(-1, w.shape[-1])
        out_shape = (q.shape[0], *out_spatial, w.shape[-1])
    acc = acc * (1 << (frac - pf)) + b * (1 << (frac - layer.bias_type.frac))
    acc = acc.reshape(out_shape)
    out_t = layer.result_type or acc_t
    return Tensor(fixed.cast(acc, exact_t, out_t), out_t)


def _weighted_float(layer: Weighted, x: np.ndarray) -> np.ndarray:
    w, b = layer.float_weight(), layer.float_bias()
    if isinstance(layer, Dense):
        return x.reshape(x.shape[0], -1) @ w + b
    rows, out_spatial = _im2col(x, layer)
    return (rows @ w.reshape(-1, w.shape[-1]) + b).reshape(x.shape[0], *out_spatial, w.shape[-1])


def _merge(layer: Merge, xs: list[Tensor]) -> Tensor:
    """Add or Concatenate, exact in ``merge_exact_type`` and then cast to the layer's type."""
    if any(x.type is None for x in xs):
        if not all(x.type is None for x in xs):
            raise LayerError(f"layer {layer.name!r}: mixes float and fixed-point inputs")
        vals = [x.values for x in xs]
        y = sum(vals[1:], vals[0]) if isinstance(layer, Add) else np.concatenate(vals, axis=-1)
        if layer.result_type is not None:
            y = fixed.to_float(fixed.quantize(y, layer.result_type), layer.result_type)
        return Tensor(y, None)
    exact_t = merge_exact_type(layer, [x.type for x in xs])
    big = fixed.needs_object(exact_t.width)
    aligned = [fixed.as_int_array(x.values, big) * (1 << (exact_t.frac - x.type.frac)) for x in xs]
    y = sum(aligned[1:], aligned[0]) if isinstance(layer, Add) else np.concatenate(aligned, axis=-1)
    if layer.result_type is None:
        return Tensor(y, exact_t)
    return Tensor(fixed.cast(y, exact_t, layer.result_type), layer.result_type)


def _weighted(layer: Weighted, x: Tensor) -> Tensor:
    if x.type is None:
        return Tensor(_weighted_float(layer, x.values), None)
    return _weighted_int(layer, x)


def _batchnorm(layer: BatchNorm, x: Tensor) -> Tensor:
    if x.type is None:
        scale, shift = layer.float_scale_shift()
        return Tensor(x.values * scale + shift, None)
    if not layer.quantized:
        raise LayerError(f"layer {layer.name!r}: float BatchNorm on a fixed-point tensor; fold or quantize it first")
    exact_t = exact_accum_type(layer, x.type)
    big = fixed.needs_object(exact_t.width)
    q = fixed.as_int_array(x.values, big)
    pf = x.type.frac + layer.scale_type.frac
    acc = q * fixed.as_int_array(layer.scale, big) * (1 << (exact_t.frac - pf)) + fixed.as_int_array(
        layer.shift, big
    ) * (1 << (exact_t.frac - layer.shift_type.frac))
    out_t = layer.result_type or exact_t
    return Tensor(fixed.cast(acc, exact_t, out_t), out_t)


def _relu(layer: ReLU, x: Tensor) -> Tensor:
    y = np.where(x.values > 0, x.values, 0).astype(x.values.dtype)
    if layer.result_type is None:
        return Tensor(y, x.type)
    if x.type is None:
        return Tensor(fixed.to_float(fixed.quantize(y, layer.result_type), layer.result_type), None)
    return Tensor(fixed.cast(y, x.type, layer.result_type), layer.result_type)


def _quant(layer: Quant, x: Tensor) -> Tensor:
    if layer.per_element:
        return _quant_elements(layer, x)
    if x.type is None:
        return Tensor(fixed.to_float(fixed.quantize(x.values, layer.result_type), layer.result_type), None)
    return Tensor(fixed.cast(x.values, x.type, layer.result_type), layer.result_type)


def _flatten(layer: Flatten, x: Tensor) -> Tensor:
    return Tensor(x.values.reshape(x.values.shape[0], -1), x.type)


def _max_pool(layer: MaxPool, x: Tensor) -> Tensor:
    axes = tuple(range(1, layer.ndim + 1))
    win = np.lib.stride_tricks.sliding_window_view(x.values, layer.pool, axis=axes)
    win = win[(slice(None),) + tuple(slice(None, None, s) for s in layer.strides)]
    return Tensor(win.max(axis=tuple(range(-layer.ndim, 0))), x.type)


def _output(layer: Output, x: Tensor) -> Tensor:
    return x  # the head is applied outside the integer reference (apply_head)


def _average(layer: AvgPool | GlobalAvgPool, x: Tensor) -> Tensor:
    """A window mean: the exact window sum with the binary point moved by log2(count), then the cast."""
    v = x.values
    if isinstance(layer, GlobalAvgPool):
        shift = layer.shift(v.shape[1:])
        axes = tuple(range(1, v.ndim - 1))
    else:
        shift = layer.shift
        win = np.lib.stride_tricks.sliding_window_view(v, layer.pool, axis=tuple(range(1, layer.ndim + 1)))
        v = win[(slice(None),) + tuple(slice(None, None, s) for s in layer.strides)]
        axes = tuple(range(-layer.ndim, 0))
    rt = layer.result_type
    if x.type is None:
        y = np.ldexp(v.sum(axis=axes), -shift)
        return Tensor(y if rt is None else fixed.to_float(fixed.quantize(y, rt), rt), None)
    exact_t = avg_exact_type(x.type, shift)
    total = fixed.as_int_array(v, fixed.needs_object(exact_t.width)).sum(axis=axes)
    if rt is None:
        return Tensor(total, exact_t)
    return Tensor(fixed.cast(total, exact_t, rt), rt)


def _quant_elements(layer: Quant, x: Tensor) -> Tensor:
    """A per-element cast: each distinct format on its own elements, then held in ``result_type``."""
    rt = layer.result_type
    big = fixed.needs_object(rt.width)
    out = np.zeros(x.values.shape, dtype=object if big else np.int64)
    for t, mask in layer.element_formats():
        if t is None:
            continue  # width 0: the constant 0
        sel = x.values[:, mask]
        q = fixed.quantize(sel, t) if x.type is None else fixed.cast(sel, x.type, t)
        out[:, mask] = fixed.cast(q, t, rt)
    if x.type is None:
        return Tensor(fixed.to_float(out, rt), None)
    return Tensor(out, rt)


# The reference evaluation of each kind: (layer, input tensor (a merge: the list)) -> output tensor.
REFERENCE: dict[type[Layer], Callable[..., Tensor]] = {
    Merge: _merge, Weighted: _weighted, BatchNorm: _batchnorm, ReLU: _relu, Quant: _quant, Flatten: _flatten,
    MaxPool: _max_pool, AvgPool: _average, GlobalAvgPool: _average, Output: _output,
}


def run_layer(layer: Layer, x: Tensor | list[Tensor]) -> Tensor:
    """One layer of the reference (a merge layer takes the list of its inputs)."""
    return handler(REFERENCE, layer, "the reference", LayerError)(layer, x)


def trace(layers: list[Layer], x: Tensor, sources: dict[str, tuple[str, ...]] | None = None) -> list[Tensor]:
    """Every layer's output, in order; ``sources`` (``Network.sources()``) names each layer's inputs, and without it
    each layer reads the one before it. A tensor is dropped once its last reader has run."""
    if sources is None:
        prev, sources = "input", {}
        for layer in layers:
            sources[layer.name], prev = (prev,), layer.name
    last_use = {src: i for i, layer in enumerate(layers) for src in sources[layer.name]}
    live: dict[str, Tensor] = {"input": x}
    outs = []
    for i, layer in enumerate(layers):
        ins = [live[s] for s in sources[layer.name]]
        y = run_layer(layer, ins if layer.merge else ins[0])
        for s in sources[layer.name]:
            if last_use[s] == i:
                live.pop(s, None)
        live[layer.name] = y
        outs.append(y)
    return outs


def apply_head(head: str, y: np.ndarray) -> np.ndarray:
    """Softmax probabilities, argmax classes, sigmoid probabilities, or the values as they are."""
    if head == "sigmoid":
        return 1.0 / (1.0 + np.exp(-y))
    if head == "argmax":
        return np.argmax(y, axis=-1)
    if head == "softmax":
        z = y - y.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)
    return y
