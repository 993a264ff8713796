"""Per-weight widths from the hardware-aware search: a weight rounded to fewer CSD digits.

The ``digits`` method prunes by the same loss-per-LUT knapsack as ``hardware`` (``prune.scores``), with one
more kind of step beside removing a weight: rounding it to the nearest value with one nonzero CSD digit
fewer (its lowest digit removed: 7 = 8 − 1 becomes 8, 5 = 4 + 1 becomes 4). A digit is a term of its
output's sum, what the cost model and the adder graph pay for, so a weight that keeps most of its value
in one digit need not keep the others the layer's grid gives it. Both steps are ranked together by the
rise in training loss they cause (second order, the Fisher approximation ``prune.loss_importance`` uses:
``δ² · mean g²`` for a change ``δ``) per LUT they free, and the unit a step counts is a CSD digit.

A rounded weight stays on the layer's grid (``weight_type`` is the envelope), so the reference, HLS, RTL
and QONNX export see an ordinary layer; it is frozen (``hold``: its gradient is zeroed) so that
fine-tuning does not move it back to more digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codesign.compress.prune import EXTRA_DIGIT_PRICE, loss_importance, weight_costs
from codesign.compress.qcnn import QCNN
from codesign.core.arith import CSD_MAX_DIGITS, csd_count

DIGITS = "digits"
# LUTs a removed digit frees, in units of its output's term price: the cost model charges every term in
# full. Pruning a weight is priced as ``weight_costs`` prices it (further digits at EXTRA_DIGIT_PRICE).
DIGIT_PRICE = 1.0


def lower_digit(q: np.ndarray) -> np.ndarray:
    """Each integer with its lowest nonzero CSD digit removed: the nearest integer with one digit fewer."""
    q = np.asarray(q).astype(np.int64)
    a = np.abs(q)
    low = np.bitwise_and(a, -a)  # the lowest set bit is the weight of the lowest CSD digit
    odd = a // np.where(low == 0, 1, low)
    digit = np.where(odd % 4 == 1, 1, -1)  # the non-adjacent form's lowest digit: +1 when odd ≡ 1 (mod 4)
    return np.sign(q) * (a - digit * low)


def weight_ints(stage) -> np.ndarray:
    """A typed stage's weights as integers of its ``weight_type`` (weight-shaped; pruned ones 0)."""
    with torch.no_grad():
        w = stage.effective_weight().numpy()
    return np.round(np.ldexp(w, stage.weight_type.frac)).astype(np.int64)


def digit_count(model: QCNN) -> int:
    """The nonzero CSD digits of all kept weights (a weight counts 1 before the model is typed)."""
    n = 0
    for s in model.weighted():
        if s.weight_type is None:
            n += int(s.mask.sum().item())
        else:
            n += int(csd_count(weight_ints(s)).sum())
    return n


@dataclass
class DigitRanking:
    """Per weighted stage (weight-shaped): the score of pruning each weight and of removing its lowest
    digit (lower goes first; +inf: not a step), and the integer the digit step leaves."""

    prune: list[np.ndarray]
    drop: list[np.ndarray]
    lowered: list[np.ndarray]


def digit_scores(model: QCNN, X: np.ndarray, y: np.ndarray, task: str, family: str = "xc7",
                 dsp_price: float = 50.0) -> DigitRanking:
    """Both kinds of step of every kept weight, scored by loss per LUT freed."""
    imp, costs = loss_importance(model, X, y, task), weight_costs(model, family, dsp_price)
    prune, drop, lowered = [], [], []
    for k, s in enumerate(model.weighted()):
        kept = s.mask.numpy() > 0
        prune.append(np.where(kept, imp[k] / np.maximum(costs[k], 1e-3), np.inf))
        if s.weight_type is None:
            drop.append(np.full(kept.shape, np.inf))
            lowered.append(np.zeros(kept.shape, dtype=np.int64))
            continue
        t = s.weight_type
        q = weight_ints(s)
        d = csd_count(q)
        low = lower_digit(q)
        # the loss curvature of the weight (imp = w² · mean g²), and the change the digit step makes
        fisher = np.where(q != 0, imp[k] / np.maximum(np.ldexp(q.astype(np.float64), -t.frac) ** 2, 1e-300), 0.0)
        delta = np.ldexp((low - q).astype(np.float64), -t.frac)
        term = costs[k] / (1.0 + EXTRA_DIGIT_PRICE * np.maximum(d - 1, 0))  # the output's term price
        ok = kept & (d >= 2) & (d <= CSD_MAX_DIGITS) & (low >= t.min_int) & (low <= t.max_int)
        drop.append(np.where(ok, delta**2 * fisher / np.maximum(DIGIT_PRICE * term, 1e-3), np.inf))
        lowered.append(low)
    return DigitRanking(prune, drop, lowered)


def remove_digits(model: QCNN, r: DigitRanking, n: int, keep_per_output: int = 1) -> int:
    """Take the lowest-scoring steps of ``r`` until ``n`` digits are gone (one step per weight: the ranking
    is of the values as they were); every output keeps ``keep_per_output`` weights. Returns the digits
    removed."""
    stages = model.weighted()
    flat = np.concatenate([np.concatenate([p.reshape(-1), d.reshape(-1)]) for p, d in zip(r.prune, r.drop)])
    sizes = [p.size for p in r.prune]
    offsets = np.cumsum([0] + [2 * s for s in sizes])
    kept = [s.mask.view(-1, s.mask.shape[-1]).numpy().sum(axis=0) for s in stages]
    ints = [weight_ints(s).reshape(-1) if s.weight_type is not None else None for s in stages]
    touched = [np.zeros(sz, dtype=bool) for sz in sizes]
    removed = 0
    for idx in np.argsort(flat, kind="stable"):
        if removed >= n or not np.isfinite(flat[idx]):
            break
        k = int(np.searchsorted(offsets, idx, side="right") - 1)
        i = int(idx - offsets[k])
        is_drop, i = i >= sizes[k], i % sizes[k]
        if touched[k][i]:
            continue
        s = stages[k]
        cols = s.mask.shape[-1]
        mask, weight = s.mask.view(-1), s.weight.data.view(-1)
        if is_drop:
            low = int(r.lowered[k].reshape(-1)[i])
            with torch.no_grad():
                weight[i] = float(np.ldexp(float(low), -s.weight_type.frac))
                frozen(s).view(-1)[i] = 1.0
            removed += 1
        else:
            if kept[k][i % cols] <= keep_per_output:
                continue
            with torch.no_grad():
                mask[i] = 0.0
            kept[k][i % cols] -= 1
            removed += int(csd_count(ints[k][i])) if ints[k] is not None else 1
        touched[k][i] = True
    return removed


def frozen(stage) -> torch.Tensor:
    """The stage's frozen-weight mask (1: rounded by a digit step, held by ``hold``), made on first use."""
    if getattr(stage, "frozen", None) is None:
        stage.frozen = torch.zeros_like(stage.weight)
    return stage.frozen


def hold(model: QCNN) -> None:
    """Zero the gradient of every frozen weight (after ``backward``): Adam then leaves it exactly where it is."""
    for s in model.weighted():
        f = getattr(s, "frozen", None)
        if f is not None and s.weight.grad is not None:
            s.weight.grad.mul_(1.0 - f)


def width_report(model: QCNN) -> dict[str, dict[str, int]]:
    """Per weighted stage: how many kept weights have 1, 2, ... CSD digits, and how many were rounded."""
    out = {}
    for s in model.weighted():
        if s.weight_type is None:
            continue
        q = weight_ints(s)
        d = csd_count(q[q != 0])
        f = getattr(s, "frozen", None)
        rounded = int(((f.numpy() > 0) & (q != 0)).sum()) if f is not None else 0
        out[s.name] = {**{f"{k}_digits": int((d == k).sum()) for k in range(1, int(d.max(initial=0)) + 1)},
                       "rounded": rounded}
    return out
