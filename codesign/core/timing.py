"""The delay model: how long each piece of the fixed-point datapath takes, per FPGA family.

The Verilog emitter walks its datapath in topological order with these delays, accumulating each
wire's arrival time from the last register, and places a register where the next node would
exceed the clock period (``rtl_sim.verilog``); the cost model prices the flip-flops that placement
adds (``codesign.compress.cost``). Both use this one model, so it lives in the core: compression may
not import ``rtl_sim``.

What is priced (all in ns):

- a register: clock to output (``clk_to_q``) at the start of a path, ``setup`` at its end;
- an adder of ``w`` bits: the operands' routed net, the LUT that feeds the carry chain, ``w`` bits of
  carry, and the last sum bit out of the chain (``adder(w)``);
- a LUT level (a ReLU's mux, a rounding tie-break, a saturation's select): its net and its LUT;
- a DSP product (``dsp``): its net and the block's combinational delay.

``ecp5`` is calibrated against nextpnr-ecp5 0.11's timing reports (``bench/timing.py`` fits it and
measures its error). The others are estimates from the vendors' published delays, labelled so:
nothing here has been checked against Vivado or Quartus.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from codesign.core.arith import signed_width
from codesign.core.cmvm import AdderGraph
from codesign.core.fixed import FixedType, round_shift
from codesign.errors import ConfigError


@dataclass(frozen=True)
class DelayModel:
    """Per-element delays of one FPGA family, and where they come from."""

    family: str
    label: str  # "calibrated" (against a place-and-route tool's timing) or "estimate"
    source: str
    clk_to_q: float
    setup: float
    lut: float  # one LUT's input-to-output delay
    net: float  # one routed net, on average
    carry_in: float  # an operand through the LUT into the carry chain
    carry_per_bit: float
    carry_out: float  # the chain's last sum bit out
    dsp: float  # a DSP block's product, combinational
    # the emitter marks each adder's wire ``(* keep *)`` so synthesis builds every adder as its own carry chain, the
    # structure priced here (Yosys's alumacc otherwise merges an adder read only by another into a carry-save tree
    # of LUTs in front of one chain: on ECP5 more LUTs, and a LUT level the model does not price)
    own_chains: bool = False

    def adder(self, width: int) -> float:
        """An adder (or subtractor, or comparator) ``width`` bits wide, from its operands' drivers."""
        return self.net + self.carry_in + self.carry_per_bit * max(int(width), 1) + self.carry_out

    def luts(self, levels: int = 1) -> float:
        """``levels`` LUTs in series, each behind a routed net."""
        return levels * (self.net + self.lut)

    def product(self) -> float:
        return self.net + self.dsp

    def budget(self, clock_mhz: float) -> float:
        """The time a path has after its register's clock-to-output: the period less setup."""
        if not clock_mhz or clock_mhz <= 0 or not math.isfinite(clock_mhz):
            raise ConfigError(f"clock {clock_mhz!r} MHz: give a positive frequency, e.g. --clock 100")
        return 1000.0 / clock_mhz - self.setup

    def describe(self) -> str:
        return f"{self.family} delay model ({self.label}: {self.source})"


# ECP5 (LFE5U-85F, speed grade 6, nextpnr's default): nextpnr-ecp5 0.11's own delays, read from the critical
# paths of emitted MLPs placed and routed on the ULX3S 85F: clock to Q 0.525, CCU2C operand (A/B) to FCO 0.447,
# FCI to FCO 0.071 per two CCU2C (4 bits), FCI to sum F 0.40-0.44, LUT4 0.236, setup 0. The routing is fitted
# (``bench/timing.py --fit``) on the six critical paths of bench/results/timing_fit_runs.json (before each adder
# was kept its own chain), kept apart from the runs the error is checked on (timing_runs.json): a register's
# output reaches its first reader in 2.18 ns on average (its readers are spread: the net counted in ``clk_to_q``
# beyond an ordinary net's 1.01), the net into the flip-flop is 0.13 (as ``setup``). The DSP (MULT18X18D) figure
# is an estimate: no DSP was on a path.
_ECP5 = DelayModel("ecp5", "calibrated", "nextpnr-ecp5 0.11 timing of emitted datapaths on an LFE5U-85F "
                   "(speed 6), routing fitted on bench/results/timing_fit_runs.json", clk_to_q=0.525 + 2.18 - 1.01,
                   setup=0.13, lut=0.236, net=1.01, carry_in=0.447, carry_per_bit=0.018, carry_out=0.443, dsp=3.3,
                   own_chains=True)

# Artix-7, speed grade -1: the delays of AMD DS181 (Artix-7 FPGAs Data Sheet: DC and AC Switching
# Characteristics), table "CLB Switching Characteristics": TILO (LUT address to output), TCKO (clock to AQ),
# TOPCYA (an operand through the LUT into CARRY4), TBYP (CIN to COUT, one CARRY4 of 4 bits), TCINA/TOPCY (the
# sum out), TDICK (setup), and the DSP48E1 table's TDSPDO (A to P, no register). The figures used are the ones
# Vivado's timing reports show for xc7a35t-1 (LUT6 0.124, CARRY4 DI->CO 0.58 and CI->CO 0.114, FDRE C->Q 0.456);
# they were not re-read from the data sheet here. A routed net is not a data-sheet figure: 0.55 ns is assumed.
# An estimate: nothing here was checked against Vivado.
_XC7 = DelayModel("xc7", "estimate", "AMD DS181 CLB switching characteristics (TILO, TCKO, TOPCYA, TBYP, TDICK) "
                  "and DSP48E1 TDSPDO, speed grade -1; net delay assumed", clk_to_q=0.46, setup=0.05, lut=0.13,
                  net=0.55, carry_in=0.58, carry_per_bit=0.114 / 4, carry_out=0.31, dsp=3.9)

# UltraScale+, speed grade -1: AMD DS923 (Zynq UltraScale+ MPSoC Data Sheet: DC and AC Switching
# Characteristics) names the CLB and DSP48E2 parameters; the figures (LUT 0.09, CARRY8 0.05 per 8 bits, FF
# clock to Q 0.09) are typical of Vivado's UltraScale+ path reports, not re-read from the data sheet here; net
# delay assumed. An estimate.
_XCUP = DelayModel("xcup", "estimate", "AMD DS923 CLB and DSP48E2 switching characteristics, speed grade -1; "
                   "net delay assumed", clk_to_q=0.09, setup=0.03, lut=0.09, net=0.40, carry_in=0.30,
                   carry_per_bit=0.05 / 8, carry_out=0.16, dsp=2.3)

# Cyclone V, speed grade -7: Intel's Cyclone V Device Datasheet gives no per-ALM delays (they live in
# Quartus' timing model), only block performance figures; these ALM LUT, carry and register delays are
# estimates of that order, net delay assumed. The least certain of the four.
_CYCLONEV = DelayModel("cyclonev", "estimate", "Intel Cyclone V Device Datasheet (-7) performance figures, "
                       "ALM delays inferred, net delay assumed", clk_to_q=0.25, setup=0.10, lut=0.38, net=0.70,
                       carry_in=0.45, carry_per_bit=0.05, carry_out=0.35, dsp=3.5)

MODELS: dict[str, DelayModel] = {m.family: m for m in (_ECP5, _XC7, _XCUP, _CYCLONEV)}


def delay_model(family: str) -> DelayModel:
    """The delay model of a synthesis family (a board's ``synth_family``)."""
    try:
        return MODELS[family]
    except KeyError:
        raise ConfigError(f"no delay model for family {family!r}; families: {', '.join(MODELS)}") from None


def stage_report(model: DelayModel, critical_ns: float, cycles: int, clock_mhz: float | None, ii: float = 1.0
                 ) -> dict:
    """The timing a design reports: the model's critical path (register to register, with setup),
    the clock it allows, the target clock, and latency and throughput at the clock it runs at
    (the target when the model says it is met, else the model's Fmax)."""
    fmax = 1000.0 / critical_ns if critical_ns > 0 else float("inf")
    clock = min(clock_mhz, fmax) if clock_mhz else fmax
    return {"family": model.family, "model": model.label, "model_source": model.source,
            "critical_path_ns": round(critical_ns, 3), "fmax_mhz": round(fmax, 1),
            "target_mhz": clock_mhz, "meets_target": bool(clock_mhz is None or fmax >= clock_mhz),
            "latency_cycles": int(cycles), "ii": ii, "clock_mhz": round(clock, 1),
            "latency_ns": round(cycles * 1000.0 / clock, 1), "inferences_per_s": round(clock * 1e6 / ii)}


# ---- the delays of the element-wise logic after an adder graph -------------------------------------
def round_delay(model: DelayModel, width: int, shift: int, quant: str) -> float:
    """Dropping ``shift`` fractional bits of a value into a ``width``-bit result: free when truncating
    (a wire slice); rounding adds the half bit (an adder), round-half-even decides it in a LUT first."""
    if shift <= 0 or quant == "TRN":
        return 0.0
    return model.adder(width) + (model.luts() if quant == "RND_CONV" else 0.0)


def saturate_delay(model: DelayModel, width: int, both_ends: bool) -> float:
    """A saturation: the comparisons (carry chains as wide as the value, side by side when ``both_ends``) and
    the select (one LUT per bit takes the value and both comparisons)."""
    return model.adder(width) + model.luts(1)


def cast_delay(model: DelayModel, lo: int, hi: int, src_frac: int, t: FixedType) -> tuple[float, int, int]:
    """The delay of an ``ap_fixed`` assignment of ``[lo, hi]`` (``src_frac`` fractional bits) to ``t``, as
    ``rtl_sim.verilog`` builds it, and the result's interval."""
    s = src_frac - t.frac
    r = [int(v) for v in round_shift(np.array([lo, hi], dtype=object), s, t.quant)]
    d = round_delay(model, max(signed_width(lo >> max(s, 0), hi >> max(s, 0)), signed_width(*r)), s, t.quant)
    if t.min_int <= r[0] and r[1] <= t.max_int:
        return d, r[0], r[1]
    if t.overflow == "SAT":
        d += saturate_delay(model, signed_width(*r), r[0] < t.min_int and r[1] > t.max_int)
    return d, max(min(r[0], t.max_int), t.min_int), min(max(r[1], t.min_int), t.max_int)


def tail_delay(model: DelayModel, lo: int, hi: int, frac: int, steps: list[tuple[str, FixedType | None]]) -> float:
    """The element-wise logic after a datapath output: ``steps`` of ("cast", type) and ("relu", None)."""
    total = 0.0
    for op, t in steps:
        if op == "relu":
            if lo < 0 < hi:
                total += model.luts()
            lo, hi = max(lo, 0), max(hi, 0)
        else:
            d, lo, hi = cast_delay(model, lo, hi, frac, t)
            total += d
            frac = t.frac
    return total


def tail_cuts(model: DelayModel, clock_mhz: float, at: float, lo: int, hi: int, frac: int,
              steps: list[tuple[str, FixedType | None]]) -> int:
    """How many registers the emitter puts into the element-wise logic after a datapath output arriving at
    ``at`` (``rtl_sim.verilog``'s ``cast_all``/``relu_all``: one before a rounding, a saturation or a ReLU
    that would end past the period)."""
    limit, cuts = model.budget(clock_mhz), 0
    for op, t in steps:
        if op == "relu":
            parts = [model.luts()] if lo < 0 < hi else []
            lo, hi = max(lo, 0), max(hi, 0)
        else:
            s = frac - t.frac
            r = [int(v) for v in round_shift(np.array([lo, hi], dtype=object), s, t.quant)]
            parts = [round_delay(model, signed_width(lo, hi) + 1, s, t.quant)]
            if t.overflow == "SAT" and (r[0] < t.min_int or r[1] > t.max_int):
                parts.append(saturate_delay(model, signed_width(*r), r[0] < t.min_int and r[1] > t.max_int))
            lo, hi = max(min(r[0], t.max_int), t.min_int), min(max(r[1], t.min_int), t.max_int)
            frac = t.frac
        for d in parts:
            if d > 0 and at + d > limit and at > model.clk_to_q:
                cuts, at = cuts + 1, model.clk_to_q
            at += d
    return cuts


# ---- register placement over an adder graph --------------------------------------------------------
@dataclass
class GraphSchedule:
    """Where the registers of one layer's adder graph go: each node's cycle (0 = the stage's first),
    its arrival time in that cycle (ns from the clock edge), the outputs' cycle (``last``) and the
    flip-flops the placement adds (delay registers of shared nodes and of the outputs)."""

    cycle: list[int]
    arrival: list[float]
    last: int
    reg_bits: int
    critical_ns: float  # the longest path (with setup) ending at a register in the graph or after the outputs' logic


def schedule_graph(graph: AdderGraph, model: DelayModel | None, clock_mhz: float | None = None, every: int = 0,
                   in_arrival: float | None = None, tail_ns: float = 0.0) -> GraphSchedule:
    """Place the registers of ``graph``: by the clock (``clock_mhz``: walk the nodes in topological order,
    accumulating arrival times; a node that would end past the period starts a new cycle, its operands
    registered), or every ``every`` adder levels (the manual override), or none. The outputs share one
    cycle; the element-wise logic after them (``tail_ns``) must fit in it too, else they are registered
    once more. A shared node is delayed, register by register, to each cycle that reads it.
    ``model`` None: no timing (arrivals 0), the placement by ``every`` only."""
    tcq = model.clk_to_q if model else 0.0
    start = tcq if in_arrival is None else in_arrival
    limit = model.budget(clock_mhz) if (model and clock_mhz) else None
    n = len(graph.nodes)
    cycle, arr = [0] * n, [0.0] * n
    crit = 0.0
    for k, node in enumerate(graph.nodes):
        if node.op == "input":
            arr[k] = start
            continue
        if node.op == "const":
            continue
        if node.op == "mul":
            cycle[k] = (node.depth - 1) // every if (every and limit is None) else 0
            arr[k] = start + (model.product() if model else 0.0)
            continue
        d = model.adder(node.width) if model else 0.0
        ops = [i for i in (node.a, node.b) if graph.nodes[i].op != "const"]
        if limit is None:
            c = (node.depth - 1) // every if every else 0
        else:
            c = max((cycle[i] for i in ops), default=0)
        t = max((arr[i] if cycle[i] == c else tcq for i in ops), default=tcq) + d
        if limit is not None and t > limit and t - d > tcq:
            c, t = c + 1, tcq + d
        for i in ops:
            if cycle[i] < c:  # the operand ends its path at a register
                crit = max(crit, arr[i])
        cycle[k], arr[k] = c, t
    outs = [r.node for r in graph.outputs if r.node >= 0 and graph.nodes[r.node].op != "const"]
    if limit is None:
        last = (graph.depth - 1) // every if every and graph.depth else 0
    else:
        last = max((cycle[k] for k in outs), default=0)
    at = max((arr[k] if cycle[k] == last else tcq for k in outs), default=tcq)
    if limit is not None and at + tail_ns > limit and at > tcq:
        last += 1
        at = tcq
    if limit is not None and model is not None:  # the same cycles, fewer flip-flops: move nodes later by their slack
        _retime(graph, model, cycle, arr, last, set(outs), limit, tail_ns, start)
        crit = _cut_arrivals(graph, cycle, arr)
        at = max((arr[k] if cycle[k] == last else tcq for k in outs), default=tcq)
    for k in outs:
        if cycle[k] < last:
            crit = max(crit, arr[k])
    crit = max(crit, at + tail_ns)
    need = list(cycle)
    for k, node in enumerate(graph.nodes):
        if node.op == "add":
            for i in (node.a, node.b):
                need[i] = max(need[i], cycle[k])
    for k in outs:
        need[k] = max(need[k], last)
    bits = sum((need[k] - cycle[k]) * graph.nodes[k].width for k in range(n) if graph.nodes[k].op != "const")
    return GraphSchedule(cycle, arr, last, int(bits), crit + (model.setup if model else 0.0))


def _cut_arrivals(graph: AdderGraph, cycle: list[int], arr: list[float]) -> float:
    """The longest arrival of an operand that ends its path at a register (it feeds a later cycle)."""
    crit = 0.0
    for k, node in enumerate(graph.nodes):
        if node.op == "add":
            for i in (node.a, node.b):
                if graph.nodes[i].op != "const" and cycle[i] < cycle[k]:
                    crit = max(crit, arr[i])
    return crit


def _retime(graph: AdderGraph, model: DelayModel, cycle: list[int], arr: list[float], last: int, outs: set[int],
            limit: float, tail_ns: float, start: float) -> None:
    """Area-aware register placement, in place: a min-area retiming (Leiserson and Saxe's, with fan-out sharing)
    of the as-soon-as-possible schedule at the same latency. Each adder's cycle ``r`` may move anywhere the
    period allows; a value is held ``m - r`` cycles, ``m`` its last reader's cycle, at ``width`` bits a cycle;
    minimise the held bits subject to ``r(reader) >= r(node)`` and ``r(v) >= r(u) + 1`` for every path u -> v
    whose delay (from the register, through u and v) exceeds the period. The constraints are differences, so
    the linear program's optimum is integral (its dual is a min-cost flow); ``arr`` is re-timed for the result.
    A schedule that does not check out keeps ``cycle`` as it was."""
    from scipy.optimize import linprog  # the only linear program in the project

    nodes, tcq = graph.nodes, model.clk_to_q
    live = [k for k, n in enumerate(nodes) if n.op != "const"]
    if not any(nodes[k].op == "add" for k in live) or last == 0:
        return
    sink = len(nodes)  # the output register after the tail logic, in cycle ``last``
    users: dict[int, list[int]] = {k: [] for k in live + [sink]}
    for k in live:
        if nodes[k].op == "add":
            for i in {nodes[k].a, nodes[k].b}:
                if nodes[i].op != "const":
                    users[i].append(k)
    for k in outs:
        users[k].append(sink)
    delay = {k: model.adder(nodes[k].width) if nodes[k].op == "add" else 0.0 for k in live}
    delay[sink] = tail_ns
    begin = {k: (start if nodes[k].op == "input" else start + model.product() if nodes[k].op == "mul" else tcq)
             for k in live}
    apart: set[tuple[int, int]] = set()  # (u, v): the path u -> v does not fit one cycle
    preds = {w: _preds(graph, w, sink, outs) for w in users}
    for u in live:
        reach = {u: tcq if (nodes[u].op != "add" and begin[u] <= tcq) else begin[u] + delay[u]}
        todo = list(set(users[u]))  # a register's output is measured from its readers' adders on
        heapq.heapify(todo)
        while todo:
            w = heapq.heappop(todo)
            if w in reach or (u, w) in apart:
                continue
            t = max(reach[p] for p in preds[w] if p in reach) + delay[w]
            if t > limit + 1e-9 and (w != sink or t - delay[w] > tcq):
                apart.add((u, w))
                continue
            reach[w] = t
            for x in users.get(w, []):
                heapq.heappush(todo, x)
    col = {k: c for c, k in enumerate(live)}  # r variables
    mcol = {k: len(live) + c for c, k in enumerate(live)}  # m variables
    nv = 2 * len(live)
    row_of, col_of, coef, rhs = [], [], [], []  # the constraints "sum of coef * variable <= rhs", one per row

    def le(pairs: list[tuple[int, float]], b: float) -> None:
        r = len(rhs)
        for c, x in pairs:
            row_of.append(r)
            col_of.append(c)
            coef.append(x)
        rhs.append(b)

    for u in live:
        for v in users[u]:
            rv = col[v] if v != sink else None
            le([(mcol[u], -1.0)] + ([(rv, 1.0)] if rv is not None else []), -last if rv is None else 0.0)
            if rv is not None:
                le([(col[u], 1.0), (rv, -1.0)], 0.0)
    for u, v in apart:
        if v == sink:
            le([(col[u], 1.0)], last - 1)
        elif u != v:
            le([(col[u], 1.0), (col[v], -1.0)], -1.0)
    from scipy.sparse import coo_matrix
    a = coo_matrix((coef, (row_of, col_of)), shape=(len(rhs), nv))
    cost = [0.0] * nv
    for k in live:
        cost[col[k]] -= nodes[k].width
        cost[mcol[k]] += nodes[k].width
    bounds = [((0, 0) if nodes[k].op != "add" else (0, last)) for k in live] + [(0, last)] * len(live)
    res = linprog(cost, A_ub=a.tocsr(), b_ub=rhs, bounds=bounds, method="highs-ds")
    if res.status != 0:
        return
    new = list(cycle)
    for k in live:
        new[k] = int(round(res.x[col[k]]))
    if not _check(graph, model, new, outs, last, limit, tail_ns, start, apart, cycle):
        return
    cycle[:] = new
    for k in live:  # the arrivals of the new schedule
        n = nodes[k]
        if n.op == "add":
            ops = [i for i in (n.a, n.b) if nodes[i].op != "const"]
            arr[k] = max((arr[i] if cycle[i] == cycle[k] else tcq for i in ops), default=tcq) + delay[k]


def _preds(graph: AdderGraph, w: int, sink: int, outs: set[int]) -> list[int]:
    if w == sink:
        return list(outs)
    n = graph.nodes[w]
    return [i for i in (n.a, n.b) if graph.nodes[i].op != "const"]


def _check(graph: AdderGraph, model: DelayModel, new: list[int], outs: set[int], last: int, limit: float,
           tail_ns: float, start: float, apart: set, old: list[int]) -> bool:
    """The retimed schedule keeps every reader at or after its operands and no path it makes longer than before
    past the period (the linear program's solution, checked rather than trusted)."""
    for k, n in enumerate(graph.nodes):
        if n.op == "add":
            for i in (n.a, n.b):
                if graph.nodes[i].op != "const" and new[i] > new[k]:
                    return False
    sink = len(graph.nodes)
    return all(new[k] <= last for k in outs) and all(
        (new[v] > new[u]) if v < sink else new[u] < last for u, v in apart if u != v or v >= sink)
