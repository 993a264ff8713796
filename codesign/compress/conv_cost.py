"""The analytic cost of a streaming CNN, priced as ``rtl_sim``'s streaming emitter builds it.

Pixels arrive in raster order, one pixel (all channels) per cycle. A convolution is:
- one kernel datapath shared by every output pixel: a Dense over the flattened
  ``k*k*c_in`` window (priced by ``cost.dense_cost`` on the kernel reshaped to
  ``(k*k*c_in, c_out)``, so only nonzero kernel weights cost logic);
- ``k-1`` line buffers of a row each (``(k-1) * width * c_in * bits``): flip-flops when short,
  else distributed RAM (LUTRAM) or block RAM, as the synthesis tool maps a memory of that size;
- the window registers (``k*k*c_in*bits`` flip-flops) and, for 'same' padding, the muxes that
  put zeros into the window at the borders; row/column counters.
Max pooling keeps a running maximum per channel: a comparator and a mux per channel and
window axis, and a line buffer of partial maxima; Flatten is wiring; the Dense tail is
``cost.dense_cost``. A pruned channel removes its filter, its input channel of the next layer
and its share of the next layer's line buffers and window, which is what makes channel pruning
pay in hardware.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from codesign.board import Board
from codesign.compress.cost import LayerCost, dense_cost
from codesign.core.fixed import FixedType
from codesign.core.layers import Conv, Dense, Flatten, Layer, MaxPool, Output, Quant, ReLU
from codesign.core.network import Network
from codesign.errors import LayerError

# Storage and control prices per synthesis family (LUT/FF per bit or per counter bit).
# ``lutram_bits_per_lut``: xc7's RAM64M is 4 LUTs for a 64-deep 3-bit memory (one write port);
# a memory shallower than ``ff_max_depth`` stays in flip-flops. Uncalibrated until the streaming
# emitter exists: see STREAM_CALIBRATED.
STREAM_COEFFS: dict[str, dict[str, float]] = {
    fam: {"ff_max_depth": 16, "lutram_bits_per_lut": 48.0, "bram_min_bits": 16384, "bram_bits": 36864,
          "pad_mux_per_bit": 1.0, "counter_lut_per_bit": 2.0, "pool_lut_per_bit": 1.5, "linebuf_mux_per_bit": 0.0,
          "control_lut": 8.0}
    for fam in ("xc7", "xcup", "cyclonev")
}
STREAM_CALIBRATED = False  # True once fitted against Yosys on rtl_sim's streaming emitter


def kernel_dense(layer: Conv) -> Dense:
    """The convolution's kernel as the Dense it is in hardware: ``(k*k*c_in, c_out)``."""
    c_out = layer.weight.shape[-1]
    d = Dense(layer.name, layer.weight.reshape(-1, c_out), layer.bias, mask=layer.mask.reshape(-1, c_out),
              weight_type=layer.weight_type, bias_type=layer.bias_type, reuse=layer.reuse, mult=layer.mult)
    d.accum_type, d.result_type = layer.accum_type, layer.result_type
    return d


def storage(bits_per_word: int, depth: int, words: int, family: str) -> dict[str, float]:
    """LUT/FF/BRAM of ``words`` buffers of ``depth`` entries of ``bits_per_word`` bits (one per row kept)."""
    c = STREAM_COEFFS[family]
    total = bits_per_word * depth * words
    if total == 0:
        return {"lut": 0.0, "ff": 0.0, "bram": 0.0, "kind": "none"}
    if depth <= c["ff_max_depth"]:
        return {"lut": c["linebuf_mux_per_bit"] * total, "ff": float(total), "bram": 0.0, "kind": "ff"}
    if total >= c["bram_min_bits"]:
        return {"lut": 0.0, "ff": 0.0, "bram": float(math.ceil(total / c["bram_bits"])), "kind": "bram"}
    return {"lut": total / c["lutram_bits_per_lut"], "ff": float(bits_per_word * words), "bram": 0.0, "kind": "lutram"}


def _counter_bits(shape: tuple[int, ...]) -> int:
    return sum(max(int(math.ceil(math.log2(max(n, 2)))), 1) for n in shape[:-1])


def conv_stream_parts(layer: Conv, in_shape: tuple[int, ...], in_type: FixedType, family: str) -> dict[str, Any]:
    """The streaming parts of one convolution other than its kernel datapath (plain data)."""
    c = STREAM_COEFFS[family]
    k = layer.kernel
    c_in = in_shape[-1]
    bits = in_type.width
    window_bits = int(np.prod(k)) * c_in * bits
    rows = (k[0] - 1) if layer.ndim == 2 else 0
    width = in_shape[1] + sum(layer.pads(in_shape[:-1])[1]) if layer.ndim == 2 else 0
    buf = storage(c_in * bits, width, rows, family)
    pad_bits = window_bits if layer.padding == "same" and any(p != (0, 0) for p in layer.pads(in_shape[:-1])) else 0
    cnt = _counter_bits(in_shape)
    return {"window_ff": window_bits, "line_buffer_bits": c_in * bits * width * rows, "line_buffer": buf,
            "pad_mux_lut": c["pad_mux_per_bit"] * pad_bits, "counter_bits": cnt,
            "lut": buf["lut"] + c["pad_mux_per_bit"] * pad_bits + c["counter_lut_per_bit"] * cnt + c["control_lut"],
            "ff": window_bits + buf["ff"] + cnt, "bram": buf["bram"]}


def pool_parts(layer: Layer, in_shape: tuple[int, ...], in_type: FixedType, family: str) -> dict[str, Any]:
    """A streaming max pool: a running maximum per channel along each window axis, partial maxima of a row."""
    c = STREAM_COEFFS[family]
    if not isinstance(layer, MaxPool):
        raise LayerError(f"layer {layer.name!r} ({layer.kind}): the CNN cost model prices max pooling only so far")
    ch, bits = in_shape[-1], in_type.width
    axes = sum(1 for p in layer.pool if p > 1)
    out_w = (in_shape[1] - layer.pool[1]) // layer.strides[1] + 1 if layer.ndim == 2 else 0
    buf = storage(ch * bits, out_w, 1 if layer.ndim == 2 and layer.pool[0] > 1 else 0, family)
    cnt = _counter_bits(in_shape)
    lut = c["pool_lut_per_bit"] * axes * ch * bits + buf["lut"] + c["counter_lut_per_bit"] * cnt
    return {"comparators": axes * ch, "line_buffer": buf, "lut": lut,
            "ff": ch * bits * (1 + axes) + buf["ff"] + cnt, "bram": buf["bram"]}


def _out_type(layers: list[Layer], types: list[FixedType | None], i: int) -> tuple[FixedType, bool, int]:
    """The type reaching the stage register after layer ``i`` (past the ReLU/Quant that follow), whether a
    ReLU follows, and the index of the last layer of the stage."""
    relu = i + 1 < len(layers) and isinstance(layers[i + 1], ReLU)
    j, t = i, types[i]
    while j + 1 < len(layers) and isinstance(layers[j + 1], (ReLU, Quant)):
        j += 1
        t = types[j]
    return t, relu, j


def cnn_parts(net: Network, board: Board, mapping: str | None = None, regs_every: int = 0) -> list[dict[str, Any]]:
    """Per hardware layer: its name, kind and cost with the parts it is made of (plain data)."""
    if not net.quantized:
        raise LayerError(f"network {net.name!r} is float; quantize it before pricing it")
    family = board.synth_family
    types, shapes = net.tensor_types(), net.shapes()
    layers = net.layers
    t_in, shape = net.input_type, net.input_shape
    out: list[dict[str, Any]] = []
    for i, layer in enumerate(layers):
        if isinstance(layer, (Conv, Dense)):
            t_out, relu, _ = _out_type(layers, types, i)
            dense = kernel_dense(layer) if isinstance(layer, Conv) else layer
            kc = dense_cost(dense, t_in, family, mapping, t_out, relu, regs_every)
            entry = {"name": layer.name, "kind": layer.kind, "kernel": kc.as_dict(),
                     "lut": kc.lut, "ff": kc.ff, "dsp": kc.dsp, "bram": kc.bram}
            if isinstance(layer, Conv):
                s = conv_stream_parts(layer, shape, t_in, family)
                entry.update(stream=s, lut=kc.lut + s["lut"], ff=kc.ff + s["ff"], bram=s["bram"])
            out.append(entry)
        elif isinstance(layer, MaxPool) or "Pool" in layer.kind:
            p = pool_parts(layer, shape, t_in, family)
            out.append({"name": layer.name, "kind": layer.kind, "pool": p, "lut": p["lut"], "ff": p["ff"], "dsp": 0.0,
                        "bram": p["bram"]})
        elif not isinstance(layer, (ReLU, Quant, Flatten, Output)):
            raise LayerError(f"layer {layer.name!r} ({layer.kind}): the CNN cost model prices Conv, pooling, "
                             "Flatten, Dense, ReLU and Quant layers")
        t_in = types[i] if types[i] is not None else t_in
        shape = shapes[i]
    return out


def cnn_cost(net: Network, board: Board, mapping: str | None = None, regs_every: int = 0) -> dict[str, LayerCost]:
    """Per hardware layer cost of a streaming CNN (``cost.network_cost`` hands CNNs here)."""
    return {p["name"]: LayerCost(p["name"], lut=p["lut"], ff=p["ff"], dsp=p["dsp"], bram=p["bram"])
            for p in cnn_parts(net, board, mapping, regs_every)}
