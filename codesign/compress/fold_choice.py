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

A streaming CNN (``rtl_sim.stream_fold``) folds the same way, its II counted in cycles per image: at a target
``T`` (a multiple of the image's pixels) each convolution takes ``R = min(T / pixels, its nonzero weights)``, so
the stream takes a pixel every ``T / pixels`` cycles, and each Dense after the stream, which computes once per
image, ``R = min(T, its nonzero weights)``. Its first folded candidate, ``T = pixels``, keeps the convolutions
parallel and the image's throughput, and folds only the Dense layers over the image's time; ``T = 1`` stays
the fully parallel design. Its price is the CNN cost model's (``conv_cost``) on the folded layers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from codesign.compress.fold_cost import network_folded_cost
from codesign.core.fold import stream_pace
from codesign.core.layers import Conv, Dense
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


def _streaming(net: Network) -> bool:
    return len(net.input_shape) > 1


def pixels(net: Network) -> int:
    """Input beats per sample: a streaming CNN's pixels per image, 1 for a flat input."""
    return int(np.prod(net.input_shape[:-1])) if _streaming(net) else 1


def candidate_iis(net: Network, max_ii: int | None = None) -> list[int]:
    """The IIs worth trying, ascending: 1, 2, 3, 4, 6, 8, 12, 16, ... (a step of about 1.4x) up to the largest
    layer's nonzero count (where every layer is one unit) or ``max_ii``. A streaming CNN's: 1 (parallel), then
    ``pixels`` times that ladder, up to its largest convolution's nonzero count per pixel."""
    if _streaming(net):
        n = pixels(net)
        top = max((int(np.count_nonzero(l.weight)) for l in net.layers if isinstance(l, Conv)), default=1)
        return [1] + [n * p for p in _ladder(max(1, min(top, (max_ii or n * top) // n)))]
    top = max((int(np.count_nonzero(l.weight)) for l in net.layers if isinstance(l, Dense)), default=1)
    return _ladder(max(1, min(top, max_ii or top)))


def _ladder(top: int) -> list[int]:
    out, t = [], 1
    while t < top:
        out.append(t)
        t = t + 1 if t < 4 else int(t * 1.5) // 2 * 2  # 4, 6, 8, 12, 18, 26, ... even, about 1.4-1.5x apart
    return [*out, top]


def reuse_at(net: Network, ii: int) -> dict[str, int]:
    """Each Dense layer's reuse factor for a target II: the II, capped at its nonzero weights (one unit). A
    streaming CNN's convolutions take the II per pixel instead (its Dense layers compute once per image)."""
    def cap(l, t: int) -> int:
        return max(1, min(t, int(np.count_nonzero(l.weight))))

    if _streaming(net):
        if ii == 1:
            return {l.name: 1 for l in net.layers if isinstance(l, (Conv, Dense))}
        return {l.name: cap(l, ii // pixels(net) if isinstance(l, Conv) else ii) for l in net.layers
                if isinstance(l, (Conv, Dense))}
    return {l.name: cap(l, ii) for l in net.layers if isinstance(l, Dense)}


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
    """The II of ``net`` folded by its layers' own ``reuse``: the slowest layer's ``ceil(nnz / ceil(nnz / R))``;
    a streaming CNN's in cycles per image (1 when no layer is folded, as an MLP's fully parallel design)."""
    if _streaming(net):
        if all(int(l.reuse) == 1 for l in net.layers if isinstance(l, (Conv, Dense))):
            return 1
        return stream_pace(net.layers, pixels(net)) * pixels(net)

    def cycles(l: Dense) -> int:
        nnz = int(np.count_nonzero(l.weight))
        return -(-nnz // -(-nnz // l.reuse)) if nnz else 1
    return max((cycles(l) for l in net.layers if isinstance(l, Dense)), default=1)


def with_reuse(net: Network, reuse: dict[str, int]) -> Network:
    """``net`` with each Dense (and convolution) layer's ``reuse`` set (what the RTL and HLS steps read)."""
    layers = [replace(l, reuse=int(reuse[l.name])) if isinstance(l, (Conv, Dense)) and l.name in reuse else l
              for l in net.layers]
    return Network(net.name, net.input_shape, layers, net.input_type, metadata=dict(net.metadata))


def foldable(net: Network) -> bool:
    """Whether the network is built folded: a chain with Dense layers on a flat input (``rtl_sim.folded``) or a
    streaming CNN chain with a convolution or Dense layer (``rtl_sim.stream_fold``)."""
    kinds = (Conv, Dense) if _streaming(net) else (Dense,)
    return net.is_chain and any(isinstance(l, kinds) for l in net.layers)


def require_foldable(net: Network, ii: int | None) -> None:
    """A budget ``ii`` on a network that does not fold yet (a graph), or shorter than a streaming CNN's pixels per
    image, is a one-line error."""
    if ii and not foldable(net):
        raise ConfigError(f"budget ii={ii}: network {net.name!r} is neither a chain of Dense layers nor a streaming "
                          "CNN chain, the networks that fold yet; leave ii out")
    if ii and ii < pixels(net):
        raise ConfigError(f"budget ii={ii}: network {net.name!r} streams {pixels(net)} pixels per image, one a cycle "
                          f"at most, so its II (cycles per image) is at least {pixels(net)}; give ii >= {pixels(net)}")


def folded_price(net: Network, ii: int, family: str, dsp: bool = True, board: Any = None) -> dict[str, int]:
    """LUT/FF/DSP/BRAM of ``net`` folded to a target II (``reuse_at``), and the II it reaches (``ii``). A streaming
    CNN is priced by the CNN cost model, which needs the ``board``."""
    if _streaming(net):
        from codesign.compress.cost import network_cost, total_cost

        if board is None:
            raise ConfigError(f"network {net.name!r}: pricing a folded CNN needs its board")
        folded = with_reuse(net, reuse_at(net, ii))
        tot = total_cost(network_cost(folded, board, None if dsp else "lut"))
        return {**{k: int(tot[k]) for k in RESOURCES}, "ii": designed_ii(folded)}
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
                ii_aim: int | None, board: Any = None) -> FoldChoice:
    """The II a search candidate (``net``, unpruned, priced ``parallel`` fully parallel) is folded to under
    ``aim`` (the budget less headroom) and ``ii_aim`` (the budget's ``ii``, None: any): see the module's doc."""
    if fits(parallel, aim):
        return FoldChoice(1, parallel, "the fully parallel design fits the budget", "none")
    if ii_aim is None and over_ratio(parallel, aim) <= FOLD_OVER:
        return FoldChoice(1, parallel, f"the fully parallel design is within {FOLD_OVER:g}x its budget "
                          f"({_over(parallel, aim)}): pruned rather than folded", "none")
    priced = [(1, parallel)] + [(t, folded_price(net, t, family, dsp, board)) for t in candidate_iis(net, ii_aim)[1:]]
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
