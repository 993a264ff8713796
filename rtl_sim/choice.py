"""The datapath the RTL step chose, recorded in report.json, so that the estimate synthesizes that datapath.

``codesign rtl`` picks the multiplier datapath (the shared adder graph "cmvm" or one multiplier per weight
"csd") and where pipeline registers go (for a clock by a family's delay model, or every N adder levels); it
records the choice under ``rtl.choice``, and ``codesign estimate`` emits each stage it synthesizes with the same
choice (``rtl_sim.synth.layer_jobs``), so the counts are those of the Verilog in ``rtl/``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from codesign.core.timing import MODELS

DATAPATHS = ("cmvm", "csd")


@dataclass(frozen=True)
class DatapathChoice:
    """The emitter options that shape the datapath; ``emit_kwargs`` hands them to ``emit_verilog`` and
    ``emit_stream_verilog``."""

    datapath: str = "cmvm"
    adder_regs_every: int = 0  # > 0: a register every that many adder levels (overrides the clock)
    clock_mhz: float | None = None  # the clock the registers are placed for by ``family``'s delay model
    family: str | None = None  # None with the clock: no delay model for the board's family, unpipelined

    @classmethod
    def for_board(cls, family: str, clock_mhz: float | None, datapath: str = "cmvm",
                  adder_regs_every: int = 0) -> DatapathChoice:
        """The choice for a board's family: pipelined for ``clock_mhz`` where the family has a delay model."""
        if family not in MODELS or not clock_mhz:  # no delay model (or no clock): unpipelined, no timing reported
            family, clock_mhz = None, None
        return cls(datapath, adder_regs_every, clock_mhz, family)

    @classmethod
    def from_report(cls, rtl: dict[str, Any], family: str) -> DatapathChoice:
        """The choice report.json's ``rtl`` section records; an artifact written before the choice was recorded
        gives its fields (``family``: the board's) or, with no ``rtl`` section, the defaults."""
        if "choice" in rtl:
            return cls(**rtl["choice"])
        return cls.for_board(family, rtl.get("clock_mhz"), rtl.get("datapath", "cmvm"), rtl.get("adder_regs_every", 0))

    def emit_kwargs(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
