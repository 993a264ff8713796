"""The energy a compression candidate would take per inference, by the fast activity model: the search's
``energy`` resource (``--budget energy=50nJ``), in picojoules like the budget.

The candidate's datapath is evaluated on the first ``ENERGY_SAMPLES`` consecutive validation samples
(``codesign.core.activity_model``), pipelined for the board's clock as the flow's RTL step emits it, at II = 1
(one inference per clock cycle), and priced at the coefficients' mid values: dynamic plus the part's static
energy for one cycle. The flow simulates the netlist afterwards and reports whether that meets the budget.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from codesign.board import Board
from codesign.core.activity_model import fast_energy
from codesign.core.network import Network

ENERGY_SAMPLES = 256  # consecutive samples: toggles per inference settle within a few hundred (docs/energy.md)


def energy_pj(net: Network, board: Board, X: np.ndarray, mapping: str | None = None) -> int:
    """Energy per inference (dynamic + static, mid) of ``net`` on ``board`` by the fast model, pJ."""
    e = candidate_energy(net, board, X, mapping)
    return int(round(e["mid"]["total_j"] * 1e12))


def candidate_energy(net: Network, board: Board, X: np.ndarray, mapping: str | None = None) -> dict[str, Any]:
    """The fast model's energy figures (``fast_energy``) for float inputs ``X`` (the first ENERGY_SAMPLES)."""
    q = net.quantize_input(np.asarray(X)[:ENERGY_SAMPLES]).reshape(min(len(X), ENERGY_SAMPLES), -1)
    return fast_energy(net, q, board.synth_family, board.part, board.clock_mhz, mapping=mapping)


def with_energy(total: dict[str, int], net: Network, board: Board, X: np.ndarray | None,
                mapping: str | None = None) -> dict[str, int]:
    """``total`` (the cost model's) with ``energy`` in pJ when ``X`` is given (an energy budget is set)."""
    if X is None:
        return total
    return dict(total, energy=energy_pj(net, board, X, mapping))
