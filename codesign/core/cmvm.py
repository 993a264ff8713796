"""Constant matrix-vector multiplication as one shared adder graph.

``y = x @ W + b`` for an integer matrix ``W`` (inputs x outputs) and inputs with exact integer
intervals becomes a DAG of two-operand adders (``(a << sa) ± (b << sb)``):

1. every nonzero weight is split into canonical-signed-digit terms ``±x_i << k``;
2. greedy common-subexpression elimination: the two-term pattern ``x_a ± (x_b << s)`` (shift and
   sign relative, so ``-(x_a << 3) + (x_b << 5)`` is the same pattern as ``x_a - (x_b << 2)``)
   that occurs most often across the outputs, and is narrowest, is built once and replaces
   every occurrence; repeat while a pattern occurs twice. An adder-depth bound (the minimum
   depth of the layer plus ``depth_slack``) keeps latency in check: an occurrence that would
   push its output past the bound is left alone (like da4ml's delay constraint);
3. each output's remaining terms, its bias and any DSP products are summed by a tree that
   always adds the two shallowest operands (optimal depth for the given arrival times). A
   negative term enters as a subtraction; two negative terms are added and the sign carried up.

What the greedy step learns from: Hcub (Voronenko and Püschel, 2007) and Aksoy's H_cmvm for
the pattern search, and da4ml (arXiv 2507.04535) for the cost and the delay constraint. The
graph is plain data: the Verilog emitter writes it node by node and the cost model prices it,
so both agree on what is built. Everything is exact: every node carries its integer interval.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from codesign.core.arith import csd_digits, signed_width
from codesign.errors import LayerError


@dataclass(frozen=True)
class Node:
    """One value of the graph. ``op`` is ``input`` (``a`` = input index), ``const`` (``value``),
    ``mul`` (input ``a`` times ``value``: a DSP product) or ``add``:
    ``(v[a] << sa) + (v[b] << sb)``, or ``-`` when ``sub``."""

    op: str
    lo: int
    hi: int
    depth: int
    a: int = -1
    b: int = -1
    sa: int = 0
    sb: int = 0
    sub: bool = False
    value: int = 0

    @cached_property  # read for every pricing and placement; a node never changes
    def width(self) -> int:
        return signed_width(self.lo, self.hi)


@dataclass(frozen=True)
class Ref:
    """An output: ``sign * (v[node] << shift)``; ``node`` -1 is the constant zero."""

    node: int
    shift: int = 0


@dataclass
class AdderGraph:
    """The datapath of one layer: ``nodes`` in topological order (inputs first), one ``Ref`` per output."""

    n_in: int
    nodes: list[Node]
    outputs: list[Ref]
    shared: int = 0  # adders built for patterns used more than once
    stats: dict = field(default_factory=dict)

    @property
    def adders(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "add"]

    @property
    def depth(self) -> int:
        return max((self.nodes[r.node].depth for r in self.outputs if r.node >= 0), default=0)

    def adder_bits(self) -> int:
        """Sum of the adders' exact widths (what their LUTs and carry chains scale with)."""
        return sum(n.width for n in self.adders)

    def node_values(self, x: np.ndarray) -> list[np.ndarray | int]:
        """Every node's value for integer inputs ``x`` (samples x n_in), exactly (Python ints when wide)."""
        x = np.asarray(x)
        big = max((n.width for n in self.nodes), default=1) > 62 or x.dtype == object
        dt = object if big else np.int64
        vals: list[np.ndarray | int] = []
        for n in self.nodes:
            if n.op == "input":
                vals.append(x[:, n.a].astype(dt))
            elif n.op == "const":
                vals.append(n.value)
            elif n.op == "mul":
                vals.append(x[:, n.a].astype(dt) * n.value)
            else:
                a, b = vals[n.a] * (1 << n.sa), vals[n.b] * (1 << n.sb)
                vals.append(a - b if n.sub else a + b)
        return vals

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """The outputs for integer inputs ``x`` (samples x n_in), exactly (Python ints when wide)."""
        x = np.asarray(x)
        vals = self.node_values(x)
        dt = object if max((n.width for n in self.nodes), default=1) > 62 or x.dtype == object else np.int64
        out = np.zeros((len(x), len(self.outputs)), dtype=dt)
        for j, r in enumerate(self.outputs):
            if r.node >= 0:
                out[:, j] = vals[r.node] * (1 << r.shift)
        return out


DEFAULT_DEPTH_SLACK = 2  # adder levels CSE may add above a layer's minimum depth (da4ml's default in hls4ml)

# a term of an output's sum: (node, shift, sign)
_Term = tuple[int, int, int]


def optimize(weight: np.ndarray, in_lo: np.ndarray, in_hi: np.ndarray, bias: np.ndarray | None = None,
             shift: int = 0, dsp: np.ndarray | None = None, depth_slack: int | None = DEFAULT_DEPTH_SLACK,
             cse: bool = True) -> AdderGraph:
    """The adder graph of ``y_j = sum_i x_i * weight[i, j] << shift + bias[j]``.

    ``in_lo``/``in_hi``: each input's exact integer interval (a constant input has lo == hi).
    ``dsp``: where True, that weight is one ``mul`` node (a DSP product) instead of CSD terms.
    ``depth_slack``: how many adder levels above the layer's minimum CSE may add (None: any)."""
    w = np.asarray(weight)
    if w.ndim != 2:
        raise LayerError(f"a constant matrix must be 2-D (inputs, outputs), not shape {w.shape}")
    n_in, n_out = w.shape
    in_lo, in_hi = [int(v) for v in in_lo], [int(v) for v in in_hi]
    if len(in_lo) != n_in or len(in_hi) != n_in:
        raise LayerError(f"{n_in} inputs need {n_in} intervals, got {len(in_lo)} and {len(in_hi)}")
    b = [0] * n_out if bias is None else [int(v) for v in bias]
    g = _Builder(n_in, in_lo, in_hi)
    terms: list[list[_Term]] = []
    consts = list(b)
    for j in range(n_out):
        tj: list[_Term] = []
        for i in np.flatnonzero(w[:, j]):
            c = int(w[i, j])
            if in_lo[i] == in_hi[i]:  # a constant input: its product joins the bias
                consts[j] += (in_lo[i] * c) << shift
            elif dsp is not None and dsp[i, j]:
                tz = (c & -c).bit_length() - 1  # a constant's trailing zeros are a free shift
                tj.append((g.mul(int(i), c >> tz), shift + tz, 1))
            else:
                tj += [(int(i), shift + k, d) for k, d in csd_digits(c)]
        terms.append(tj)
    n_terms = sum(len(t) for t in terms)
    if cse:
        bound = None
        if depth_slack is not None:
            bound = max((_tree_depth([g.nodes[t[0]].depth for t in tj] + ([0] if consts[j] else []))
                         for j, tj in enumerate(terms)), default=0) + depth_slack
        _eliminate(g, terms, consts, bound)
    outputs = [g.sum_tree(tj, consts[j]) for j, tj in enumerate(terms)]
    graph = AdderGraph(n_in, g.nodes, outputs, g.shared)
    graph.stats = {"terms": n_terms, "adders": len(graph.adders), "shared": g.shared, "depth": graph.depth}
    return graph


def _tree_depth(depths: list[int]) -> int:
    """Depth of the shallowest adder tree over operands arriving at ``depths`` (Kraft's bound)."""
    if not depths:
        return 0
    k = sum(1 << d for d in depths)
    return (k - 1).bit_length()


class _Builder:
    """The growing node list; identical adders are built once."""

    def __init__(self, n_in: int, lo: list[int], hi: list[int]) -> None:
        self.nodes = [Node("input", lo[i], hi[i], 0, a=i) for i in range(n_in)]
        self.memo: dict[tuple, int] = {}
        self.shared = 0

    def _new(self, key: tuple, node: Node) -> int:
        if key in self.memo:
            return self.memo[key]
        self.nodes.append(node)
        self.memo[key] = len(self.nodes) - 1
        return self.memo[key]

    def mul(self, i: int, c: int) -> int:
        x = self.nodes[i]
        lo, hi = sorted((x.lo * c, x.hi * c))
        return self._new(("mul", i, c), Node("mul", lo, hi, 1, a=i, value=c))

    def const(self, c: int) -> int:
        return self._new(("const", c), Node("const", c, c, 0, value=c))

    def add(self, a: int, sa: int, b: int, sb: int, sub: bool) -> int:
        """``(v[a] << sa) ± (v[b] << sb)``; operands ordered so that equal sums share a node."""
        if not sub and (b, sb) < (a, sa):
            a, sa, b, sb = b, sb, a, sa
        na, nb = self.nodes[a], self.nodes[b]
        alo, ahi = na.lo << sa, na.hi << sa
        blo, bhi = nb.lo << sb, nb.hi << sb
        lo, hi = (alo - bhi, ahi - blo) if sub else (alo + blo, ahi + bhi)
        depth = max(na.depth, nb.depth) + 1
        return self._new(("add", a, sa, b, sb, sub), Node("add", lo, hi, depth, a, b, sa, sb, sub))

    def combine(self, t1: _Term, t2: _Term) -> _Term:
        """One adder for ``t1 + t2``; the common shift stays outside, a negative operand is subtracted."""
        (a, ka, da), (b, kb, db) = t1, t2
        m = min(ka, kb)
        if da == db:
            return self.add(a, ka - m, b, kb - m, False), m, da
        if da < 0:
            (a, ka, da), (b, kb, db) = (b, kb, db), (a, ka, da)
        return self.add(a, ka - m, b, kb - m, True), m, 1

    def sum_tree(self, terms: list[_Term], const: int) -> Ref:
        """Sum ``terms`` and ``const``, always adding the two shallowest operands first."""
        ops = list(terms)
        if const:  # a signed constant, so that -x - c is one subtraction c' - x
            tz = (const & -const).bit_length() - 1
            ops.append((self.const(const >> tz), tz, 1))
        if not ops:
            return Ref(-1)
        heap = [(self.nodes[t[0]].depth, k, t) for k, t in enumerate(ops)]
        heapq.heapify(heap)
        order = len(heap)
        while len(heap) > 1:
            _, _, t1 = heapq.heappop(heap)
            _, _, t2 = heapq.heappop(heap)
            t = self.combine(t1, t2)
            heapq.heappush(heap, (self.nodes[t[0]].depth, order, t))
            order += 1
        node, sh, sign = heap[0][2]
        if sign < 0:  # every operand was negative: 0 - sum
            node = self.add(self.const(0), 0, node, 0, True)
        return Ref(node, sh)


def _pattern(t1: _Term, t2: _Term) -> tuple[tuple[int, int, int, int], int, int]:
    """The shift- and sign-normalized pattern of two terms, with the base shift and sign of this
    occurrence: ``t1 + t2 == sign * (pattern << base)``."""
    if (t2[0], t2[1]) < (t1[0], t1[1]):
        t1, t2 = t2, t1
    return _pair_key(t1, t2), min(t1[1], t2[1]), t1[2]


def _pair_key(t1: _Term, t2: _Term) -> tuple[int, int, int, int, int]:
    """``_pattern(t1, t2)[0]`` alone, written out: the CSE loop forms millions of them."""
    a, ka, da = t1
    b, kb, db = t2
    if b < a or (b == a and kb < ka):
        a, ka, da, b, kb, db = b, kb, db, a, ka, da
    m = ka if ka < kb else kb
    return (a, ka - m, b, kb - m, da * db)


def _eliminate(g: _Builder, terms: list[list[_Term]], consts: list[int], bound: int | None) -> None:
    """Greedy CSE over all outputs' terms, in place: most frequent, narrowest pattern first."""
    # live terms per output, by a term id; occurrences of each pattern as (output, id1, id2), and each live
    # pair's pattern, so that removing a term does not form its patterns again
    live: list[dict[int, _Term]] = [dict(enumerate(tj)) for tj in terms]
    next_id = [len(tj) for tj in terms]
    occ: dict[tuple, set[tuple[int, int, int]]] = {}
    pair_key: dict[tuple[int, int, int], tuple] = {}
    kraft = [sum(1 << g.nodes[t[0]].depth for t in tj) + (1 if consts[j] else 0) for j, tj in enumerate(terms)]

    def pairs_of(j: int, tid: int) -> list[tuple]:
        """Record the patterns term ``tid`` (the output's newest) forms with the output's other terms."""
        t = live[j][tid]
        keys = []
        for other, u in live[j].items():
            if other != tid:
                key = _pair_key(t, u)
                site = (j, other, tid) if other < tid else (j, tid, other)
                occ.setdefault(key, set()).add(site)
                pair_key[site] = key
                keys.append(key)
        return keys

    for j in range(len(terms)):
        ids = list(live[j])
        for x, tid in enumerate(ids):
            t = live[j][tid]
            for other in ids[x + 1:]:
                key = _pair_key(t, live[j][other])
                occ.setdefault(key, set()).add((j, tid, other))
                pair_key[(j, tid, other)] = key

    ref_bits = max(np.mean([max(n.width, 1) for n in g.nodes]) * 2, 1.0)

    widths: dict[tuple, int] = {}  # a pattern's nodes never change, nor its adder's width

    def width_of(key: tuple) -> int:
        if key in widths:
            return widths[key]
        a, sa, b, sb, s = key
        na, nb = g.nodes[a], g.nodes[b]
        lo = (na.lo << sa) + (-(nb.hi << sb) if s < 0 else nb.lo << sb)
        hi = (na.hi << sa) + (-(nb.lo << sb) if s < 0 else nb.hi << sb)
        widths[key] = signed_width(lo, hi)
        return widths[key]

    def priority(key: tuple, n: int) -> float:
        # a pattern built once saves one adder per further occurrence; of equally frequent
        # patterns the narrowest adder is the cheapest to build
        return -(n - width_of(key) / ref_bits)

    heap = [(priority(k, len(v)), k) for k, v in occ.items() if len(v) > 1]
    heapq.heapify(heap)
    while heap:
        pri, key = heapq.heappop(heap)
        sites = occ.get(key, set())
        if len(sites) < 2:
            continue
        if pri != priority(key, len(sites)):
            heapq.heappush(heap, (priority(key, len(sites)), key))
            continue
        a, sa, b, sb, s = key
        depth = max(g.nodes[a].depth, g.nodes[b].depth) + 1
        chosen, used, k_after = [], set(), {}
        for j, t1, t2 in sorted(sites):
            if (j, t1) in used or (j, t2) in used or t1 not in live[j] or t2 not in live[j]:
                continue
            da, db = g.nodes[live[j][t1][0]].depth, g.nodes[live[j][t2][0]].depth
            k_new = k_after.get(j, kraft[j]) - (1 << da) - (1 << db) + (1 << depth)
            if bound is not None and (k_new - 1).bit_length() > bound:
                continue
            k_after[j] = k_new  # a second occurrence in the same output sees the first one's depth
            chosen.append((j, t1, t2))
            used |= {(j, t1), (j, t2)}
        if len(chosen) < 2:
            occ.pop(key, None)  # not worth an adder now; new terms may bring it back
            continue
        node = g.add(a, sa, b, sb, s < 0)
        g.shared += 1
        for j, t1, t2 in chosen:
            if t1 not in live[j] or t2 not in live[j]:
                continue
            base, sign = _pattern(live[j][t1], live[j][t2])[1:]
            da, db = g.nodes[live[j][t1][0]].depth, g.nodes[live[j][t2][0]].depth
            for tid in (t1, t2):
                live[j].pop(tid)
                for other in live[j]:
                    site = (j, other, tid) if other < tid else (j, tid, other)
                    sset = occ.get(pair_key.pop(site))
                    if sset is not None:
                        sset.discard(site)
            new = next_id[j]
            next_id[j] += 1
            live[j][new] = (node, base, sign)
            kraft[j] += (1 << depth) - (1 << da) - (1 << db)
            for k2 in pairs_of(j, new):
                if len(occ[k2]) > 1:
                    heapq.heappush(heap, (priority(k2, len(occ[k2])), k2))
    for j in range(len(terms)):
        terms[j] = list(live[j].values())
