"""Boards: one YAML file each under ``boards/`` (shipped as package data ``codesign.boards``).

A board with an open toolchain (ECP5, iCE40, Gowin) also has a ``pnr:`` mapping: the nextpnr
architecture, the device, package and speed grade nextpnr names, and the pins of the clock, the
UART and the LEDs from the board's published constraint file (``rtl_sim.pnr`` writes the
LPF/PCF/CST from them).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import yaml

from codesign import families
from codesign.errors import BoardError

VENDORS = ("xilinx", "intel", "lattice", "gowin")
SYNTH_FAMILIES = families.SYNTH_FAMILIES  # each family's facts: codesign.families
PNR_ARCHES = families.PNR_ARCHES  # nextpnr-ecp5, nextpnr-ice40, nextpnr-himbaechel (Gowin)
PIN_ROLES = ("clk", "uart_rx", "uart_tx")  # every pnr entry names these; ``led`` is a list of pins
_REQUIRED = ("name", "vendor", "family", "part", "lut", "ff", "dsp", "bram", "clock_mhz", "synth_family", "source")


@dataclass(frozen=True)
class Pnr:
    """How nextpnr places a design on the board's part, and the board's pins (site names)."""

    arch: str
    device: str  # nextpnr's: ecp5 "85k", ice40 "up5k", gowin the full part "GW1NR-LV9QN88PC6/I5"
    package: str = ""
    speed: str = ""
    family: str = ""  # Gowin only: the chip family nextpnr-himbaechel and gowin_pack name ("GW1N-9C")
    pins: tuple[tuple[str, str], ...] = ()  # (role, site): clk, uart_rx (into the FPGA), uart_tx
    led: tuple[str, ...] = ()
    io_standard: str = "LVCMOS33"
    source: str = ""

    def pin(self, role: str) -> str:
        return dict(self.pins)[role]


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
    pnr: Pnr | None = None

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
    if "pnr" in d:
        d["pnr"] = parse_pnr(d["pnr"], origin)
    return Board(**d)


def parse_pnr(p: object, origin: str) -> Pnr:
    """A board file's ``pnr:`` mapping; ``origin`` names the file in errors."""
    if not isinstance(p, dict):
        raise BoardError(f"{origin}: pnr must be a mapping of arch, device, package, pins")
    unknown = set(p) - set(Pnr.__dataclass_fields__)
    if unknown:
        raise BoardError(f"{origin}: unknown pnr keys {', '.join(sorted(unknown))}")
    if p.get("arch") not in PNR_ARCHES:
        raise BoardError(f"{origin}: pnr arch must be one of {PNR_ARCHES}, not {p.get('arch')!r}")
    pins = p.get("pins")
    if not isinstance(pins, dict) or any(r not in pins for r in PIN_ROLES):
        raise BoardError(f"{origin}: pnr pins must name the sites of {', '.join(PIN_ROLES)}")
    led = p.get("led", [])
    if not isinstance(led, list):
        raise BoardError(f"{origin}: pnr led must be a list of pin sites (LED 0 first)")
    return Pnr(**{k: str(v) for k, v in p.items() if k not in ("pins", "led")},
               pins=tuple((str(k), str(v)) for k, v in pins.items()), led=tuple(str(x) for x in led))


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
