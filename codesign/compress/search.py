"""Compression under a resource budget: the co-design search.

For each candidate precision (cheapest first), the network is trained quantization-aware,
then pruned gradually with fine-tuning between steps until the analytic cost model says it
fits the budget; the candidate with the best validation score wins. Accuracy is reported
on the test split only. A budget that even the smallest reachable network misses is an
error naming the smallest cost reached and the resource that binds.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from codesign.board import Board
from codesign.budget import Budget
from codesign.compress.cost import binding_resource, fits, network_cost, total_cost
from codesign.compress.prune import (
    polynomial_schedule,
    prune_neurons,
    prune_weights,
    scores,
)
from codesign.compress.qat import (
    QMLP,
    Precision,
    assign_types,
    equalize_if_better,
    network_from_qmlp,
    qmlp_from_network,
)
from codesign.compress.quantize import integer_bits_for
from codesign.core.fixed import FixedType
from codesign.core.network import Network
from codesign.errors import BudgetError
from codesign.importers.data import Dataset, check_fits
from codesign.progress import SILENT, Reporter

PRECISIONS = (Precision(3, 6, 10), Precision(4, 6, 10), Precision(4, 8, 12), Precision(6, 8, 12), Precision(8, 10, 14))


@dataclass
class CompressResult:
    network: Network
    float_score: float
    score: float
    metric: str
    cost: dict[str, int]
    budget: dict[str, int]
    precision: Precision
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    epochs: int = 0  # training passes over the training split, all candidates together (the training budget)
    model: Any = field(default=None, repr=False)  # the trained QMLP behind ``network`` (what ``tighten`` continues)


def default_input_type(X: np.ndarray, bits: int = 16) -> FixedType:
    """A ``bits``-bit type covering the data's range (unsigned when the data are non-negative)."""
    signed = bool(np.min(X) < 0)
    return FixedType(bits, integer_bits_for(float(np.max(np.abs(X))), signed), signed, "RND_CONV", "SAT")


def _loss(out: torch.Tensor, y: torch.Tensor, task: str, teacher_out: torch.Tensor | None, alpha: float,
          temp: float = 2.0) -> torch.Tensor:
    if task == "classification":
        loss = nn.functional.cross_entropy(out, y)
        if teacher_out is not None and alpha > 0:
            kl = nn.functional.kl_div(nn.functional.log_softmax(out / temp, dim=1),
                                      nn.functional.softmax(teacher_out / temp, dim=1), reduction="batchmean")
            loss = (1 - alpha) * loss + alpha * kl * temp * temp
        return loss
    target = y.reshape(out.shape).to(out.dtype)
    loss = nn.functional.mse_loss(out, target)
    if teacher_out is not None and alpha > 0:
        loss = (1 - alpha) * loss + alpha * nn.functional.mse_loss(out, teacher_out)
    return loss


def train(model: QMLP, data: Dataset, epochs: int, lr: float, seed: int, teacher: QMLP | None = None,
          alpha: float = 0.5) -> None:
    """Fine-tune in float64 with Adam; masks stay applied, so pruned weights stay zero."""
    X = torch.tensor(data.X_train, dtype=torch.float64)
    y = torch.tensor(data.y_train)
    t_out = None
    if teacher is not None:
        with torch.no_grad():
            t_out = teacher(X)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            loss = _loss(model(X[b]), y[b], data.task, None if t_out is None else t_out[b], alpha)
            loss.backward()
            opt.step()
    model.eval()


def score(model: QMLP | Network, X: np.ndarray, y: np.ndarray, task: str) -> float:
    """Accuracy for classification, negative MSE for regression."""
    if isinstance(model, Network):
        out = model.forward(X)
    else:
        with torch.no_grad():
            out = model(torch.tensor(X, dtype=torch.float64)).numpy()
    if task == "classification":
        return float(np.mean(np.argmax(out, axis=1) == y))
    return -float(np.mean((out.reshape(len(y), -1) - y.reshape(len(y), -1)) ** 2))


def _cost(model: QMLP, board: Board, mapping: str) -> dict[str, int]:
    """The cost of the network the search would return now: without the neurons pruning has cut off."""
    net = shrink(network_from_qmlp(model, "candidate", {}))
    return total_cost(network_cost(net, board, mapping))


def smallest_cost(net: Network, board: Board, input_type: FixedType, X: np.ndarray, mapping: str) -> dict[str, int]:
    """The cost of the smallest network the search can reach: cheapest precision, one weight per output."""
    model = qmlp_from_network(net)
    assign_types(model, _with_input(PRECISIONS[0], input_type), X[:256])
    with torch.no_grad():
        for layer in model.stages:
            m = torch.zeros_like(layer.mask)
            best = torch.argmax(torch.abs(layer.weight * layer.mask), dim=0)
            m[best, torch.arange(m.shape[1])] = 1.0
            layer.mask.copy_(m)
    return _cost(model, board, mapping)


def _with_input(p: Precision, t: FixedType) -> Precision:
    return Precision(p.weight_bits, p.act_bits, p.out_bits, t)


@dataclass(frozen=True)
class Schedule:
    """How much training the search spends, and its safety margin."""

    epochs: int = 60  # quantization-aware training at each candidate precision, before pruning
    finetune_epochs: int = 10  # after each pruning step
    final_epochs: int = 40  # once the candidate fits
    prune_steps: int = 10  # of the polynomial schedule
    extra_steps: int = 8  # smaller steps when the schedule ends above the budget; also the final trims
    headroom: float = 0.04  # aim this far below the LUT and FF limits (the cost model's error)
    distill: bool = True  # the float network teaches every candidate
    # With several precisions, each is first searched on ``screen`` times the epochs above, and the
    # best is searched again on ``refine`` times them: the training goes where the accuracy is
    # decided (bench/methods.py: the same epochs spent on one precision beat them spread over three).
    screen: float = 0.25
    refine: float = 1.75
    equalize: bool = True  # cross-layer equalization before QAT where it lowers the quantization error

    def scaled(self, f: float) -> "Schedule":
        """This schedule with every training run ``f`` times as long (at least one epoch each)."""
        return replace(self, epochs=max(1, round(self.epochs * f)), finetune_epochs=max(1, round(self.finetune_epochs * f)),
                       final_epochs=max(1, round(self.final_epochs * f)))


CLEAR_DROP = 0.01  # a screened candidate this far below the best (validation accuracy) is past the peak

# learning rates of the four kinds of training run (Adam)
LR_QAT, LR_FINETUNE, LR_FINAL, LR_TRIM = 3e-3, 1e-3, 5e-4, 2e-4
# each training run's shuffling seed is seed + offset × candidate (+ step): distinct and reproducible
SEED_QAT, SEED_STEP, SEED_FINAL, SEED_TRIM, SEED_TIGHTEN = 1, 100, 7, 1000, 5000


@dataclass(frozen=True)
class _Search:
    """What every step of one search shares."""

    data: Dataset
    budget: Budget
    aim: dict[str, int]
    method: str
    mapping: str
    teacher: QMLP | None
    seed: int
    spent: list[int] = field(default_factory=lambda: [0])  # epochs trained so far (mutable in a frozen context)

    def cost(self, model: QMLP) -> dict[str, int]:
        return _cost(model, self.budget.board, self.mapping)

    def train(self, model: QMLP, epochs: int, lr: float, seed: int) -> None:
        train(model, self.data, epochs, lr, seed, self.teacher)
        self.spent[0] += epochs

    def prune_step(self, model: QMLP, prec: Precision, n: int, epochs: int, lr: float, seed: int) -> dict[str, int]:
        """Prune about ``n`` weights (fewer when fewer fit), fine-tune, re-type; the new cost."""
        self_prune(model, self.data, self.method, *fewest_to_fit(model, self, n))
        self.train(model, epochs, lr, seed)
        assign_types(model, prec, self.data.X_train)
        return self.cost(model)


def _kept(model: QMLP) -> int:
    return int(sum(layer.mask.sum().item() for layer in model.stages))


def compress(net: Network, data: Dataset, budget: Budget, method: str = "hardware", seed: int = 0,
             input_type: FixedType | None = None, precisions: tuple[Precision, ...] = PRECISIONS,
             schedule: Schedule = Schedule(), progress: Reporter = SILENT) -> CompressResult:
    """A sparse fixed-point Network that fits ``budget`` at the best validation score found.

    For each precision (cheapest first): QAT, then pruning steps until the cost model says it
    fits, a final fine-tune, and trims if that moved it over. The search aims
    ``schedule.headroom`` below the LUT and FF limits, a margin for the analytic model's error;
    the flow then judges the fit on the synthesized design."""
    from codesign.compress.qcnn import is_cnn

    if is_cnn(net):  # convolutions and pooling: the streaming-CNN search (same loop, channels as units)
        from codesign.compress.cnn_search import compress_cnn

        return compress_cnn(net, data, budget, method, seed, input_type, precisions, schedule, progress)
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    board, limits = budget.board, budget.limits
    if not limits:
        raise BudgetError("compress needs a budget, e.g. --budget lut=0.25,dsp=0")
    check_fits(data, net.input_shape, net.output_shape[-1], net.name)
    mapping = "lut" if budget.lut_only else "auto"
    t_in = input_type or net.input_type or data.input_type or default_input_type(data.X_train)

    teacher = qmlp_from_network(net)
    float_score = score(teacher, data.X_test, data.y_test, data.task)
    floor = smallest_cost(net, board, t_in, data.X_train, mapping)
    if not fits(floor, limits):
        res = binding_resource(floor, limits)
        raise BudgetError(
            f"budget {_fmt(limits)} is infeasible on {board.name}: the smallest network the search reaches "
            f"(precision {PRECISIONS[0].weight_bits}-bit weights, one weight per output) costs {_fmt(floor)}; "
            f"{res} binds ({floor[res]} > {limits[res]})"
        )
    aim = {k: int(v * (1 - schedule.headroom)) if k in ("lut", "ff") else v for k, v in limits.items()}
    ctx = _Search(data, budget, aim, method, mapping, teacher if schedule.distill else None, seed)
    best: tuple[float, QMLP, Precision, dict[str, int]] | None = None
    history: list[dict[str, Any]] = []
    worse = 0
    multi = len(precisions) > 1 and schedule.screen < 1.0
    first = schedule.scaled(schedule.screen) if multi else schedule
    with progress.bar("compress", total=len(precisions) + int(multi)) as bar:
        for k, prec in enumerate(precisions):
            prec = _with_input(prec, t_in)
            before = ctx.spent[0]
            model, cost = _candidate(ctx, copy.deepcopy(teacher), prec, k, first)
            val = score(model, data.X_val, data.y_val, data.task) if fits(cost, aim) else None
            history.append({"precision": _prec_dict(prec), "fits": val is not None, "cost": cost,
                            "epochs": ctx.spent[0] - before, "equalized": model.equalized,
                            **({"val": val} if val is not None else {})})
            if val is None:
                bar.advance(info=f"{prec.weight_bits}b weights: no fit")
                continue
            bar.advance(info=f"{prec.weight_bits}b weights: val {val:.3f}")
            clear = best is not None and data.task == "classification" and val < best[0] - CLEAR_DROP
            if best is None or val > best[0]:
                best, worse = (val, model, prec, cost), 0
            else:
                worse += 1
            # under a fixed budget, accuracy against precision rises, peaks and falls (wider
            # weights leave fewer of them): one candidate clearly past the peak, or two, end the search
            if worse >= 2 or clear:
                bar.advance(info="past the best precision")
                break
        if multi and best is not None:
            best = _refine(ctx, teacher, best, len(precisions), schedule, history)
            bar.advance(info=f"{best[2].weight_bits}b weights refined: val {best[0]:.3f}")
    if best is None:
        cheapest = min((h["cost"] for h in history), key=lambda c: c.get(binding_resource(c, limits), 0))
        res = binding_resource(cheapest, limits)
        raise BudgetError(
            f"budget {_fmt(limits)} not reached on {board.name}: the smallest network after pruning costs "
            f"{_fmt(cheapest)}; {res} binds ({cheapest[res]} > {limits[res]})"
        )
    _, model, prec, cost = best
    meta = dict(net.metadata, compressed=True, method=method, distill=schedule.distill, seed=seed, board=board.name,
                budget=limits, precision=_prec_dict(prec))
    out = shrink(network_from_qmlp(model, net.name, meta))
    test = score(out, data.X_test, data.y_test, data.task)
    return CompressResult(out, float_score, test, "accuracy" if data.task == "classification" else "neg_mse",
                          total_cost(network_cost(out, board, mapping)), limits, prec, history,
                          time.perf_counter() - t_start, ctx.spent[0], model)


def tighten(r: CompressResult, net: Network, data: Dataset, budget: Budget, measured: dict[str, int],
            schedule: Schedule = Schedule()) -> CompressResult:
    """``r`` pruned further, with fine-tuning, for a design that synthesis (``measured``) put over the
    budget: the aim is scaled by how far the cost model was off on this network, per resource.

    The cost model is within a few per cent on dense and moderately sparse layers, but it
    under-prices some sparse low-bit ones by up to 15 % (bench/methods.py); a search aimed below
    the budget on the model then lands above it on Yosys. Continuing from the trained network
    costs a few fine-tunes, where searching again would cost the whole schedule."""
    t_start = time.perf_counter()
    model = copy.deepcopy(r.model)
    mapping = "lut" if budget.lut_only else "auto"
    err = {k: measured.get(k, 0) / max(r.cost.get(k, 0), 1) for k in budget.limits}
    aim = {k: int(v * (1 - schedule.headroom) / max(err[k], 1.0)) if k in ("lut", "ff") else v
           for k, v in budget.limits.items()}
    meta = r.network.metadata
    seed = int(meta.get("seed", 0))
    ctx = _Search(data, budget, aim, meta.get("method", "hardware"), mapping,
                  qmlp_from_network(net) if meta.get("distill", True) else None, seed)
    cost, steps = ctx.cost(model), 0
    while not fits(cost, aim) and steps < schedule.prune_steps + schedule.extra_steps:
        cost = ctx.prune_step(model, r.precision, max(1, _kept(model) // 30), schedule.finetune_epochs, LR_FINETUNE,
                              seed + SEED_TIGHTEN + steps)
        steps += 1
    if not fits(cost, aim):
        raise BudgetError(f"budget {_fmt(budget.limits)} not reached on {budget.board.name} after synthesis: "
                          f"the cost model is off by {_fmt_err(err)} on this network, and pruning to {_fmt(aim)} "
                          f"stops at {_fmt(cost)}")
    ctx.train(model, schedule.final_epochs // 2, LR_FINAL, seed + SEED_TIGHTEN - 1)
    assign_types(model, r.precision, data.X_train)
    if not fits(_trim(ctx, model, r.precision, ctx.cost(model), schedule, seed + SEED_TIGHTEN + 100), aim):
        raise BudgetError(f"budget {_fmt(budget.limits)} not reached on {budget.board.name} after synthesis: "
                          f"the final fine-tune moved the network above {_fmt(aim)}")
    out = shrink(network_from_qmlp(model, r.network.name, dict(r.network.metadata, tightened=_fmt_err(err))))
    history = r.history + [{"tightened": {k: round(v, 3) for k, v in err.items()}, "aim": aim, "steps": steps,
                            "epochs": ctx.spent[0]}]
    return replace(r, network=out, score=score(out, data.X_test, data.y_test, data.task),
                   cost=total_cost(network_cost(out, budget.board, mapping)), history=history,
                   seconds=r.seconds + time.perf_counter() - t_start, epochs=r.epochs + ctx.spent[0], model=model)


def _fmt_err(err: dict[str, float]) -> str:
    return ",".join(f"{k}×{v:.3f}" for k, v in err.items() if v > 1.0) or "nothing"


def _refine(ctx: _Search, teacher: QMLP, best: tuple, k: int, sch: Schedule, history: list[dict[str, Any]]) -> tuple:
    """The screened best precision searched again from the float network on the longer schedule;
    the better of the two by validation score (the refined one on a tie)."""
    prec = best[2]
    before = ctx.spent[0]
    model, cost = _candidate(ctx, copy.deepcopy(teacher), prec, k, sch.scaled(sch.refine))
    val = score(model, ctx.data.X_val, ctx.data.y_val, ctx.data.task) if fits(cost, ctx.aim) else None
    history.append({"precision": _prec_dict(prec), "refined": True, "fits": val is not None, "cost": cost,
                    "epochs": ctx.spent[0] - before, "equalized": model.equalized,
                    **({"val": val} if val is not None else {})})
    return (val, model, prec, cost) if val is not None and val >= best[0] else best


def _candidate(ctx: _Search, model: QMLP, prec: Precision, k: int, sch: Schedule) -> tuple[QMLP, dict[str, int]]:
    """One precision's candidate: QAT, pruning until it fits the aim, final fine-tune, trims; and its cost."""
    seed = ctx.seed
    model.equalized = sch.equalize and equalize_if_better(model, prec, ctx.data.X_train[:1024])
    assign_types(model, prec, ctx.data.X_train)
    ctx.train(model, sch.epochs, LR_QAT, seed + SEED_QAT * k)
    cost = ctx.cost(model)
    total = _kept(model)
    res = binding_resource(cost, ctx.aim)
    # cost is roughly proportional to the kept weights: aim a little below the budget
    target = min(0.98, max(0.0, 1.0 - 0.9 * ctx.aim[res] / max(cost[res], 1)))
    steps = 0
    for goal in polynomial_schedule(target, sch.prune_steps):
        if fits(cost, ctx.aim):
            break
        n = _kept(model) - int(round(total * (1.0 - goal)))
        cost = ctx.prune_step(model, prec, n, sch.finetune_epochs, LR_FINETUNE, seed + SEED_STEP * k + steps)
        steps += 1
    while not fits(cost, ctx.aim) and steps < sch.prune_steps + sch.extra_steps:
        cost = ctx.prune_step(model, prec, max(1, _kept(model) // 10), sch.finetune_epochs, LR_FINETUNE,
                              seed + SEED_STEP * k + steps)
        steps += 1
    if not fits(cost, ctx.aim):
        return model, cost
    ctx.train(model, sch.final_epochs, LR_FINAL, seed + SEED_FINAL * k)
    assign_types(model, prec, ctx.data.X_train)
    return model, _trim(ctx, model, prec, ctx.cost(model), sch, seed + SEED_TRIM * k)


def _trim(ctx: _Search, model: QMLP, prec: Precision, cost: dict[str, int], sch: Schedule, seed: int) -> dict[str, int]:
    """Fine-tuning moves weights, which can change their price: small pruning steps until it fits
    the aim again (at most ``sch.extra_steps``); the cost after them."""
    for trim in range(sch.extra_steps):
        if fits(cost, ctx.aim):
            break
        cost = ctx.prune_step(model, prec, max(1, _kept(model) // 30), sch.finetune_epochs // 2, LR_TRIM, seed + trim)
    return cost


def fewest_to_fit(model: QMLP, ctx: _Search, n: int) -> tuple[int, list[np.ndarray] | None]:
    """``n``, or fewer when pruning fewer of the same weights already brings the cost within ``aim``;
    and the ranking they were chosen by (ranked once: the trials prune copies by it).

    A pruning step sized by the schedule can land far below the budget (cost is not proportional
    to the kept weights: each output's logic stays until its last weight goes), and weights
    pruned below the budget are accuracy given away. The cost model takes milliseconds, so the
    step is bisected on copies before it is taken."""
    ranking = rank(model, ctx.data, ctx.method, ctx.budget.board)

    def fits_after(k: int) -> bool:
        trial = copy.deepcopy(model)
        self_prune(trial, ctx.data, ctx.method, k, ranking)
        return fits(ctx.cost(trial), ctx.aim)

    if n <= 1 or not fits_after(n):
        return n, ranking
    lo, hi = 0, n  # pruning hi weights fits, pruning lo does not
    while hi - lo > max(1, n // 64):
        mid = (lo + hi) // 2
        if fits_after(mid):
            hi = mid
        else:
            lo = mid
    return hi, ranking


def rank(model: QMLP, data: Dataset, method: str, board: Board) -> list[np.ndarray] | None:
    """The weights' pruning scores (``prune.scores``); None for the structured method, which ranks neurons."""
    if method == "structured":
        return None
    return scores(model, data.X_train, data.y_train, data.task, method, board.synth_family)


def self_prune(model: QMLP, data: Dataset, method: str, n: int, ranking: list[np.ndarray] | None) -> None:
    """Remove about ``n`` more weights by ``ranking`` (whole neurons for the structured method)."""
    if n <= 0:
        return
    if method == "structured":
        per_neuron = max(1.0, sum(l.mask.sum().item() for l in model.stages) / sum(l.mask.shape[1] for l in model.stages))
        prune_neurons(model, data.X_train, max(1, int(n / per_neuron)))
    else:
        prune_weights(model, ranking, n)


def shrink(net: Network) -> Network:
    """Drop hidden neurons that can no longer affect the output (no inputs and no bias, or no
    outgoing weights), so structured pruning really removes them from the next layer too."""
    from codesign.core.layers import Dense

    layers = copy.deepcopy(net.layers)
    dense_idx = [i for i, l in enumerate(layers) if isinstance(l, Dense)]
    for a, b in zip(dense_idx, dense_idx[1:]):
        d, nxt = layers[a], layers[b]
        dead_in = ~d.weight.any(axis=0) & (d.bias == 0)
        unused = ~nxt.weight.any(axis=1)
        keep = ~(dead_in | unused)
        if keep.all() or keep.sum() == 0:
            continue
        d.weight, d.bias, d.mask = d.weight[:, keep], d.bias[keep], d.mask[:, keep]
        nxt.weight, nxt.mask = nxt.weight[keep, :], nxt.mask[keep, :]
    out = Network(net.name, net.input_shape, layers, net.input_type, net.metadata)
    # accumulator types depend on the (unchanged) weights only through their sums: recompute exactly
    from codesign.core.reference import exact_accum_type

    t = out.input_type
    for layer, tt in zip(out.layers, out.tensor_types()):
        if isinstance(layer, Dense) and t is not None:
            layer.accum_type = exact_accum_type(layer, t)
        t = tt if tt is not None else t
    return out


def _prec_dict(p: Precision) -> dict[str, Any]:
    return {"weight_bits": p.weight_bits, "act_bits": p.act_bits, "out_bits": p.out_bits,
            "input_type": p.input_type.to_hls() if p.input_type else None}


def _fmt(d: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in d.items())
