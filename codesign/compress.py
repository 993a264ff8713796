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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from codesign.board import Board, load_board
from codesign.budget import parse_budget
from codesign.cost import binding_resource, fits, network_cost, total_cost
from codesign.data import Dataset, check_fits, load_dataset
from codesign.errors import BudgetError
from codesign.fixed import FixedType
from codesign.network import Network
from codesign.progress import SILENT, Reporter
from codesign.prune import polynomial_schedule, prune_neurons, prune_weights, scores
from codesign.qat import Precision, QMLP, assign_types, network_from_qmlp, qmlp_from_network
from codesign.quantize import integer_bits_for

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


def compress(
    net: Network,
    data: str | Dataset = "digits",
    board: str | Board = "arty-a7-35",
    budget: str | dict | None = None,
    method: str = "hardware",
    distill: bool = True,
    seed: int = 0,
    input_type: FixedType | str | None = None,
    precisions: tuple[Precision, ...] = PRECISIONS,
    epochs: int = 60,
    finetune_epochs: int = 10,
    final_epochs: int = 40,
    prune_steps: int = 10,
    extra_steps: int = 8,
    headroom: float = 0.04,
    progress: Reporter = SILENT,
) -> CompressResult:
    """A sparse fixed-point Network that fits ``budget`` on ``board`` at the best validation score found.

    The search aims ``headroom`` below the LUT and FF limits, a margin for the analytic model's
    error (on the bench networks' totals it is -0.1 % to +9 % of Yosys); the flow
    then judges the fit on the synthesized design."""
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    board = load_board(board)
    data = load_dataset(data, seed)
    limits = parse_budget(budget, board)
    if not limits:
        raise BudgetError("compress needs a budget, e.g. --budget lut=0.25,dsp=0")
    n_out = net.output_shape[-1]
    check_fits(data, net.input_shape, n_out, net.name)
    mapping = "lut" if limits.get("dsp", None) == 0 else "auto"
    t_in = FixedType.parse(input_type) if isinstance(input_type, str) else input_type
    t_in = t_in or net.input_type or data.input_type or default_input_type(data.X_train)

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
    aim = {k: int(v * (1 - headroom)) if k in ("lut", "ff") else v for k, v in limits.items()}
    best: tuple[float, QMLP, Precision, dict[str, int]] | None = None
    history: list[dict[str, Any]] = []
    worse = 0
    with progress.bar("compress", total=len(precisions)) as bar:
        for k, prec in enumerate(precisions):
            prec = _with_input(prec, t_in)
            model = copy.deepcopy(teacher)
            assign_types(model, prec, data.X_train)
            train(model, data, epochs, 3e-3, seed + k, teacher if distill else None)
            cost = _cost(model, board, mapping)
            total = int(sum(layer.mask.sum().item() for layer in model.stages))
            res = binding_resource(cost, aim)
            # cost is roughly proportional to the kept weights: aim a little below the budget
            target = min(0.98, max(0.0, 1.0 - 0.9 * aim[res] / max(cost[res], 1)))
            steps = 0
            for goal in polynomial_schedule(target, prune_steps):
                if fits(cost, aim):
                    break
                kept = int(sum(layer.mask.sum().item() for layer in model.stages))
                n = kept - int(round(total * (1.0 - goal)))
                self_prune(model, data, method, board, fewest_to_fit(model, data, method, board, mapping, aim, n))
                train(model, data, finetune_epochs, 1e-3, seed + 100 * k + steps, teacher if distill else None)
                assign_types(model, prec, data.X_train)
                cost = _cost(model, board, mapping)
                steps += 1
            while not fits(cost, aim) and steps < prune_steps + extra_steps:
                kept = int(sum(layer.mask.sum().item() for layer in model.stages))
                self_prune(model, data, method, board, fewest_to_fit(model, data, method, board, mapping, aim,
                                                                     max(1, kept // 10)))
                train(model, data, finetune_epochs, 1e-3, seed + 100 * k + steps, teacher if distill else None)
                assign_types(model, prec, data.X_train)
                cost = _cost(model, board, mapping)
                steps += 1
            if not fits(cost, aim):
                history.append({"precision": _prec_dict(prec), "fits": False, "cost": cost})
                bar.advance(info=f"{prec.weight_bits}b weights: no fit")
                continue
            train(model, data, final_epochs, 5e-4, seed + 7 * k, teacher if distill else None)
            assign_types(model, prec, data.X_train)
            cost = _cost(model, board, mapping)
            # fine-tuning moves weights, which can change their price: trim until it fits again
            for trim in range(extra_steps):
                if fits(cost, aim):
                    break
                kept = int(sum(layer.mask.sum().item() for layer in model.stages))
                self_prune(model, data, method, board, fewest_to_fit(model, data, method, board, mapping, aim,
                                                                     max(1, kept // 30)))
                train(model, data, finetune_epochs // 2, 2e-4, seed + 1000 * k + trim, teacher if distill else None)
                assign_types(model, prec, data.X_train)
                cost = _cost(model, board, mapping)
            val = score(model, data.X_val, data.y_val, data.task)
            if not fits(cost, aim):  # re-sizing types after the last fine-tune can change the cost
                history.append({"precision": _prec_dict(prec), "fits": False, "cost": cost, "val": val})
                bar.advance()
                continue
            history.append({"precision": _prec_dict(prec), "fits": True, "cost": cost, "val": val})
            bar.advance(info=f"{prec.weight_bits}b weights: val {val:.3f}")
            if best is None or val > best[0]:
                best = (val, model, prec, cost)
                worse = 0
            else:
                worse += 1
            # under a fixed budget, accuracy against precision rises, peaks and falls (wider
            # weights leave fewer of them): two candidates past the peak end the search
            if worse >= 2:
                bar.advance(info="past the best precision")
                break
    if best is None:
        cheapest = min((h["cost"] for h in history), key=lambda c: c.get(binding_resource(c, limits), 0))
        res = binding_resource(cheapest, limits)
        raise BudgetError(
            f"budget {_fmt(limits)} not reached on {board.name}: the smallest network after pruning costs "
            f"{_fmt(cheapest)}; {res} binds ({cheapest[res]} > {limits[res]})"
        )
    _, model, prec, cost = best
    meta = dict(net.metadata, compressed=True, method=method, distill=distill, seed=seed, board=board.name,
                budget=limits, precision=_prec_dict(prec))
    out = shrink(network_from_qmlp(model, net.name, meta))
    test = score(out, data.X_test, data.y_test, data.task)
    return CompressResult(out, float_score, test, "accuracy" if data.task == "classification" else "neg_mse",
                          total_cost(network_cost(out, board, mapping)), limits, prec, history,
                          time.perf_counter() - t_start)


def fewest_to_fit(model: QMLP, data: Dataset, method: str, board: Board, mapping: str, aim: dict[str, int],
                  n: int) -> int:
    """``n``, or fewer when pruning fewer of the same weights already brings the cost within ``aim``.

    A pruning step sized by the schedule can land far below the budget (cost is not proportional
    to the kept weights: each output's logic stays until its last weight goes), and weights
    pruned below the budget are accuracy given away. The cost model takes milliseconds, so the
    step is bisected on copies before it is taken."""
    def fits_after(k: int) -> bool:
        trial = copy.deepcopy(model)
        self_prune(trial, data, method, board, k)
        return fits(_cost(trial, board, mapping), aim)

    if n <= 1 or not fits_after(n):
        return n
    lo, hi = 0, n  # pruning hi weights fits, pruning lo does not
    while hi - lo > max(1, n // 64):
        mid = (lo + hi) // 2
        if fits_after(mid):
            hi = mid
        else:
            lo = mid
    return hi


def self_prune(model: QMLP, data: Dataset, method: str, board: Board, n: int) -> None:
    """Remove about ``n`` more weights (whole neurons for the structured method)."""
    if n <= 0:
        return
    if method == "structured":
        per_neuron = max(1.0, sum(l.mask.sum().item() for l in model.stages) / sum(l.mask.shape[1] for l in model.stages))
        prune_neurons(model, data.X_train, max(1, int(n / per_neuron)))
    else:
        prune_weights(model, scores(model, data.X_train, method, board.synth_family), n)


def shrink(net: Network) -> Network:
    """Drop hidden neurons that can no longer affect the output (no inputs and no bias, or no
    outgoing weights), so structured pruning really removes them from the next layer too."""
    from codesign.layers import Dense

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
    from codesign.reference import exact_accum_type

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
