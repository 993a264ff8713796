"""Resource budgets: ``lut=0.5,dsp=0.25`` (fractions of the board) or ``lut=20000`` (counts), an energy
per inference with its unit, ``energy=50nJ`` (held in picojoules), and a throughput: ``ii=4`` (at most one
sample every 4 cycles) or ``--throughput`` in inferences/s at the board's clock (held as the II)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from codesign.board import Board
from codesign.errors import BudgetError, ConfigError

RESOURCES = ("lut", "dsp", "ff", "bram", "energy")
_ITEM = re.compile(r"^\s*([a-z]+)\s*=\s*([0-9]*\.?[0-9]+)\s*(%?)\s*$")
_ENERGY = re.compile(r"^\s*energy\s*=\s*(.*?)\s*$")
_ENERGY_VALUE = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(pJ|nJ|uJ|µJ|mJ)$")
ENERGY_UNITS_PJ = {"pJ": 1.0, "nJ": 1e3, "uJ": 1e6, "µJ": 1e6, "mJ": 1e9}  # the budget holds energy in pJ


def parse_energy(value: str) -> int:
    """An energy per inference with its unit (``50nJ``, ``2.5uJ``) in picojoules."""
    m = _ENERGY_VALUE.match(str(value).strip())
    if not m:
        raise BudgetError(f"malformed energy budget {value!r}: write a number and a unit per inference, e.g. "
                          "'energy=50nJ' or 'energy=2.5uJ' (units: pJ, nJ, uJ, mJ)")
    pj = float(m.group(1)) * ENERGY_UNITS_PJ[m.group(2)]
    if pj < 1:
        raise BudgetError(f"energy budget {value!r} is below 1 pJ per inference; give at least 1pJ")
    return int(round(pj))


def format_energy(pj: float) -> str:
    """Picojoules as the budget writes them: ``1.25nJ``."""
    for unit in ("mJ", "uJ", "nJ"):
        if pj >= ENERGY_UNITS_PJ[unit]:
            return f"{pj / ENERGY_UNITS_PJ[unit]:.4g}{unit}"
    return f"{pj:.4g}pJ"


def parse_budget(spec: str | dict | None, board: Board) -> dict[str, int]:
    """Absolute resource limits from a budget string or dict; fractions are of ``board``."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        items = [(k, v) for k, v in spec.items()]
    else:
        items = []
        for part in spec.split(","):
            e = _ENERGY.match(part)
            if e:
                items.append(("energy", e.group(1)))
                continue
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
        if key == "energy":
            out[key] = parse_energy(value)
            continue
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


def parse_ii(value: object) -> int:
    """``ii=N``: the initiation interval the design must keep, a whole number of cycles of at least 1."""
    s = str(value).strip()
    if not s.isdigit() or int(s) < 1:
        raise ConfigError(f"budget ii={s}: the initiation interval is a whole number of cycles of at least 1 "
                          "(e.g. 'ii=4'), or give --throughput in inferences/s")
    return int(s)


def ii_for_throughput(throughput: object, clock_mhz: float) -> int:
    """``--throughput`` in inferences/s as the largest II that keeps it at ``clock_mhz``."""
    try:
        rate = float(str(throughput))
    except ValueError:
        rate = float("nan")
    if not 0 < rate < float("inf"):
        raise ConfigError(f"--throughput {throughput!r}: give inferences per second, a number above 0, e.g. 1e6")
    ii = int(clock_mhz * 1e6 // rate)
    if ii < 1:
        raise ConfigError(f"--throughput {rate:g} inferences/s is above one per cycle at the {clock_mhz:g} MHz clock "
                          f"({clock_mhz * 1e6:g}/s at most)")
    return ii


def split_ii(spec: str | dict | None) -> tuple[str | dict | None, int | None]:
    """The budget without its ``ii`` term, and that term (None when absent)."""
    if isinstance(spec, dict):
        rest = {k: v for k, v in spec.items() if k != "ii"}
        return rest, parse_ii(spec["ii"]) if "ii" in spec else None
    if not spec:
        return spec, None
    parts = spec.split(",")
    iis = [p.partition("=")[2] for p in parts if p.partition("=")[0].strip() == "ii"]
    if len(iis) > 1:
        raise ConfigError(f"budget {spec!r} gives ii twice; give one initiation interval")
    rest = ",".join(p for p in parts if p.partition("=")[0].strip() != "ii")
    return rest, parse_ii(iis[0]) if iis else None


def resource_limits(terms: dict[str, int] | None, board: Board) -> dict[str, int]:
    """report.json's budget terms as resource limits: its resources (not ``ii``), the whole board's without any."""
    return {k: v for k, v in (terms or {}).items() if k != "ii"} or board.resources()


def format_budget(budget: dict[str, int]) -> str:
    return ",".join(f"{k}={format_energy(v) if k == 'energy' else v}" for k, v in budget.items()) or "none"


@dataclass(frozen=True)
class Budget:
    """Absolute resource limits on one board: what the CLI or API parses once and every step receives."""

    board: Board
    limits: dict[str, int] = field(default_factory=dict)
    ii: int | None = None  # the initiation interval the design must keep (cycles per sample), None: any

    @classmethod
    def parse(cls, spec: "str | dict | Budget | None", board: Board, throughput: object = None) -> "Budget":
        """A budget string or dict (fractions are of ``board``; ``ii=N`` the II to keep), and ``throughput`` in
        inferences/s at the board's clock as the II instead; a Budget is returned as it is."""
        if isinstance(spec, Budget):
            return spec
        rest, ii = split_ii(spec)
        if throughput is not None:
            if ii is not None:
                raise ConfigError(f"--budget ii={ii} and --throughput {throughput} both set the II: give one of them")
            ii = ii_for_throughput(throughput, board.clock_mhz)
        return cls(board, parse_budget(rest, board), ii)

    @property
    def terms(self) -> dict[str, int]:
        """The limits and the II, as report.json's ``budget`` holds them."""
        return {**self.limits, **({"ii": self.ii} if self.ii else {})}

    @property
    def lut_only(self) -> bool:
        """No DSPs allowed: every multiply must be LUT logic."""
        return self.limits.get("dsp", None) == 0

    def __bool__(self) -> bool:
        return bool(self.limits)

    def __str__(self) -> str:
        return format_budget(self.terms)
