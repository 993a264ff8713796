"""Boards: one YAML file each under ``boards/`` (shipped as package data ``codesign.boards``)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import yaml

from codesign.errors import BoardError

VENDORS = ("xilinx", "intel")
SYNTH_FAMILIES = ("xc7", "xcup", "cyclonev")
_REQUIRED = ("name", "vendor", "family", "part", "lut", "ff", "dsp", "bram", "clock_mhz", "synth_family", "source")


@dataclass(frozen=True)
class Board:
    """One FPGA board: its part and the resources of that part (LUT means ALM on Intel parts)."""

    name: str
    title: str
    vendor: str
    family: str
    part: str
    lut: int
    ff: int
    dsp: int
    bram: int
    uram: int
    clock_mhz: float
    synth_family: str
    source: str
    lut_unit: str = "LUT"
    synth_note: str = ""

    @property
    def clock_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz

    def resources(self) -> dict[str, int]:
        return {"lut": self.lut, "ff": self.ff, "dsp": self.dsp, "bram": self.bram}

    def to_json(self) -> dict:
        return {"name": self.name, "part": self.part, "vendor": self.vendor, "family": self.family,
                "lut": self.lut, "lut_unit": self.lut_unit, "dsp": self.dsp, "ff": self.ff, "bram": self.bram,
                "uram": self.uram, "clock_mhz": self.clock_mhz}


def _board_files() -> dict[str, object]:
    root = resources.files("codesign.boards")
    return {p.name[:-5]: p for p in root.iterdir() if p.name.endswith(".yaml")}


def board_names() -> list[str]:
    return sorted(_board_files())


def parse_board(text: str, origin: str) -> Board:
    """A Board from YAML text; ``origin`` names the file in errors."""
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BoardError(f"{origin}: malformed YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise BoardError(f"{origin}: a board file must be a YAML mapping of {', '.join(_REQUIRED)}")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise BoardError(f"{origin}: missing {', '.join(missing)}")
    if d["vendor"] not in VENDORS:
        raise BoardError(f"{origin}: vendor must be one of {VENDORS}, not {d['vendor']!r}")
    if d["synth_family"] not in SYNTH_FAMILIES:
        raise BoardError(f"{origin}: synth_family must be one of {SYNTH_FAMILIES}, not {d['synth_family']!r}")
    for k in ("lut", "ff", "dsp", "bram", "uram"):
        v = d.get(k, 0)
        if not isinstance(v, int) or v < 0:
            raise BoardError(f"{origin}: {k} must be a non-negative integer, not {v!r}")
    known = set(Board.__dataclass_fields__)
    unknown = set(d) - known
    if unknown:
        raise BoardError(f"{origin}: unknown keys {', '.join(sorted(unknown))}")
    d.setdefault("title", d["name"])
    d.setdefault("uram", 0)
    return Board(**d)


def load_board(name: str | Board) -> Board:
    """A board by its short name (``codesign boards`` lists them) or a path to a YAML file."""
    if isinstance(name, Board):
        return name
    files = _board_files()
    if name in files:
        return parse_board(files[name].read_text(), f"boards/{name}.yaml")
    if str(name).endswith((".yaml", ".yml")):
        from pathlib import Path

        p = Path(name)
        if not p.is_file():
            raise BoardError(f"board file {name!r} does not exist")
        return parse_board(p.read_text(), str(p))
    raise BoardError(f"unknown board {name!r}; known boards: {', '.join(sorted(files))}")
