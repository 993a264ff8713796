"""The analytic cost of a streaming CNN, priced as ``rtl_sim.stream`` builds it.

Pixels arrive in raster order, one pixel (all channels) per cycle. Each convolution or pooling
layer is a window stage:
- a delay line of the last ``(kh-1)*W + kw-1`` pixels (the line buffers and the window
  registers in one chain) with taps at the window's positions. Yosys maps a run of three or more
  registers between two taps to a shift-register LUT (SRL16E/SRLC32E, up to 32 deep, one per
  bit) and keeps shorter runs in flip-flops;
- for 'same' padding, a mask per bit of every tap that can fall outside the image;
- a convolution's kernel datapath, shared by every output pixel: a Dense over the flattened
  ``k*k*c_in`` window, priced by ``cost.dense_cost`` on the kernel reshaped to
  ``(k*k*c_in, c_out)``, so only nonzero kernel weights cost logic; a max pool's comparator tree
  (``k*k-1`` comparators and muxes per channel) or an average pool's adder tree;
- the output registers and the position counters.
After the stream, Flatten holds an image's output pixels in a shift register (flip-flops: every
register is a tap) and GlobalAvgPool keeps an accumulator per channel; the Dense tail is
``cost.dense_cost``. A pruned channel removes its filter, its input channel of the next layer and
its bits of the next stage's delay line and taps, which is what makes channel pruning pay.

Block RAM is not used by the emitter (its delay lines are registers); ``STREAM_COEFFS`` holds
the per-family prices, fitted on xc7 by ``bench/calibrate_conv_cost.py`` (per streaming stage,
Yosys minus the stage's kernel synthesized alone; digits-cnn at four settings and a smaller CNN:
flip-flops within a few percent per stage, the streaming LUTs within ~15 % of a few hundred).
With the kernels on the datapath ``cost.dense_cost`` is fitted on ("csd"), the network total
of digits-cnn at 4 bits is +2.9 % LUT, -2.1 % FF against Yosys; the emitters' default
shared-subexpression kernels ("cmvm") take 35-78 % fewer LUTs than ``dense_cost`` says, which
is the Dense model's to follow. Cyclone V's prices are xc7's until measured.

A convolution or Dense layer with ``reuse`` R > 1 is folded (``rtl_sim.stream_fold``): its kernel is priced by
``fold_cost.plan_cost`` on the plan the RTL is built from (weight memory, multiply-accumulate units, partials,
control), by the family's DSP rule, and its window stage adds what folding adds to it: the delay line one
pixel longer, the registered output position and, once per design, the phase counter; a folded Dense after
the stream adds the register that holds its input vector for the image's time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from codesign.board import Board
from codesign.compress.cost import LayerCost, dense_cost
from codesign.compress.elements import constant_rows, without_rows
from codesign.core.fixed import FixedType
from codesign.core.kinds import handler, lookup
from codesign.core.layers import (AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Layer, MaxPool, Merge, Output, Quant,
                                  ReLU, Window)
from codesign.core.network import INPUT, Network
from codesign.errors import LayerError
from codesign.families import FAMILIES

SRL_MIN_RUN = 3  # Yosys's shregmap -minlen on Xilinx: shorter runs stay flip-flops
SRL_DEPTH = 32  # SRLC32E
# LUT prices per bit (or per counter bit) of the streaming parts, per synthesis family
STREAM_COEFFS: dict[str, dict[str, float]] = {
    fam: {"srl_lut_per_bit": 1.0, "pad_lut_per_bit": 2.0, "pool_lut_per_bit": 2.3, "counter_lut_per_bit": 0.5,
          "stage_lut": 4.0,
          "add_lut_per_bit": 1.0}  # a merge's adder bit: one LUT on a carry chain (not fitted yet: no merge measured)
    for fam, f in FAMILIES.items() if f.stream_priced
}
# Intel's ALMs have no shift-register mode: a delay line there is flip-flops (and MLABs Yosys does not infer)
NO_SRL_FAMILIES = tuple(name for name, f in FAMILIES.items() if not f.srl)


def kernel_dense(layer: Conv) -> Dense:
    """The convolution's kernel as the Dense it is in hardware: ``(k*k*c_in, c_out)``."""
    c_out = layer.weight.shape[-1]
    d = Dense(layer.name, layer.weight.reshape(-1, c_out), layer.bias, mask=layer.mask.reshape(-1, c_out),
              weight_type=layer.weight_type, bias_type=layer.bias_type, reuse=layer.reuse, mult=layer.mult)
    d.accum_type, d.result_type = layer.accum_type, layer.result_type
    return d


def live_outputs(layer: Dense, in_type: FixedType, relu: bool) -> np.ndarray:
    """Which outputs of a (kernel) Dense can take more than one value for inputs of ``in_type``: the others
    (bias only, or never above zero before a ReLU) are constants the emitter neither stores nor compares."""
    w = layer.weight.astype(object)
    pf = in_type.frac + layer.weight_type.frac
    frac = max(pf, layer.bias_type.frac)
    b = layer.bias.astype(object) * (1 << (frac - layer.bias_type.frac))
    a, c = w * in_type.min_int, w * in_type.max_int
    lo = np.minimum(a, c).sum(axis=0) * (1 << (frac - pf)) + b
    hi = np.maximum(a, c).sum(axis=0) * (1 << (frac - pf)) + b
    return np.array([(h > 0 if relu else h > l) and h > l for l, h in zip(lo, hi)], dtype=bool)


def _bits(v: int) -> int:
    return max(1, int(v).bit_length())


def _geometry(layer: Layer, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """(H, W, kh, kw, sh, sw, pt, pb, pl, pr) in 2-D form (a 1-D layer has H = kh = sh = 1)."""
    kernel, strides, pads = _window_of(layer.window(in_shape))
    if len(in_shape) == 2:
        return (1, in_shape[0], 1, kernel[0], 1, strides[0], 0, 0, *pads[0])
    return (in_shape[0], in_shape[1], *kernel, *strides, *pads[0], *pads[1])


def _window_of(w: Window) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...]]:
    """(kernel, strides, pads) of a layer's window."""
    return w.kernel, w.strides, w.pads


def delay_line(taps: set[int], bits: int, family: str) -> dict[str, float]:
    """Registers between consecutive taps of a ``bits``-wide delay line: runs of ``SRL_MIN_RUN`` or more
    become shift-register LUTs (one per bit per ``SRL_DEPTH``), shorter runs flip-flops."""
    srl = ff = 0
    d = sorted(taps)
    for a, b in zip(d, d[1:]):
        run = b - a
        if run >= SRL_MIN_RUN and family not in NO_SRL_FAMILIES:
            srl += bits * math.ceil(run / SRL_DEPTH)
        else:
            ff += bits * run
    return {"srl": float(srl), "ff": float(ff), "bits": float(bits * (d[-1] if d else 0))}


def window_parts(layer: Layer, in_shape: tuple[int, ...], in_type: FixedType, family: str,
                 live: np.ndarray | None = None) -> dict[str, Any]:
    """A window stage's delay line, padding masks, pooling tree and control (plain data), without the kernel.
    ``live``: which input channels are not constant (the emitter stores and compares only those). A
    convolution's delay line carries a channel only as far back as its furthest tap with a nonzero
    weight (synthesis removes registers nothing reads)."""
    c = STREAM_COEFFS[family]
    H, W, kh, kw, sh, sw, pt, pb, pl, pr = _geometry(layer, in_shape)
    live = np.ones(in_shape[-1], dtype=bool) if live is None else np.asarray(live, dtype=bool)
    ch = int(live.sum())
    bits = in_type.width
    bw = ch * bits
    delay = {(dy, dx): (kh - 1 - dy) * W + (kw - 1 - dx) for dy in range(kh) for dx in range(kw)}
    if isinstance(layer, Conv):
        w = layer.weight.reshape(kh, kw, in_shape[-1], -1)
        line = {"srl": 0.0, "ff": 0.0, "bits": 0.0}
        for ci in np.flatnonzero(live):
            used = {d for (dy, dx), d in delay.items() if w[dy, dx, ci].any()} | {0}
            for k, v in delay_line(used, bits, family).items():
                line[k] += v
    else:
        line = delay_line(set(delay.values()), bw, family)
    padded = sum(1 for dy in range(kh) for dx in range(kw) if dy < pt or dy > kh - 1 - pb or dx < pl or dx > kw - 1 - pr)
    Ho, Wo = (H + pt + pb - kh) // sh + 1, (W + pl + pr - kw) // sw + 1
    tail = max(0, ((Ho - 1) * sh - pt + kh - 1) * W + (Wo - 1) * sw - pl + kw - 1 - H * W + 1)
    ew = _bits(H * W + tail - 1)
    counter = 3 * ew + _bits(Ho - 1) + _bits(Wo - 1) + (ew + 1 if tail else 0)
    lut = c["srl_lut_per_bit"] * line["srl"] + c["pad_lut_per_bit"] * padded * bw
    lut += c["counter_lut_per_bit"] * counter + c["stage_lut"]
    ff = line["ff"] + counter + 1
    out = {"delay_line": line, "padded_taps": padded, "counter_bits": counter, "out_shape": [Ho, Wo, ch]}
    if not isinstance(layer, Conv):  # pooling: a comparator (max) or adder (average) tree per channel
        n = kh * kw - 1
        shift = int(np.prod(getattr(layer, "pool", (1,)))).bit_length() - 1 if "Avg" in layer.kind else 0
        out["tree"] = {"ops": n * ch, "bits": bits + shift}
        lut += c["pool_lut_per_bit"] * n * ch * (bits + shift)
        ff += ch * bits  # the output registers (a conv's are in its kernel's price)
    out.update(lut=lut, ff=ff)
    return out


def collect_parts(layer: Layer, in_shape: tuple[int, ...], in_type: FixedType, family: str,
                  live: np.ndarray | None = None, reader: Dense | None = None) -> dict[str, Any]:
    """Flatten's shift register of an image's output pixels, or GlobalAvgPool's accumulators. Flatten's
    register of a channel reaches back to its oldest position the Dense after it (``reader``) reads."""
    c = STREAM_COEFFS[family]
    n_pos = int(np.prod(in_shape[:-1]))
    live = np.ones(in_shape[-1], dtype=bool) if live is None else np.asarray(live, dtype=bool)
    ch, bits = int(live.sum()), in_type.width
    cw = _bits(n_pos - 1)
    if "GlobalAvgPool" in layer.kind:
        acc = bits + _bits(n_pos) - 1
        return {"accumulators": ch, "bits": acc, "lut": c["pool_lut_per_bit"] * ch * acc + c["counter_lut_per_bit"] * cw,
                "ff": float(ch * acc + cw)}
    if reader is not None and reader.weight.shape[0] == n_pos * len(live):
        read = reader.weight.reshape(n_pos, len(live), -1).any(axis=2)  # (position, channel)
        depth = [n_pos - 1 - int(np.flatnonzero(read[:, ci])[0]) if read[:, ci].any() else 0
                 for ci in np.flatnonzero(live)]
        sr_bits = int(sum(depth)) * bits
    else:
        sr_bits = (n_pos - 1) * ch * bits
    return {"shift_register_bits": sr_bits, "lut": c["counter_lut_per_bit"] * cw, "ff": float(sr_bits + cw)}


def _out_type(net: Network, types: list[FixedType | None], i: int) -> tuple[FixedType, bool, int]:
    """The type reaching the stage register after layer ``i`` (past the ReLU/Quant that read it alone), whether
    a ReLU follows, and the index of the last layer of the stage."""
    layers, readers = net.layers, net.consumers()

    def follows(j: int) -> bool:  # layer j + 1 is a ReLU/Quant that is layer j's only reader
        return (j + 1 < len(layers) and isinstance(layers[j + 1], (ReLU, Quant)) and not layers[j + 1].inputs
                and readers[layers[j].name] == [layers[j + 1].name])

    relu = follows(i) and isinstance(layers[i + 1], ReLU)
    j, t = i, types[i]
    while follows(j):
        j += 1
        t = types[j]
    return t, relu, j


def window_offset(layer: Layer, in_shape: tuple[int, ...]) -> int:
    """Input positions a window stage reads ahead of the output position it emits (its stream delay)."""
    w = layer.window(in_shape)
    if w is None or not w.kernel or lookup(CNN_PARTS, type(layer)) is _collect_entry:
        return 0  # no window, a Dense's one position, or a collect stage (after it the tensor is off the stream)
    kernel, pads = w.kernel, w.pads
    width = in_shape[1] if len(in_shape) == 3 else 1
    rows = kernel[0] - 1 - pads[0][0]
    cols = (kernel[1] - 1 - pads[1][0]) if len(kernel) == 2 else 0
    return rows * width + cols if len(kernel) == 2 else rows


def merge_parts(layer: Layer, offsets: list[int], in_types: list[FixedType], out_type: FixedType, shape: tuple[int, ...],
                family: str) -> dict[str, Any]:
    """An Add's adders (or a Concatenate's wiring) and the delay line that holds the earlier operand until the
    later one arrives (``offsets``: each operand's stream delay in positions)."""
    c = STREAM_COEFFS[family]
    ch = int(shape[-1]) if layer.kind == "Add" else 0
    depth = max(offsets) - min(offsets)
    early = int(np.argmin(offsets))
    bits = in_types[early].width * (int(shape[-1]) if layer.kind == "Add" else 1)
    fifo = delay_line({0, depth}, bits, family) if depth else {"srl": 0.0, "ff": 0.0, "bits": 0.0}
    add_bits = ch * out_type.width
    return {"adders": ch, "bits": out_type.width, "fifo_depth": depth, "fifo": fifo,
            "lut": c["add_lut_per_bit"] * add_bits + c["srl_lut_per_bit"] * fifo["srl"] + c["stage_lut"],
            "ff": float(fifo["ff"] + add_bits)}


def cnn_parts(net: Network, board: Board, mapping: str | None = None, regs_every: int = 0) -> list[dict[str, Any]]:
    """Per hardware layer: its name, kind and cost with the parts it is made of (plain data). Each tensor keeps
    its type, its channels that are not constant, and its stream delay, so branches and merges are priced."""
    if not net.quantized:
        raise LayerError(f"network {net.name!r} is float; quantize it before pricing it")
    types, shapes = net.tensor_types(), net.shapes()
    layers, sources = net.layers, net.sources()
    t_of = {INPUT: net.input_type, **{l.name: t for l, t in zip(layers, types)}}
    shape_of = {INPUT: net.input_shape, **{l.name: s for l, s in zip(layers, shapes)}}
    live_of = {INPUT: np.ones(net.input_shape[-1], dtype=bool)}
    offset_of = {INPUT: 0}
    out: list[dict[str, Any]] = []
    for i, layer in enumerate(layers):
        srcs = sources[layer.name]
        offset_of[layer.name] = max(offset_of[s] for s in srcs) + window_offset(layer, shape_of[srcs[0]])
        live_of[layer.name] = live_of[srcs[0]]
        ctx = _Ctx(net, board, mapping, regs_every, i, types, shapes, sources, t_of, shape_of, live_of, offset_of)
        entry = handler(CNN_PARTS, layer, "the CNN cost model", LayerError)(ctx)
        if entry is not None:
            out.append(entry)
    return out


@dataclass
class _Ctx:
    """What a layer's pricing reads: the network, its tensors' types, shapes, live channels and stream delays."""

    net: Network
    board: Board
    mapping: str | None
    regs_every: int
    i: int
    types: list
    shapes: list
    sources: dict
    t_of: dict
    shape_of: dict
    live_of: dict
    offset_of: dict

    @property
    def layer(self) -> Layer:
        return self.net.layers[self.i]

    @property
    def src(self) -> str:
        return self.sources[self.layer.name][0]


def _entry(layer: Layer, part: str, p: dict[str, Any]) -> dict[str, Any]:
    return {"name": layer.name, "kind": layer.kind, part: p, "lut": p["lut"], "ff": p["ff"], "dsp": 0.0, "bram": 0.0}


def _weighted_entry(c: _Ctx) -> dict[str, Any]:
    """A Dense, or a convolution's kernel datapath (a Dense over its window) plus its window stage."""
    layer, family = c.layer, c.board.synth_family
    t_in, shape, live = c.t_of[c.src], c.shape_of[c.src], c.live_of[c.src]
    t_out, relu, _ = _out_type(c.net, c.types, c.i)
    dense = kernel_dense(layer) if isinstance(layer, Conv) else layer
    dense = without_rows(dense, constant_rows(c.net).get(layer.name))  # HGQ's width-0 elements build nothing
    if int(layer.reuse) > 1 and len(c.net.input_shape) > 1:  # folded in the stream
        entry = _folded_kernel_entry(c, replace(dense, reuse=1), int(layer.reuse), t_in, t_out, relu)
    else:
        kc = dense_cost(dense, t_in, family, c.mapping, t_out, relu, c.regs_every, clock_mhz=c.board.clock_mhz)
        entry = {"name": layer.name, "kind": layer.kind, "kernel": kc.as_dict(),
                 "lut": kc.lut, "ff": kc.ff, "dsp": kc.dsp, "bram": 0.0}
    if isinstance(layer, Conv):
        s = window_parts(layer, shape, t_in, family, live)
        if int(layer.reuse) > 1:  # the window read one pixel further down, and its output position registered
            H, W, kh, kw, sh, sw, *_ = _geometry(layer, shape)
            Ho, Wo = s["out_shape"][:2]
            extra = int(live.sum()) * t_in.width + _bits(Ho - 1) + _bits(Wo - 1)
            s.update(ff=s["ff"] + extra, folded_window_ff=extra)
        entry.update(stream=s, lut=entry["lut"] + s["lut"], ff=entry["ff"] + s["ff"])
    c.live_of[layer.name] = live_outputs(dense, t_in, relu)
    return entry


def _folded_kernel_entry(c: _Ctx, dense: Dense, reuse: int, t_in: FixedType, t_out: FixedType, relu: bool
                         ) -> dict[str, Any]:
    """A folded kernel or Dense (``fold_cost.folded_cost`` on the plan the RTL builds); a Dense after the stream also
    holds its input vector, and the first folded layer carries the design's phase counter."""
    from codesign.compress.fold_cost import folded_cost

    family = c.board.synth_family
    fc = folded_cost(dense, t_in, reuse, family, t_out, False, c.mapping != "lut", relu=relu)
    ff = float(fc["ff"])
    if not isinstance(c.layer, Conv):  # the held input: the inputs some weight reads
        ff += int(np.count_nonzero(np.any(dense.weight != 0, axis=1))) * t_in.width
    first = next(l.name for l in c.net.layers if isinstance(l, (Conv, Dense)) and int(l.reuse) > 1)
    if c.layer.name == first:
        ff += _bits(max(fc["cycles"], 2) - 1)
    kernel = {k: fc[k] for k in ("lut", "ff", "dsp", "bram", "units", "cycles", "memory_bits", "calibrated",
                                 "features")}
    return {"name": c.layer.name, "kind": c.layer.kind, "kernel": {**kernel, "reuse": reuse, "folded": True},
            "lut": float(fc["lut"]), "ff": ff, "dsp": float(fc["dsp"]),
            "bram": float(math.ceil(fc["bram"]))}  # a stage's RAMB18 count as RAMB36, rounded up, as Yosys's counts


def _merge_entry(c: _Ctx) -> dict[str, Any]:
    layer, srcs = c.layer, c.sources[c.layer.name]
    lives = [c.live_of[s] for s in srcs]
    c.live_of[layer.name] = np.logical_or.reduce(lives) if layer.kind == "Add" else np.concatenate(lives)
    m = merge_parts(layer, [c.offset_of[s] for s in srcs], [c.t_of[s] for s in srcs], c.types[c.i], c.shapes[c.i],
                    c.board.synth_family)
    return _entry(layer, "merge", m)


def _window_entry(c: _Ctx) -> dict[str, Any]:
    """A pooling window stage (a convolution's is priced with its kernel)."""
    return _entry(c.layer, "stream", window_parts(c.layer, c.shape_of[c.src], c.t_of[c.src], c.board.synth_family,
                                                  c.live_of[c.src]))


def _collect_entry(c: _Ctx) -> dict[str, Any] | None:
    """Flatten of an image (nothing for a flat tensor), or GlobalAvgPool's accumulators."""
    layer, shape = c.layer, c.shape_of[c.src]
    if isinstance(layer, Flatten) and len(shape) == 1:
        return None
    reader = next((l for l in c.net.layers[c.i + 1:] if isinstance(l, Dense)), None)
    return _entry(layer, "collect", collect_parts(layer, shape, c.t_of[c.src], c.board.synth_family,
                                                  c.live_of[c.src], reader))


def _fused_entry(c: _Ctx) -> None:
    """Element-wise layers are priced with the stage they follow; the head is not hardware."""
    return None


# The CNN cost model's table: each kind it prices and how (a handler returns the layer's entry or None).
CNN_PARTS: dict[type[Layer], Callable[[_Ctx], dict[str, Any] | None]] = {
    Conv: _weighted_entry, Dense: _weighted_entry, Merge: _merge_entry, MaxPool: _window_entry,
    AvgPool: _window_entry, Flatten: _collect_entry, GlobalAvgPool: _collect_entry, ReLU: _fused_entry,
    Quant: _fused_entry, Output: _fused_entry,
}


def cnn_cost(net: Network, board: Board, mapping: str | None = None, regs_every: int = 0) -> dict[str, LayerCost]:
    """Per hardware layer cost of a streaming CNN (``cost.network_cost`` hands CNNs here)."""
    return {p["name"]: LayerCost(p["name"], lut=p["lut"], ff=p["ff"], dsp=p["dsp"], bram=p["bram"])
            for p in cnn_parts(net, board, mapping, regs_every)}
