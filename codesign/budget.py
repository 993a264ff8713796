"""Resource budgets: ``lut=0.5,dsp=0.25`` (fractions of the board) or ``lut=20000`` (counts)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from codesign.board import Board
from codesign.errors import BudgetError

RESOURCES = ("lut", "dsp", "ff", "bram")
_ITEM = re.compile(r"^\s*([a-z]+)\s*=\s*([0-9]*\.?[0-9]+)\s*(%?)\s*$")


def parse_budget(spec: str | dict | None, board: Board) -> dict[str, int]:
    """Absolute resource limits from a budget string or dict; fractions are of ``board``."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        items = [(k, v) for k, v in spec.items()]
    else:
        items = []
        for part in spec.split(","):
            m = _ITEM.match(part)
            if not m:
                raise BudgetError(
                    f"malformed budget item {part.strip()!r} in {spec!r}: write resource=value pairs separated by "
                    "commas, e.g. 'lut=0.5,dsp=0.25' (fractions of the board) or 'lut=20000' (counts)"
                )
            key, num, pct = m.groups()
            value: float | int = float(num) / 100 if pct else (float(num) if "." in num else int(num))
            items.append((key, value))
    out: dict[str, int] = {}
    for key, value in items:
        if key not in RESOURCES:
            raise BudgetError(f"unknown resource {key!r} in budget; resources: {', '.join(RESOURCES)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise BudgetError(f"budget for {key} must be a non-negative number, not {value!r}")
        total = getattr(board, key)
        if isinstance(value, float):
            if value > 1.0:
                raise BudgetError(f"budget fraction {key}={value} is above 1 (the whole board); use a count instead")
            out[key] = int(value * total)
        else:
            out[key] = int(value)
    return out


def format_budget(budget: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in budget.items()) or "none"


@dataclass(frozen=True)
class Budget:
    """Absolute resource limits on one board: what the CLI or API parses once and every step receives."""

    board: Board
    limits: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: "str | dict | Budget | None", board: Board) -> "Budget":
        """A budget string or dict (fractions are of ``board``); a Budget is returned as it is."""
        if isinstance(spec, Budget):
            return spec
        return cls(board, parse_budget(spec, board))

    @property
    def lut_only(self) -> bool:
        """No DSPs allowed: every multiply must be LUT logic."""
        return self.limits.get("dsp", None) == 0

    def __bool__(self) -> bool:
        return bool(self.limits)

    def __str__(self) -> str:
        return format_budget(self.limits)
