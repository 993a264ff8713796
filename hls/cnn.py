"""Convolutional networks through hls4ml's PyTorch converter, streamed (``io_stream``, line buffers).

A CNN becomes the ``nn.Sequential`` hls4ml's PyTorch converter reads, converted with
``ChannelsLastConversion: internal`` (hls4ml's form for ``io_stream``: the input stream is already
channels-last, pixels in raster order with all channels of a pixel together, as our IR's tensors; the
converter moves torch's kernels ``(out, in, k...)`` to hls4ml's ``(k..., in, out)``, which is our IR's
layout). Every precision is the IR's, as for Dense (``hls.project.layer_precisions``):

- Conv1D/Conv2D: weight, bias, exact accumulator, result. 'same' padding is an explicit zero padding
  before a 'valid' convolution (``nn.ConstantPad1d/2d``, hls4ml's ZeroPadding layer, in the input's type),
  with exactly the IR's (before, after) pads; that is what hls4ml itself inserts before a padded
  convolution in ``io_stream`` (``conv_same_pad.py``), but torch's own padding is symmetric only.
- MaxPool: accumulator and result are the input's type (the maximum passes the type through). hls4ml's
  io_stream pooling takes non-overlapping windows only (strides equal to the pool); others are refused.
- AvgPool/GlobalAvgPool (a power-of-two count N = 2**k): hls4ml's Vivado/Vitis ``reduce_pool`` sums the
  window in ``accum_t`` and divides by N, the quotient keeping ``accum_t``'s fractional bits
  (``nnet_pooling_stream.h``). ``accum_t = ap_fixed<W + 2k, I + k>`` holds every sum exactly and the
  exact mean (k more fractional bits than the input), so the division is exact; the result is then cast
  to the IR's result type, which is the reference's definition. GlobalAvgPool is the window that covers
  the whole input (hls4ml's PyTorch converter has no adaptive pooling), then a Flatten.
  Quartus/oneAPI average in the input's own type (its ``avg`` casts the mean back to it, dropping the k
  bits), so there an average pool is built as the convolution it equals (``lower_for_backend``).
- Flatten: the IR flattens channels-last. hls4ml's channels-last conversion puts a Transpose before a
  flatten so that the order is torch's channels-first; ``drop_flatten_transposes`` removes it again (a
  registered optimizer pass, as hls4ml's ``RemoveTransposeBeforeFlatten`` does for ``io_parallel``), so
  the stream is flattened in place, in the IR's order, and the Dense rows stay as they are.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import numpy as np

from codesign.core.fixed import FixedType
from codesign.core.kinds import handler
from codesign.core.layers import (AvgPool, Conv, Conv1D, Conv2D, Dense, Flatten, GlobalAvgPool, Layer, MaxPool, Quant,
                                  ReLU, Weighted)
from codesign.core.reference import avg_exact_type, output_type
from codesign.errors import BackendError
from hls import hgq

FLATTEN_PASS = "codesign_drop_flatten_transpose"
MODEL_FLAG = "CodesignChannelsLastFlatten"  # our key in hls4ml's Model config: which flattens keep our order
PAD_SUFFIX = "_pad"
GLOBAL_FLATTEN_SUFFIX = "_flat"
CONV_FORMS = ("auto", "da", "latency")


def avg_accum_type(in_type: FixedType, shift: int) -> FixedType:
    """The pooling accumulator that holds every window sum of ``2**shift`` inputs and their exact mean."""
    return FixedType(in_type.width + 2 * shift, in_type.integer + shift, in_type.signed)


def _shift(layer: AvgPool | GlobalAvgPool, in_shape: tuple[int, ...]) -> int:
    return layer.shift(in_shape) if isinstance(layer, GlobalAvgPool) else layer.shift


def torch_cnn_module(layers: list[Layer], in_shape: tuple[int, ...], float_exact: Any) -> Any:
    """The ``nn.Sequential`` hls4ml converts, its modules named as the IR layers (a padding before a conv is
    ``<conv>_pad``, the flatten after a global pool ``<pool>_flat``). ``float_exact(values, type, what)`` gives
    the float32 tensor that holds the integers' fixed-point values exactly."""
    from torch import nn

    mods: list[tuple[str, nn.Module]] = []
    shape = tuple(in_shape)
    for layer in layers:
        mods += layer_modules(layer, shape, float_exact)
        shape = layer.output_shape(shape)
    return nn.Sequential(collections.OrderedDict(mods)).eval()


def layer_modules(layer: Layer, shape: tuple[int, ...], float_exact: Any) -> list[tuple[str, Any]]:
    """The torch modules, in order and named, that one IR layer becomes for an input of ``shape``."""
    return handler(CNN_MODULES, layer, "hls4ml's CNN layers here", BackendError)(layer, shape, float_exact)


def _conv_modules(layer: Conv, shape: tuple[int, ...], float_exact: Any) -> list[tuple[str, Any]]:
    import torch
    from torch import nn

    mods: list[tuple[str, nn.Module]] = []
    pads = layer.pads(shape[:-1])
    if any(p != (0, 0) for p in pads):
        flat = [v for a, b in reversed(pads) for v in (a, b)]  # torch: last axis first, (before, after)
        pad = nn.ConstantPad2d(tuple(flat), 0.0) if layer.ndim == 2 else nn.ConstantPad1d(tuple(flat), 0.0)
        mods.append((layer.name + PAD_SUFFIX, pad))
    c_in, c_out = layer.weight.shape[-2:]
    cls = nn.Conv2d if layer.ndim == 2 else nn.Conv1d
    conv = cls(c_in, c_out, layer.kernel, stride=layer.strides, padding=0)
    w = float_exact(layer.weight, layer.weight_type, layer.name)
    order = (3, 2, 0, 1) if layer.ndim == 2 else (2, 1, 0)  # (k..., in, out) -> (out, in, k...)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.transpose(order))))
        conv.bias.copy_(torch.from_numpy(float_exact(layer.bias, layer.bias_type, layer.name)))
    mods.append((layer.name, conv))
    return mods


def _dense_modules(layer: Dense, shape: tuple[int, ...], float_exact: Any) -> list[tuple[str, Any]]:
    import torch
    from torch import nn

    n_in, n_out = layer.weight.shape
    lin = nn.Linear(n_in, n_out)
    with torch.no_grad():  # torch's (out, in); the channels-last conversion transposes it back
        lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(
            float_exact(layer.weight, layer.weight_type, layer.name).T)))
        lin.bias.copy_(torch.from_numpy(float_exact(layer.bias, layer.bias_type, layer.name)))
    return [(layer.name, lin)]


def _pool_modules(layer: MaxPool | AvgPool, shape: tuple[int, ...], float_exact: Any) -> list[tuple[str, Any]]:
    from torch import nn

    two = layer.ndim == 2
    cls = (nn.MaxPool2d if two else nn.MaxPool1d) if isinstance(layer, MaxPool) else (
        nn.AvgPool2d if two else nn.AvgPool1d)
    return [(layer.name, cls(kernel_size=layer.pool, stride=layer.strides))]


def _global_pool_modules(layer: GlobalAvgPool, shape: tuple[int, ...], float_exact: Any) -> list[tuple[str, Any]]:
    from torch import nn

    spatial = tuple(shape[:-1])
    cls = nn.AvgPool2d if layer.ndim == 2 else nn.AvgPool1d
    return [(layer.name, cls(kernel_size=spatial, stride=spatial)),
            (layer.name + GLOBAL_FLATTEN_SUFFIX, nn.Flatten())]


def _relu_modules(layer: ReLU, shape: tuple[int, ...], float_exact: Any) -> list[tuple[str, Any]]:
    from torch import nn

    return [(layer.name, nn.ReLU())]


def _flatten_modules(layer: Flatten, shape: tuple[int, ...], float_exact: Any) -> list[tuple[str, Any]]:
    from torch import nn

    return [(layer.name, nn.Flatten())]


# The HLS stage's table for CNNs: each kind's torch modules for hls4ml's converter (merges: ``hls.graph``).
CNN_MODULES: dict[type[Layer], Callable[..., list[tuple[str, Any]]]] = {
    Conv: _conv_modules, Dense: _dense_modules, MaxPool: _pool_modules, AvgPool: _pool_modules,
    GlobalAvgPool: _global_pool_modules, ReLU: _relu_modules, Flatten: _flatten_modules,
    Quant: hgq.element_quant_modules,  # per-element formats only: a per-tensor Quant is folded (hls_layers)
}
CNN_LAYERS = tuple(CNN_MODULES)


def cnn_precisions(layers: list[Layer], in_shape: tuple[int, ...], in_type: FixedType,
                   weighted: Any) -> dict[str, dict[str, str]]:
    """hls4ml precision strings for every module of ``torch_cnn_module``: exactly the IR's types.
    ``weighted(layer, in_type)`` gives a Dense/Conv layer's precisions (``hls.project``'s rule)."""
    out: dict[str, dict[str, str]] = {}
    t, shape = in_type, tuple(in_shape)
    for layer in layers:
        t = module_precisions(layer, t, shape, weighted, out)
        shape = layer.output_shape(shape)
    return out


def module_precisions(layer: Layer, t: FixedType, shape: tuple[int, ...], weighted: Any,
                      out: dict[str, dict[str, str]]) -> FixedType:
    """Put the precisions of one layer's modules (``layer_modules``) for an input of type ``t`` and ``shape`` into
    ``out``; return the layer's result type."""
    return handler(CNN_PRECISIONS, layer, "hls4ml's CNN precisions here", BackendError)(layer, t, shape, weighted, out)


def _weighted_precisions(layer: Weighted, t: FixedType, shape: tuple[int, ...], weighted: Any,
                         out: dict[str, dict[str, str]]) -> FixedType:
    if isinstance(layer, Conv) and any(p != (0, 0) for p in layer.pads(shape[:-1])):
        out[layer.name + PAD_SUFFIX] = {"result": t.to_hls()}
    out[layer.name], res = weighted(layer, t)
    return res


def _max_pool_precisions(layer: MaxPool, t: FixedType, shape: tuple[int, ...], weighted: Any,
                         out: dict[str, dict[str, str]]) -> FixedType:
    out[layer.name] = {"accum": t.to_hls(), "result": t.to_hls()}
    return t


def _avg_pool_precisions(layer: AvgPool | GlobalAvgPool, t: FixedType, shape: tuple[int, ...], weighted: Any,
                         out: dict[str, dict[str, str]]) -> FixedType:
    k = _shift(layer, shape)
    res = layer.result_type or avg_exact_type(t, k)
    out[layer.name] = {"accum": avg_accum_type(t, k).to_hls(), "result": res.to_hls()}
    if isinstance(layer, GlobalAvgPool):
        out[layer.name + GLOBAL_FLATTEN_SUFFIX] = {"result": res.to_hls()}
    return res


def _cast_precisions(layer: ReLU | Flatten, t: FixedType, shape: tuple[int, ...], weighted: Any,
                     out: dict[str, dict[str, str]]) -> FixedType:
    """ReLU (its cast), Flatten (the type passes through)."""
    res = getattr(layer, "result_type", None) or t
    out[layer.name] = {"result": res.to_hls()}
    return res


# The HLS stage's precisions for CNNs: each kind's hls4ml precision strings, exactly the IR's types.
CNN_PRECISIONS: dict[type[Layer], Callable[..., FixedType]] = {
    Weighted: _weighted_precisions, MaxPool: _max_pool_precisions, AvgPool: _avg_pool_precisions,
    GlobalAvgPool: _avg_pool_precisions, ReLU: _cast_precisions, Flatten: _cast_precisions,
    Quant: _cast_precisions,  # per-element formats (hls.hgq): the cast's envelope; a per-tensor Quant is folded
}


def conv_plan(layer: Conv, backend: str, form: str = "auto") -> dict[str, Any]:
    """Strategy of one convolution in ``io_stream``: its kernel is one dense product over the window
    (``n_in = prod(kernel) * c_in``, ``n_out = c_out``) computed per output pixel from the line buffer.
    Vitis/Vivado ``auto``: distributed arithmetic when da4ml is installed (one adder graph of the nonzero kernel
    weights, shared by every pixel, as the Dense layers get), else Latency; ``latency``: hls4ml's Latency
    (reuse folds it). Quartus and oneAPI: Resource, hls4ml's only convolution strategy there, im2col (never
    Winograd, whose transformed kernels are not exact in fixed point)."""
    from hls.project import _has_da4ml, _valid_reuse

    if form not in CONV_FORMS:
        raise BackendError(f"layer {layer.name!r}: a convolution takes sparse form 'auto', 'da' or 'latency', "
                           f"not {form!r}")
    n_in = int(np.prod(layer.kernel)) * layer.weight.shape[-2]
    reuse = _valid_reuse(n_in, layer.weight.shape[-1], int(layer.reuse))
    if backend in ("quartus", "oneapi"):
        if form != "auto":
            raise BackendError(f"layer {layer.name!r}: sparse form {form!r} is a Vitis/Vivado strategy; {backend} "
                               "takes 'auto'")
        return {"Strategy": "Resource", "ReuseFactor": reuse, "Implementation": "im2col"}
    if form == "auto":
        form = "da" if _has_da4ml() and reuse == 1 else "latency"
    strategy = "distributed_arithmetic" if form == "da" else "Latency"
    return {"Strategy": strategy, "ReuseFactor": 1 if form == "da" else reuse, "ConvImplementation": "LineBuffer"}


def check_backend_layers(layers: list[Layer], backend: str) -> None:
    """Refuse what a backend's hls4ml 1.3 templates do not build or do not compute exactly, naming the layer
    (a failed ``assert`` in the C simulation would end the process instead)."""
    for layer in layers:
        if isinstance(layer, (MaxPool, AvgPool)) and tuple(layer.strides) != tuple(layer.pool):
            raise BackendError(
                f"layer {layer.name!r} ({layer.kind}): hls4ml 1.3's io_stream pooling takes windows that do not "
                f"overlap (strides equal to the pool; nnet_pooling_stream.h), not pool {layer.pool} with strides "
                f"{layer.strides}; use strides equal to the pool, or a strided Conv"
            )


def lower_for_backend(layers: list[Layer], in_shape: tuple[int, ...], in_type: FixedType,
                      backend: str) -> list[Layer]:
    """The layers as the backend builds them exactly. Quartus and oneAPI (hls4ml 1.3) average in the input's
    own type (``nnet_pooling.h``'s ``avg`` casts the mean back to it, dropping the k bits an exact mean
    needs), so there an average pool becomes the convolution it equals: kernel = the window, strides = the
    window, weight ``2**-k`` on the channel diagonal (zero elsewhere), zero bias, the exact accumulator and
    the pool's result type; a global pool is that over the whole input, then a Flatten. Same values, same
    cast, so the same integers as the reference; it costs C x C x window constant products (all but C x
    window of them zero) instead of a window sum."""
    if backend not in ("quartus", "oneapi"):
        return list(layers)
    out: list[Layer] = []
    shape, t = tuple(in_shape), in_type
    for layer in layers:
        if isinstance(layer, (AvgPool, GlobalAvgPool)):
            out += average_as_conv(layer, shape, t)
        else:
            out.append(layer)
        t, shape = output_type(layer, t, shape), layer.output_shape(shape)
    return out


def average_as_conv(layer: AvgPool | GlobalAvgPool, shape: tuple[int, ...], t: FixedType) -> list[Layer]:
    """The convolution (then, for a global pool, the Flatten) an average pool of inputs ``shape``, ``t`` equals."""
    spatial, c = tuple(shape[:-1]), shape[-1]
    window = spatial if isinstance(layer, GlobalAvgPool) else tuple(layer.pool)
    k = _shift(layer, shape)
    weight = np.zeros((*window, c, c), dtype=np.int64)
    weight[..., np.arange(c), np.arange(c)] = 1  # 1 LSB of ap_fixed<2, 2 - k> is 2**-k
    cls = Conv2D if len(window) == 2 else Conv1D
    conv = cls(layer.name, weight=weight, bias=np.zeros(c, dtype=np.int64), weight_type=FixedType(2, 2 - k),
               bias_type=FixedType(2, 2), strides=window, padding="valid",
               result_type=layer.result_type or avg_exact_type(t, k))
    out: list[Layer] = [conv]
    if isinstance(layer, GlobalAvgPool):
        out.append(Flatten(layer.name + GLOBAL_FLATTEN_SUFFIX))
    return out


def register_flatten_pass() -> None:
    """Register (once per process) the pass that drops the channels-first Transpose hls4ml puts before the
    flattens named in our Model config flag, and add it to hls4ml's ``convert`` flow."""
    from hls4ml.model.flow.flow import update_flow
    from hls4ml.model.layers import Reshape, Transpose
    from hls4ml.model.optimizer import OptimizerPass, get_available_passes, register_pass

    if FLATTEN_PASS in get_available_passes():
        return

    class DropFlattenTranspose(OptimizerPass):
        """A Transpose inserted by the channels-last conversion before one of our flattens is removed: the
        IR flattens channels-last, which is the stream's order already."""

        def match(self, node: Any) -> bool:
            names = node.model.config.config["HLSConfig"]["Model"].get(MODEL_FLAG) or ()
            if not isinstance(node, Transpose) or len(node.get_output_nodes()) != 1:
                return False
            nxt = node.get_output_nodes()[0]
            return isinstance(nxt, Reshape) and nxt.name in names and node.name == f"transpose_input_for_{nxt.name}"

        def transform(self, model: Any, node: Any) -> bool:
            model.remove_node(node)
            return True

    register_pass(FLATTEN_PASS, DropFlattenTranspose)
    update_flow("convert", add_optimizers=[FLATTEN_PASS])


def flatten_names(layers: list[Layer]) -> list[str]:
    """The names of the torch modules that flatten (our Flatten layers and the flatten after a global pool)."""
    out = []
    for layer in layers:
        if isinstance(layer, Flatten):
            out.append(layer.name)
        elif isinstance(layer, GlobalAvgPool):
            out.append(layer.name + GLOBAL_FLATTEN_SUFFIX)
    return out
