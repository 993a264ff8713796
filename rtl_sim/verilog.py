"""Verilog for a fixed-point Network of Dense + ReLU/Quant layers: fully parallel, II = 1.

Each nonzero weight is one constant multiplication (a ``*`` for the DSP mapping, a
canonical-signed-digit shift-and-add for the LUT mapping); a pruned weight produces no
hardware. Every wire's width is the exact width of the integer interval it can hold,
computed here from the input type and the weights, so nothing overflows and nothing is
wider than needed. Rounding and saturation follow ``ap_fixed`` (see ``codesign.core.fixed``).

This module depends only on the IR: it never imports ``hls``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from codesign.core.arith import CSD_MAX_DIGITS, csd_digits, signed_width
from codesign.core.cmvm import DEFAULT_DEPTH_SLACK, optimize
from codesign.core.fixed import FixedType, fit_overflow, round_shift
from codesign.core.timing import DelayModel, delay_model, round_delay, saturate_delay, schedule_graph, stage_report, tail_delay
from codesign.core.kinds import lookup
from codesign.core.layers import Dense, Flatten, Layer, Output, Quant, ReLU
from codesign.core.network import Network
from codesign.errors import BackendError

DATAPATHS = ("cmvm", "csd")


def uses_dsp(w: int, mapping: str) -> bool:
    """Whether a constant weight becomes a DSP multiply (else LUT shift-and-add)."""
    if mapping == "dsp":
        return len(csd_digits(abs(w))) > 1  # a power of two is a wire shift even on a DSP design
    if mapping == "lut":
        return False
    return len(csd_digits(w)) > CSD_MAX_DIGITS


@dataclass
class Sig:
    """A value in the netlist: a wire (``expr`` is its name) or a constant, with its exact range.

    ``w`` is the declared width when it is wider than the range needs (rounding results); ``zeros`` low bits
    are known to be 0 (an HGQ element held at a finer binary point than its own), which an adder graph drops."""

    expr: str
    lo: int
    hi: int
    const: int | None = None
    w: int | None = None
    zeros: int = 0

    @property
    def width(self) -> int:
        return self.w or signed_width(self.lo, self.hi)


def const_sig(v: int) -> Sig:
    return Sig("", v, v, v)


@dataclass
class Stage:
    """One pipeline stage: a Dense (optional) and the element-wise layers fused after it."""

    layers: list[Layer]
    out_type: FixedType
    latency: int = 1


@dataclass
class Design:
    """The emitted Verilog and what the test benches need to know about it."""

    top: str
    verilog: str
    in_type: FixedType
    out_type: FixedType
    n_in: int
    n_out: int
    latency: int
    stages: list[dict] = field(default_factory=list)  # name, layers, type, n, latency (cumulative)
    multipliers: dict[str, dict[str, int]] = field(default_factory=dict)  # per Dense: its datapath's counts
    datapath: str = "cmvm"
    timing: dict | None = None  # the delay model's critical path, the clock, latency in ns, II (stage_report)

    @property
    def in_width(self) -> int:
        return self.n_in * self.in_type.width

    @property
    def out_width(self) -> int:
        return self.n_out * self.out_type.width


class _Emitter:
    def __init__(self, clocked: bool = True, trace: list | None = None, model: DelayModel | None = None,
                 clock_mhz: float | None = None) -> None:
        self.trace = trace  # when a list: each arithmetic wire as a dict (op, out, operands), for rtl_sim.formal
        self.lines: list[str] = []
        self.regs: list[str] = []
        self.n = 0
        self.prefix = ""  # the current layer's name, so every wire says which layer it belongs to
        self.clocked = clocked
        # the delay model: each wire's arrival (ns after the clock edge), the latest arrival at a register;
        # a wire it has not timed (a line buffer, an input port) is a register's output
        self.model, self.clock_mhz = model, clock_mhz
        self.at: dict[str, float] = {}
        self.crit = 0.0

    def arrival(self, s: Sig) -> float:
        if self.model is None or s.const is not None:
            return 0.0
        return self.at.get(s.expr, self.model.clk_to_q)

    def _time(self, out: Sig, after: tuple[Sig, ...], delay: float) -> Sig:
        if self.model is not None and out.const is None:
            self.at[out.expr] = max((self.arrival(a) for a in after), default=self.model.clk_to_q) + delay
        return out

    def _d(self, kind: str, *args) -> float:
        """A delay of the model (0 without one): ``adder`` of a width, ``luts``."""
        return getattr(self.model, kind)(*args) if self.model is not None else 0.0

    def timing(self, cycles: int, ii: float = 1.0) -> dict | None:
        """The design's timing by the model: its critical path (register to register, with setup)."""
        if self.model is None:
            return None
        return stage_report(self.model, self.crit + self.model.setup, cycles, self.clock_mhz, ii)

    def fresh(self, base: str) -> str:
        self.n += 1
        return f"{self.prefix}_{base}_{self.n}" if self.prefix else f"{base}_{self.n}"

    def _note(self, op: str, out: Sig, **operands) -> Sig:
        if self.trace is not None:
            self.trace.append({"op": op, "out": out, **operands})
        return out

    def lit(self, v: int, w: int) -> str:
        return f"{w}'sh{v & ((1 << w) - 1):x}"

    def ext(self, s: Sig, w: int) -> str:
        """``s`` as a signed expression exactly ``w`` bits wide (sign-extended or, for modular
        arithmetic whose result fits ``w`` bits, truncated)."""
        if s.const is not None:
            return self.lit(s.const, w)
        sw = s.width
        if sw == w:
            return s.expr
        if sw > w:
            # only used by modular operators (+, -, *, <<<) whose result fits w bits,
            # so the low w bits of the operand give the exact result
            return f"$signed({s.expr}[{w - 1}:0])"
        return f"$signed({{{{{w - sw}{{{s.expr}[{sw - 1}]}}}}, {s.expr}}})"

    def wire(self, base: str, lo: int, hi: int, expr_of_w, width: int | None = None, adder: bool = False) -> Sig:
        """A new wire for ``[lo, hi]`` (declared ``width`` bits when given) driven by ``expr_of_w(w)``; an
        ``adder``'s wire is kept, its own carry chain, where the delay model prices it so (``own_chains``)."""
        if lo == hi:
            return const_sig(lo)
        name = self.fresh(base)
        w = width or signed_width(lo, hi)
        keep = "(* keep *) " if adder and self.model is not None and self.model.own_chains else ""
        self.lines.append(f"  {keep}wire signed [{w - 1}:0] {name} = {expr_of_w(w)};")
        return Sig(name, lo, hi, w=width)

    def register(self, s: Sig, base: str) -> Sig:
        if s.const is not None:
            return s
        name = self.fresh(base)
        w = s.width
        if not self.clocked:  # the combinational form, for equivalence proofs
            self.lines.append(f"  wire signed [{w - 1}:0] {name} = {s.expr};")
            return self._note("copy", self._time(Sig(name, s.lo, s.hi, zeros=s.zeros), (s,), 0.0), a=s)
        if self.model is not None:
            self.crit = max(self.crit, self.arrival(s))
            self.at[name] = self.model.clk_to_q
        self.lines.append(f"  reg signed [{w - 1}:0] {name};")
        self.regs.append(f"    {name} <= {s.expr};")
        return self._note("copy", Sig(name, s.lo, s.hi, zeros=s.zeros), a=s)

    # ---- arithmetic ------------------------------------------------------------------
    def add(self, a: Sig, b: Sig) -> Sig:
        if a.const is not None and b.const is not None:
            return const_sig(a.const + b.const)
        lo, hi = a.lo + b.lo, a.hi + b.hi
        out = self.wire("s", lo, hi, lambda w: f"{self.ext(a, w)} + {self.ext(b, w)}", adder=True)
        return self._note("add", self._time(out, (a, b), self._d("adder", signed_width(lo, hi))),
                          a=a, sa=0, b=b, sb=0, sub=False)

    def shift_add(self, a: Sig, sa: int, b: Sig, sb: int, sub: bool) -> Sig:
        """``(a << sa) + (b << sb)``, or ``-`` when ``sub``: one adder (or a wire shift when ``b`` is 0)."""
        if a.const is not None and b.const is not None:
            return const_sig((a.const << sa) - (b.const << sb) if sub else (a.const << sa) + (b.const << sb))
        alo, ahi, blo, bhi = a.lo << sa, a.hi << sa, b.lo << sb, b.hi << sb
        lo, hi = (alo - bhi, ahi - blo) if sub else (alo + blo, ahi + bhi)

        def term(s: Sig, k: int, w: int) -> str:
            if s.const is not None:
                return self.lit(s.const << k, w)
            return self.ext(s, w) if k == 0 else f"({self.ext(s, w)} <<< {k})"

        if b.const == 0:
            out = self._time(self.wire("s", lo, hi, lambda w: term(a, sa, w)), (a,), 0.0)
        else:
            out = self.wire("s", lo, hi, lambda w: f"{term(a, sa, w)} {'-' if sub else '+'} {term(b, sb, w)}",
                            adder=True)
            out = self._time(out, (a, b), self._d("adder", signed_width(lo, hi)))
        return self._note("add", out, a=a, sa=sa, b=b, sb=sb, sub=sub)

    def const_mult(self, x: Sig, c: int, shift: int, dsp: bool) -> Sig:
        """``x * c * 2**shift`` for a constant ``c != 0``."""
        cands = [x.lo * c, x.hi * c]
        lo, hi = min(cands) << shift, max(cands) << shift
        if dsp:
            out = self.wire("m", lo, hi, lambda w: f"{self.ext(x, w)} * {self.lit(c << shift, w)}")
            return self._note("mul", self._time(out, (x,), self._d("product")), a=x, c=c << shift)

        def csd(w: int) -> str:
            terms = []
            for k, d in csd_digits(c):
                t = self.ext(x, w) if k + shift == 0 else f"({self.ext(x, w)} <<< {k + shift})"
                terms.append(("+ " if d > 0 else "- ") + t)
            expr = " ".join(terms)
            return expr[2:] if expr.startswith("+ ") else f"{self.lit(0, w)} {expr}"

        levels = (len(csd_digits(c)) - 1).bit_length()  # a multi-operand sum: a tree of adders
        out = self._time(self.wire("m", lo, hi, csd), (x,), levels * self._d("adder", signed_width(lo, hi)))
        return self._note("mul", out, a=x, c=c << shift, digits=[(k + shift, d) for k, d in csd_digits(c)])

    def relu(self, x: Sig) -> Sig:
        if x.lo >= 0:
            return x
        if x.hi <= 0:
            return const_sig(0)
        msb = x.width - 1
        out = self.wire("r", 0, x.hi, lambda w: f"{x.expr}[{msb}] ? {self.lit(0, w)} : $signed({x.expr}[{w - 1}:0])")
        out.zeros = x.zeros
        return self._time(out, (x,), self._d("luts"))

    def cast(self, x: Sig, src_frac: int, t: FixedType) -> Sig:
        """``ap_fixed`` assignment of ``x`` (``src_frac`` fractional bits) to type ``t``."""
        s = src_frac - t.frac
        if x.const is not None:
            return const_sig(int(fit_overflow(round_shift(np.array([x.const], dtype=object), s, t.quant), t)[0]))
        lo, hi = (int(v) for v in round_shift(np.array([x.lo, x.hi], dtype=object), s, t.quant))
        return self._overflow(self._round(x, s, t.quant, lo, hi), t)

    # ---- element-wise logic on a vector, registered where the clock needs it ----------------------
    def fit(self, xs: list[Sig], delay: float, base: str) -> tuple[list[Sig], int]:
        """``xs`` registered (one more cycle) when the logic of ``delay`` after them would end past the
        clock's period and a register before it helps; else ``xs`` as they are."""
        if self.model is None or not self.clock_mhz or delay <= 0:
            return xs, 0
        at = max((self.arrival(v) for v in xs), default=0.0)
        if at + delay <= self.model.budget(self.clock_mhz) or at <= self.model.clk_to_q:
            return xs, 0
        return [self.register(v, base) for v in xs], 1

    def cast_all(self, xs: list[Sig], src_frac: int, t: FixedType, base: str) -> tuple[list[Sig], int]:
        """``cast`` of every element; with a clock, a register before the rounding and before the saturation
        where the delay model says they would not fit in the cycle. Returns the values and the cycles added."""
        if self.model is None or not self.clock_mhz:
            return [self.cast(v, src_frac, t) for v in xs], 0
        s = src_frac - t.frac
        xs, k1 = self.fit(xs, max((round_delay(self.model, v.width + 1, s, t.quant) for v in xs if v.const is None),
                                  default=0.0), base)
        rounded = []
        for v in xs:
            if v.const is not None:
                rounded.append(self.cast(v, src_frac, t))
                continue
            lo, hi = (int(b) for b in round_shift(np.array([v.lo, v.hi], dtype=object), s, t.quant))
            rounded.append(self._round(v, s, t.quant, lo, hi))
        sat = [saturate_delay(self.model, q.width, q.lo < t.min_int and q.hi > t.max_int) for q in rounded
               if q.const is None and t.overflow == "SAT" and (q.lo < t.min_int or q.hi > t.max_int)]
        rounded, k2 = self.fit(rounded, max(sat, default=0.0), base)
        return [self._overflow(q, t) for q in rounded], k1 + k2

    def cast_each(self, xs: list[Sig], src_frac: int, types: list[FixedType | None], env: FixedType, base: str
                  ) -> tuple[list[Sig], int]:
        """A per-element cast (HGQ): element j to its own ``types[j]`` (None: the constant 0), held at ``env``'s
        binary point with its unused low bits marked in ``Sig.zeros``; registers placed as ``cast_all`` does."""
        timed = self.model is not None and bool(self.clock_mhz)
        live = [(v, t) for v, t in zip(xs, types) if t is not None and v.const is None]
        k1 = k2 = 0
        if timed:
            xs, k1 = self.fit(xs, max((round_delay(self.model, v.width + 1, src_frac - t.frac, t.quant)
                                       for v, t in live), default=0.0), base)
        rounded = []
        for v, t in zip(xs, types):
            if t is None or v.const is not None:
                rounded.append(v)
                continue
            lo, hi = (int(b) for b in round_shift(np.array([v.lo, v.hi], dtype=object), src_frac - t.frac, t.quant))
            rounded.append(self._round(v, src_frac - t.frac, t.quant, lo, hi))
        if timed:
            sat = [saturate_delay(self.model, q.width, q.lo < t.min_int and q.hi > t.max_int)
                   for q, t in zip(rounded, types) if t is not None and q.const is None and t.overflow == "SAT"
                   and (q.lo < t.min_int or q.hi > t.max_int)]
            rounded, k2 = self.fit(rounded, max(sat, default=0.0), base)
        out = []
        for q, v, t in zip(rounded, xs, types):
            if t is None:
                out.append(const_sig(0))
                continue
            y = self.cast(v, src_frac, t) if v.const is not None else self._overflow(q, t)
            z = env.frac - t.frac  # >= 0: env holds every element's format
            if z and y.const is not None:
                y = const_sig(y.const << z)
            elif z:
                y = self._round(y, -z, "TRN", y.lo << z, y.hi << z)
                y.zeros = z
            out.append(y)
        return out, k1 + k2

    def relu_all(self, xs: list[Sig], base: str) -> tuple[list[Sig], int]:
        xs, k = self.fit(xs, self._d("luts") if any(v.const is None and v.lo < 0 < v.hi for v in xs) else 0.0, base)
        return [self.relu(v) for v in xs], k

    def _round(self, x: Sig, s: int, quant: str, lo: int, hi: int) -> Sig:
        """Drop ``s`` fractional bits (or append ``-s`` zero bits) with the rounding rule."""
        if s == 0:
            return x
        if s < 0:
            return self._time(self.wire("q", lo, hi, lambda w: f"$signed({{{self.ext(x, w + s)}, {-s}'b0}})"), (x,), 0.0)
        if lo == hi:
            return const_sig(lo)
        xw = x.width
        floor_lo, floor_hi = x.lo >> s, x.hi >> s
        width = max(signed_width(floor_lo, floor_hi), signed_width(lo, hi))

        def bit(k: int) -> str:  # bits above the MSB are copies of the sign
            return f"{x.expr}[{min(k, xw - 1)}]"

        if s < xw:
            f = self.wire("f", floor_lo, floor_hi, lambda w: f"{x.expr} >>> {s}", width=xw)
        else:
            f = self.wire("f", floor_lo, floor_hi, lambda w: f"{{{w}{{{bit(xw - 1)}}}}}", width=max(width, 1))
        f = self._time(f, (x,), 0.0)
        f_expr = f.expr if f.const is None else self.lit(f.const, width)
        fl = f"$signed({f_expr}[{width - 1}:0])" if f.const is None else f_expr
        if quant == "TRN":
            return self._time(self.wire("q", lo, hi, lambda w: fl, width=width), (f,), 0.0)
        if quant == "RND":  # ties toward +infinity: add the half bit
            up = bit(s - 1)
        else:  # RND_CONV: round up above half, and at half when the floor is odd
            tie_break = f"(|{x.expr}[{s - 2}:0] | {bit(s)})" if s >= 2 else bit(s)
            up = f"({bit(s - 1)} & {tie_break})"
        pad = f"{width - 1}'b0, " if width > 1 else ""
        out = self.wire("q", lo, hi, lambda w: f"{fl} + $signed({{{pad}{up}}})", width=width)
        return self._time(out, (x,), round_delay(self.model, width, s, quant) if self.model else 0.0)

    def _overflow(self, q: Sig, t: FixedType) -> Sig:
        tmin, tmax = t.min_int, t.max_int
        if q.const is not None:
            return const_sig(int(fit_overflow(np.array([q.const], dtype=object), t)[0]))
        if tmin <= q.lo and q.hi <= tmax:
            return q
        qw = q.width
        if t.overflow == "SAT":
            e = q.expr
            core = e
            if q.lo < tmin:
                core = f"({e} < {self.lit(tmin, qw)}) ? {self.lit(tmin, qw)} : {core}"
            if q.hi > tmax:
                core = f"({e} > {self.lit(tmax, qw)}) ? {self.lit(tmax, qw)} : {core}"
            # clamp both ends: an interval wholly outside the type saturates to one constant
            lo, hi = min(max(q.lo, tmin), tmax), max(min(q.hi, tmax), tmin)
            c = self.wire("c", lo, hi, lambda w: core, width=qw)
            c = self._time(c, (q,), saturate_delay(self.model, qw, q.lo < tmin and q.hi > tmax) if self.model else 0.0)
            if c.const is not None:
                return c
            return self._time(self.wire("n", lo, hi, lambda w: f"$signed({c.expr}[{w - 1}:0])"), (c,), 0.0)
        tw = t.width  # WRAP: keep the low bits, reinterpret in the type's signedness
        if t.signed:
            return self._time(self.wire("w", tmin, tmax, lambda w: f"$signed({q.expr}[{tw - 1}:0])"), (q,), 0.0)
        return self._time(self.wire("w", tmin, tmax, lambda w: f"$signed({{1'b0, {q.expr}[{tw - 1}:0]}})"), (q,), 0.0)


# The MLP emitter's kind table: what each kind becomes ("dense" starts a stage, "post" joins the stage before it,
# "flatten" is nothing on a flat tensor, "head" is not hardware); rtl_sim.stream has the streaming one.
MLP_STAGES: dict[type[Layer], str] = {Dense: "dense", ReLU: "post", Quant: "post", Flatten: "flatten", Output: "head"}


def stages_of(net: Network) -> list[Stage]:
    """Group the network into stages: each Dense with the element-wise layers after it."""
    net.check_chain("the RTL emitter's stages (emit_verilog builds a branched MLP without a trace)")
    if not net.quantized:
        raise BackendError(f"network {net.name!r} is float; quantize or compress it before emitting RTL")
    stages: list[Stage] = []
    types = net.tensor_types()
    cur: list[Layer] = []
    for layer, t in zip(net.layers, types):
        role = lookup(MLP_STAGES, type(layer))
        if role == "head":
            continue
        if role == "flatten":
            if len(net.input_shape) != 1:
                raise BackendError(f"layer {layer.name!r}: RTL emission supports 1-D (Dense) networks only")
            continue
        if role is None:
            raise BackendError(
                f"layer {layer.name!r} ({layer.kind}): the RTL emitter supports Dense, ReLU and Quant layers; "
                "use the hls/ backend for convolutions"
            )
        if role == "dense" and cur:
            stages.append(Stage(cur, prev_t))
            cur = []
        cur.append(layer)
        prev_t = t
    if cur:
        stages.append(Stage(cur, prev_t))
    if not stages:
        raise BackendError(f"network {net.name!r} has no hardware layers")
    return stages


def emit_verilog(net: Network, top: str | None = None, adder_regs_every: int = 0, mult: str | None = None,
                 datapath: str = "cmvm", depth_slack: int | None = DEFAULT_DEPTH_SLACK, clocked: bool = True,
                 trace: list | None = None, clock_mhz: float | None = None, family: str | None = None) -> Design:
    """Verilog for ``net``: valid-in/valid-out, synchronous reset, one register per stage plus pipeline
    registers in each layer's adder graph: where ``family``'s delay model says a path would exceed the
    period of ``clock_mhz`` (``codesign.core.timing``), or every ``adder_regs_every`` adder-tree levels
    (the manual override, when > 0), or none. With ``family`` the Design's ``timing`` gives the model's
    critical path, latency in cycles and ns, and II. ``mult`` overrides each layer's mapping;
    ``datapath`` chooses the shared adder graph ("cmvm") or one multiplier per weight ("csd");
    ``clocked=False`` makes every data register a wire (the same function with no latency, for proofs);
    ``trace``, a list, receives every arithmetic wire and each Dense's results (``rtl_sim.formal`` checks them)."""
    if len(net.input_shape) != 1:
        raise BackendError(f"network {net.name!r}: RTL emission supports flat (1-D) inputs, not {net.input_shape}")
    if not net.is_chain and clocked and trace is None:
        from rtl_sim.branches import emit_graph_verilog  # a residual MLP: the shortcut a register delay

        return emit_graph_verilog(net, top, adder_regs_every, mult, datapath, depth_slack, clock_mhz, family)
    top = top or _ident(net.name)
    stages = stages_of(net)
    e = _Emitter(clocked, trace, *_timing_args(clock_mhz, family, adder_regs_every))
    in_t = net.input_type
    n_in = net.input_shape[0]
    x = [Sig(f"x0_{i}", in_t.min_int, in_t.max_int) for i in range(n_in)]
    for i in range(n_in):
        w = signed_width(in_t.min_int, in_t.max_int)
        slice_ = f"in_data[{i * in_t.width + in_t.width - 1}:{i * in_t.width}]"
        src = f"$signed({slice_})" if in_t.signed else f"$signed({{1'b0, {slice_}}})"
        e.lines.append(f"  wire signed [{w - 1}:0] x0_{i} = {src};")
    x_type = in_t
    design_stages = []
    multipliers: dict[str, dict[str, int]] = {}
    cum = 0
    for si, st in enumerate(stages):
        lat = 1
        frac = x_type.frac
        for layer in st.layers:
            if isinstance(layer, Dense):
                t = layer.result_type or layer.accum_type or _exact(layer, x_type)
                x, frac, extra, counts = dense_datapath(e, layer, x, x_type, adder_regs_every, mult or layer.mult,
                                                        datapath, depth_slack, tail_steps(t, st.layers[1:]))
                multipliers[layer.name] = counts
                if trace is not None:
                    trace.append({"op": "acc", "layer": layer.name, "outs": list(x), "frac": frac})
                lat += extra
                x, k = e.cast_all(x, frac, t, f"{_ident(layer.name)}_p")
                lat += k
                frac, x_type = t.frac, t
            elif isinstance(layer, ReLU):
                x, k = e.relu_all(x, f"{_ident(layer.name)}_p")
                lat += k
                if layer.result_type is not None:
                    x, k = e.cast_all(x, frac, layer.result_type, f"{_ident(layer.name)}_p")
                    lat += k
                    frac, x_type = layer.result_type.frac, layer.result_type
            elif isinstance(layer, Quant) and layer.per_element:
                x, k = e.cast_each(x, frac, wire_types(layer, len(x)), layer.result_type, f"{_ident(layer.name)}_p")
                lat += k
                frac, x_type = layer.result_type.frac, layer.result_type
            elif isinstance(layer, Quant):
                x, k = e.cast_all(x, frac, layer.result_type, f"{_ident(layer.name)}_p")
                lat += k
                frac, x_type = layer.result_type.frac, layer.result_type
        x_type = st.out_type
        e.prefix = ""
        x = [e.register(v, f"L{si}_{_ident(st.layers[0].name)}") for v in x]
        cum += lat
        design_stages.append({"name": st.layers[0].name, "layers": [l.name for l in st.layers], "type": x_type.to_hls(),
                              "n": len(x), "latency": cum, "signals": [v.expr if v.const is None else None for v in x],
                              "consts": [v.const for v in x]})
    out_t = x_type
    verilog = flat_module(net, top, e, in_t, out_t, n_in, x, cum)
    return Design(top, verilog, in_t, out_t, n_in, len(x), cum, design_stages, multipliers, datapath, e.timing(cum))


def flat_module(net: Network, top: str, e: _Emitter, in_t: FixedType, out_t: FixedType, n_in: int, x: list[Sig],
                cum: int) -> str:
    """The module of a fully parallel design: the ports, the emitter's wires and registers, a valid shift register
    of ``cum`` cycles and ``out_data`` from ``x`` (``rtl_sim.branches`` builds residual MLPs with it too)."""
    n_out = len(x)
    outs = output_assigns(x, out_t)
    body = "\n".join(e.lines)
    regs = "\n".join(e.regs)
    vlines = "\n".join(f"      valid_sr[{k}] <= valid_sr[{k - 1}];" for k in range(1, cum))
    header = _header(net, top, in_t, out_t, n_in, n_out, cum)
    return f"""{header}
// Exact-width rounding drops low bits on purpose and pruned inputs are never read,
// so partly used wires are expected here:
/* verilator lint_off UNUSEDSIGNAL */
module {top} (
  input  wire clk,
  input  wire rst,
  input  wire in_valid,
  input  wire [{n_in * in_t.width - 1}:0] in_data,
  output wire out_valid,
  output wire [{n_out * out_t.width - 1}:0] out_data
);
{body}
  /* verilator lint_on UNUSEDSIGNAL */

  always @(posedge clk) begin
{regs}
  end

  reg [{cum - 1}:0] valid_sr;
  always @(posedge clk) begin
    if (rst) begin
      valid_sr <= {cum}'b0;
    end else begin
      valid_sr[0] <= in_valid;
{vlines}
    end
  end
  assign out_valid = valid_sr[{cum - 1}];

{chr(10).join(outs)}
endmodule
`default_nettype wire
"""


def _timing_args(clock_mhz: float | None, family: str | None, every: int) -> tuple[DelayModel | None, float | None]:
    """The emitter's delay model and the clock it places registers for (none when ``every`` overrides)."""
    if clock_mhz is not None and family is None:
        raise BackendError(f"a clock of {clock_mhz} MHz needs the FPGA family whose delays place the registers "
                           "(family='ecp5', 'xc7', 'xcup' or 'cyclonev')")
    model = delay_model(family) if family else None
    if model is not None and clock_mhz is not None:
        model.budget(clock_mhz)  # a bad clock fails here, with its value
    return model, None if every else clock_mhz  # the manual spacing overrides the clock


def element_types(layer: Quant) -> np.ndarray:
    """Each element's own format (None where its width is 0) of a per-element Quant, in the tensor's shape."""
    out = np.empty(layer.element_width.shape, dtype=object)
    for t, mask in layer.element_formats():
        out[mask] = t
    return out


def wire_types(layer: Quant, n: int) -> list[FixedType | None]:
    """The formats of the ``n`` wires a per-element Quant acts on: a flat vector's elements, or a pixel's channels
    when the formats do not change from pixel to pixel (the per-channel case)."""
    t = element_types(layer).reshape(-1, n)
    if not all(list(row) == list(t[0]) for row in t[1:]):
        raise BackendError(f"layer {layer.name!r}: per-element formats that change from pixel to pixel are built at "
                           "the network's input only; make the formats per channel inside the stream")
    return list(t[0])


def tail_steps(t: FixedType, layers: list[Layer]) -> list[tuple[str, FixedType | None]]:
    """The element-wise logic after a datapath: the cast to ``t``, then each ReLU (and its cast) and Quant
    in ``layers``, as ``codesign.core.timing.tail_delay`` takes it."""
    steps: list[tuple[str, FixedType | None]] = [("cast", t)]
    for layer in layers:
        if isinstance(layer, ReLU):
            steps.append(("relu", None))
        if isinstance(layer, (ReLU, Quant)) and getattr(layer, "result_type", None) is not None:
            steps.append(("cast", layer.result_type))
    return steps


def output_assigns(x: list[Sig], out_t: FixedType) -> list[str]:
    """``out_data``'s assignments: element j is ``x[j]`` in ``out_t``'s width (sign-extended, or the
    low bits of a wider wire whose value fits)."""
    ow = out_t.width
    outs = []
    for j, v in enumerate(x):
        sl = f"out_data[{j * ow + ow - 1}:{j * ow}]"
        if v.const is not None:
            outs.append(f"  assign {sl} = {ow}'h{v.const & ((1 << ow) - 1):x};")
        elif v.width >= ow:
            outs.append(f"  assign {sl} = {v.expr}[{ow - 1}:0];")
        else:
            outs.append(f"  assign {sl} = {{{{{ow - v.width}{{{v.expr}[{v.width - 1}]}}}}, {v.expr}}};")
    return outs


def _exact(layer: Dense, in_t: FixedType) -> FixedType:
    from codesign.core.reference import exact_accum_type

    return exact_accum_type(layer, in_t)


def dense_datapath(e: _Emitter, layer: Dense, x: list[Sig], x_type: FixedType, every: int, mapping: str,
                   datapath: str = "cmvm", depth_slack: int | None = DEFAULT_DEPTH_SLACK,
                   tail: list[tuple[str, FixedType | None]] | None = None):
    """The products and adder trees of one Dense layer (also a convolution's kernel, as a Dense over
    the flattened window); returns outputs, their frac, extra latency, counts.

    ``datapath`` "cmvm": one shared adder graph for the layer (``codesign.core.cmvm``), at most
    ``depth_slack`` adder levels deeper than the layer's minimum; "csd": one shift-and-add per
    nonzero weight and a balanced adder tree per output (the cross-check). ``tail``: the element-wise
    logic that follows in the same cycle (``tail_steps``), which register placement by the clock makes room for."""
    if not layer.quantized:
        raise BackendError(f"layer {layer.name!r} has float weights; quantize it first")
    if datapath not in DATAPATHS:
        raise BackendError(f"unknown datapath {datapath!r}; datapaths: {', '.join(DATAPATHS)}")
    e.prefix = _ident(layer.name)
    wf, bf = layer.weight_type.frac, layer.bias_type.frac
    pf = x_type.frac + wf
    frac = max(pf, bf)
    if datapath == "cmvm":
        outs, extra, counts = _cmvm_datapath(e, layer, x, frac - pf, frac - bf, every, mapping, depth_slack,
                                             tail or [], frac)
        return outs, frac, extra, counts
    n_in, n_out = layer.weight.shape
    counts = {"dsp": 0, "lut": 0, "shift": 0, "nonzero": int(np.count_nonzero(layer.weight))}
    trees: list[list[Sig]] = []
    for j in range(n_out):
        leaves: list[Sig] = []
        for i in range(n_in):
            c = int(layer.weight[i, j])
            if c == 0 or (x[i].const == 0):
                continue
            if x[i].const is not None:
                leaves.append(const_sig(x[i].const * c << (frac - pf)))
                continue
            dsp = uses_dsp(c, mapping)
            if dsp:
                counts["dsp"] += 1
            elif len(csd_digits(c)) == 1:
                counts["shift"] += 1
            else:
                counts["lut"] += 1
            leaves.append(e.const_mult(x[i], c, frac - pf, dsp))
        b = int(layer.bias[j]) << (frac - bf)
        consts = sum(l.const for l in leaves if l.const is not None) + b
        leaves = [l for l in leaves if l.const is None]
        if consts or not leaves:
            leaves.append(const_sig(consts))
        trees.append(leaves)
    depth = max(int(np.ceil(np.log2(len(t)))) if len(t) > 1 else 0 for t in trees)
    if e.model is not None and e.clock_mhz and not every:  # by the clock: as many levels as the widest adder allows
        widest = max((v.width for t in trees for v in t), default=1) + depth
        room = e.model.budget(e.clock_mhz) - e.model.clk_to_q
        every = max(int(room // e.model.adder(widest)), 1)
    extra = 0
    for level in range(1, depth + 1):
        reg_here = every > 0 and level % every == 0 and level < depth
        for j, nodes in enumerate(trees):
            nxt = []
            for k in range(0, len(nodes) - 1, 2):
                nxt.append(e.add(nodes[k], nodes[k + 1]))
            if len(nodes) % 2:
                nxt.append(nodes[-1])
            if reg_here:
                nxt = [e.register(v, f"{_ident(layer.name)}_t{level}") for v in nxt]
            trees[j] = nxt
        extra += int(reg_here)
    return [t[0] for t in trees], frac, extra, counts


def _cmvm_datapath(e: _Emitter, layer: Dense, x: list[Sig], shift: int, bias_shift: int, every: int, mapping: str,
                   depth_slack: int | None, tail: list, frac: int):
    """``dense_datapath`` through one shared adder graph; its registers placed by ``schedule_graph``: by the
    emitter's clock and delay model, or every ``every`` adder levels."""
    w = layer.weight.astype(np.int64)
    dsp = np.vectorize(lambda c: c != 0 and uses_dsp(int(c), mapping), otypes=[bool])(w) if w.size else None
    x, w = _own_points(e, x, w)
    graph = optimize(w, [v.lo for v in x], [v.hi for v in x], layer.bias.astype(np.int64) << bias_shift, shift,
                     dsp, depth_slack)
    tail_ns = 0.0
    if e.model is not None:
        tail_ns = max((tail_delay(e.model, graph.nodes[r.node].lo << r.shift, graph.nodes[r.node].hi << r.shift,
                                  frac, tail) for r in graph.outputs if r.node >= 0), default=0.0)
    sched = schedule_graph(graph, e.model, None if every else e.clock_mhz, every,
                           max((e.arrival(v) for v in x), default=None) if e.model else None, tail_ns)
    cycle = [0] * len(graph.nodes)
    delays: dict[tuple[int, int], Sig] = {}  # a shared node's registered copies, by (node, cycle)
    sigs: list[Sig] = []
    for k, n in enumerate(graph.nodes):
        if n.op == "input":
            sigs.append(x[n.a])
            continue
        if n.op == "const":
            sigs.append(const_sig(n.value))
            continue
        cycle[k] = sched.cycle[k]
        if n.op == "mul":
            sigs.append(e.const_mult(x[n.a], n.value, 0, True))
            continue
        a, b = (_delayed(e, sigs, cycle, delays, i, cycle[k], layer.name) for i in (n.a, n.b))
        sigs.append(e.shift_add(a, n.sa, b, n.sb, n.sub))
    last = sched.last
    outs = []
    for r in graph.outputs:
        if r.node < 0:
            outs.append(const_sig(0))
            continue
        v = _delayed(e, sigs, cycle, delays, r.node, last, layer.name)
        outs.append(e.shift_add(v, r.shift, const_sig(0), 0, False) if r.shift else v)
    counts = {"dsp": sum(n.op == "mul" for n in graph.nodes), "adders": len(graph.adders), "shared": graph.shared,
              "adder_depth": graph.depth, "terms": graph.stats["terms"], "nonzero": int(np.count_nonzero(w))}
    return outs, last, counts


def _own_points(e: _Emitter, x: list[Sig], w: np.ndarray) -> tuple[list[Sig], np.ndarray]:
    """Inputs whose low bits are known zeros (``Sig.zeros``: HGQ elements) enter the adder graph at their own
    binary point, without those bits, and their weight rows move up by as many bits:
    ``x * c == (x >> z) * (c << z)``."""
    if not any(v.zeros and v.const is None for v in x):
        return x, w
    w = w.copy()
    out = []
    for i, v in enumerate(x):
        z = v.zeros if v.const is None else 0
        if z and np.any(w[i]):
            v = e._time(e.wire("z", v.lo >> z, v.hi >> z, lambda n, v=v, z=z: f"$signed({v.expr}[{z + n - 1}:{z}])"),
                        (v,), 0.0)
            w[i] = w[i] << z
        out.append(v)
    return out, w


def _delayed(e: _Emitter, sigs: list[Sig], cycle: list[int], delays: dict[tuple[int, int], Sig], k: int, to: int,
             name: str) -> Sig:
    """Node ``k``'s value registered until cycle ``to`` (pipeline balancing across shared nodes)."""
    s = sigs[k]
    if s.const is not None:
        return s
    for c in range(cycle[k], to):
        key = (k, c + 1)
        if key not in delays:
            delays[key] = e.register(s, f"{_ident(name)}_d{c + 1}")
        s = delays[key]
    return s


def _ident(name: str) -> str:
    s = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return s if s[:1].isalpha() else f"n_{s}"


def _header(net: Network, top: str, in_t: FixedType, out_t: FixedType, n_in: int, n_out: int, lat: int) -> str:
    return (
        f"// {top}: generated by fpga-codesign from network {net.name!r}. Do not edit.\n"
        f"// in_data : {n_in} x {in_t.to_hls()}, element i at bits [i*{in_t.width} +: {in_t.width}]\n"
        f"// out_data: {n_out} x {out_t.to_hls()}, element j at bits [j*{out_t.width} +: {out_t.width}]\n"
        f"// latency : {lat} cycles from in_valid to out_valid; initiation interval 1\n"
        "`default_nettype none"
    )

