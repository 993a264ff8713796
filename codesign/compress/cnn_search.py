"""The budget search for CNNs: ``search.compress`` hands a convolutional Network here.

The same co-design loop as for MLPs: for each candidate precision (cheapest first),
quantization-aware training of every conv, pooling and Dense layer (``qcnn``), distilled
from the float network, then gradual pruning with fine-tuning until the analytic cost of
the streaming design (``conv_cost``) fits the budget, a final fine-tune, trims; the best
validation score wins and accuracy is reported on the test split. ``method`` "structured"
removes whole channels (the measured loss increase per LUT the channel's removal saves); "hardware" removes
single kernel and Dense weights (importance per LUT of the weight's digits); "magnitude"
removes the smallest weights. Each pruning step is sized by bisection on copies against the
cost model, from one ranking per step.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Callable

import numpy as np
import torch

from codesign.budget import Budget
from codesign.compress.channels import (
    alive_units,
    channel_report,
    channel_scores,
    prune_channels,
    prune_weights,
    shrink_cnn,
    weight_scores,
)
from codesign.compress.cost import binding_resource, fits, network_cost, total_cost
from codesign.compress.prune import METHODS, polynomial_schedule
from codesign.compress.qat import Precision
from codesign.compress.qcnn import QCNN, assign_types, network_from_qcnn, qcnn_from_network
from codesign.core.fixed import FixedType
from codesign.core.network import Network
from codesign.errors import BudgetError, ConfigError
from codesign.importers.data import Dataset, check_fits, shaped_for
from codesign.progress import SILENT, Reporter

# CNN training runs cost ~10x an MLP's per epoch (float64 convolutions): the default schedule is shorter
CNN_SCHEDULE_EPOCHS = {"epochs": 30, "finetune_epochs": 4, "final_epochs": 20, "prune_steps": 8, "extra_steps": 6}
MIN_WIDTH = 1  # channels (or neurons) every layer keeps under structured pruning


def cnn_schedule(schedule: Any) -> Any:
    """The CNN default schedule when ``schedule`` is the MLP default, else ``schedule`` as given."""
    from codesign.compress.search import Schedule

    return dataclasses.replace(schedule, **CNN_SCHEDULE_EPOCHS) if schedule == Schedule() else schedule


@dataclasses.dataclass
class _CnnSearch:
    data: Dataset
    budget: Budget
    aim: dict[str, int]
    method: str
    mapping: str
    teacher: QCNN | None
    seed: int
    spent: int = 0  # epochs trained so far, all candidates together

    def cost(self, model: QCNN) -> dict[str, int]:
        net = shrink_cnn(network_from_qcnn(model, "candidate", {}))
        return total_cost(network_cost(net, self.budget.board, self.mapping))

    def items(self, model: QCNN) -> int:
        """What pruning counts: alive units (structured) or kept weights."""
        if self.method == "structured":
            return int(sum(a.sum() for a in alive_units(model)[:-1]))
        return int(sum(s.mask.sum().item() for s in model.weighted()))

    def pruner(self, model: QCNN) -> Callable[[QCNN, int], int]:
        """``prune(copy_of_model, n)`` from one ranking of the model as it is now."""
        X = self.data.X_train
        if self.method == "structured":
            ranked = channel_scores(model, X, self.data.y_train, self.data.task, self.budget.board, self.mapping)
            return lambda m, n: prune_channels(m, ranked, n, MIN_WIDTH)
        sc = weight_scores(model, X, self.method, self.budget.board.synth_family)
        return lambda m, n: prune_weights(m, sc, n)

    def prune_step(self, model: QCNN, prec: Precision, aim: dict[str, int], epochs: int, lr: float,
                   seed: int) -> dict[str, int]:
        """Prune the fewest items of one ranking that bring the cost within ``aim``, fine-tune, re-type;
        the new cost."""
        from codesign.compress.search import train

        prune = self.pruner(model)
        prune(model, self.fewest_to_fit(model, prune, aim))
        if epochs:
            train(model, self.data, epochs, lr, seed, self.teacher)
            self.spent += epochs
        assign_types(model, prec, self.data.X_train)
        return self.cost(model)

    def fewest_to_fit(self, model: QCNN, prune: Callable[[QCNN, int], int], aim: dict[str, int]) -> int:
        """The fewest items to prune (from the ranking behind ``prune``) for the cost to fit ``aim``,
        found by doubling then bisection on copies; everything prunable when nothing fits."""
        def fits_after(k: int) -> bool:
            trial = copy.deepcopy(model)
            prune(trial, k)
            return fits(self.cost(trial), aim)

        top = self.items(model)
        hi = 1
        while hi < top and not fits_after(hi):
            hi *= 2
        if hi >= top:
            return top
        lo = hi // 2  # pruning lo does not fit (or lo = 0), pruning hi does
        while hi - lo > max(1, top // 256):
            mid = (lo + hi) // 2
            if fits_after(mid):
                hi = mid
            else:
                lo = mid
        return hi


def _floor(net: Network, ctx: _CnnSearch, prec: Precision) -> dict[str, int]:
    """The cost of the smallest network the method reaches: cheapest precision, and one weight per output
    (weights) or ``MIN_WIDTH`` units per layer (channels)."""
    model = qcnn_from_network(net)
    assign_types(model, prec, ctx.data.X_train[:256])
    if ctx.method == "structured":
        prune_channels(model, [(0.0, k, j) for k, a in enumerate(alive_units(model)[:-1])
                               for j in np.flatnonzero(a)], 10**9, MIN_WIDTH)
    else:
        with torch.no_grad():
            for s in model.weighted():
                m = s.mask.view(-1, s.mask.shape[-1])
                best = torch.argmax(torch.abs((s.weight * s.mask).view(-1, m.shape[1])), dim=0)
                keep = torch.zeros_like(m)
                keep[best, torch.arange(m.shape[1])] = 1.0
                m.copy_(keep)
    return ctx.cost(model)


# The tensors of a small CNN are too small for intra-op threads to pay: on a busy 2-core machine
# one thread trained digits-cnn 4x faster (wall and CPU) than torch's default of two.
TRAIN_THREADS = 1


def compress_cnn(net: Network, data: Dataset, budget: Budget, method: str = "hardware", seed: int = 0,
                 input_type: FixedType | None = None, precisions: tuple[Precision, ...] | None = None,
                 schedule: Any = None, progress: Reporter = SILENT):
    """A pruned fixed-point CNN that fits ``budget`` at the best validation score found (``search.compress``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        return _compress_cnn(net, data, budget, method, seed, input_type, precisions, schedule, progress)
    finally:
        torch.set_num_threads(threads)


def _compress_cnn(net: Network, data: Dataset, budget: Budget, method: str, seed: int, input_type: FixedType | None,
                  precisions: tuple[Precision, ...] | None, schedule: Any, progress: Reporter):
    from codesign.compress.search import (
        LR_FINAL, LR_FINETUNE, LR_QAT, LR_TRIM, PRECISIONS, SEED_FINAL, SEED_QAT, SEED_STEP, SEED_TRIM, CompressResult,
        Schedule, _fmt, _prec_dict, _with_input, default_input_type, score, train)

    t_start = time.perf_counter()
    if method not in METHODS:
        raise ConfigError(f"pruning method must be one of {METHODS}, not {method!r}")
    precisions = precisions or PRECISIONS
    sch = cnn_schedule(schedule or Schedule())
    torch.manual_seed(seed)
    board, limits = budget.board, budget.limits
    if not limits:
        raise BudgetError("compress needs a budget, e.g. --budget lut=0.25,dsp=0")
    data = shaped_for(data, net.input_shape)  # flat digits for an 8x8x1 CNN; others are left to check_fits
    check_fits(data, net.input_shape, net.output_shape[-1], net.name)
    mapping = "lut" if budget.lut_only else "auto"
    t_in = input_type or net.input_type or data.input_type or default_input_type(data.X_train)

    teacher = qcnn_from_network(net)
    float_score = score(teacher, data.X_test, data.y_test, data.task)
    aim = {k: int(v * (1 - sch.headroom)) if k in ("lut", "ff") else v for k, v in limits.items()}
    ctx = _CnnSearch(data, budget, aim, method, mapping, teacher if sch.distill else None, seed)
    floor = _floor(net, ctx, _with_input(precisions[0], t_in))
    if not fits(floor, limits):
        res = binding_resource(floor, limits)
        what = f"{MIN_WIDTH} channel per layer" if method == "structured" else "one weight per output"
        raise BudgetError(
            f"budget {_fmt(limits)} is infeasible on {board.name}: the smallest network the search reaches "
            f"(precision {precisions[0].weight_bits}-bit weights, {what}) costs {_fmt(floor)}; "
            f"{res} binds ({floor[res]} > {limits[res]})")
    best: tuple[float, QCNN, Precision, dict[str, int]] | None = None
    history: list[dict[str, Any]] = []
    worse = 0
    lrs = (LR_QAT, LR_FINETUNE, LR_FINAL, LR_TRIM)
    seeds = (SEED_QAT, SEED_STEP, SEED_FINAL, SEED_TRIM)
    with progress.bar("compress", total=len(precisions)) as bar:
        for k, prec in enumerate(precisions):
            prec = _with_input(prec, t_in)
            model, cost = _candidate(ctx, copy.deepcopy(teacher), prec, k, sch, train, lrs, seeds)
            val = score(model, data.X_val, data.y_val, data.task) if fits(cost, aim) else None
            history.append({"precision": _prec_dict(prec), "fits": val is not None, "cost": cost,
                            **({"val": val} if val is not None else {})})
            if val is None:
                bar.advance(info=f"{prec.weight_bits}b weights: no fit")
                continue
            bar.advance(info=f"{prec.weight_bits}b weights: val {val:.3f}")
            if best is None or val > best[0]:
                best, worse = (val, model, prec, cost), 0
            else:
                worse += 1
            if worse >= 2:  # past the peak of accuracy against precision under a fixed budget
                break
    if best is None:
        cheapest = min((h["cost"] for h in history), key=lambda c: c.get(binding_resource(c, limits), 0))
        res = binding_resource(cheapest, limits)
        raise BudgetError(
            f"budget {_fmt(limits)} not reached on {board.name}: the smallest network after pruning costs "
            f"{_fmt(cheapest)}; {res} binds ({cheapest[res]} > {aim[res]}, the limit less the cost model's "
            f"{sch.headroom:.0%} headroom)")
    _, model, prec, cost = best
    meta = dict(net.metadata, compressed=True, method=method, distill=sch.distill, seed=seed, board=board.name,
                budget=limits, precision=_prec_dict(prec))
    out = shrink_cnn(network_from_qcnn(model, net.name, meta))
    out.metadata["channels"] = {r["name"]: {"kept": r["kept"], "pruned": r["pruned"], "sparsity": float(r["sparsity"])}
                                for r in channel_report(out, net)}
    test = score(out, data.X_test, data.y_test, data.task)
    result = CompressResult(out, float_score, test, "accuracy" if data.task == "classification" else "neg_mse",
                            total_cost(network_cost(out, board, mapping)), limits, prec, history,
                            time.perf_counter() - t_start)
    if hasattr(result, "epochs"):
        result.epochs = ctx.spent
    return result


def _candidate(ctx: _CnnSearch, model: QCNN, prec: Precision, k: int, sch: Any, train, lrs, seeds):
    """One precision's candidate: QAT, then pruning steps whose cost goals fall from the unpruned cost to the
    aim along the polynomial schedule, a final fine-tune, trims; and its cost."""
    lr_qat, lr_ft, lr_final, lr_trim = lrs
    s_qat, s_step, s_final, s_trim = seeds
    seed = ctx.seed
    assign_types(model, prec, ctx.data.X_train)
    train(model, ctx.data, sch.epochs, lr_qat, seed + s_qat * k, ctx.teacher)
    ctx.spent += sch.epochs
    assign_types(model, prec, ctx.data.X_train)
    cost = ctx.cost(model)
    start = dict(cost)
    steps = 0
    for goal in polynomial_schedule(1.0, sch.prune_steps):
        if fits(cost, ctx.aim):
            break
        # cost is not proportional to what is pruned (a channel takes its share of two layers):
        # each step aims at a cost, not at a count
        step_aim = {r: int(max(v, start.get(r, 0) - goal * (start.get(r, 0) - v))) for r, v in ctx.aim.items()}
        cost = ctx.prune_step(model, prec, step_aim, sch.finetune_epochs, lr_ft, seed + s_step * k + steps)
        steps += 1
    while not fits(cost, ctx.aim) and steps < sch.prune_steps + sch.extra_steps:
        before = ctx.items(model)
        cost = ctx.prune_step(model, prec, ctx.aim, sch.finetune_epochs, lr_ft, seed + s_step * k + steps)
        steps += 1
        if ctx.items(model) == before:
            break  # nothing left to prune
    if not fits(cost, ctx.aim):
        return model, cost
    train(model, ctx.data, sch.final_epochs, lr_final, seed + s_final * k, ctx.teacher)
    ctx.spent += sch.final_epochs
    assign_types(model, prec, ctx.data.X_train)
    cost = ctx.cost(model)
    # fine-tuning moves weights, which can change their price: trim until it fits again
    for trim in range(sch.extra_steps):
        if fits(cost, ctx.aim):
            break
        cost = ctx.prune_step(model, prec, ctx.aim, max(sch.finetune_epochs // 2, 1), lr_trim, seed + s_trim * k + trim)
    for _ in range(3):  # a last cut without fine-tuning, which cannot move the cost over again
        if fits(cost, ctx.aim):
            break
        cost = ctx.prune_step(model, prec, ctx.aim, 0, lr_trim, 0)
    return model, cost
