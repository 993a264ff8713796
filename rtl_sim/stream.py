"""Streaming Verilog for convolutional networks: one pixel (all channels) per clock, back to back.

Pixels enter in raster order (``in_valid``/``in_data``, channel ``c`` at bits ``c*W``). Each
convolution or pooling layer is a *window stage*: a delay line of the last ``(kh-1)*W + kw-1``
pixels (the line buffers and window registers), taps at the window's positions, and one kernel
datapath shared by every output pixel. A convolution's kernel is a Dense over the flattened
window (``k*k*c_in -> c_out``, the reference's im2col order), built by
``rtl_sim.verilog.dense_datapath``, so only nonzero kernel weights cost hardware and the kernel
gets whatever datapath the Dense layers get. Pooling is a comparator tree (max) or an exact sum
with the binary point moved (average). After the last window stage, Flatten collects the output
pixels of an image in a shift register and GlobalAvgPool sums them; the Dense layers then run
fully parallel, as in the MLP emitter.

Timing. Output ``(oy, ox)`` of a window stage is computed on the tick at which the pixel at its
window's bottom-right corner enters, ``e = (oy*sh - pt + kh-1)*W + ox*sw - pl + kw-1`` pixels
after the image's first. With 'same' padding that corner can lie past the image (``e >= H*W``):
those outputs are computed on the ``F = e_last - H*W + 1`` ticks after the image's last pixel,
which are the next image's first pixels when images come back to back, or idle cycles
(``tail`` ticks) otherwise. Taps that fall outside the image (padding) read as zero; which ones
do follows from the output position. Every stage computes at most one output per tick and never
stalls, so the design takes one image every ``H*W`` cycles, the ideal for one pixel per cycle,
and input gaps of any length anywhere are allowed (``s_axis_tready`` is always high).

This module depends only on the IR: it never imports ``hls``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from codesign.core.fixed import FixedType
from codesign.core.kinds import lookup
from codesign.core.layers import (AvgPool, BatchNorm, Conv, Dense, Flatten, GlobalAvgPool, Layer, MaxPool, Output,
                                  Pool, Quant, ReLU)
from codesign.core.network import Network
from codesign.core.reference import exact_accum_type
from codesign.errors import BackendError
from rtl_sim.stream_fold import Pace, folded_dense_stage, folded_kernel, make_pace
from rtl_sim.verilog import (Design, Sig, _Emitter, _ident, _timing_args, const_sig, dense_datapath, element_types,
                             output_assigns, tail_steps, wire_types)

# The streaming RTL's kind table: the stage each kind becomes ("post": fused after the stage before it; "head": not
# hardware). rtl_sim.branches adds the merges.
STREAM_STAGES: dict[type[Layer], str] = {
    Conv: "window", MaxPool: "window", AvgPool: "window", Flatten: "collect", GlobalAvgPool: "collect",
    Dense: "dense", ReLU: "post", Quant: "post", Output: "head",
}
WINDOW_LAYERS = tuple(k for k, v in STREAM_STAGES.items() if v == "window")
ELEMENTWISE = tuple(k for k, v in STREAM_STAGES.items() if v == "post")
STREAM_LAYER_NAMES = ("Conv1D", "Conv2D", "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool1D",
                      "GlobalAvgPool2D", "ReLU", "Quant", "Flatten", "Dense", "Output")


@dataclass
class StreamDesign(Design):
    """A streaming design: ``n_in`` is the channels of one pixel; one result per ``pixels`` input beats."""

    kind: str = "stream"
    in_shape: list[int] = field(default_factory=list)
    pixels: int = 1  # input beats per image
    cycles_per_image: int = 1  # the designed throughput with images back to back
    cycles_per_pixel: int = 1  # a folded design's pace (rtl_sim.stream_fold): it takes a pixel every so many cycles
    reuse: dict[str, int] = field(default_factory=dict)  # a folded design's reuse factors by layer (R > 1 only)
    outputs_per_image: int = 1  # more for a design whose output is the stream itself (stream_out)
    layers: list[dict] = field(default_factory=list)  # each window stage: geometry, line buffer, timing
    fifos: list[dict] = field(default_factory=list)  # each merge operand's FIFO: depth, bits (rtl_sim.branches)


@dataclass(frozen=True)
class Geometry:
    """A window layer in 2-D form (a 1-D layer has ``H = kh = sh = 1``)."""

    H: int
    W: int
    C: int
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pb: int
    pl: int
    pr: int

    @property
    def Ho(self) -> int:
        return (self.H + self.pt + self.pb - self.kh) // self.sh + 1

    @property
    def Wo(self) -> int:
        return (self.W + self.pl + self.pr - self.kw) // self.sw + 1

    @property
    def HW(self) -> int:
        return self.H * self.W

    def emit_index(self, oy: int, ox: int) -> int:
        """Ticks after the image's first pixel at which output ``(oy, ox)`` is computed."""
        return (oy * self.sh - self.pt + self.kh - 1) * self.W + ox * self.sw - self.pl + self.kw - 1

    @property
    def tail(self) -> int:
        """Ticks after the image's last pixel that its last outputs need ('same' padding)."""
        return max(0, self.emit_index(self.Ho - 1, self.Wo - 1) - self.HW + 1)

    @property
    def delay(self) -> int:
        """Pixels the delay line holds: the window's reach back from its newest pixel."""
        return (self.kh - 1) * self.W + self.kw - 1

    def tap_delay(self, dy: int, dx: int) -> int:
        return (self.kh - 1 - dy) * self.W + (self.kw - 1 - dx)


def geometry(layer: Layer, in_shape: tuple[int, ...]) -> Geometry:
    """The 2-D geometry of a window layer on an input of ``in_shape`` (channels last)."""
    w = layer.window(in_shape)
    kernel, strides, pads = w.kernel, w.strides, w.pads
    if len(in_shape) == 2:
        (W, C), (kw,), (sw,), ((pl, pr),) = in_shape, kernel, strides, pads
        return Geometry(1, W, C, 1, kw, 1, sw, 0, 0, pl, pr)
    (H, W, C), (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = in_shape, kernel, strides, pads
    g = Geometry(H, W, C, kh, kw, sh, sw, pt, pb, pl, pr)
    if g.tail >= g.HW:
        raise BackendError(f"layer {layer.name!r}: 'same' padding of a {kh}x{kw} kernel on a {H}x{W} input needs "
                           f"{g.tail} ticks after the image, more than its {g.HW} pixels; the streaming RTL needs a "
                           "kernel no taller than the input")
    return g


# ---- the plan: which layers form which stage ---------------------------------------------------
@dataclass
class _Stage:
    layer: Layer | None  # a window layer, Flatten/GlobalAvgPool (collect), a Dense, or None (the input)
    kind: str  # input | window | collect | dense
    in_shape: tuple[int, ...]
    in_type: FixedType
    post: list[Layer] = field(default_factory=list)  # element-wise layers fused after it
    out_type: FixedType | None = None


def refuse_unbuilt(layer: Layer) -> None:
    """Refuse, naming the layer, what no emitter builds: a BatchNorm (compression folds it)."""
    if isinstance(layer, BatchNorm):
        raise BackendError(f"layer {layer.name!r} (BatchNorm): fold it into the layer before it (compression does) "
                           "before emitting RTL")


def plan(net: Network, collect: bool = True) -> list[_Stage]:
    """Group the network into the input, window stages, one collect stage and Dense stages (a network that
    ends on the stream gets a collect stage for its last tensor when ``collect``)."""
    net.check_chain("the streaming RTL's stage plan (rtl_sim.branches builds branches in emit_stream_verilog)")
    if not net.quantized:
        raise BackendError(f"network {net.name!r} is float; quantize or compress it before emitting RTL")
    if len(net.input_shape) < 2:
        raise BackendError(f"network {net.name!r}: the streaming RTL takes a (length, channels) or (height, width, "
                           f"channels) input, not {net.input_shape}; emit_verilog builds flat inputs")
    for layer in net.layers:  # before the types: a kind the reference has no type rule for is still ours to refuse
        refuse_unbuilt(layer)
        if lookup(STREAM_STAGES, type(layer)) is None:
            raise BackendError(f"layer {layer.name!r} ({layer.kind}): not supported by the streaming RTL emitter; "
                               f"supported: {', '.join(STREAM_LAYER_NAMES)}")
    stages = [_Stage(None, "input", net.input_shape, net.input_type, out_type=net.input_type)]
    shape, t = net.input_shape, net.input_type
    for layer, out_shape, out_t in zip(net.layers, net.shapes(), net.tensor_types()):
        role = lookup(STREAM_STAGES, type(layer))
        if role == "head" or (isinstance(layer, Flatten) and len(shape) == 1):
            continue  # the head is not hardware; a Flatten of a flat tensor is nothing
        # the layers' own shape checks already keep window layers before the end of the stream and Dense after it
        if role == "post":
            stages[-1].post.append(layer)
        else:
            stages.append(_Stage(layer, role, shape, t))
        stages[-1].out_type = out_t
        shape, t = out_shape, out_t
    if collect and stages[-1].kind in ("input", "window"):  # a network that ends on the stream: collect it
        stages.append(_Stage(Flatten("collect_output"), "collect", shape, t, out_type=t))
    return stages


# ---- Verilog helpers --------------------------------------------------------------------------
def _bits(v: int) -> int:
    return max(1, int(v).bit_length())


def _u(v: int, w: int) -> str:
    return f"{w}'d{v}"


def _reg_chain(e: _Emitter, name: str, src: str, n: int, blocks: list[str]) -> str:
    """``src`` delayed by ``n`` >= 1 cycles in a reset shift register (a valid signal); its last bit."""
    if n == 1:
        e.lines.append(f"  reg {name};")
        blocks.append(f"  always @(posedge clk) begin\n    if (rst) {name} <= 1'b0;\n    else {name} <= {src};\n  end")
        return name
    e.lines.append(f"  reg [{n - 1}:0] {name};")
    blocks.append(f"  always @(posedge clk) begin\n    if (rst) {name} <= {n}'b0;\n"
                  f"    else {name} <= {{{name}[{n - 2}:0], {src}}};\n  end")
    return f"{name}[{n - 1}]"


def _shift_register(e: _Emitter, blocks: list[str], name: str, w: int, n: int, enable: str, src: str) -> None:
    """``name1`` .. ``name<n>``: ``src`` as it was 1 .. ``n`` enabled cycles ago (plain registers, no reset, so
    synthesis may map the chain to shift-register LUTs)."""
    regs = [f"{name}{j}" for j in range(1, n + 1)]
    e.lines.append(f"  reg [{w - 1}:0] {', '.join(regs)};")
    moves = "\n".join(f"      {r} <= {prev};" for r, prev in zip(regs, [src] + regs[:-1]))
    blocks.append(f"  always @(posedge clk) begin\n    if ({enable}) begin\n{moves}\n    end\n  end")


def _pack(e: _Emitter, name: str, px: list[Sig]) -> tuple[str, int, list[tuple[int, int]]]:
    """The non-constant channels of a pixel as one bus; its width and each channel's (offset, width)."""
    parts, offs, off = [], [], 0
    for s in px:
        if s.const is not None:
            offs.append((-1, 0))
            continue
        offs.append((off, s.width))
        parts.append(s.expr)
        off += s.width
    if off:
        e.lines.append(f"  wire [{off - 1}:0] {name} = {{{', '.join(reversed(parts))}}};")
    return name, off, offs


def _unpack(e: _Emitter, base: str, bus: str, px: list[Sig], offs: list[tuple[int, int]]) -> list[Sig]:
    out = []
    for c, (s, (off, w)) in enumerate(zip(px, offs)):
        if s.const is not None:
            out.append(s)
            continue
        name = e.fresh(f"{base}_c{c}")
        e.lines.append(f"  wire signed [{w - 1}:0] {name} = $signed({bus}[{off + w - 1}:{off}]);")
        out.append(Sig(name, s.lo, s.hi, zeros=s.zeros))
    return out


def _masked(e: _Emitter, s: Sig, ok: str | None) -> Sig:
    """``s`` where ``ok`` holds, else 0 (a padding tap)."""
    if ok is None or s.const == 0:
        return s
    lo, hi = min(s.lo, 0), max(s.hi, 0)
    out = e.wire("pad", lo, hi, lambda w: f"{ok} ? {e.ext(s, w)} : {e.lit(0, w)}")
    out.zeros = s.zeros if out.const is None else 0
    return out


def _max(e: _Emitter, a: Sig, b: Sig) -> Sig:
    if a.hi <= b.lo:
        return b
    if b.hi <= a.lo:
        return a
    lo, hi = max(a.lo, b.lo), max(a.hi, b.hi)
    w = max(a.width, b.width)
    out = e.wire("mx", lo, hi, lambda _: f"({e.ext(a, w)} > {e.ext(b, w)}) ? {e.ext(a, w)} : {e.ext(b, w)}",
                 width=w)
    out.zeros = min(a.zeros, b.zeros) if out.const is None else 0
    return e._time(out, (a, b), e._d("adder", w) + e._d("luts"))  # a comparison, then the select


def signed_w(s: Sig) -> int:
    from codesign.core.arith import signed_width

    return signed_width(s.lo, s.hi)


def _tree(items: list[Sig], op) -> Sig:
    while len(items) > 1:
        nxt = [op(items[k], items[k + 1]) for k in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


def _trees_timed(e: _Emitter, cols: list[list[Sig]], op, op_extra: float, base: str) -> tuple[list[Sig], int]:
    """``_tree`` over each column, level by level; a level's inputs registered where the emitter's clock needs
    it (an adder, and ``op_extra`` after it, per level). Also the cycles added."""
    extra = 0
    while any(len(c) > 1 for c in cols):
        live = [v for c in cols for v in c if v.const is None]
        flat, k = e.fit([v for c in cols for v in c],
                        max((e._d("adder", v.width + 1) + op_extra for v in live), default=0.0), base)
        extra += k
        it = iter(flat)
        cols = [[next(it) for _ in c] for c in cols]
        cols = [[op(c[k], c[k + 1]) for k in range(0, len(c) - 1, 2)] + ([c[-1]] if len(c) % 2 else []) for c in cols]
    return [c[0] for c in cols], extra


def _elementwise(e: _Emitter, x: list[Sig], frac: int, x_type: FixedType, layers: list[Layer]
                 ) -> tuple[list[Sig], FixedType]:
    """ReLU and Quant layers on a vector whose values have ``frac`` fractional bits; the final type."""
    for layer in layers:
        if isinstance(layer, ReLU):
            x = [e.relu(v) for v in x]
        if isinstance(layer, Quant) and layer.per_element:
            x = e.cast_each(x, frac, wire_types(layer, len(x)), layer.result_type, "pe")[0]
            frac, x_type = layer.result_type.frac, layer.result_type
        elif getattr(layer, "result_type", None) is not None:
            x = [e.cast(v, frac, layer.result_type) for v in x]
            frac, x_type = layer.result_type.frac, layer.result_type
    return x, x_type


def _elementwise_timed(e: _Emitter, x: list[Sig], frac: int, x_type: FixedType, layers: list[Layer], base: str
                      ) -> tuple[list[Sig], FixedType, int]:
    """``_elementwise`` with registers where the emitter's clock needs them; also the cycles they add."""
    extra = 0
    for layer in layers:
        if isinstance(layer, ReLU):
            x, k = e.relu_all(x, base)
            extra += k
        if isinstance(layer, Quant) and layer.per_element:
            x, k = e.cast_each(x, frac, wire_types(layer, len(x)), layer.result_type, base)
            extra += k
            frac, x_type = layer.result_type.frac, layer.result_type
        elif getattr(layer, "result_type", None) is not None:
            x, k = e.cast_all(x, frac, layer.result_type, base)
            extra += k
            frac, x_type = layer.result_type.frac, layer.result_type
    return x, x_type, extra


def _input_elementwise(e: _Emitter, blocks: list[str], px: list[Sig], in_t: FixedType, layers: list[Layer],
                       shape: tuple[int, ...], v_in: str = "in_valid") -> tuple[list[Sig], FixedType]:
    """``_elementwise`` on the input pixels, where a per-element Quant's formats may also change from pixel to
    pixel (HGQ's input quantizers): each pixel's formats chosen by its position in the image."""
    x_type, frac = in_t, in_t.frac
    for layer in layers:
        if isinstance(layer, Quant) and layer.per_element:
            types = element_types(layer).reshape(-1, len(px))
            if not all(list(row) == list(types[0]) for row in types[1:]):
                px = _positional_cast(e, blocks, px, frac, layer, types, v_in)
                frac, x_type = layer.result_type.frac, layer.result_type
                continue
        px, x_type = _elementwise(e, px, frac, x_type, [layer])
        frac = x_type.frac
    return px, x_type


def _positional_cast(e: _Emitter, blocks: list[str], px: list[Sig], frac: int, layer: Quant, types: np.ndarray,
                     v_in: str = "in_valid") -> list[Sig]:
    """Each input channel cast to every format it takes somewhere in the image, then the one of the pixel's
    position picked by a counter of the input's pixels (``in_pos``, which counts ``v_in`` beats)."""
    n = types.shape[0]
    cw = _bits(n - 1)
    e.lines.append(f"  reg [{cw - 1}:0] in_pos;")
    blocks.append(f"  always @(posedge clk) begin\n    if (rst) in_pos <= {_u(0, cw)};\n    else if ({v_in}) "
                  f"in_pos <= (in_pos == {_u(n - 1, cw)}) ? {_u(0, cw)} : in_pos + {_u(1, cw)};\n  end")
    env = layer.result_type
    out = []
    for c, v in enumerate(px):
        formats = list(dict.fromkeys(types[:, c]))  # distinct, in order of first position
        cands = e.cast_each([v] * len(formats), frac, formats, env, "pe")[0]
        if len(cands) == 1:
            out.append(cands[0])
            continue
        lo, hi = min(q.lo for q in cands), max(q.hi for q in cands)
        sel = e.fresh(f"in_sel{c}")
        sw = _bits(len(formats) - 1)
        index = {f: k for k, f in enumerate(formats)}
        cases = "\n".join(f"      {_u(p, cw)}: {sel} = {_u(index[f], sw)};" for p, f in enumerate(types[:, c]))
        e.lines.append(f"  reg [{sw - 1}:0] {sel};")
        blocks.append(f"  always @* begin\n    case (in_pos)\n{cases}\n      default: {sel} = {_u(0, sw)};\n"
                      f"    endcase\n  end")

        def mux(w: int, cands: list[Sig] = cands, sel: str = sel, sw: int = sw) -> str:
            expr = e.ext(cands[-1], w)
            for k in range(len(cands) - 2, -1, -1):
                expr = f"({sel} == {_u(k, sw)}) ? {e.ext(cands[k], w)} : {expr}"
            return expr

        y = e._time(e.wire("pos", lo, hi, mux), tuple(q for q in cands if q.const is None), e._d("luts"))
        y.zeros = min(q.zeros for q in cands) if y.const is None else 0
        out.append(y)
    return out


# ---- window stages ----------------------------------------------------------------------------
class _Window:
    """The control, delay line and taps of one window stage (see the module docstring for the timing)."""

    def __init__(self, e: _Emitter, blocks: list[str], p: str, g: Geometry, v_in: str, px: list[Sig],
                 slot: str | None = None, held: bool = False):
        """``slot``: tail ticks only where it is high (a folded stream's phase, ``rtl_sim.stream_fold``); ``held``:
        the window is read after its tick, one pixel further down the delay line (a folded kernel)."""
        self.e, self.g, self.p = e, g, p
        HW, F = g.HW, g.tail
        EW = _bits(HW + F - 1)
        e.prefix = p
        self.tick = f"{p}_tick"
        e.lines.append(f"  reg [{EW - 1}:0] {p}_a, {p}_e, {p}_er;")
        e.lines.append(f"  reg [{_bits(g.Ho - 1) - 1}:0] {p}_oy;\n  reg [{_bits(g.Wo - 1) - 1}:0] {p}_ox;")
        oyw, oxw = _bits(g.Ho - 1), _bits(g.Wo - 1)
        self.oy, self.ox, self.oyw, self.oxw = f"{p}_oy", f"{p}_ox", oyw, oxw
        e0 = g.emit_index(0, 0)
        head = f"{v_in} && ({p}_a == {p}_e)"
        ctrl = [f"    if ({v_in}) {p}_a <= ({p}_a == {_u(HW - 1, EW)}) ? {_u(0, EW)} : {p}_a + {_u(1, EW)};"]
        if F:
            # tail ticks: idle cycles until the next image's first pixel arrives, then only its pixels, so the
            # next image's pixels stay contiguous in the delay line (_nx: that image has begun)
            e.lines.append(f"  reg {p}_tail, {p}_nx;\n  reg [{EW - 1}:0] {p}_tb;")
            e.lines.append(f"  wire {self.tick} = {v_in} | ({p}_tail & ~{p}_nx{f' & {slot}' if slot else ''});")
            e.lines.append(f"  wire {p}_hit = ({p}_e < {_u(HW, EW)}) ? ({head}) : "
                           f"({p}_tail && {self.tick} && ({p}_tb == {p}_e));")
            ctrl += [f"    if ({v_in} && {p}_a == {_u(HW - 1, EW)}) begin",
                     f"      {p}_tail <= 1'b1; {p}_nx <= 1'b0; {p}_tb <= {_u(HW, EW)};",
                     f"    end else if ({p}_tail && {self.tick}) begin",
                     f"      {p}_tb <= {p}_tb + {_u(1, EW)};",
                     f"      if ({v_in}) {p}_nx <= 1'b1;",
                     f"      if ({p}_tb == {_u(HW + F - 1, EW)}) {p}_tail <= 1'b0;",
                     "    end"]
            reset_tail = f" {p}_tail <= 1'b0; {p}_nx <= 1'b0; {p}_tb <= {_u(0, EW)};"
        else:
            e.lines.append(f"  wire {self.tick} = {v_in};")
            e.lines.append(f"  wire {p}_hit = {head};")
            reset_tail = ""
        self.hit = f"{p}_hit"
        row_step = g.sh * g.W
        ctrl += [f"    if ({p}_hit) begin",
                 f"      if ({p}_ox == {_u(g.Wo - 1, oxw)}) begin",
                 f"        {p}_ox <= {_u(0, oxw)};",
                 f"        if ({p}_oy == {_u(g.Ho - 1, oyw)}) begin",
                 f"          {p}_oy <= {_u(0, oyw)}; {p}_e <= {_u(e0, EW)}; {p}_er <= {_u(e0, EW)};",
                 "        end else begin",
                 f"          {p}_oy <= {p}_oy + {_u(1, oyw)}; {p}_e <= {p}_er + {_u(row_step, EW)}; "
                 f"{p}_er <= {p}_er + {_u(row_step, EW)};",
                 "        end",
                 f"      end else begin {p}_ox <= {p}_ox + {_u(1, oxw)}; {p}_e <= {p}_e + {_u(g.sw, EW)}; end",
                 "    end"]
        blocks.append(f"  always @(posedge clk) begin\n    if (rst) begin\n      {p}_a <= {_u(0, EW)}; "
                      f"{p}_oy <= {_u(0, oyw)}; {p}_ox <= {_u(0, oxw)}; {p}_e <= {_u(e0, EW)}; "
                      f"{p}_er <= {_u(e0, EW)};{reset_tail}\n    end else begin\n" + "\n".join(ctrl)
                      + "\n    end\n  end")
        # the delay line: pixel j ticks ago in {p}_lb[j]
        bus, bw, offs = _pack(e, f"{p}_px", px)
        self.line_buffer_bits = bw * g.delay
        needed = sorted({g.tap_delay(dy, dx) for dy in range(g.kh) for dx in range(g.kw)} - ({-1} if held else {0}))
        L = g.delay + held
        if bw and L:
            _shift_register(e, blocks, f"{p}_lb", bw, L, self.tick, bus)
        taps: dict[int, list[Sig]] = {} if held else {0: px}
        for d in needed:
            taps[d] = _unpack(e, f"t{d}", f"{p}_lb{d + held}", px, offs) if bw else list(px)
        self.taps = taps
        if held:  # the padding masks of the window being read: its output position, registered at its tick
            e.lines.append(f"  reg [{oyw - 1}:0] {p}_oyh;\n  reg [{oxw - 1}:0] {p}_oxh;")
            blocks.append(f"  always @(posedge clk) if ({p}_hit) begin {p}_oyh <= {p}_oy; {p}_oxh <= {p}_ox; end")
            self.oy, self.ox = f"{p}_oyh", f"{p}_oxh"

    def _ok(self, lo_ok: int, hi_ok: int, var: str, w: int, n: int) -> str | None | bool:
        """The condition ``lo_ok <= var <= hi_ok`` for ``var`` in ``[0, n-1]``: None (always), False (never)."""
        if hi_ok < 0 or lo_ok > n - 1 or lo_ok > hi_ok:
            return False
        conds = []
        if lo_ok > 0:
            conds.append(f"({var} >= {_u(lo_ok, w)})")
        if hi_ok < n - 1:
            conds.append(f"({var} <= {_u(hi_ok, w)})")
        return " && ".join(conds) or None

    def window(self) -> list[list[Sig]]:
        """The taps in the reference's window order ``(dy, dx)``, each a list of channels; padding reads 0."""
        g, e, p = self.g, self.e, self.p
        rows = [self._ok(-(-(g.pt - dy) // g.sh) if g.pt > dy else 0, (g.H - 1 + g.pt - dy) // g.sh, self.oy,
                         self.oyw, g.Ho) for dy in range(g.kh)]
        cols = [self._ok(-(-(g.pl - dx) // g.sw) if g.pl > dx else 0, (g.W - 1 + g.pl - dx) // g.sw, self.ox,
                         self.oxw, g.Wo) for dx in range(g.kw)]
        out = []
        for dy in range(g.kh):
            for dx in range(g.kw):
                r, c = rows[dy], cols[dx]
                px = self.taps[g.tap_delay(dy, dx)]
                if r is False or c is False:
                    out.append([const_sig(0) for _ in px])
                    continue
                cond = " && ".join(x for x in (r, c) if x)
                ok = None
                if cond:
                    ok = f"{p}_ok{dy}_{dx}"
                    e.lines.append(f"  wire {ok} = {cond};")
                out.append([_masked(e, s, ok) for s in px])
        return out


def _window_stage(e: _Emitter, blocks: list[str], si: int, st: _Stage, v_in: str, px: list[Sig],
                  every: int, mult: str | None, dp: dict, pace: Pace | None = None, phase: int = 0
                  ) -> tuple[str, list[Sig], dict]:
    """One window stage: control, delay line, kernel, fused element-wise layers, output registers. ``pace``: a
    folded stream's (``rtl_sim.stream_fold``), its ticks at ``phase``; a convolution with reuse > 1 folded."""
    layer = st.layer
    g = geometry(layer, st.in_shape)
    p = f"L{si}_{_ident(layer.name)}"
    fold = pace is not None and isinstance(layer, Conv) and pace.r(layer.name) > 1
    win = _Window(e, blocks, p, g, v_in, px, pace.slot(e, phase) if pace is not None else None, fold)
    taps = win.window()
    extra, counts, start, steps = 0, {}, win.hit, 0
    if fold:
        kern = Dense(layer.name, weight=layer.weight.reshape(-1, layer.weight.shape[-1]), bias=layer.bias,
                     weight_type=layer.weight_type, bias_type=layer.bias_type, reuse=layer.reuse)
        t = layer.result_type or layer.accum_type or exact_accum_type(layer, st.in_type)
        e.prefix = p
        y, frac, start, c = folded_kernel(e, pace, kern, [s for tap in taps for s in tap], st.in_type, win.hit)
        y, extra = e.cast_all(y, frac, t, f"{p}_p")
        steps, counts = c + 2, {"folded": pace.folds[layer.name]}
    elif isinstance(layer, Conv):
        kern = Dense(layer.name, weight=layer.weight.reshape(-1, layer.weight.shape[-1]), bias=layer.bias,
                     weight_type=layer.weight_type, bias_type=layer.bias_type, accum_type=layer.accum_type,
                     result_type=layer.result_type, mult=layer.mult)
        x = [s for tap in taps for s in tap]
        t = layer.result_type or layer.accum_type or exact_accum_type(layer, st.in_type)
        y, frac, extra, counts = dense_datapath(e, kern, x, st.in_type, every, mult or layer.mult,
                                                tail=tail_steps(t, st.post), **dp)
        y, k = e.cast_all(y, frac, t, f"{p}_p")
        extra += k
    elif isinstance(layer, MaxPool):
        y, extra = _trees_timed(e, [[tap[c] for tap in taps] for c in range(g.C)], lambda a, b: _max(e, a, b),
                                e._d("luts"), f"{p}_m")
        t = st.in_type
    else:  # AvgPool: the exact window sum, read with log2(window) more fractional bits
        sums, extra = _trees_timed(e, [[tap[c] for tap in taps] for c in range(g.C)], e.add, 0.0, f"{p}_m")
        t = layer.result_type or FixedType(st.in_type.width + layer.shift, st.in_type.integer, st.in_type.signed)
        y, k = e.cast_all(sums, st.in_type.frac + layer.shift, t, f"{p}_p")
        extra += k
    e.prefix = p
    y, t, k = _elementwise_timed(e, y, t.frac, t, st.post, f"{p}_p")
    extra += k
    e.prefix = ""
    y = [e.register(v, f"{p}_o") for v in y]
    valid = _reg_chain(e, f"{p}_v", start, 1 + extra, blocks)
    out_shape = [g.Ho, g.Wo, len(y)] if len(st.in_shape) == 3 else [g.Wo, len(y)]
    info = {"name": layer.name, "kind": layer.kind, "layers": [layer.name] + [l.name for l in st.post],
            "in_shape": list(st.in_shape), "out_shape": out_shape, "kernel": [g.kh, g.kw], "strides": [g.sh, g.sw],
            "pads": [g.pt, g.pb, g.pl, g.pr], "line_buffer_pixels": g.delay, "line_buffer_bits": win.line_buffer_bits,
            "tail_ticks": g.tail, "kernel_latency": steps + 1 + extra, "valid": valid,
            "signals": [None if v.const is not None else v.expr for v in y], "consts": [v.const for v in y],
            "n": g.Ho * g.Wo, "type": t.to_hls(), "datapath": counts}
    return valid, y, info


# ---- the end of the stream ---------------------------------------------------------------------
def _collect(e: _Emitter, blocks: list[str], st: _Stage, v_in: str, px: list[Sig], n_pos: int
             ) -> tuple[str, list[Sig], FixedType, int]:
    """Flatten (the image's output pixels, channels last) or GlobalAvgPool (per-channel exact sums) at the
    stream's last pixel of an image: the values (combinational at that cycle), their frac, and the valid."""
    p = f"F_{_ident(st.layer.name)}"
    cw = _bits(n_pos - 1)
    e.lines.append(f"  reg [{cw - 1}:0] {p}_n;")
    blocks.append(f"  always @(posedge clk) begin\n    if (rst) {p}_n <= {_u(0, cw)};\n    else if ({v_in}) "
                  f"{p}_n <= ({p}_n == {_u(n_pos - 1, cw)}) ? {_u(0, cw)} : {p}_n + {_u(1, cw)};\n  end")
    last = f"{p}_last"
    e.lines.append(f"  wire {last} = {v_in} && ({p}_n == {_u(n_pos - 1, cw)});")
    t = st.in_type
    if isinstance(st.layer, GlobalAvgPool):
        shift = (n_pos).bit_length() - 1
        x = []
        for c, s in enumerate(px):
            if s.const is not None:
                x.append(const_sig(s.const * n_pos))
                continue
            lo, hi = min(0, n_pos * s.lo), max(0, n_pos * s.hi)
            acc = f"{p}_acc{c}"
            w = signed_w(Sig("", lo, hi))
            e.lines.append(f"  reg signed [{w - 1}:0] {acc};")
            first = f"({p}_n == {_u(0, cw)})"
            e.lines.append(f"  wire signed [{w - 1}:0] {acc}_sum = ({first} ? {e.lit(0, w)} : {acc}) + {e.ext(s, w)};")
            blocks.append(f"  always @(posedge clk) if ({v_in}) {acc} <= {acc}_sum;")
            x.append(Sig(f"{acc}_sum", lo, hi))
        out_t = st.layer.result_type or FixedType(t.width + shift, t.integer, t.signed)
        e.prefix = p
        x = [e.cast(v, t.frac + shift, out_t) for v in x]
        x, out_t = _elementwise(e, x, out_t.frac, out_t, st.post)
        return last, x, out_t, 0
    # Flatten: position q of the image waits in {p}_sr[n_pos - 2 - q] when the last one arrives
    bus, bw, offs = _pack(e, f"{p}_px", px)
    held: list[list[Sig]] = []
    if bw and n_pos > 1:
        _shift_register(e, blocks, f"{p}_sr", bw, n_pos - 1, v_in, bus)
    for q in range(n_pos - 1):
        if bw:
            held.append(_unpack(e, f"q{q}", f"{p}_sr{n_pos - 1 - q}", px, offs))
        else:
            held.append(list(px))
    held.append(px)
    x = [s for pos in held for s in pos]
    e.prefix = p
    x, t = _elementwise(e, x, t.frac, t, st.post)
    return last, x, t, 0


def _dense_stage(e: _Emitter, blocks: list[str], si: int, st: _Stage, v_in: str, x: list[Sig], x_type: FixedType,
                 every: int, mult: str | None, dp: dict) -> tuple[str, list[Sig], FixedType, dict, int]:
    layer = st.layer
    t = layer.result_type or layer.accum_type or exact_accum_type(layer, x_type)
    x, frac, extra, counts = dense_datapath(e, layer, x, x_type, every, mult or layer.mult,
                                            tail=tail_steps(t, st.post), **dp)
    x, k = e.cast_all(x, frac, t, f"D{si}_p")
    e.prefix = f"D{si}"
    x, t, k2 = _elementwise_timed(e, x, t.frac, t, st.post, f"D{si}_p")
    extra += k + k2
    e.prefix = ""
    x = [e.register(v, f"D{si}_{_ident(layer.name)}") for v in x]
    valid = _reg_chain(e, f"D{si}_v", v_in, 1 + extra, blocks)
    return valid, x, t, counts, 1 + extra


# ---- the design --------------------------------------------------------------------------------
def emit_stream_verilog(net: Network, top: str | None = None, adder_regs_every: int = 0, mult: str | None = None,
                        datapath: str | None = None, stream_out: bool = False, clock_mhz: float | None = None,
                        family: str | None = None, memory: str = "auto") -> StreamDesign:
    """Streaming Verilog for a CNN (see the module docstring): ``in_valid``/``in_data`` one pixel per beat,
    ``out_valid``/``out_data`` one result per image. ``adder_regs_every`` and ``mult`` as in ``emit_verilog``;
    ``datapath`` is handed to ``dense_datapath`` when given. ``stream_out``: a network that ends on the stream
    presents each output pixel as it is made (one window stage alone, for per-layer synthesis) instead of
    collecting the image's output. ``clock_mhz``/``family``: each kernel's and Dense's adder-graph registers
    placed by the delay model, as in ``emit_verilog``. A network whose stream branches and rejoins is built by ``rtl_sim.branches``.
    A convolution or Dense layer with ``reuse`` > 1 is folded (``rtl_sim.stream_fold``: the design then takes a pixel
    every ``cycles_per_pixel`` cycles through ``in_ready``; ``memory`` is its weight memories' ``rom_style``)."""
    if not net.is_chain:
        make_pace(net, 1)  # a branched network with folded layers is refused  # ``stream_out`` does not apply: a branched design always collects its output
        from rtl_sim.branches import emit_graph_stream

        return emit_graph_stream(net, top, adder_regs_every, mult, datapath, clock_mhz=clock_mhz, family=family)
    stages = plan(net, collect=not stream_out)
    top = top or _ident(net.name)
    dp = {} if datapath is None else {"datapath": datapath}
    e, blocks = _Emitter(True, None, *_timing_args(clock_mhz, family, adder_regs_every)), []
    pixels = int(np.prod(net.input_shape[:-1]))
    pace = make_pace(net, pixels, memory)
    valid = pace.counter(e, blocks) if pace.folded else "in_valid"
    in_t = net.input_type
    c_in = net.input_shape[-1]
    px = []
    for c in range(c_in):
        sl = f"in_data[{c * in_t.width + in_t.width - 1}:{c * in_t.width}]"
        src = f"$signed({sl})" if in_t.signed else f"$signed({{1'b0, {sl}}})"
        w = signed_w(Sig("", in_t.min_int, in_t.max_int))
        e.lines.append(f"  wire signed [{w - 1}:0] x0_{c} = {src};")
        px.append(Sig(f"x0_{c}", in_t.min_int, in_t.max_int))
    e.prefix = "in"
    px, x_type = _input_elementwise(e, blocks, px, in_t, stages[0].post, net.input_shape, valid)
    layers_info, design_stages, multipliers, dense_lats = [], [], {}, []
    shape = net.input_shape
    phase, held = 0, False  # the phase the next window stage's inputs arrive at; the Dense input held a whole image
    for si, st in enumerate(stages[1:], 1):
        if st.kind == "window":
            valid, px, info = _window_stage(e, blocks, si, st, valid, px, adder_regs_every, mult, dp,
                                            pace if pace.folded else None, phase)
            phase += info["kernel_latency"]
            x_type = FixedType.parse(info["type"])
            if info["datapath"]:
                multipliers[st.layer.name] = info["datapath"]
            layers_info.append(info)
            design_stages.append({k: info[k] for k in ("name", "layers", "valid", "signals", "consts", "n", "type")})
            shape = tuple(info["out_shape"])
        elif st.kind == "collect":
            n_pos = int(np.prod(shape[:-1]))
            valid, x, x_type, _ = _collect(e, blocks, st, valid, px, n_pos)
        elif pace.r(st.layer.name) > 1:
            valid, x, x_type, counts, lat = folded_dense_stage(e, blocks, si, st, valid, x, pace, held)
            held = True
            dense_lats.append(lat)
            multipliers[st.layer.name] = {"folded": counts}
            design_stages.append({"name": st.layer.name, "layers": [st.layer.name] + [l.name for l in st.post],
                                  "valid": valid, "signals": [None if v.const is not None else v.expr for v in x],
                                  "consts": [v.const for v in x], "n": 1, "type": x_type.to_hls()})
        else:
            held = False
            valid, x, x_type, counts, lat = _dense_stage(e, blocks, si, st, valid, x, st.in_type,
                                                         adder_regs_every, mult, dp)
            dense_lats.append(lat)
            multipliers[st.layer.name] = counts
            design_stages.append({"name": st.layer.name, "layers": [st.layer.name] + [l.name for l in st.post],
                                  "valid": valid, "signals": [None if v.const is not None else v.expr for v in x],
                                  "consts": [v.const for v in x], "n": 1, "type": x_type.to_hls()})
    if stages[-1].kind == "collect":  # no Dense after the stream: register the collected vector
        e.prefix = ""
        x = [e.register(v, "OUT") for v in x]
        valid = _reg_chain(e, "OUT_v", valid, 1, blocks)
        design_stages.append({"name": stages[-1].layer.name, "layers": [stages[-1].layer.name], "valid": valid,
                              "signals": [None if v.const is not None else v.expr for v in x],
                              "consts": [v.const for v in x], "n": 1, "type": x_type.to_hls()})
    if stages[-1].kind in ("input", "window"):  # stream_out: the last stage's pixels are the output
        x = px
    latency = schedule(net, stages, layers_info, dense_lats, pace.period)
    per_image = int(np.prod(shape[:-1])) if stages[-1].kind in ("input", "window") else 1
    verilog = _module(net, top, e, blocks, in_t, c_in, x, x_type, valid, pixels, latency, pace.period)
    return StreamDesign(top, verilog, in_t, x_type, c_in, len(x), latency, design_stages, multipliers,
                        timing=e.timing(latency, float(pixels * pace.period)), in_shape=list(net.input_shape),
                        pixels=pixels, cycles_per_image=pixels * pace.period, outputs_per_image=per_image,
                        layers=layers_info, cycles_per_pixel=pace.period,
                        reuse={k: v for k, v in pace.reuse.items() if v > 1})


def window_cycles(g: Geometry, cycles: list[int], period: int, kernel_latency: int, step: int = 1) -> list[int]:
    """The cycles a window stage presents its outputs of image 0, given the cycles its input positions arrive
    (images ``period`` cycles apart, back to back; a folded stream's ticks ``step`` cycles apart at least)."""
    # ticks after the image's last pixel: idle slots until the next image's first pixel, then its pixels
    nxt = [c + period for c in cycles]
    after = list(range(cycles[-1] + step, nxt[0], step)) + nxt
    out = []
    for oy in range(g.Ho):
        for ox in range(g.Wo):
            k = g.emit_index(oy, ox)
            out.append((cycles[k] if k < g.HW else after[k - g.HW]) + kernel_latency)
    return out


def schedule(net: Network, stages: list[_Stage], layers_info: list[dict], dense_lats: list[int], pace: int = 1) -> int:
    """The designed latency: cycles from an image's first pixel in to its result out with images back to back,
    from the stages' timing rules (the co-simulation measures it). The last image of a stream can finish
    sooner: its tails take idle cycles instead of waiting for the next image's pixels."""
    period = int(np.prod(net.input_shape[:-1])) * pace
    cycles = list(range(0, period, pace))  # the cycle each input pixel is valid (taken, when folded)
    wi = 0
    lat = 0
    for st in stages[1:]:
        if st.kind == "window":
            info = layers_info[wi]
            wi += 1
            cycles = window_cycles(geometry(st.layer, tuple(info["in_shape"])), cycles, period, info["kernel_latency"],
                                   pace)
        elif st.kind == "collect":
            lat = cycles[-1]
    if stages[-1].kind in ("input", "window"):  # stream_out: the first output pixel
        return cycles[0]
    lat += sum(dense_lats) if dense_lats else 1  # the Dense stages, or the register of the collected vector
    return lat


def _module(net: Network, top: str, e: _Emitter, blocks: list[str], in_t: FixedType, c_in: int, x: list[Sig],
            out_t: FixedType, valid: str, pixels: int, latency: int, pace: int = 1) -> str:
    outs = output_assigns(x, out_t)
    ow = out_t.width
    shape = "x".join(map(str, net.input_shape))
    if pace > 1:  # a folded design (rtl_sim.stream_fold): a pixel every ``pace`` cycles, taken when in_ready is high
        when = (f"one image every {pixels * pace} cycles back to back;\n//           a pixel is taken when in_valid && "
                f"in_ready (in_ready: one cycle in {pace})")
        ready = "  output wire in_ready,\n"
    else:
        when, ready = f"one image every {pixels} cycles back to back;\n//           never stalls (in_valid may drop at any beat)", ""
    return f"""// {top}: streaming CNN generated by fpga-codesign from network {net.name!r}. Do not edit.
// in_data : one pixel of {shape} per in_valid beat, raster order, {c_in} x {in_t.to_hls()}, channel c at bits [c*{in_t.width} +: {in_t.width}]
// out_data: {len(x)} x {out_t.to_hls()} per image, element j at bits [j*{ow} +: {ow}]
// latency : {latency} cycles from an image's first pixel to out_valid; {when}
`default_nettype none
// Exact-width rounding drops low bits on purpose, pruned inputs are never read and a line buffer's
// padding taps are not all used, so partly used wires are expected here:
/* verilator lint_off UNUSEDSIGNAL */
module {top} (
  input  wire clk,
  input  wire rst,
  input  wire in_valid,
{ready}  input  wire [{c_in * in_t.width - 1}:0] in_data,
  output wire out_valid,
  output wire [{len(x) * ow - 1}:0] out_data
);
{chr(10).join(e.lines)}
  /* verilator lint_on UNUSEDSIGNAL */

  always @(posedge clk) begin
{chr(10).join(e.regs)}
  end

{chr(10).join(blocks)}

  assign out_valid = {valid};
{chr(10).join(outs)}
endmodule
`default_nettype wire
"""


def is_streaming(net: Network) -> bool:
    """Whether ``net`` gets the streaming design: a spatial input (``(L, C)`` or ``(H, W, C)``)."""
    return len(net.input_shape) > 1


def stream_stages(net: Network) -> list[tuple[str, Network]]:
    """One network per stage of the streaming design, for per-layer synthesis: each window layer with its
    element-wise layers (emit it with ``stream_out=True``), Flatten or GlobalAvgPool with the first Dense
    stage (a streaming design too), then each later Dense stage as a flat network (``emit_verilog``)."""
    stages = plan(net, collect=False)
    out: list[tuple[str, Network]] = []
    carry = _element_formats(None, stages[0].post)
    for k, st in enumerate(stages[1:], 1):
        layers = [st.layer, *st.post]
        if st.kind == "dense" and stages[k - 1].kind == "collect":
            continue  # built with its collect stage
        if st.kind == "collect" and k + 1 < len(stages):
            layers += [stages[k + 1].layer, *stages[k + 1].post]
        if k == 1:
            layers = stages[0].post + layers  # element-wise layers on the input belong to the first stage
        in_shape = (int(np.prod(st.in_shape)),) if st.kind == "dense" else st.in_shape
        in_t = net.input_type if k == 1 else st.in_type
        name = layers[0].name
        given = _carried(carry, tuple(in_shape)) if k > 1 else []
        layers = given + layers  # the stage's inputs keep their HGQ formats (a cast that is wiring on them)
        carry = _element_formats(carry if isinstance(st.layer, MaxPool) else None, layers[len(given):])
        out.append((name, Network(f"{net.name}_{name}", in_shape, layers, in_t)))
    return out


def _element_formats(carry: tuple[Quant, bool] | None, layers: list[Layer]) -> tuple[Quant, bool] | None:
    """The per-element Quant whose formats the output of ``layers`` still holds (``carry`` before them), and whether
    a ReLU followed it: the last one, through ReLUs and max pooling (which keep a value on its grid); any other
    layer ends it."""
    for layer in layers:
        if isinstance(layer, Quant) and layer.per_element:
            carry = (layer, False)
        elif isinstance(layer, ReLU) and carry is not None:
            carry = (carry[0], True)
        elif not isinstance(layer, (ReLU, MaxPool)):
            carry = None
    return carry


def _carried(carry: tuple[Quant, bool] | None, shape: tuple[int, ...]) -> list[Layer]:
    """The carried formats as a truncating, wrapping cast of a stage input of ``shape`` (the same elements, a
    flattened view of them, or per channel where they do not change from pixel to pixel), and the ReLU that
    followed them, so the stage sees its inputs' exact ranges; nothing if they do not fit."""
    if carry is None:
        return []
    q, relu = carry
    arrays = [q.element_width, q.element_integer, q.element_signed]
    if q.element_width.shape != shape:
        rows = [a.reshape(-1, a.shape[-1]) for a in arrays]
        if q.element_width.size == int(np.prod(shape)) and (len(shape) == 1 or shape[-1] == q.element_width.shape[-1]):
            arrays = [a.reshape(shape) for a in arrays]
        elif shape[-1] == rows[0].shape[-1] and all((r == r[0]).all() for r in rows):
            arrays = [np.broadcast_to(r[0], shape) for r in rows]
        else:
            return []
    cast = Quant(f"{q.name}_formats", q.result_type.with_modes("TRN", "WRAP"), element_width=arrays[0],
                 element_integer=arrays[1], element_signed=arrays[2])
    return [cast, ReLU(f"{q.name}_formats_relu")] if relu else [cast]
