"""Folded Dense layers: a layer computes one input vector over R cycles, its weights in a memory.

A network's Dense layers each get a reuse factor R (``reuse``). A layer with R = 1 is the fully
parallel adder graph of ``rtl_sim.verilog``; a whole network at R = 1 is exactly ``emit_verilog``'s
design. A layer with R > 1 is folded, hls4ml's compressed-dense idea in RTL:

- Only the nonzero weights are stored, with the index of their input, in the column-major order of the
  weight matrix (output by output). The ``nnz`` items are cut into ``M = ceil(nnz / R)`` units of
  ``C = ceil(nnz / M) <= R`` consecutive items each (the last padded with zero weights): a pruned weight
  saves memory and cycles. ``C`` is the layer's cycles per vector.
- One memory of depth ``C`` holds, per cycle, every unit's weight and a "first item of an output" bit,
  and the select of each input group's multiplexer: units that read the same input at every cycle
  (in a dense layer, the units a column apart) share one multiplexer over the at most ``C`` inputs they read.
  It is read synchronously (the address is the counter's next value), so it may be a block RAM. Left
  to itself (``memory="auto"``) Yosys's xc7 script builds these shallow, wide ROMs as LUTs (one LUT per
  word bit up to depth 64, three at 128) and their output register as flip-flops; ``memory="block"``
  (``rom_style``) makes them RAMB18E1 (a 16 x 300-bit ROM: 9 RAMB18E1, no LUT). Yosys has no LUTRAM
  mapping for a ROM on xc7 (``rom_style="distributed"``: "no valid mapping"). ``docs/guide/folding.md``
  has the measured cells.
- Unit ``m`` is one multiply-accumulate: ``prod <= x[sel] * w`` (a ``*`` that synthesis maps to a DSP
  or to LUTs by the family's rule), ``acc <= (first ? 0 : acc) + prod``. Each run of items of one output
  inside a unit is a *segment*; its sum is written into that segment's partial register at its last
  item's cycle. An output whose items straddle units has a partial per unit; after the last cycle the
  partials of each output, its bias, the layer's rounding/saturation and the ReLU/Quant layers after
  it make the layer's output register. Every register is as wide as the exact range it can hold
  (from the weights and the input ranges, as ``codesign.core.reference.exact_accum_type``), so
  nothing overflows and the result is the reference's, bit for bit.

Handshake: valid/ready at the input, a fixed schedule inside, a valid pulse at the output (no
backpressure, as the fully parallel design). ``in_ready`` is high at most every ``P = max_l C_l``
cycles (the II: the slowest layer sets it); a sample is taken when ``in_valid && in_ready``. Each
layer starts when its input register loads (the previous layer's output register, which holds for
``P >= C`` cycles, so no extra buffer is needed) and loads its own output register ``C + 2`` cycles
later (``1`` for a parallel layer), which starts the next layer. The latency from the input sample to
``out_valid`` is ``1 + sum_l (C_l + 2 or 1)`` cycles, and one result leaves every ``P`` cycles.

This module depends only on the IR and ``rtl_sim.verilog``: it never imports ``hls``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from codesign.core.arith import signed_width
from codesign.core.cmvm import DEFAULT_DEPTH_SLACK
from codesign.core.fixed import FixedType
from codesign.core.fold import LayerPlan, bits as _bits, layout, memory_words, plan_layer
from codesign.core.layers import Dense, Quant, ReLU
from codesign.core.network import Network
from codesign.errors import BackendError
from rtl_sim.verilog import Design, Sig, Stage, _Emitter, _exact, _header, _ident, const_sig, dense_datapath, \
    emit_verilog, output_assigns, stages_of


MEMORY_STYLES = ("auto", "block", "logic")


@dataclass
class FoldedDesign(Design):
    """A network with folded layers: the II (cycles per sample) and each layer's fold."""

    ii: int = 1
    reuse: dict[str, int] = field(default_factory=dict)
    folds: dict[str, dict] = field(default_factory=dict)  # per Dense: units, cycles, memory depth and width


def reuse_of(net: Network, reuse: int | dict[str, int] | None) -> dict[str, int]:
    """The reuse factor of each Dense layer: one for all, by layer name (missing names: 1), or (None) each
    layer's own ``reuse`` (the IR's, as the HLS project reads it)."""
    names = [l.name for l in net.layers if isinstance(l, Dense)]
    if reuse is None:
        return {l.name: int(l.reuse) for l in net.layers if isinstance(l, Dense)}
    if isinstance(reuse, int):
        return {n: reuse for n in names}
    unknown = sorted(set(reuse) - set(names))
    if unknown:
        raise BackendError(f"reuse factors for {', '.join(unknown)}: no such Dense layer in {net.name!r} "
                           f"(its Dense layers: {', '.join(names)})")
    return {n: int(reuse.get(n, 1)) for n in names}


def emit_folded_verilog(net: Network, reuse: int | dict[str, int] | None = None, top: str | None = None,
                        memory: str = "auto") -> Design:
    """Verilog for ``net`` with each Dense layer folded by its reuse factor (module docstring; None: each layer's
    own ``reuse``). All factors 1: ``emit_verilog``'s fully parallel design, unchanged. ``memory``: the weight
    memories' ``rom_style`` for Yosys ("auto": Yosys's choice, "block": block RAM, "logic": LUTs)."""
    if memory not in MEMORY_STYLES:
        raise BackendError(f"weight memory style {memory!r}: use one of {', '.join(MEMORY_STYLES)}")
    rs = reuse_of(net, reuse)
    if all(r == 1 for r in rs.values()):
        return emit_verilog(net, top)
    if len(net.input_shape) != 1 or not net.is_chain:
        raise BackendError(f"network {net.name!r}: folded layers are built for chains of Dense layers (flat input)")
    top = top or _ident(net.name)
    stages = stages_of(net)
    e = _Emitter(clocked=True)
    in_t = net.input_type
    n_in = net.input_shape[0]
    x = []
    for i in range(n_in):
        sl = f"in_data[{i * in_t.width + in_t.width - 1}:{i * in_t.width}]"
        e.lines.append(f"  wire signed [{signed_width(in_t.min_int, in_t.max_int) - 1}:0] in_{i} = "
                       + (f"$signed({sl});" if in_t.signed else f"$signed({{1'b0, {sl}}});"))
        x.append(Sig(f"in_{i}", in_t.min_int, in_t.max_int))
    x_type, frac = in_t, in_t.frac
    if not any(isinstance(l, Dense) for l in stages[0].layers):  # element-wise layers on the input, before its register
        e.prefix = "in"
        x, frac, x_type = _post(e, stages[0].layers, x, frac, x_type)
        stages = stages[1:]
    ld = "in_take"
    x = hold(e, x, "x0", ld)
    lat, cycles, folds, design_stages = 1, [], {}, []
    for si, st in enumerate(stages):
        dense = st.layers[0]
        t = dense.result_type or dense.accum_type or _exact(dense, x_type)
        r = rs[dense.name]
        e.prefix = _ident(dense.name)
        if r == 1:
            acc, acc_frac, extra, _ = dense_datapath(e, dense, x, x_type, 0, dense.mult, "cmvm", DEFAULT_DEPTH_SLACK)
            if extra:
                raise BackendError(f"layer {dense.name!r}: an unregistered adder graph came back with {extra} stages")
            done = f"{e.prefix}_done"
            e.lines.append(f"  reg {done};")
            e.regs.append(f"    {done} <= rst ? 1'b0 : {ld};")
            c, steps = 1, 1
            folds[dense.name] = {"reuse": 1, "cycles": 1, "units": 0, "parallel": True}
        else:
            plan = plan_layer(dense, r, [v.lo for v in x], [v.hi for v in x])
            acc, acc_frac, done = folded_layer(e, dense, plan, x, x_type, ld, memory)
            c, steps = plan.cycles, plan.cycles + 2
            folds[dense.name] = {"reuse": r, "cycles": plan.cycles, "units": plan.units, "nonzero": plan.nonzero,
                                 "memory_depth": plan.cycles, "memory_width": plan.word_bits,
                                 "partials": len(plan.segments), "parallel": False}
        cycles.append(c)
        e.prefix = _ident(dense.name)
        y, frac, x_type = _post(e, st.layers, acc, acc_frac, x_type, t)
        x = hold(e, y, f"y{si}_{_ident(dense.name)}", done)
        ld = done
        lat += steps
        design_stages.append({"name": dense.name, "layers": [l.name for l in st.layers], "type": x_type.to_hls(),
                              "n": len(x), "latency": lat, "cycles": c,
                              "signals": [v.expr if v.const is None else None for v in x],
                              "consts": [v.const for v in x]})
    ii = max(cycles)
    verilog = _module(net, top, e, in_t, x_type, n_in, x, ld, lat, ii)
    return FoldedDesign(top, verilog, in_t, x_type, n_in, len(x), lat, design_stages,
                        {k: v for k, v in folds.items()}, "folded", None, ii, rs, folds)


def _post(e: _Emitter, layers: list, x: list[Sig], frac: int, x_type: FixedType, t: FixedType | None = None
          ) -> tuple[list[Sig], int, FixedType]:
    """The stage's rounding to ``t`` (a Dense's result type) and its ReLU/Quant layers, as combinational logic."""
    if t is not None:
        x, _ = e.cast_all(x, frac, t, "p")
        frac, x_type = t.frac, t
    for layer in layers:
        if isinstance(layer, Quant) and layer.per_element:
            raise BackendError(f"layer {layer.name!r}: per-element formats are not built in folded layers; "
                               "fold the network without them or use reuse 1")
        if isinstance(layer, ReLU):
            x, _ = e.relu_all(x, "p")
        if isinstance(layer, (ReLU, Quant)) and layer.result_type is not None:
            x, _ = e.cast_all(x, frac, layer.result_type, "p")
            frac, x_type = layer.result_type.frac, layer.result_type
    return x, frac, x_type


def hold(e: _Emitter, xs: list[Sig], base: str, enable: str) -> list[Sig]:
    """Registers that take ``xs`` when ``enable`` is high (constants stay constants)."""
    out = []
    for j, v in enumerate(xs):
        if v.const is not None:
            out.append(v)
            continue
        name = f"{base}_{j}"
        e.lines.append(f"  reg signed [{v.width - 1}:0] {name};")
        e.regs.append(f"    if ({enable}) {name} <= {v.expr};")
        out.append(Sig(name, v.lo, v.hi))
    return out


def folded_layer(e: _Emitter, layer: Dense, plan: LayerPlan, x: list[Sig], x_type: FixedType, ld: str,
                  memory: str = "auto") -> tuple[list[Sig], int, str]:
    """The counter, the weight memory, the units and the partial registers of one folded layer; returns each
    output's exact sum (before rounding), its fractional bits and the signal that loads the layer's output."""
    p = f"{_ident(layer.name)}_f"
    c, lines, regs = plan.cycles, e.lines, e.regs
    cw = max(_bits(c), 1)
    lines += [f"  reg {p}_busy;", f"  reg [{cw - 1}:0] {p}_cnt;", f"  wire {p}_last = {p}_cnt == {cw}'d{c - 1};",
              f"  wire [{cw - 1}:0] {p}_nx = {ld} ? {cw}'d0 : ({p}_busy && !{p}_last) ? {p}_cnt + {cw}'d1 : {cw}'d0;"]
    regs += [f"    {p}_busy <= rst ? 1'b0 : ({ld} || ({p}_busy && !{p}_last));", f"    {p}_cnt <= {p}_nx;"]
    fields, gpos = layout(plan)
    width = max(plan.word_bits, 1)
    words = memory_words(plan)
    q = f"{p}_q"
    if c == 1:
        lines.append(f"  wire [{width - 1}:0] {q} = {width}'h{words[0]:x};")
    else:  # the weight memory: read synchronously at the counter's next value, so it may be a block RAM
        style = "" if memory == "auto" else f'(* rom_style = "{memory}" *) '
        lines.append(f"  {style}reg [{width - 1}:0] {p}_mem [0:{c - 1}];")
        lines.append("  initial begin")
        lines += [f"    {p}_mem[{k}] = {width}'h{wd:x};" for k, wd in enumerate(words)]
        lines.append("  end")
        lines.append(f"  reg [{width - 1}:0] {q};")
        regs.append(f"    {q} <= {p}_mem[{p}_nx];")
    lines += [f"  reg {p}_v1;", f"  reg [{cw - 1}:0] {p}_k1;"]
    regs += [f"    {p}_v1 <= rst ? 1'b0 : {p}_busy;", f"    {p}_k1 <= {p}_cnt;"]
    for g, sel in enumerate(plan.selects):
        _select(e, f"{p}g{g}", [x[i] for i in sel], q, gpos[g], plan.select_bits[g])
    sums: dict[int, list[Sig]] = {}
    for u in range(plan.units):
        _unit(e, p, u, plan, f"{p}g{plan.group[u]}_a", q, fields[u], sums)
    done = f"{p}_done"
    lines += [f"  reg {done};"]
    regs.append(f"    {done} <= rst ? 1'b0 : ({p}_v1 && {p}_k1 == {cw}'d{c - 1});")
    pf = x_type.frac + layer.weight_type.frac
    frac = max(pf, layer.bias_type.frac)
    outs = []
    for j in range(layer.weight.shape[1]):
        acc = None
        for s in sums.get(j, []):
            acc = s if acc is None else e.add(acc, s)
        acc = acc or const_sig(0)
        b = int(layer.bias[j]) << (frac - layer.bias_type.frac)
        outs.append(e.shift_add(acc, frac - pf, const_sig(b), 0, False))
    return outs, frac, done


def _select(e: _Emitter, n: str, srcs: list[Sig], q: str, lsb: int, sb: int) -> None:
    """One input group's multiplexer ``{n}_a``: its select from the memory word."""
    aw = max(v.width for v in srcs)
    if len(srcs) == 1:
        e.lines.append(f"  wire signed [{aw - 1}:0] {n}_a = {e.ext(srcs[0], aw)};")
        return
    e.lines.append(f"  wire [{sb - 1}:0] {n}_s = {q}[{lsb + sb - 1}:{lsb}];")
    e.lines.append(f"  reg signed [{aw - 1}:0] {n}_a;")
    arms = " ".join(f"{sb}'d{k}: {n}_a = {e.ext(v, aw)};" for k, v in enumerate(srcs[1:], start=1))
    e.lines.append(f"  always @* begin case ({n}_s) {arms} default: {n}_a = {e.ext(srcs[0], aw)}; endcase end")


def _unit(e: _Emitter, p: str, u: int, plan: LayerPlan, a: str, q: str, fld: tuple[int, int],
          sums: dict[int, list[Sig]]) -> None:
    """One multiply-accumulate unit on input ``a``: its product register, accumulator and partial registers."""
    lines, regs = e.lines, e.regs
    wb = plan.weight_bits
    n = f"{p}{u}"
    lines.append(f"  wire signed [{wb - 1}:0] {n}_w = {q}[{fld[0] + wb - 1}:{fld[0]}];")
    pw = signed_width(*plan.prod_range[u])
    accw = max(signed_width(*plan.acc_range[u]), pw)
    lines += [f"  reg signed [{pw - 1}:0] {n}_p;", f"  reg {n}_f1;", f"  reg signed [{accw - 1}:0] {n}_acc;",
              f"  wire signed [{accw - 1}:0] {n}_h = {n}_acc & {{{accw}{{!{n}_f1}}}};",
              f"  wire signed [{accw - 1}:0] {n}_an = {n}_h + {n}_p;"]
    regs += [f"    {n}_p <= {a} * {n}_w;", f"    {n}_f1 <= {q}[{fld[1]}];", f"    if ({p}_v1) {n}_acc <= {n}_an;"]
    cw = max(_bits(plan.cycles), 1)
    for si, s in enumerate(x for x in plan.segments if x.unit == u):
        sw = signed_width(s.lo, s.hi)
        if s.lo == s.hi:  # a segment of zero-range products: its sum is a constant
            sums.setdefault(s.col, []).append(const_sig(s.lo))
            continue
        name = f"{n}_part{si}"
        lines.append(f"  reg signed [{sw - 1}:0] {name};")
        regs.append(f"    if ({p}_v1 && {p}_k1 == {cw}'d{s.last}) {name} <= {n}_an[{sw - 1}:0];")
        sums.setdefault(s.col, []).append(Sig(name, s.lo, s.hi))


def _module(net: Network, top: str, e: _Emitter, in_t: FixedType, out_t: FixedType, n_in: int, x: list[Sig],
            done: str, lat: int, ii: int) -> str:
    """The top module: ports, the input's ready/take logic (one sample every ``ii`` cycles), the layers."""
    n_out = len(x)
    gw = max(_bits(ii), 1)
    ready = ("  assign in_ready = 1'b1;\n" if ii == 1 else
             f"  reg [{gw - 1}:0] in_gap;\n  assign in_ready = in_gap == {gw}'d0;\n"
             f"  always @(posedge clk) begin\n    if (rst) in_gap <= {gw}'d0;\n"
             f"    else if (in_take) in_gap <= {gw}'d{ii - 1};\n    else if (in_gap != {gw}'d0) in_gap <= in_gap - {gw}'d1;\n"
             "  end\n")
    header = _header(net, top, in_t, out_t, n_in, n_out, lat).replace(
        "initiation interval 1", f"initiation interval {ii} (in_ready)")
    return f"""{header}
// A folded design (rtl_sim.folded): in_valid/in_ready at the input, a fixed schedule inside.
/* verilator lint_off UNUSEDSIGNAL */
/* verilator lint_off WIDTHEXPAND */
/* verilator lint_off WIDTHTRUNC */
module {top} (
  input  wire clk,
  input  wire rst,
  input  wire in_valid,
  output wire in_ready,
  input  wire [{n_in * in_t.width - 1}:0] in_data,
  output reg  out_valid,
  output wire [{n_out * out_t.width - 1}:0] out_data
);
  wire in_take = in_valid && in_ready;
{ready}{chr(10).join(e.lines)}

  always @(posedge clk) begin
{chr(10).join(e.regs)}
  end

  always @(posedge clk) out_valid <= rst ? 1'b0 : {done};

{chr(10).join(output_assigns(x, out_t))}
endmodule
/* verilator lint_on WIDTHTRUNC */
/* verilator lint_on WIDTHEXPAND */
/* verilator lint_on UNUSEDSIGNAL */
`default_nettype wire
"""
