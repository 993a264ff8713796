"""How a Dense layer is folded over R cycles: which multiply-accumulate unit does which nonzero weight when.

The folded RTL (``rtl_sim.folded``) is built from this plan and the cost model (``codesign.compress.fold_cost``)
prices it, so both read one schedule. Only nonzero weights are scheduled, column-major (output by output, inputs
in order): ``M = ceil(nnz / R)`` units of ``C = ceil(nnz / M) <= R`` consecutive items each, the last padded with
zero weights. A run of one output's items inside a unit is a *segment* whose sum is one partial of that output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from codesign.core.arith import signed_width
from codesign.core.layers import Conv, Dense
from codesign.errors import LayerError


@dataclass
class Segment:
    """A run of one output's items inside one unit: its partial sum is written at cycle ``last``."""

    unit: int
    col: int
    first: int
    last: int
    lo: int
    hi: int


@dataclass
class LayerPlan:
    """How one Dense layer is folded: its units, their items per cycle and the segments."""

    name: str
    reuse: int  # the R asked for
    cycles: int  # C <= R: cycles per vector
    units: int  # M multiply-accumulate units
    nonzero: int
    items: np.ndarray  # (M, C, 2): input index (-1: padding) and weight of each unit's item at each cycle
    group: list[int]  # per unit, its input group: units that read the same input at every cycle share one select
    selects: list[list[int]]  # per group, the inputs it reads (its select indexes this list)
    segments: list[Segment]
    acc_range: list[tuple[int, int]]  # per unit, the range its accumulator holds
    prod_range: list[tuple[int, int]]  # per unit, the range of its products
    weight_bits: int = 0
    select_bits: list[int] = field(default_factory=list)  # per group

    @property
    def word_bits(self) -> int:
        """Bits of one memory word: every unit's weight and first bit, every group's select."""
        return self.units * (self.weight_bits + 1) + sum(self.select_bits)


def plan_layer(layer: Dense, reuse: int, x_lo: list[int], x_hi: list[int]) -> LayerPlan:
    """Fold ``layer`` for inputs in ``[x_lo[i], x_hi[i]]`` at reuse factor ``reuse``."""
    if reuse < 1:
        raise LayerError(f"layer {layer.name!r}: reuse factor must be >= 1, not {reuse}")
    w = layer.weight.astype(np.int64)
    cols, rows = np.nonzero(w.T)  # column-major: output by output, inputs in order
    items = [(int(i), int(w[i, j]), int(j)) for j, i in zip(cols, rows)]
    nnz = len(items)
    m = math.ceil(nnz / reuse) if nnz else 0
    c = math.ceil(nnz / m) if m else 1
    grid = np.zeros((m, c, 2), dtype=np.int64)
    grid[:, :, 0] = -1
    segments: list[Segment] = []
    acc_range, prod_range = [], []
    for u in range(m):
        mine = items[u * c:(u + 1) * c]
        alo = ahi = plo = phi = 0
        for k, (i, wt, j) in enumerate(mine):
            grid[u, k] = (i, wt)
            a, b = wt * x_lo[i], wt * x_hi[i]
            lo, hi = min(a, b), max(a, b)
            plo, phi = min(plo, lo), max(phi, hi)
            if segments and segments[-1].unit == u and segments[-1].col == j:
                s = segments[-1]
                s.last, s.lo, s.hi = k, s.lo + lo, s.hi + hi
            else:
                s = Segment(u, j, k, k, lo, hi)
                segments.append(s)
            alo, ahi = min(alo, s.lo), max(ahi, s.hi)  # every prefix of a segment, so the register never wraps
        acc_range.append((alo, max(ahi, phi)))
        prod_range.append((plo, phi))
    # a dense layer's units read the same inputs in the same order (one per output, a column apart): one select
    # and one multiplexer serve them all
    seqs: dict[tuple[int, ...], int] = {}
    group = [seqs.setdefault(tuple(int(i) for i in grid[u, :, 0]), len(seqs)) for u in range(m)]
    selects = [list(dict.fromkeys(i for i in seq if i >= 0)) or [0] for seq in seqs]
    wmin, wmax = (int(w.min()), int(w.max())) if w.size else (0, 0)
    return LayerPlan(layer.name, reuse, c, m, nnz, grid, group, selects, segments, acc_range, prod_range,
                     signed_width(min(wmin, 0), max(wmax, 0)), [bits(len(s)) for s in selects])


def fold_cycles(weight: np.ndarray, reuse: int) -> int:
    """Cycles per vector of a layer with ``weight`` folded at ``reuse``: ``ceil(nnz / ceil(nnz / R))`` (1 at R = 1
    or with no nonzero weight), what ``plan_layer`` schedules."""
    nnz = int(np.count_nonzero(weight))
    return -(-nnz // -(-nnz // reuse)) if nnz and reuse > 1 else 1


def stream_pace(layers: list, pixels: int) -> int:
    """Cycles per input pixel of a streaming CNN folded by its layers' own ``reuse`` (``rtl_sim.stream_fold``): the
    slowest convolution's cycles per window, or a Dense's cycles per vector spread over the image's ``pixels``
    (it computes once per image); 1 when nothing is folded."""
    p = 1
    for l in layers:
        if isinstance(l, Conv):
            p = max(p, fold_cycles(l.weight, int(l.reuse)))
        elif isinstance(l, Dense):
            p = max(p, -(-fold_cycles(l.weight, int(l.reuse)) // pixels))
    return p


def bits(n: int) -> int:
    """Bits of a select among ``n`` choices (0 for one)."""
    return (n - 1).bit_length()


def layout(plan: LayerPlan) -> tuple[list[tuple[int, int]], list[int]]:
    """Where each field sits in a memory word: per unit its weight's lsb and its first bit, per group its
    select's lsb (after every unit's fields)."""
    wb = plan.weight_bits
    units = [(u * (wb + 1), u * (wb + 1) + wb) for u in range(plan.units)]
    groups = [plan.units * (wb + 1) + sum(plan.select_bits[:g]) for g in range(len(plan.selects))]
    return units, groups


def memory_words(plan: LayerPlan) -> list[int]:
    """The weight memory's contents, one word per cycle (``layout`` gives the fields)."""
    units, groups = layout(plan)
    wb = plan.weight_bits
    firsts = {(s.unit, s.first) for s in plan.segments}
    words = []
    for k in range(plan.cycles):
        word = 0
        for u in range(plan.units):
            wt = int(plan.items[u, k, 1])
            word |= (wt & ((1 << wb) - 1)) << units[u][0] | int((u, k) in firsts) << units[u][1]
        for g, sel in enumerate(plan.selects):
            if plan.select_bits[g]:
                i = int(plan.items[plan.group.index(g), k, 0])
                word |= (sel.index(i) if i >= 0 else 0) << groups[g]
        words.append(word)
    return words


def live_columns(plan: LayerPlan) -> int:
    """Memory bits that are neither constant over the words nor a copy of another bit: what synthesis keeps
    of a ROM built in logic (its read register included)."""
    words = memory_words(plan)
    cols = {tuple((w >> b) & 1 for w in words) for b in range(plan.word_bits)}
    return sum(1 for c in cols if len(set(c)) > 1)
