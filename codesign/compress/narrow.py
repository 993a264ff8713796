"""A narrower dense start: the search's candidate for budgets where pruning leaves too little.

At the smallest budgets the search prunes 85-90 % of a trained MLP's weights, and a dense network of
the same depth with every hidden layer narrowed alike, trained from random weights at the same
precision and distilled from the same float network, can score higher (bench/methods.py's
``scratch``: bn-64-64-32 at 2,500 LUTs +2.2 pt, the jet tagger at 5,000 +1.1 pt, one seed each).
``compress`` therefore trains one such network when its best candidate keeps under ``NARROW_KEPT`` of
the float network's weights and validates ``NARROW_GAP`` or more below it, and keeps whichever
validates better. The widths come from the cost model: the widest scale whose network fits the
search's aim, corrected by two short probe runs for the weights that training at low precision rounds to
zero, or the larger weights it keeps where the float network's were small (either way the trained
network's price differs from the one its width was chosen by).

A chain of Dense stages, or a CNN chain (convolutions, pooling, a Dense tail: every convolution's channels
scaled alike); a branched network (residual, concatenation) is not narrowed: its channels are tied across merges.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from codesign.compress.channels import shrink
from codesign.compress.cost import fits, network_cost, total_cost
from codesign.compress.qat import Precision, QDense
from codesign.compress.qcnn import QCNN, QConv, QFlatten, QMerge, assign_types, network_from_qcnn, stage_inputs

if TYPE_CHECKING:  # search imports this module; its context is only a type here
    from codesign.compress.search import _Search

NARROW_KEPT = 0.25  # the best candidate keeps under this fraction of the float network's weights ...
NARROW_GAP = 0.01  # ... and validates at least this far below it (accuracy; any gap for a regression)
FLOAT_SHARE = 0.3  # of the narrow network's epochs, trained in float first so QAT starts from sensible ranges
PROBE_SHARE = 0.2  # of the epochs, the probe runs that measure how trained weights price against the teacher's
PROBES = 2
LR_NARROW = (3e-3, 1e-3, 5e-4)  # Adam, stepped down at 60 % and 85 % of the QAT epochs
SEED_NARROW = 3000


@dataclass(frozen=True)
class Narrow:
    """What the narrow start tried: its width scale, widths, epochs and validation score."""

    scale: float
    widths: tuple[int, ...]
    epochs: int
    probe_ratio: float


def narrowable(teacher: QCNN) -> bool:
    """Whether the network is a chain (Dense, or convolutions, pooling and a Dense tail): what this module narrows.
    A branched network's channels are tied across its merges, so it is not narrowed."""
    return teacher.is_chain and not any(isinstance(s, QMerge) for s in teacher.stages)


def kept_fraction(model: QCNN, teacher: QCNN) -> float:
    """Nonzero weights of a candidate over the float network's weights."""
    kept = sum(float(s.mask.sum()) for s in model.weighted())
    return kept / max(sum(s.weight.numel() for s in teacher.weighted()), 1)


def narrow_wanted(model: QCNN, val: float, teacher: QCNN, teacher_val: float, task: str) -> bool:
    """Whether the best candidate is pruned hard enough, and far enough below float, to try a narrow start."""
    gap = teacher_val - val
    # MLPs only: a narrower digits-cnn from scratch lost to pruning by 6.6 pt at 2,660 LUTs (bench/methods.py's
    # scratch), so the search spends nothing on a CNN's; the bench still trains one as its own method
    mlp = not any(isinstance(s, QConv) for s in teacher.stages)
    return mlp and narrowable(teacher) and kept_fraction(model, teacher) < NARROW_KEPT and (
        gap >= NARROW_GAP if task == "classification" else gap > 0)


def narrowed(teacher: QCNN, scale: float, seed: int, init: str = "random") -> QCNN:
    """The teacher's chain with every hidden width (a Dense layer's units, a convolution's channels) times
    ``scale`` (at least 2), dense. ``init="teacher"`` takes the teacher's first units (weights with a trained
    network's statistics: what the cost model prices before training); ``"random"`` torch's default
    initialisation (uniform within 1/sqrt(fan-in), as ``nn.Linear`` and ``nn.Conv2d`` draw it)."""
    model = copy.deepcopy(teacher)
    torch.manual_seed(seed)
    last = model.weighted()[-1]
    shapes = [tuple(x.shape[1:]) for x in stage_inputs(teacher, np.zeros((1, int(np.prod(teacher.input_shape)))))]
    keep = np.arange(teacher.input_shape[-1])  # the channels (units) the next weighted stage reads
    for st, in_shape in zip(model.stages, shapes):
        if isinstance(st, QFlatten):  # channels-last: a position's channels are consecutive
            c = int(in_shape[-1])
            keep = (np.arange(int(np.prod(in_shape[:-1])))[:, None] * c + keep[None, :]).ravel()
        if not isinstance(st, QDense):
            continue
        w_t = st.weight.detach().numpy()
        out = w_t.shape[-1] if st is last else max(2, round(w_t.shape[-1] * scale))
        W = w_t[..., keep, :out]
        b = st.bias.detach().numpy()[:out]
        if init != "teacher":
            fan_in = int(np.prod(W.shape[:-1]))
            lin = torch.nn.Linear(fan_in, out, dtype=torch.float64)
            W = lin.weight.detach().numpy().T.reshape(W.shape).copy()
            b = lin.bias.detach().numpy().copy()
        st.weight = torch.nn.Parameter(torch.tensor(W, dtype=torch.float64))
        st.bias = torch.nn.Parameter(torch.tensor(b, dtype=torch.float64))
        st.mask = torch.ones_like(st.weight.detach())
        st.bias_mask = torch.ones(out, dtype=torch.float64)
        st.weight_type = st.bias_type = st.result_type = st.relu_type = None
        if isinstance(st, QConv):
            st.in_shape = (*st.in_shape[:-1], len(keep))
        keep = np.arange(out)
    return model


def widest_scale(priced: Callable[[float], dict[str, int]], aim: dict[str, int], ratio: float) -> float:
    """The widest scale in (0, 1] whose price, LUTs and FFs times ``ratio``, fits ``aim`` (bisection to 1/256)."""
    def ok(s: float) -> bool:
        c = priced(s)
        return fits({k: int(v * ratio) if k in ("lut", "ff") else v for k, v in c.items()}, aim)

    if ok(1.0):
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(8):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def train_narrow(ctx: "_Search", model: QCNN, prec: Precision, epochs: int, seed: int) -> None:
    """Float first, then QAT in chunks with the types re-sized to the moving weights between them; a weight
    that rounded to zero may grow back (nothing is pruned here)."""
    f_ep = max(1, int(epochs * FLOAT_SHARE))
    ctx.train(model, f_ep, LR_NARROW[0], seed)
    spent, chunk = f_ep, 0
    while spent < epochs:
        n = min(max(10, (epochs - f_ep) // 8), epochs - spent)
        _unmask(model)
        assign_types(model, prec, ctx.data.X_train)
        lr = LR_NARROW[0] if spent < epochs * 0.6 else LR_NARROW[1] if spent < epochs * 0.85 else LR_NARROW[2]
        ctx.train(model, n, lr, seed + 11 + chunk)
        spent, chunk = spent + n, chunk + 1
    _unmask(model)
    assign_types(model, prec, ctx.data.X_train)


def _unpipelined(ctx: "_Search", model: QCNN) -> dict[str, int]:
    net = shrink(network_from_qcnn(model, "narrow", {}))
    return total_cost(network_cost(net, ctx.budget.board, ctx.mapping, clock_mhz=0))


def _unmask(model: QCNN) -> None:
    with torch.no_grad():
        for st in model.weighted():
            st.mask.fill_(1.0)


def narrow_candidate(ctx: "_Search", teacher: QCNN, prec: Precision, epochs: int,
                     trim: Callable[[QCNN], dict[str, int]]) -> tuple[QCNN, dict[str, int], Narrow]:
    """A dense narrower network trained on ``epochs`` (the probe's included) at ``prec``, trimmed by ``trim``
    (the search's pruning to its aim) if it still ends above; with its cost and what was tried."""
    x = ctx.data.X_train[:512]

    def priced(s: float) -> dict[str, int]:  # unpipelined: the bisection's many prices stay cheap; trim corrects
        m = narrowed(teacher, s, ctx.seed, init="teacher")
        assign_types(m, prec, x)
        return _unpipelined(ctx, m)

    # two short probes: the ratio moves with the width (bn-64-64-32 at 2,500 LUTs: 0.6 measured at the first
    # probe's width, 0.4 at the width it then chose), so the second is run where the first points
    scale, ratio, probe_ep = widest_scale(priced, ctx.aim, 1.0), 1.0, max(5, int(epochs * PROBE_SHARE / PROBES))
    for i in range(PROBES):
        probe = narrowed(teacher, scale, ctx.seed)
        train_narrow(ctx, probe, prec, probe_ep, ctx.seed + SEED_NARROW + i)
        ratio = _unpipelined(ctx, probe).get("lut", 1) / max(priced(scale).get("lut", 1), 1)
        scale = widest_scale(priced, ctx.aim, ratio)
    model = narrowed(teacher, scale, ctx.seed)
    train_narrow(ctx, model, prec, max(epochs - PROBES * probe_ep, 10), ctx.seed + SEED_NARROW + 50)
    cost = ctx.cost(model)
    if not fits(cost, ctx.aim):
        cost = trim(model)
    widths = tuple(int(s.weight.shape[-1]) for s in model.weighted())
    return model, cost, Narrow(round(scale, 3), widths, epochs, round(ratio, 3))
