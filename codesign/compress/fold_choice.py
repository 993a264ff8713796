"""Which reuse factor each Dense layer takes: the smallest initiation interval (II) whose folded design fits.

The slowest layer sets the II, so a layer folded to fewer cycles than the II only costs area: at a target II
``T`` every layer takes ``R = min(T, its nonzero weights)`` (``codesign.core.fold``: ``ceil(nnz / R)`` units of
at most ``R`` cycles), the least area that keeps up. The choice is then one number, the II, and the smallest
one whose folded cost (``fold_cost.network_folded_cost``) is within the limits is taken; ``T = 1`` is the fully
parallel design. The cost model's error is the caller's headroom, as in the compression search.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from codesign.compress.fold_cost import network_folded_cost
from codesign.core.layers import Dense
from codesign.core.network import Network
from codesign.errors import BudgetError

RESOURCES = ("lut", "ff", "dsp", "bram")


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


def with_reuse(net: Network, reuse: dict[str, int]) -> Network:
    """``net`` with each Dense layer's ``reuse`` set (what the RTL and HLS steps read)."""
    layers = [replace(l, reuse=int(reuse[l.name])) if isinstance(l, Dense) and l.name in reuse else l
              for l in net.layers]
    return Network(net.name, net.input_shape, layers, net.input_type, metadata=dict(net.metadata))
