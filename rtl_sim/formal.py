"""Formal equivalence of the two datapaths of a Dense stage, for every input: a compositional proof.

Bit-level SAT on one miter of the shared adder graph (``datapath="cmvm"``) against the per-weight
CSD datapath (``"csd"``) does not finish even for tiny layers: the two sum differently grouped
shifted copies of the same inputs (the hardness of multiplier equivalence). So the proof is split
into pieces that are each trivial, over the combinational form of the emitted Verilog
(``emit_verilog(clocked=False)``: every data register a wire) of each design:

(B) Local obligations, Yosys ``sat -prove`` on the emitted text. For every arithmetic wire the
    emitter wrote (each adder and shift, each constant product, each register copy: the emitter's
    ``trace``), its declaration line, copied verbatim, goes into a checker whose operand wires are
    free inputs *assumed* within their intervals; proven: the wire's value, as a signed integer,
    equals the exact (wide) integer ``(a << sa) ± (b << sb)`` / ``a * c`` (a DSP product) / the
    signed sum of ``a``'s digit-shifted copies (a CSD product; that its digits sum to ``c`` is
    checked in Python) / ``a`` (a register copy) of its operands, and lies within its own interval.
    The line may read only the operands its trace names, and each operand is assumed in no narrower
    an interval than the one proven for it (both checked). The input wires ``x0_i`` are proven to
    hold the input integers. By induction over the DAG, every datapath wire holds its exact
    integer for every input. Checkers identical up to wire names are proven once.
(A) Exact algebra in Python over the same trace: each wire's integer coefficient vector over the
    inputs and its constant. Proven: each result of the Dense (the accumulator) has, in both
    designs, the coefficients ``weight[:, j] << shift`` and constant ``bias[j] << shift'`` the layer
    states; so the two accumulators are the same integer for every input.
(C) The output logic (rounding, saturation, ReLU, casts, the output register copies and the
    output word assignments): every other wire. A checker holds both designs' output logic with
    the accumulator wires cut free, assumed equal as integers and within their intervals;
    ``sat -prove`` shows the output words equal.
Coverage is checked, not assumed: every wire declared in each design is an input wire, a proven
datapath wire, or part of the output logic, and the output logic reads nothing else.

Not trusted: the emitter's trace (each of its claims is checked against the text), the adder graph.
Trusted: Yosys's reading of Verilog (its ``read_verilog``/``proc``/SAT encoding of the emitted
expressions); that the clocked design equals the combinational one proven here up to its
registers (the emitter writes the same expression into a register as into the wire; pipeline
alignment is what co-simulation checks); Python's integers.

When a local obligation fails, the wire it names is wrong; a full-miter SAT search (finding a
difference is fast where proving none is not) then gives a counterexample input, which is
evaluated on the designs by Yosys ``eval`` and checked against ``Network.forward_int``.
Each Yosys run is bounded by the time left of ``timeout_s`` (a subprocess timeout).
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codesign.core.layers import Dense
from codesign.core.network import Network
from codesign.errors import BackendError, ToolFailedError
from codesign.tools import Tool, find_yosys, run_tool
from rtl_sim.verilog import Design, Sig, emit_verilog

DEFAULT_TIMEOUT_S = 120
_DECL = re.compile(r"^\s*wire signed \[(\d+):0\] (\w+) = (.*);\s*$")
_IDENT = re.compile(r"(?<!['\w])[A-Za-z_]\w*")


@dataclass
class EquivalenceResult:
    layer: str
    status: str  # "proven", "disproven" or "timeout"
    seconds: float
    counterexample: list[int] | None = None  # the layer's input integers, when disproven
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def proven(self) -> bool:
        return self.status == "proven"

    def to_json(self) -> dict[str, Any]:
        out = {"layer": self.layer, "status": self.status, "seconds": round(self.seconds, 2), **self.detail}
        if self.counterexample is not None:
            out["counterexample"] = self.counterexample
        return out

    def describe(self) -> str:
        if self.status == "proven":
            return f"layer {self.layer!r}: cmvm and csd datapaths proven equal for every input ({self.seconds:.1f} s)"
        if self.status == "timeout":
            why = f"; {self.detail['failed']}" if "failed" in self.detail else ""
            return f"layer {self.layer!r}: not proven in {self.detail.get('timeout_s')} s (the solver gave up{why})"
        return (f"layer {self.layer!r}: the datapaths differ ({self.detail.get('failed', 'output differs')}), "
                f"e.g. for input {self.counterexample}")


@dataclass
class Traced:
    """A design emitted in combinational form with the emitter's trace of its arithmetic wires."""

    design: Design
    trace: list[dict]

    @property
    def decls(self) -> dict[str, tuple[int, str, str]]:
        """Every declared wire: name -> (width, expression, the line)."""
        out = {}
        for line in self.design.verilog.splitlines():
            m = _DECL.match(line)
            if m:
                out[m.group(2)] = (int(m.group(1)) + 1, m.group(3), line.strip())
        return out


def emit_traced(stage: Network, datapath: str, top: str | None = None) -> Traced:
    trace: list[dict] = []
    d = emit_verilog(stage, top=top or datapath, datapath=datapath, clocked=False, trace=trace)
    return Traced(d, trace)


# ---- (A) exact algebra ---------------------------------------------------------------------------
def _affine(t: Traced) -> dict[str, tuple[tuple[int, ...], int]]:
    """Each traced wire's integer function of the inputs: (coefficients, constant)."""
    n = t.design.n_in
    forms: dict[str, tuple[tuple[int, ...], int]] = {
        f"x0_{i}": (tuple(int(k == i) for k in range(n)), 0) for i in range(n)}

    def of(s: Sig) -> tuple[tuple[int, ...], int]:
        if s.const is not None:
            return (0,) * n, s.const
        if s.expr not in forms:
            raise BackendError(f"wire {s.expr} is read before the trace defines it")
        return forms[s.expr]

    for e in t.trace:
        if e["op"] == "acc":  # what follows is output logic
            break
        (ca, ka) = of(e["a"])
        if e["op"] == "copy":
            f = (ca, ka)
        elif e["op"] == "mul":
            if e.get("digits") is not None and sum(d << k for k, d in e["digits"]) != e["c"]:
                raise BackendError(f"the CSD digits of wire {e['out'].expr} do not sum to {e['c']}")
            f = (tuple(v * e["c"] for v in ca), ka * e["c"])
        else:
            cb, kb = of(e["b"])
            sg = -1 if e["sub"] else 1
            f = (tuple((u << e["sa"]) + sg * (v << e["sb"]) for u, v in zip(ca, cb)),
                 (ka << e["sa"]) + sg * (kb << e["sb"]))
        out: Sig = e["out"]
        if out.const is not None:  # the emitter folded it: it must be that constant for every input
            if any(f[0]) or f[1] != out.const:
                raise BackendError(f"a wire folded to the constant {out.const} is not constant")
            continue
        forms[out.expr] = f
    return forms


def _acc(t: Traced) -> dict:
    accs = [e for e in t.trace if e["op"] == "acc"]
    if len(accs) != 1:
        raise BackendError(f"a formal proof takes one Dense stage, not {len(accs)} Dense layers")
    return accs[0]


def check_algebra(stage: Network, t: Traced) -> list[str]:
    """(A): the accumulators' integer functions against the layer's weights; a list of mismatches."""
    dense = next(l for l in stage.layers if isinstance(l, Dense))
    acc, forms = _acc(t), _affine(t)
    pf = stage.input_type.frac + dense.weight_type.frac
    frac = acc["frac"]
    bad = []
    for j, s in enumerate(acc["outs"]):
        want = (tuple(int(c) << (frac - pf) for c in dense.weight[:, j]), int(dense.bias[j]) << (frac - dense.bias_type.frac))
        got = ((0,) * t.design.n_in, s.const) if s.const is not None else forms.get(s.expr)
        if got != want:
            bad.append(f"output {j} ({s.expr or s.const}) is not the layer's weighted sum")
    return bad


# ---- (B) local obligations -----------------------------------------------------------------------
def _lit(v: int, w: int) -> str:
    return f"{w}'sh{v & ((1 << w) - 1):x}" if v >= 0 else f"-{w}'sh{(-v) & ((1 << w) - 1):x}"


def _rename(expr: str, names: set[str], p: str) -> str:
    return _IDENT.sub(lambda m: p + m.group(0) if m.group(0) in names else m.group(0), expr)


def _datapath_wires(t: Traced) -> dict[str, dict]:
    """The traced wires in the fan-in of the accumulators (the rest is output logic)."""
    by_name = {e["out"].expr: e for e in t.trace if e["op"] != "acc" and e["out"].const is None}
    todo = [s.expr for s in _acc(t)["outs"] if s.const is None]
    seen: dict[str, dict] = {}
    while todo:
        n = todo.pop()
        if n in seen or n not in by_name:
            continue
        seen[n] = by_name[n]
        todo += [by_name[n][k].expr for k in ("a", "b") if k in by_name[n] and by_name[n][k].const is None]
    return seen


def _obligations(t: Traced, tag: str) -> list[tuple[str, str, str]]:
    """The local checkers: (module name, what it proves, Verilog) with one output ``ok`` each; one
    for the input wires, one per datapath wire (a SAT problem per adder stays trivial; a conjunction
    of all of them in one problem does not)."""
    decls = t.decls
    it = t.design.in_type
    body, oks = [], []
    for i in range(t.design.n_in):  # the input wires hold the input integers
        w, expr, line = decls[f"x0_{i}"]
        p = f"i{i}_"
        body.append("  " + line.replace(f"x0_{i}", p + "r", 1))
        raw = f"in_data[{i * it.width + it.width - 1}:{i * it.width}]"
        exact = f"$signed({raw})" if it.signed else f"$signed({{1'b0, {raw}}})"
        W = it.width + 2
        body.append(f"  wire signed [{W - 1}:0] {p}x = {exact};")
        body.append(f"  wire signed [{W - 1}:0] {p}e = {p}r;")
        oks.append(f"({p}e == {p}x && {p}e >= {_lit(it.min_int, W)} && {p}e <= {_lit(it.max_int, W)})")
    body.append(f"  assign ok = {' && '.join(oks)};")
    out = [(f"{tag}_inputs", "the input wires", f"module {tag}_inputs (input wire [{t.design.in_width - 1}:0] in_data, "
            "output wire ok);\n" + "\n".join(body) + "\nendmodule\n")]
    seen: dict[str, str] = {}
    wires = _datapath_wires(t)
    # the induction needs each operand assumed in no narrower an interval than the one proven for it
    proven = {f"x0_{i}": (it.min_int, it.max_int) for i in range(t.design.n_in)}
    proven |= {n: (e["out"].lo, e["out"].hi) for n, e in wires.items()}
    for n, e in wires.items():
        for s in (e[x] for x in ("a", "b") if x in e and e[x].const is None):
            lo, hi = proven.get(s.expr, (None, None))
            if lo is None or s.lo > lo or s.hi < hi:
                raise BackendError(f"wire {n} assumes {s.expr} in [{s.lo}, {s.hi}], which is not proven of it")
    for k, (name, e) in enumerate(wires.items()):
        mod = f"{tag}_w{k}"
        w, expr, line = decls[name]
        operands = list({e[x].expr: e[x] for x in ("a", "b") if x in e and e[x].const is None}.values())
        names = {s.expr for s in operands}
        idents = {m.group(0) for m in _IDENT.finditer(expr)}
        read = idents & (set(decls) | {"in_data"})
        if not read <= names:  # it reads a wire its trace does not name: wrong by construction
            out.append((mod, f"{name} (reads {', '.join(sorted(read - names))})",
                        f"module {mod} (output wire ok);\n  assign ok = 1'b0;\nendmodule\n"))
            continue
        W = _check_width(e, w, decls)
        # operands and result under canonical names: a wire's checker then equals every other wire's
        # built the same way (same widths, intervals, expression), and each distinct one is proven once
        canon = {s.expr: f"o{n}" for n, s in enumerate(operands)} | {name: "r"}
        ports, body, pre = [], [], []
        for s in operands:
            c = canon[s.expr]
            ports.append(f"input wire signed [{decls[s.expr][0] - 1}:0] {c}")
            body.append(f"  wire signed [{W - 1}:0] e_{c} = {c};")
            pre.append(f"(e_{c} >= {_lit(s.lo, W)} && e_{c} <= {_lit(s.hi, W)})")
        body.append("  " + _IDENT.sub(lambda m: canon.get(m.group(0), m.group(0)), line))  # the emitted line
        body.append(f"  wire signed [{W - 1}:0] e_r = r;")

        def term(s: Sig, sh: int) -> str:
            return _lit(s.const << sh, W) if s.const is not None else f"(e_{canon[s.expr]} <<< {sh})"

        if e["op"] == "copy":
            exact = term(e["a"], 0)
        elif e["op"] == "mul" and e.get("digits") is None:  # a DSP product: x * c
            exact = f"{term(e['a'], 0)} * {_lit(e['c'], W)}"
        elif e["op"] == "mul":  # shift-and-add: the digits' signed sum (that they sum to c is algebra)
            exact = " ".join(f"{'+' if d > 0 else '-'} {term(e['a'], k)}" for k, d in e["digits"])
            exact = exact[2:] if exact.startswith("+") else exact
        else:
            exact = f"{term(e['a'], e['sa'])} {'-' if e['sub'] else '+'} {term(e['b'], e['sb'])}"
        body.append(f"  wire signed [{W - 1}:0] e_x = {exact};")
        lo, hi = e["out"].lo, e["out"].hi
        post = f"(e_r == e_x && e_r >= {_lit(lo, W)} && e_r <= {_lit(hi, W)})"
        body.append(f"  assign ok = !({' && '.join(pre) or '1'}) || {post};")
        text = f"({', '.join(ports + ['output wire ok'])});\n" + "\n".join(body) + "\nendmodule\n"
        mod = seen.setdefault(text, mod)
        out.append((mod, name, f"module {mod} {text}"))
    return out


def _check_width(e: dict, w: int, decls: dict) -> int:
    """A width in which the exact result of wire ``e``'s operation cannot overflow."""
    def bits(k: str) -> int:
        s = e[k]
        return (abs(s.const).bit_length() + 1) if s.const is not None else decls[s.expr][0]

    if e["op"] == "mul":
        return max(w, bits("a") + abs(e["c"]).bit_length() + 1) + 2
    if e["op"] == "copy":
        return max(w, bits("a")) + 2
    return max(w, bits("a") + e["sa"], bits("b") + e["sb"]) + 2


# ---- (C) the output logic ------------------------------------------------------------------------
def _output_logic(t: Traced, tag: str) -> tuple[list[str], list[str], dict[str, Sig], list[Sig]]:
    """The output logic's lines (renamed with ``tag``), the accumulator inputs and the accumulators."""
    decls = t.decls
    dp = set(_datapath_wires(t)) | {f"x0_{i}" for i in range(t.design.n_in)}
    accs = _acc(t)["outs"]
    cut = {s.expr: s for s in accs if s.const is None}
    logic = [n for n in decls if n not in dp]
    names = set(decls) | {"out_data"}
    ports = [f"input wire signed [{decls[n][0] - 1}:0] {tag}_{n}" for n in cut]
    lines = []
    for n in logic:
        w, expr, _ = decls[n]
        lines.append(f"  wire signed [{w - 1}:0] {tag}_{n} = {_rename(expr, names, tag + '_')};")
    for line in t.design.verilog.splitlines():
        if line.strip().startswith("assign out_data["):
            lines.append(_rename(line, names, tag + "_"))
    allowed = set(logic) | set(cut) | {"out_data"}
    for line in lines:
        read = {m.group(0)[len(tag) + 1:] for m in _IDENT.finditer(line) if m.group(0).startswith(tag + "_")}
        if not read <= allowed:
            raise BackendError(f"the output logic reads {sorted(read - allowed)}, neither cut nor its own")
    return ports, lines, cut, accs


def _outlogic_module(gold: Traced, gate: Traced) -> str:
    gp, gl, gcut, gacc = _output_logic(gold, "g")
    tp, tl, tcut, tacc = _output_logic(gate, "t")
    ow = gold.design.out_width
    W = max([s.width for s in gacc + tacc if s.const is None] + [2]) + 2
    pre = []
    for tag, accs, decls in (("g", gacc, gold.decls), ("t", tacc, gate.decls)):
        for s in accs:
            if s.const is None:
                pre.append(f"({tag}_e_{s.expr} >= {_lit(s.lo, W)} && {tag}_e_{s.expr} <= {_lit(s.hi, W)})")
    ext = [f"  wire signed [{W - 1}:0] {tag}_e_{n} = {tag}_{n};" for tag, cut in (("g", gcut), ("t", tcut)) for n in cut]
    for a, b in zip(gacc, tacc):
        ea = _lit(a.const, W) if a.const is not None else f"g_e_{a.expr}"
        eb = _lit(b.const, W) if b.const is not None else f"t_e_{b.expr}"
        pre.append(f"({ea} == {eb})")
    return (f"module outlogic ({', '.join(gp + tp + ['output wire ok'])});\n"
            f"  wire [{ow - 1}:0] g_out_data;\n  wire [{ow - 1}:0] t_out_data;\n"
            + "\n".join(ext + gl + tl)
            + f"\n  assign ok = !({' && '.join(pre) or '1'}) || (g_out_data == t_out_data);\nendmodule\n")


def check_coverage(t: Traced) -> None:
    """Every declared wire is an input wire, a traced datapath wire, or output logic (which is checked
    to read only itself and the accumulators in ``_output_logic``)."""
    decls = t.decls
    for line in t.design.verilog.splitlines():
        s = line.strip()
        if s.startswith(("wire", "reg signed")) and not _DECL.match(line) and "valid" not in s:
            raise BackendError(f"an undeclared form of wire in the design: {s!r}")
    missing = [f"x0_{i}" for i in range(t.design.n_in) if f"x0_{i}" not in decls]
    if missing:
        raise BackendError(f"input wires missing: {missing}")


# ---- running Yosys -------------------------------------------------------------------------------
class _OutOfTime(Exception):
    pass


def _yosys(tool: Tool, work: Path, args: list[str], deadline: float, layer: str) -> None:
    left = deadline - time.perf_counter()
    if left <= 0:
        raise _OutOfTime
    try:
        run_tool(tool, ["-q", *args], work, f"Yosys equivalence proof of layer {layer!r}", timeout=left)
    except ToolFailedError as e:
        if "did not finish" in str(e):
            raise _OutOfTime from None
        raise


def _sat_ok(log: str) -> bool:
    if "SUCCESS!" in log:
        return True
    if "FAIL!" in log or "model found" in log:
        return False
    raise ToolFailedError("Yosys's sat printed neither a proof nor a model; see its log")


def prove_traced(stage: Network, gold: Traced, gate: Traced, layer: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 tool: Tool | None = None) -> EquivalenceResult:
    """The compositional proof (A, B, C) that ``gate`` equals ``gold``; a counterexample when not."""
    g, t = gold.design, gate.design
    if (g.n_in, g.in_type, g.n_out, g.out_type) != (t.n_in, t.in_type, t.n_out, t.out_type):
        raise ToolFailedError(f"layer {layer!r}: the two designs differ in ports; nothing to prove")
    tool = tool or find_yosys()
    t0 = time.perf_counter()
    deadline = t0 + timeout_s
    base = {"timeout_s": timeout_s}
    failed: list[str] = []
    for d in (gold, gate):
        check_coverage(d)
        failed += [f"{d.design.datapath}: {m}" for m in check_algebra(stage, d)]
    with tempfile.TemporaryDirectory(prefix="codesign-formal-") as tmp:
        work = Path(tmp)
        obs = _obligations(gold, "g") + _obligations(gate, "t") + [("outlogic", "the output logic", _outlogic_module(gold, gate))]
        mods = dict((m, text) for m, _, text in obs)  # each distinct checker once
        (work / "local.v").write_text("".join(mods.values()))
        (work / "local.ys").write_text("read_verilog -sv local.v\nproc\nopt_clean\n"
                                       + "".join(f"tee -q -o {m}.log sat -prove ok 1 {m}\n" for m in mods))
        try:
            _yosys(tool, work, ["-s", "local.ys"], deadline, layer)
        except _OutOfTime:
            done = sum((work / f"{m}.log").is_file() for m in mods)
            return EquivalenceResult(layer, "timeout", time.perf_counter() - t0,
                                     detail={**base, "obligations": len(obs), "checkers": len(mods),
                                             "checkers_proven": max(done - 1, 0)})
        for m, what, _ in obs:
            if not _sat_ok((work / f"{m}.log").read_text()):
                design = {"g": g.datapath, "t": t.datapath}.get(m[0], "")
                failed.append("the output logic differs for equal accumulators" if m == "outlogic"
                              else f"{design} wire {what} is not its operands' exact result")
        stats = {"obligations": len(obs), "checkers": len(mods), "outputs": g.n_out, **base}
        if not failed:
            return EquivalenceResult(layer, "proven", time.perf_counter() - t0, detail=stats)
        return _search(stage, gold, gate, layer, tool, work, deadline, t0, {**stats, "failed": "; ".join(failed[:3])})


def _search(stage: Network, gold: Traced, gate: Traced, layer: str, tool: Tool, work: Path, deadline: float,
            t0: float, detail: dict) -> EquivalenceResult:
    """A part of the proof failed: a full-miter SAT search for an input where the outputs differ."""
    g = gold.design
    (work / "gold.v").write_text(_renamed(g, "gold"))
    (work / "gate.v").write_text(_renamed(gate.design, "gate"))
    (work / "miter.v").write_text(f"""module miter (input wire [{g.in_width - 1}:0] in_data, output wire diff);
  wire [{g.out_width - 1}:0] a, b;
  wire va, vb;
  gold u_gold (.clk(1'b0), .rst(1'b0), .in_valid(1'b0), .in_data(in_data), .out_valid(va), .out_data(a));
  gate u_gate (.clk(1'b0), .rst(1'b0), .in_valid(1'b0), .in_data(in_data), .out_valid(vb), .out_data(b));
  assign diff = a != b;
endmodule
""")
    script = ("read_verilog -sv gold.v gate.v miter.v; hierarchy -top miter; proc; flatten; opt_clean; "
              "tee -o miter.log sat -prove diff 0 -show-inputs miter")
    try:
        _yosys(tool, work, ["-p", script], deadline, layer)
    except _OutOfTime:
        return EquivalenceResult(layer, "timeout", time.perf_counter() - t0, detail=detail)
    log = (work / "miter.log").read_text()
    if _sat_ok(log):  # a local step failed, yet no input tells the designs apart
        return EquivalenceResult(layer, "proven", time.perf_counter() - t0, detail={**detail, "by": "miter"})
    x = _counterexample(log, g)
    detail = {**detail, **confirm(stage, gold.design, gate.design, x, tool)}
    return EquivalenceResult(layer, "disproven", time.perf_counter() - t0, x, detail)


def confirm(stage: Network, gold: Design, gate: Design, x: list[int], tool: Tool | None = None) -> dict[str, Any]:
    """The reference's output on ``x`` and both designs' (by Yosys ``eval``), as integers."""
    ref = stage.forward_int(np.array([x], dtype=np.int64)).values[0]
    return {"reference": [int(v) for v in np.ravel(ref)], "gold_output": evaluate(gold, x, tool),
            "gate_output": evaluate(gate, x, tool)}


def evaluate(d: Design, x: list[int], tool: Tool | None = None) -> list[int]:
    """The outputs of design ``d`` (its combinational data path) for the input integers ``x``, by Yosys."""
    tool = tool or find_yosys()
    word = sum((v & ((1 << d.in_type.width) - 1)) << (i * d.in_type.width) for i, v in enumerate(x))
    with tempfile.TemporaryDirectory(prefix="codesign-eval-") as tmp:
        work = Path(tmp)
        (work / "d.v").write_text(d.verilog)
        iw = d.in_width
        script = (f"read_verilog -sv d.v; hierarchy -top {d.top}; proc; flatten; "
                  f"tee -o eval.log eval -set in_data {iw}'b{word:0{iw}b} -show out_data")
        run_tool(tool, ["-q", "-p", script], work, f"Yosys evaluation of {d.top}", timeout=120)
        m = re.search(r"out_data\s*=\s*\d+'([01x]+)", (work / "eval.log").read_text())
        if not m:
            raise ToolFailedError(f"Yosys eval printed no value of out_data for {d.top}")
    out_word = int(m.group(1).replace("x", "0"), 2)
    return _decode(out_word, d.out_type, d.n_out)


def _decode(word: int, t, n: int) -> list[int]:
    out = []
    for i in range(n):
        v = (word >> (i * t.width)) & ((1 << t.width) - 1)
        if t.signed and v >= 1 << (t.width - 1):
            v -= 1 << t.width
        out.append(v)
    return out


def prove_datapaths_equal(stage: Network, layer: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                          tool: Tool | None = None) -> EquivalenceResult:
    """One Dense stage (a network of one Dense and what follows it): cmvm equal to csd for every input?"""
    return prove_traced(stage, emit_traced(stage, "csd", "gold"), emit_traced(stage, "cmvm", "gate"), layer,
                        timeout_s, tool)


def prove_network(net: Network, timeout_s: float = DEFAULT_TIMEOUT_S, tool: Tool | None = None) -> list[EquivalenceResult]:
    """The proof for every Dense stage of ``net`` (``timeout_s`` per stage)."""
    from rtl_sim.synth import stage_networks

    tool = tool or find_yosys()
    return [prove_datapaths_equal(stage, name, timeout_s, tool) for name, stage in stage_networks(net)
            if any(isinstance(l, Dense) for l in stage.layers)]


def _renamed(d: Design, top: str) -> str:
    return d.verilog if d.top == top else re.sub(rf"\bmodule\s+{re.escape(d.top)}\b", f"module {top}", d.verilog, 1)


def _counterexample(log: str, d: Design) -> list[int]:
    """The input the solver found, as the layer's input integers."""
    rows = re.findall(r"^\s*(?:\d+\s+)?\\?in_data\s+\S+\s+\S+\s+([01x]+)\s*$", log, re.M)
    if not rows:
        raise ToolFailedError("Yosys found a difference but printed no input values; see its log")
    return _decode(int(rows[0].replace("x", "0"), 2), d.in_type, d.n_in)

