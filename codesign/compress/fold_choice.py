"""Which reuse factor each Dense layer takes: the smallest initiation interval (II) whose folded design fits.

The slowest layer sets the II, so a layer folded to fewer cycles than the II only costs area: at a target II
``T`` every layer takes ``R = min(T, its nonzero weights)`` (``codesign.core.fold``: ``ceil(nnz / R)`` units of
at most ``R`` cycles), the least area that keeps up. The choice is then one number, the II, and the smallest
one whose folded cost (``fold_cost.network_folded_cost``) is within the limits is taken; ``T = 1`` is the fully
parallel design. The cost model's error is the caller's headroom, as in the compression search.

Inside the budget search (``choose_fold``) each candidate precision picks its II once, after its
quantization-aware training and before any pruning: on a short ladder of IIs (up to the budget's ``ii``), the
smallest II whose unpruned design fits, else the one that is least over (it leaves the most weights to keep),
ties to the smaller II. Without an ``ii`` in the budget a candidate is folded only when its fully parallel
design is more than ``FOLD_OVER`` times its budget: pruning would have to take more than half of it, and
folding keeps the weights that pruning would cut. The search's precision loop then compares the candidates,
folded or not, by their validation accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from codesign.compress.fold_cost import network_folded_cost
from codesign.core.layers import Dense
from codesign.core.network import Network
from codesign.errors import BudgetError, ConfigError

RESOURCES = ("lut", "ff", "dsp", "bram")
# without an ii in the budget, a candidate is folded only when its fully parallel price is over this many times
# its budget (on the resource most over): the default digits search (lut=0.25,dsp=0) is at most 1.8x over at the
# precisions it screens and stays fully parallel; hls4ml's 16-100^5-5 MLP at 8 bits on a zcu102 is 5.5x over
FOLD_OVER = 2.0


@dataclass(frozen=True)
class Fold:
    """The reuse factor of each Dense layer, the II it gives and the cost model's price of the design."""

    reuse: dict[str, int]
    ii: int
    cost: dict[str, Any]


def candidate_iis(net: Network, max_ii: int | None = None) -> list[int]:
    """The IIs worth trying, ascending: 1, 2, 3, 4, 6, 8, 12, 16, ... (a step of about 1.4x) up to the largest
    layer's nonzero count (where every layer is one unit) or ``max_ii``."""
    top = max((int(np.count_nonzero(l.weight)) for l in net.layers if isinstance(l, Dense)), default=1)
    top = max(1, min(top, max_ii or top))
    out, t = [], 1
    while t < top:
        out.append(t)
        t = t + 1 if t < 4 else int(t * 1.5) // 2 * 2  # 4, 6, 8, 12, 18, 26, ... even, about 1.4-1.5x apart
    return [*out, top]


def reuse_at(net: Network, ii: int) -> dict[str, int]:
    """Each Dense layer's reuse factor for a target II: the II, capped at its nonzero weights (one unit)."""
    return {l.name: max(1, min(ii, int(np.count_nonzero(l.weight)))) for l in net.layers if isinstance(l, Dense)}


def fits(cost: dict[str, Any], limits: dict[str, int]) -> bool:
    return all(cost.get(k, 0) <= v for k, v in limits.items() if k in RESOURCES)


def smallest_fitting_fold(net: Network, limits: dict[str, int], family: str, dsp: bool = True,
                          max_ii: int | None = None, memory: str = "auto") -> Fold:
    """The fold with the smallest II whose price is within ``limits`` (LUT/FF/DSP/BRAM); ``max_ii`` caps the II
    (a throughput the design must keep). Refused when even the largest II does not fit, naming what binds."""
    tried: Fold | None = None
    for ii in candidate_iis(net, max_ii):
        reuse = reuse_at(net, ii)
        cost = network_folded_cost(net, reuse, family, dsp, memory)
        tried = Fold(reuse, int(cost["ii"]), cost)
        if fits(cost, limits):
            return tried
    assert tried is not None
    over = {k: f"{tried.cost[k]:,} > {v:,}" for k, v in limits.items() if k in RESOURCES and tried.cost[k] > v}
    cap = f" at II <= {max_ii}" if max_ii else ""
    raise BudgetError(f"network {net.name!r} does not fit{cap} even folded to II {tried.ii} on {family}: "
                      + ", ".join(f"{k} {s}" for k, s in over.items())
                      + "; allow a longer II, prune it, or give a larger budget")


def designed_ii(net: Network) -> int:
    """The II of ``net`` folded by its layers' own ``reuse``: the slowest layer's ``ceil(nnz / ceil(nnz / R))``."""
    def cycles(l: Dense) -> int:
        nnz = int(np.count_nonzero(l.weight))
        return -(-nnz // -(-nnz // l.reuse)) if nnz else 1
    return max((cycles(l) for l in net.layers if isinstance(l, Dense)), default=1)


def with_reuse(net: Network, reuse: dict[str, int]) -> Network:
    """``net`` with each Dense layer's ``reuse`` set (what the RTL and HLS steps read)."""
    layers = [replace(l, reuse=int(reuse[l.name])) if isinstance(l, Dense) and l.name in reuse else l
              for l in net.layers]
    return Network(net.name, net.input_shape, layers, net.input_type, metadata=dict(net.metadata))


def foldable(net: Network) -> bool:
    """Whether ``rtl_sim.folded`` builds the network folded: a chain with Dense layers on a flat input."""
    return len(net.input_shape) == 1 and net.is_chain and any(isinstance(l, Dense) for l in net.layers)


def require_foldable(net: Network, ii: int | None) -> None:
    """A budget ``ii`` on a network that does not fold yet (a CNN or a graph) is a one-line error."""
    if ii and not foldable(net):
        raise ConfigError(f"budget ii={ii}: network {net.name!r} is not a chain of Dense layers on a flat input, "
                          "the only networks that fold yet; leave ii out")


def folded_price(net: Network, ii: int, family: str, dsp: bool = True) -> dict[str, int]:
    """LUT/FF/DSP/BRAM of ``net`` folded to a target II (``reuse_at``), and the II it reaches (``ii``)."""
    c = network_folded_cost(net, reuse_at(net, ii), family, dsp)
    return {**{k: int(c[k]) for k in RESOURCES}, "ii": int(c["ii"])}


def over_ratio(cost: dict[str, int], limits: dict[str, int]) -> float:
    """How many times its limit the resource most over it costs (a zero limit with a cost: infinity)."""
    r = [cost.get(k, 0) / v if v else (float("inf") if cost.get(k, 0) else 0.0) for k, v in limits.items()
         if k in RESOURCES]
    return max(r, default=0.0)


@dataclass(frozen=True)
class FoldChoice:
    """The target II a candidate is priced at (1: fully parallel), its price there and why it was chosen."""

    ii: int
    cost: dict[str, int]
    reason: str
    bound_by: str  # the budget term that set the II: a resource (a smaller II is over it), "ii" or "none"


def choose_fold(net: Network, parallel: dict[str, int], aim: dict[str, int], family: str, dsp: bool,
                ii_aim: int | None) -> FoldChoice:
    """The II a search candidate (``net``, unpruned, priced ``parallel`` fully parallel) is folded to under
    ``aim`` (the budget less headroom) and ``ii_aim`` (the budget's ``ii``, None: any): see the module's doc."""
    if fits(parallel, aim):
        return FoldChoice(1, parallel, "the fully parallel design fits the budget", "none")
    if ii_aim is None and over_ratio(parallel, aim) <= FOLD_OVER:
        return FoldChoice(1, parallel, f"the fully parallel design is within {FOLD_OVER:g}x its budget "
                          f"({_over(parallel, aim)}): pruned rather than folded", "none")
    priced = [(1, parallel)] + [(t, folded_price(net, t, family, dsp)) for t in candidate_iis(net, ii_aim)[1:]]
    for (prev, pc), (t, c) in zip(priced, priced[1:]):
        if fits(c, aim):
            return FoldChoice(t, c, f"the smallest II at which the unpruned network fits (at II {prev}: "
                              f"{_over(pc, aim)})", binding(pc, aim))
    t, c = min(priced, key=lambda p: (over_ratio(p[1], aim), p[0]))
    capped = t == ii_aim
    why = f"no II {f'up to the budget ii={ii_aim} ' if ii_aim else ''}fits unpruned: the least over ({_over(c, aim)}), pruned"
    return FoldChoice(t, c, why, "ii" if capped else binding(c, aim))


def _over(cost: dict[str, int], limits: dict[str, int]) -> str:
    return ", ".join(f"{k} {cost.get(k, 0):,} > {v:,}" for k, v in limits.items()
                     if k in RESOURCES and cost.get(k, 0) > v)


def binding(cost: dict[str, int], limits: dict[str, int]) -> str:
    """The resource most over its limit."""
    r = {k: over_ratio({k: cost.get(k, 0)}, {k: v}) for k, v in limits.items() if k in RESOURCES}
    return max(r, key=r.get) if r else "none"
