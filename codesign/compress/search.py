"""Compression under a resource budget: the co-design search, one loop for MLPs and CNNs.

For each candidate precision (cheapest first), the network is trained quantization-aware
(``qcnn.QCNN``, any graph), then pruned gradually with fine-tuning between steps until the
analytic cost model says it fits the budget; the candidate with the best validation score wins.
With several precisions each is first screened on a short schedule and the best searched again
on a long one. Accuracy is reported on the test split only. A budget that even the smallest
reachable network misses is an error naming the smallest cost reached and the resource that binds.

The unit pruning removes is the choice of ``method``: single weights ("hardware": loss per LUT;
"magnitude": |w|) of Dense layers and kernels alike, whole neurons and channels ("structured":
measured loss per LUT saved), or CSD digits ("digits": the hardware ranking, where a weight may also
lose its lowest digit instead of all of them: per-weight widths on the layer's grid, ``digits``). Steps are sized against the cost model: an MLP's by a count of units
from a sparsity schedule, a CNN's by a cost goal, since a channel takes its share of two layers and
its line buffers and the cost is far from proportional to what is pruned.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from codesign.board import Board
from codesign.budget import Budget, format_budget
from codesign.compress.channels import alive_units, channel_report, channel_scores, prune_channels, shrink
from codesign.compress.cost import binding_resource, fits, network_cost, total_cost
from codesign.compress.digits import DIGITS, digit_count, digit_scores, hold, remove_digits
from codesign.compress.energy_cost import with_energy
from codesign.compress.fold_choice import (candidate_iis, choose_fold, designed_ii, foldable, folded_price, over_ratio,
                                          require_foldable, reuse_at, with_reuse)
from codesign.compress.narrow import narrow_candidate, narrow_wanted
from codesign.compress.prune import METHODS as PRUNE_METHODS, polynomial_schedule, prune_weights, scores
from codesign.compress.qat import Precision
from codesign.compress.qcnn import (QCNN, QConv, assign_types, equalize_if_better, is_cnn, network_from_qcnn,
                                    qcnn_from_network)
from codesign.compress.quantize import integer_bits_for
from codesign.core.fixed import FixedType
from codesign.core.network import Network
from codesign.errors import BudgetError, ConfigError
from codesign.importers.data import Dataset, check_fits, shaped_for
from codesign.progress import SILENT, Reporter

METHODS = (*PRUNE_METHODS, DIGITS)  # digits: the hardware ranking, plus rounding single weights to fewer CSD digits
NARROW_METHODS = ("hardware", DIGITS)  # the searches that may take a narrow start; the baselines stay pure pruning
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
    model: Any = field(default=None, repr=False)  # the trained QCNN behind ``network`` (what ``tighten`` continues)


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


def train(model: QCNN, data: Dataset, epochs: int, lr: float, seed: int, teacher: QCNN | None = None,
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
            hold(model)  # weights a digit step rounded stay where it put them
            opt.step()
    model.eval()


def score(model: QCNN | Network, X: np.ndarray, y: np.ndarray, task: str) -> float:
    """Accuracy for classification, negative MSE for regression."""
    if isinstance(model, Network):  # flat samples, as the search's QCNN reads them, in the network's own shape
        out = model.forward(X.reshape(len(X), *model.input_shape) if X.ndim == 2 else X)
    else:
        with torch.no_grad():
            out = model(torch.tensor(X, dtype=torch.float64)).numpy()
    if task == "classification":
        return float(np.mean(np.argmax(out, axis=1) == y))
    return -float(np.mean((out.reshape(len(y), -1) - y.reshape(len(y), -1)) ** 2))


def _cost(model: QCNN, board: Board, mapping: str, energy_X: np.ndarray | None = None) -> dict[str, int]:
    """The cost of the network the search would return now: without the units pruning has cut off; with
    ``energy_X`` (an energy budget), its energy per inference in pJ by the fast activity model. A candidate
    the search folded (``fold_ii``, set by ``_choose_fold``) is priced folded to that II."""
    return _price(shrink(network_from_qcnn(model, "candidate", {})), board, mapping, energy_X, _fold_ii(model))


def _fold_ii(model: QCNN) -> int:
    """The target II the search chose for this candidate (1: fully parallel, or not chosen yet)."""
    return getattr(model, "fold_ii", None) or 1


def _price(net: Network, board: Board, mapping: str, energy_X: np.ndarray | None, ii: int = 1) -> dict[str, int]:
    if ii > 1:  # no energy term with a fold: _choose_fold keeps such a candidate fully parallel
        return folded_price(net, ii, board.synth_family, dsp=mapping != "lut", board=board)
    return with_energy(total_cost(network_cost(net, board, mapping)), net, board, energy_X, mapping)


def _fits(model: QCNN, board: Board, mapping: str, aim: dict[str, int], energy_X: np.ndarray | None) -> bool:
    """``fits(_cost(...), aim)``, deciding from the unpipelined price where that already misses: pipelining only
    adds (flip-flops, and shift-register LUTs), and its register placement is most of the price's time."""
    net = shrink(network_from_qcnn(model, "candidate", {}))
    if net.is_chain and len(net.input_shape) == 1 and set(aim) <= {"lut", "dsp"} and _fold_ii(model) == 1:
        if not fits(total_cost(network_cost(net, board, mapping, clock_mhz=0)), aim):
            return False
    return fits(_price(net, board, mapping, energy_X, _fold_ii(model)), aim)


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
RANKING_GAP = 0.01  # the screened best this far below float on validation: the other rankings are screened too

# learning rates of the four kinds of training run (Adam)
LR_QAT, LR_FINETUNE, LR_FINAL, LR_TRIM = 3e-3, 1e-3, 5e-4, 2e-4
# each training run's shuffling seed is seed + offset × candidate (+ step): distinct and reproducible
SEED_QAT, SEED_STEP, SEED_FINAL, SEED_TRIM, SEED_TIGHTEN = 1, 100, 7, 1000, 5000


# CNN training runs cost ~10x an MLP's per epoch (float64 convolutions): the default schedule is shorter
CNN_SCHEDULE_EPOCHS = {"epochs": 30, "finetune_epochs": 4, "final_epochs": 20, "prune_steps": 8, "extra_steps": 6}
# The tensors of the networks we train (batches of 64, layers of tens of units or channels) are too small
# for intra-op threads to pay, and when the cores are shared the threads wait on each other: on a busy 2-core
# machine one thread trained digits-cnn 4x and the digits MLP 5-20x faster (wall and CPU) than torch's
# default of two. One thread also gives the same float sums (and the same trained network) on any machine.
TRAIN_THREADS = 1
MIN_WIDTH = 1  # units (neurons, channels) every layer keeps under structured pruning


def schedule_for(net: Network, schedule: Schedule) -> Schedule:
    """The CNN default schedule for a CNN when ``schedule`` is the default, else ``schedule`` as given."""
    return replace(schedule, **CNN_SCHEDULE_EPOCHS) if is_cnn(net) and schedule == Schedule() else schedule


@contextlib.contextmanager
def _train_threads() -> Iterator[None]:
    """``TRAIN_THREADS`` torch threads while the search trains, torch's count again after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class _Search:
    """What every step of one search shares; ``method`` chooses the unit pruning removes, ``by_cost`` how a
    step is sized (a cost goal, for a CNN, or a count)."""

    data: Dataset
    budget: Budget
    aim: dict[str, int]
    method: str
    mapping: str
    teacher: QCNN | None
    seed: int
    spent: list[int] = field(default_factory=lambda: [0])  # epochs trained so far (mutable in a frozen context)
    by_cost: bool = False

    def cost(self, model: QCNN) -> dict[str, int]:
        energy_X = self.data.X_val if "energy" in self.budget.limits else None
        return _cost(model, self.budget.board, self.mapping, energy_X)

    def fits(self, model: QCNN, aim: dict[str, int]) -> bool:
        energy_X = self.data.X_val if "energy" in self.budget.limits else None
        return _fits(model, self.budget.board, self.mapping, aim, energy_X)

    def train(self, model: QCNN, epochs: int, lr: float, seed: int) -> None:
        train(model, self.data, epochs, lr, seed, self.teacher)
        self.spent[0] += epochs

    def items(self, model: QCNN) -> int:
        """What pruning counts: alive units (structured) or kept weights."""
        if self.method == "structured":
            return int(sum(a.sum() for a in alive_units(model)[:-1]))
        if self.method == DIGITS:
            return digit_count(model)
        return int(sum(s.mask.sum().item() for s in model.weighted()))

    def rank(self, model: QCNN) -> Any:
        """The pruning order of the model as it is now: units by measured loss per LUT saved (structured), or
        weights by ``prune.scores``."""
        d = self.data
        if self.method == "structured":
            return channel_scores(model, d.X_train, d.y_train, d.task, self.budget.board, self.mapping,
                                  min_width=MIN_WIDTH)
        if self.method == DIGITS:
            return digit_scores(model, d.X_train, d.y_train, d.task, self.budget.board.synth_family)
        return scores(model, d.X_train, d.y_train, d.task, self.method, self.budget.board.synth_family)

    def prune_step(self, model: QCNN, prec: Precision, n: int | None, epochs: int, lr: float, seed: int,
                   aim: dict[str, int] | None = None) -> dict[str, int]:
        """Prune ``n`` units (None: as many as it takes to fit ``aim``), fewer when fewer of the same ranking
        already fit ``aim`` (default: the search's), fine-tune, re-type; the new cost."""
        self_prune(model, self.data, self.method, *fewest_to_fit(model, self, n, aim))
        self.train(model, epochs, lr, seed)
        assign_types(model, prec, self.data.X_train)
        return self.cost(model)


def _floor(net: Network, ctx: _Search, prec: Precision) -> dict[str, int]:
    """The cost of the smallest network the search reaches: cheapest precision, and one weight per output
    (weights) or ``MIN_WIDTH`` units per layer (structured)."""
    model = qcnn_from_network(net)
    assign_types(model, prec, ctx.data.X_train[:256])
    if ctx.method == "structured":
        prune_channels(model, [(0.0, k, j) for k, a in enumerate(alive_units(model)[:-1]) for j in np.flatnonzero(a)],
                       10**9, MIN_WIDTH)
    else:
        with torch.no_grad():
            for s in model.weighted():
                m = s.mask.view(-1, s.mask.shape[-1])
                best = torch.argmax(torch.abs((s.weight * s.mask).view(-1, m.shape[1])), dim=0)
                keep = torch.zeros_like(m)
                keep[best, torch.arange(m.shape[1])] = 1.0
                m.copy_(keep)
    cost = ctx.cost(model)
    if (ctx.budget.ii or not fits(cost, ctx.budget.limits)) and _may_fold(ctx, net):  # and folded at the longest II
        model.fold_ii = candidate_iis(shrink(network_from_qcnn(model, "floor", {})), ctx.budget.ii)[-1]
        cost = min(cost, ctx.cost(model), key=lambda c: over_ratio(c, ctx.budget.limits))
    return cost


def _may_fold(ctx: _Search, net: Network) -> bool:
    """Whether the search may fold this network: a Dense chain on a flat input or a streaming CNN chain, and no
    energy term (the folded design has no energy model yet)."""
    return foldable(net) and "energy" not in ctx.budget.limits


def _choose_fold(ctx: _Search, model: QCNN, cost: dict[str, int]) -> dict[str, int]:
    """The II this candidate is priced at from now on (``fold_choice.choose_fold``, once: a candidate continued
    from a screened one keeps its II), recorded on the model; its price there."""
    if getattr(model, "fold_ii", None) is not None:
        return cost
    net = shrink(network_from_qcnn(model, "candidate", {}))
    if not _may_fold(ctx, net):
        model.fold_ii, model.fold = 1, None
        return cost
    c = choose_fold(net, cost, ctx.aim, ctx.budget.board.synth_family, ctx.mapping != "lut", ctx.budget.ii,
                    ctx.budget.board)
    model.fold_ii, model.fold = c.ii, (c if c.ii > 1 or ctx.budget.ii else None)
    return c.cost if c.ii > 1 else cost


def compress(net: Network, data: Dataset, budget: Budget, method: str = "hardware", seed: int = 0,
             input_type: FixedType | None = None, precisions: tuple[Precision, ...] = PRECISIONS,
             schedule: Schedule = Schedule(), progress: Reporter = SILENT) -> CompressResult:
    """A sparse fixed-point Network that fits ``budget`` at the best validation score found.

    For each precision (cheapest first): QAT, then pruning steps until the cost model says it
    fits, a final fine-tune, and trims if that moved it over. The search aims
    ``schedule.headroom`` below the LUT and FF limits, a margin for the analytic model's error;
    the flow then judges the fit on the synthesized design (``tighten``)."""
    if method not in METHODS:
        raise ConfigError(f"pruning method must be one of {METHODS}, not {method!r}")
    with _train_threads():
        return _compress(net, data, budget, method, seed, input_type, precisions or PRECISIONS,
                         schedule_for(net, schedule), progress)


def _compress(net: Network, data: Dataset, budget: Budget, method: str, seed: int, input_type: FixedType | None,
              precisions: tuple[Precision, ...], schedule: Schedule, progress: Reporter) -> CompressResult:
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    board, limits = budget.board, budget.limits
    if not limits:
        raise BudgetError("compress needs a budget, e.g. --budget lut=0.25,dsp=0")
    require_foldable(net, budget.ii)
    if budget.ii and "energy" in limits:
        raise ConfigError(f"budget ii={budget.ii} with energy: a folded design has no energy model yet; give one of them")
    data = shaped_for(data, net.input_shape)  # flat digits for an 8x8x1 CNN; others are left to check_fits
    check_fits(data, net.input_shape, net.output_shape[-1], net.name)
    mapping = "lut" if budget.lut_only else "auto"
    t_in = input_type or net.input_type or data.input_type or default_input_type(data.X_train)

    teacher = qcnn_from_network(net)
    float_score = score(teacher, data.X_test, data.y_test, data.task)
    aim = {k: int(v * (1 - schedule.headroom)) if k in ("lut", "ff") else v for k, v in limits.items()}
    # energy is not proportional to the kept weights (the part's static energy is a floor): steps by cost goals
    ctx = _Search(data, budget, aim, method, mapping, teacher if schedule.distill else None, seed,
                  by_cost=is_cnn(net) or "energy" in limits)
    floor = _floor(net, ctx, _with_input(precisions[0], t_in))
    if not fits(floor, limits):
        res = binding_resource(floor, limits)
        what = f"{MIN_WIDTH} unit per layer" if method == "structured" else "one weight per output"
        raise BudgetError(
            f"budget {_fmt(limits)} is infeasible on {board.name}: the smallest network the search reaches "
            f"(precision {precisions[0].weight_bits}-bit weights, {what}) costs {_fmt(floor)}; "
            f"{res} binds ({floor[res]} > {limits[res]})"
        )
    best: tuple[float, QCNN, Precision, dict[str, int]] | None = None
    fitting: list[tuple[float, QCNN, Precision, dict[str, int]]] = []  # the screened candidates that fit
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
                            **({"val": val} if val is not None else {}),
                            **({"ii": _fold_ii(model)} if _fold_ii(model) > 1 else {})})
            if val is None:
                bar.advance(info=f"{prec.weight_bits}b weights: no fit")
                continue
            bar.advance(info=f"{prec.weight_bits}b weights: val {val:.3f}")
            clear = best is not None and data.task == "classification" and val < best[0] - CLEAR_DROP
            fitting.append((val, model, prec, cost))
            smaller_ii = best is not None and _fold_ii(model) < _fold_ii(best[1]) and _level(
                val, best[0], len(data.y_val), data.task)  # a tie goes to the faster design
            if best is None or val > best[0] or smaller_ii:
                best, worse = (val, model, prec, cost), 0
            else:
                worse += 1
            # under a fixed budget, accuracy against precision rises, peaks and falls (wider
            # weights leave fewer of them): one candidate clearly past the peak, or two, end the search
            if worse >= 2 or clear:
                bar.advance(info="past the best precision")
                break
        if multi and best is not None:
            best = _after_screen(ctx, teacher, best, fitting, len(precisions), schedule, first, history, bar)
    if best is None:
        cheapest = min((h["cost"] for h in history), key=lambda c: c.get(binding_resource(c, limits), 0))
        res = binding_resource(cheapest, limits)
        raise BudgetError(
            f"budget {_fmt(limits)} not reached on {board.name}: the smallest network after pruning costs "
            f"{_fmt(cheapest)}; {res} binds ({cheapest[res]} > {aim[res]}, the limit less the cost model's "
            f"{schedule.headroom:.0%} headroom)")
    _, model, prec, cost = best
    meta = dict(net.metadata, compressed=True, method=method, distill=schedule.distill, seed=seed, board=board.name,
                budget=limits, precision=_prec_dict(prec))
    out = _export(model, net, net.name, meta)
    test = score(out, data.X_test, data.y_test, data.task)
    energy_X = data.X_val if "energy" in limits else None
    return CompressResult(out, float_score, test, "accuracy" if data.task == "classification" else "neg_mse",
                          _price(out, board, mapping, energy_X, _fold_ii(model)), limits, prec, history,
                          time.perf_counter() - t_start, ctx.spent[0], model)


def _export(model: QCNN, original: Network, name: str, meta: dict) -> Network:
    """The trained model as the Network the search returns (dead units shrunk away); a CNN's records the
    channels kept and pruned per layer against ``original``, for the report."""
    out = shrink(network_from_qcnn(model, name, meta))
    if _fold_ii(model) > 1:  # the search's fold: each Dense layer's reuse, what the RTL and HLS steps build
        out = with_reuse(out, reuse_at(out, _fold_ii(model)))
    if getattr(model, "fold", None) is not None:
        f = model.fold
        out.metadata["fold"] = {"ii": designed_ii(out), "target_ii": f.ii, "reason": f.reason, "bound_by": f.bound_by}
    if is_cnn(original):
        out.metadata["channels"] = {r["name"]: {"kept": r["kept"], "pruned": r["pruned"],
                                                "sparsity": float(r["sparsity"])} for r in channel_report(out, original)}
    return out


def tighten(r: CompressResult, net: Network, data: Dataset, budget: Budget, measured: dict[str, int],
            schedule: Schedule = Schedule()) -> CompressResult:
    """``r`` pruned further, with fine-tuning, for a design that synthesis (``measured``) put over the
    budget: the aim is scaled by how far the cost model was off on this network, per resource.

    The cost model is within a few per cent on dense and moderately sparse layers, but it
    under-prices some sparse low-bit ones by up to 15 % (bench/methods.py); a search aimed below
    the budget on the model then lands above it on Yosys. Continuing from the trained network
    costs a few fine-tunes, where searching again would cost the whole schedule."""
    with _train_threads():
        return _tighten(r, net, shaped_for(data, net.input_shape), budget, measured, schedule_for(net, schedule))


def _tighten(r: CompressResult, net: Network, data: Dataset, budget: Budget, measured: dict[str, int],
             schedule: Schedule) -> CompressResult:
    t_start = time.perf_counter()
    model = copy.deepcopy(r.model)
    mapping = "lut" if budget.lut_only else "auto"
    err = {k: measured.get(k, 0) / max(r.cost.get(k, 0), 1) for k in budget.limits}
    aim = {k: int(v * (1 - schedule.headroom) / max(err[k], 1.0)) if k in ("lut", "ff") else v
           for k, v in budget.limits.items()}
    meta = r.network.metadata
    seed = int(meta.get("seed", 0))
    ctx = _Search(data, budget, aim, meta.get("method", "hardware"), mapping,
                  qcnn_from_network(net) if meta.get("distill", True) else None, seed, by_cost=is_cnn(net))
    cost, steps = ctx.cost(model), 0
    while not fits(cost, aim) and steps < schedule.prune_steps + schedule.extra_steps:
        cost = ctx.prune_step(model, r.precision, _small_step(ctx, model), schedule.finetune_epochs, LR_FINETUNE,
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
    out = _export(model, net, r.network.name, dict(r.network.metadata, tightened=_fmt_err(err)))
    history = r.history + [{"tightened": {k: round(v, 3) for k, v in err.items()}, "aim": aim, "steps": steps,
                            "epochs": ctx.spent[0]}]
    return replace(r, network=out, score=score(out, data.X_test, data.y_test, data.task),
                   cost=total_cost(network_cost(out, budget.board, mapping)), history=history,
                   seconds=r.seconds + time.perf_counter() - t_start, epochs=r.epochs + ctx.spent[0], model=model)


def _small_step(ctx: _Search, model: QCNN, share: int = 30) -> int | None:
    """A trim's size: a ``share``-th of the units (a count), or, sized by cost, as few as fit the aim (None)."""
    return None if ctx.by_cost else max(1, ctx.items(model) // share)


def _fmt_err(err: dict[str, float]) -> str:
    return ",".join(f"{k}×{v:.3f}" for k, v in err.items() if v > 1.0) or "nothing"


def _refine(ctx: _Search, teacher: QCNN, best: tuple, k: int, sch: Schedule, history: list[dict[str, Any]],
            tied: list[tuple] | tuple = ()) -> tuple:
    """The screened best precision searched again from the float network on the longer schedule; the better
    of the two by validation score (the refined on a tie). With candidates ``tied`` with it on validation,
    each of them and the best is refined instead by continuing from its screened network (seeds ``k``,
    ``k`` + 1, ...), and the best refined one by validation score (level: the lower validation loss) is kept
    if it scores at least the screened best.

    Ties are refined because the short screen cannot separate them and the cheaper one need not train
    further best; they continue from the screen because a refine from float lost what the screen had found:
    digits-resnet at lut=0.3 screened its 4- and 6-bit candidates both at 210 of 216 (the 6-bit at 98.6 % on
    test); refined from float the 6-bit won at 212 but tested 96.9 %, continued 213 and 97.8 %
    (docs/benchmarks/cnn-pruning.md). Without a tie the search runs as before."""
    refined = []
    for i, c in enumerate([best, *tied]):
        prec, before = c[2], ctx.spent[0]
        start = c[1] if tied else teacher
        model, cost = _candidate(ctx, copy.deepcopy(start), prec, k + i, sch.scaled(sch.refine))
        val = score(model, ctx.data.X_val, ctx.data.y_val, ctx.data.task) if fits(cost, ctx.aim) else None
        history.append({"precision": _prec_dict(prec), "refined": True, "fits": val is not None, "cost": cost,
                        "epochs": ctx.spent[0] - before, "equalized": model.equalized,
                        **({"val": val} if val is not None else {}), **({"tie": True} if i else {})})
        if val is not None:
            refined.append((val, model, prec, cost))
    if not refined:
        return best
    top = refined[0] if len(refined) == 1 else max(refined, key=lambda c: (c[0], -_val_loss(c[1], ctx.data)))
    return top if top[0] >= best[0] else best


def _after_screen(ctx: _Search, teacher: QCNN, best: tuple, fitting: list[tuple], k: int, sch: Schedule,
                  first: Schedule, history: list[dict[str, Any]], bar: Any) -> tuple:
    """The screened best refined (``_refine``), with the extra candidates spent only where the validation gap
    is: none once it reaches the float network; the other rankings screened too 1 pt or more below it
    (``_screen_ranking``: |w|, and whole channels for a CNN); a narrower dense start where it keeps under a
    quarter of the weights (``_narrow``)."""
    data = ctx.data
    float_val = score(teacher, data.X_val, data.y_val, data.task)
    if _reached_teacher(best[0], float_val):
        bar.advance(info=f"{best[2].weight_bits}b weights: val {best[0]:.3f} reached the float network's; not refined")
        return best
    tied = [c for c in fitting if c[1] is not best[1] and _level(c[0], best[0], len(data.y_val), data.task)]
    refine_ctx = ctx
    if ctx.method == "hardware" and data.task == "classification" and float_val - best[0] >= RANKING_GAP:
        for ranking in screen_rankings(teacher):
            bar.advance(0, info=f"{best[2].weight_bits}b weights: screening the {ranking} ranking")
            screened = _screen_ranking(ctx, ranking, teacher, best, k, first, history)
            if screened[1] is not best[1]:
                best, tied, refine_ctx = screened, [], replace(ctx, method=ranking)
    n_before = len(history)
    best = _refine(refine_ctx, teacher, best, k, sch, history, tied)
    for h in history[n_before:] if refine_ctx is not ctx else ():
        h["ranking"] = refine_ctx.method
    bar.advance(info=f"{best[2].weight_bits}b weights refined: val {best[0]:.3f}")
    if ctx.method in NARROW_METHODS and _fold_ii(best[1]) == 1 and narrow_wanted(best[1], best[0], teacher, float_val,
                                                                                   data.task):
        bar.advance(0, info=f"{best[2].weight_bits}b weights: training a narrower dense network")
        best = _narrow(ctx, teacher, best, sch, history)
    return best


def screen_rankings(teacher: QCNN) -> tuple[str, ...]:
    """The other rankings screened where the screened best is ``RANKING_GAP`` below float: |w| always; whole
    channels too for a CNN, where each channel carries a fixed price (its line buffers, pooling and output logic)
    that pruning single weights never frees: digits-resnet at 4,000 LUTs, two seeds, reached 69-74 % by channels
    and 23-30 % by single weights (bench/methods.py)."""
    return ("magnitude", "structured") if any(isinstance(s, QConv) for s in teacher.stages) else ("magnitude",)


def _screen_ranking(ctx: _Search, ranking: str, teacher: QCNN, best: tuple, k: int, first: Schedule,
                    history: list[dict[str, Any]]) -> tuple:
    """``best`` or its precision screened again with ``ranking`` (``prune.scores``' "magnitude", or whole
    units: "structured"), whichever validates better (``best`` on a tie); the refine then uses the winner's.

    Which ranking wins depends on the network: loss per LUT lifted bn-64-64-32 at 2,500 LUTs from 66.7 to
    82.2 %, but on the digits MLP at 4-bit weights |w| won at 2,500 and 4,000 LUTs (docs/benchmarks/methods.md).
    Validation decides, as it decides the precision, on one more screen-length run, spent only where the
    screened best is ``RANKING_GAP`` or more below the float network (where the refine runs anyway)."""
    prec, before = best[2], ctx.spent[0]
    model, cost = _candidate(replace(ctx, method=ranking), copy.deepcopy(teacher), prec, k, first)
    val = score(model, ctx.data.X_val, ctx.data.y_val, ctx.data.task) if fits(cost, ctx.aim) else None
    history.append({"precision": _prec_dict(prec), "ranking": ranking, "fits": val is not None,
                    "cost": cost, "epochs": ctx.spent[0] - before, "equalized": model.equalized,
                    **({"val": val} if val is not None else {}),
                    **({"ii": _fold_ii(model)} if _fold_ii(model) > 1 else {})})
    return (val, model, prec, cost) if val is not None and val > best[0] else best


def _narrow(ctx: _Search, teacher: QCNN, best: tuple, sch: Schedule, history: list[dict[str, Any]]) -> tuple:
    """``best`` or a narrower dense network trained from scratch at its precision on the refine's epochs
    (``narrow``), whichever validates better (``best`` on a tie)."""
    prec, before = best[2], ctx.spent[0]
    long = sch.scaled(sch.refine)
    epochs = long.epochs + long.finetune_epochs * long.prune_steps + long.final_epochs

    def trim(model: QCNN) -> dict[str, int]:
        return _trim(ctx, model, prec, ctx.cost(model), sch, ctx.seed + SEED_TRIM + 900)

    model, cost, info = narrow_candidate(ctx, teacher, prec, epochs, trim)
    val = score(model, ctx.data.X_val, ctx.data.y_val, ctx.data.task) if fits(cost, ctx.aim) else None
    history.append({"precision": _prec_dict(prec), "narrow": {"scale": info.scale, "widths": list(info.widths),
                    "probe_ratio": info.probe_ratio}, "fits": val is not None, "cost": cost,
                    "epochs": ctx.spent[0] - before, **({"val": val} if val is not None else {})})
    if val is not None and val > best[0]:
        model.fold_ii, model.fold = 1, None
        return val, model, prec, cost
    return best


def _reached_teacher(val: float, float_val: float) -> bool:
    """Whether a screened candidate's validation score is at least the float network's (``float_val``): then
    the refine is not run. Distillation from that network has nothing left to teach it, and validation cannot show a
    refined one better than the screened one it must beat (the default flow: the 4-bit candidate screened at
    211 of 216, the float network 209; refined from float it scored 204 and was dropped, 60 % of the
    search's time)."""
    return val >= float_val


def _level(a: float, b: float, n: int, task: str) -> bool:
    """Whether two validation scores are level: the same number of ``n`` samples right (classification), equal
    (regression)."""
    return abs(a - b) * n < 0.5 if task == "classification" else a == b


def _val_loss(model: QCNN, data: Dataset) -> float:
    """The validation loss (cross-entropy or MSE): finer than accuracy on a few hundred samples."""
    with torch.no_grad():
        out = model(torch.tensor(data.X_val, dtype=torch.float64))
    return float(_loss(out, torch.tensor(data.y_val), data.task, None, 0.0))


def _candidate(ctx: _Search, model: QCNN, prec: Precision, k: int, sch: Schedule) -> tuple[QCNN, dict[str, int]]:
    """One precision's candidate: QAT, pruning until it fits the aim, final fine-tune, trims; and its cost."""
    seed = ctx.seed
    model.equalized = sch.equalize and equalize_if_better(model, prec, ctx.data.X_train[:1024])
    assign_types(model, prec, ctx.data.X_train)
    ctx.train(model, sch.epochs, LR_QAT, seed + SEED_QAT * k)
    cost = _choose_fold(ctx, model, ctx.cost(model))
    start, total = dict(cost), ctx.items(model)
    res = binding_resource(cost, ctx.aim)
    # counted steps: cost is roughly proportional to the kept weights, so aim a little below the budget;
    # cost goals: each step's goal falls from the unpruned cost to the aim along the same schedule
    target = 1.0 if ctx.by_cost else min(0.98, max(0.0, 1.0 - 0.9 * ctx.aim[res] / max(cost[res], 1)))
    steps = 0
    for goal in polynomial_schedule(target, sch.prune_steps):
        if fits(cost, ctx.aim):
            break
        if ctx.by_cost:
            n, step_aim = None, {r: int(max(v, start.get(r, 0) - goal * (start.get(r, 0) - v))) for r, v in ctx.aim.items()}
        else:
            n, step_aim = ctx.items(model) - int(round(total * (1.0 - goal))), None
        cost = ctx.prune_step(model, prec, n, sch.finetune_epochs, LR_FINETUNE, seed + SEED_STEP * k + steps, step_aim)
        steps += 1
    while not fits(cost, ctx.aim) and steps < sch.prune_steps + sch.extra_steps:
        before = ctx.items(model)
        cost = ctx.prune_step(model, prec, _small_step(ctx, model, 10), sch.finetune_epochs, LR_FINETUNE,
                              seed + SEED_STEP * k + steps)
        steps += 1
        if ctx.items(model) == before:
            break  # nothing left to prune
    if not fits(cost, ctx.aim):
        return model, cost
    ctx.train(model, sch.final_epochs, LR_FINAL, seed + SEED_FINAL * k)
    assign_types(model, prec, ctx.data.X_train)
    return model, _trim(ctx, model, prec, ctx.cost(model), sch, seed + SEED_TRIM * k)


def _trim(ctx: _Search, model: QCNN, prec: Precision, cost: dict[str, int], sch: Schedule, seed: int) -> dict[str, int]:
    """Fine-tuning moves weights, which can change their price: small pruning steps until it fits
    the aim again (at most ``sch.extra_steps``), then at most three cuts without fine-tuning, which
    cannot move it over again; the cost after them."""
    for trim in range(sch.extra_steps):
        if fits(cost, ctx.aim):
            break
        cost = ctx.prune_step(model, prec, _small_step(ctx, model), sch.finetune_epochs // 2, LR_TRIM, seed + trim)
    for _ in range(3):
        if fits(cost, ctx.aim):
            break
        cost = ctx.prune_step(model, prec, _small_step(ctx, model), 0, LR_TRIM, 0)
    return cost


def fewest_to_fit(model: QCNN, ctx: _Search, n: int | None,
                  aim: dict[str, int] | None = None) -> tuple[int, Any]:
    """``n`` units, or fewer when pruning fewer of the same already brings the cost within ``aim`` (default
    the search's); with ``n`` None, the fewest that do (everything prunable when nothing fits). And the
    ranking they were chosen by (ranked once: the trials prune copies by it).

    A pruning step sized by the schedule can land far below the budget (cost is not proportional
    to the kept weights: each output's logic stays until its last weight goes), and weights
    pruned below the budget are accuracy given away. The cost model takes milliseconds, so the
    step is bisected on copies before it is taken."""
    ranking = ctx.rank(model)
    aim = ctx.aim if aim is None else aim

    def fits_after(k: int) -> bool:
        trial = copy.deepcopy(model)
        self_prune(trial, ctx.data, ctx.method, k, ranking)
        return ctx.fits(trial, aim)

    if n is None:  # double, then bisect
        top = ctx.items(model)
        hi = 1
        while hi < top and not fits_after(hi):
            hi *= 2
        if hi >= top:
            return top, ranking
        lo, tol = hi // 2, max(1, top // 256)  # pruning lo does not fit (or lo = 0), pruning hi does
    else:
        if n <= 1 or not fits_after(n):
            return n, ranking
        lo, hi, tol = 0, n, max(1, n // 64)
    while hi - lo > tol:
        mid = (lo + hi) // 2
        if fits_after(mid):
            hi = mid
        else:
            lo = mid
    return hi, ranking


def self_prune(model: QCNN, data: Dataset, method: str, n: int, ranking: Any) -> None:
    """Remove about ``n`` more units by ``ranking``: weights, or whole neurons and channels (structured)."""
    if n <= 0:
        return
    if method == "structured":
        prune_channels(model, ranking, n, MIN_WIDTH)
    elif method == DIGITS:
        remove_digits(model, ranking, n)
    else:
        prune_weights(model, ranking, n)


def _prec_dict(p: Precision) -> dict[str, Any]:
    return {"weight_bits": p.weight_bits, "act_bits": p.act_bits, "out_bits": p.out_bits,
            "input_type": p.input_type.to_hls() if p.input_type else None}


def _fmt(d: dict[str, int]) -> str:
    return format_budget(d)
