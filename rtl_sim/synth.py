"""Open-source synthesis of the emitted Verilog with Yosys: LUT/FF/DSP/carry/BRAM counts.

``synth_xilinx -family xc7|xcup`` for AMD parts, ``synth_intel_alm -family cyclonev`` for Intel
parts (Cyclone V's ALM model stands in for Arria 10, Stratix 10 and Agilex, which Yosys
does not model; the board file says so). Results are cached by a hash of the RTL and the
command, so an unchanged design returns at once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from codesign.errors import BackendError
from rtl_sim.tools import Tool, find_yosys, run_tool

FAMILIES = ("xc7", "xcup", "cyclonev")


def synth_command(family: str, top: str, dsp: bool) -> str:
    if family in ("xc7", "xcup"):
        return f"synth_xilinx -family {family} -top {top}" + ("" if dsp else " -nodsp")
    if family == "cyclonev":
        return f"synth_intel_alm -family cyclonev -top {top}" + ("" if dsp else " -nodsp")
    raise BackendError(f"unknown synthesis family {family!r}; families: {', '.join(FAMILIES)}")


def count_cells(cells: dict[str, int], family: str) -> dict[str, int]:
    """LUT/FF/DSP/carry/BRAM totals from Yosys's cell counts."""
    lut = ff = dsp = carry = bram = 0
    for name, n in cells.items():
        u = name.upper().lstrip("\\$")
        if family in ("xc7", "xcup"):
            if u.startswith("LUT") and u[3:].isdigit():
                lut += n
            elif u in ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"):
                ff += n
            elif u.startswith("DSP48"):
                dsp += n
            elif u.startswith("CARRY"):
                carry += n
            elif u.startswith("RAMB"):
                bram += n if "36" in u else 0
                bram += (n + 1) // 2 if "18" in u else 0
        else:
            if u.startswith("MISTRAL_ALUT") or u.startswith("MISTRAL_NOT"):
                lut += n
                carry += n if "ARITH" in u else 0
            elif u.startswith("MISTRAL_FF"):
                ff += n
            elif u.startswith("MISTRAL_MUL"):
                dsp += n
            elif u.startswith("MISTRAL_M10K") or u.startswith("MISTRAL_MLAB"):
                bram += n
    return {"lut": lut, "ff": ff, "dsp": dsp, "carry": carry, "bram": bram}


def cache_dir() -> Path:
    from codesign.builtin import cache_dir as base

    return base() / "synth"


def synthesize(verilog: str, top: str, family: str, dsp: bool = True, tool: Tool | None = None,
               flatten: bool = False) -> dict[str, Any]:
    """Synthesize one Verilog source; cell counts and totals (cached by RTL and command).

    Our emitted designs are one flat module; ``flatten`` is for hierarchical RTL from elsewhere
    (the counts are read off the top module)."""
    tool = tool or find_yosys()
    cmd = synth_command(family, top, dsp) + (" -flatten" if flatten else "")
    key = hashlib.sha256(f"{tool.version}\n{cmd}\n{verilog}".encode()).hexdigest()[:24]
    cached = cache_dir() / f"{key}.json"
    if cached.is_file():
        res = json.loads(cached.read_text())
        res["cached"] = True
        return res
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="codesign-synth-") as tmp:
        work = Path(tmp)
        (work / f"{top}.v").write_text(verilog)
        # a path relative to the working directory: yowasp's tee -o to an absolute path wrote nothing here
        script = f"read_verilog -sv {top}.v; {cmd}; tee -q -o stat.json stat -json"
        run_tool(tool, ["-q", "-p", script], work, f"Yosys synthesis of {top}", timeout=3600)
        stat = json.loads((work / "stat.json").read_text())
    mods = stat.get("modules", {})
    top_stats = mods.get(top) or mods.get(f"\\{top}") or (next(iter(mods.values())) if mods else {})
    cells = top_stats.get("num_cells_by_type", {})
    res = {"tool": f"yosys {tool.version}", "command": cmd, "target": family, "dsp_inference": dsp,
           "cells": cells, **count_cells(cells, family), "seconds": round(time.perf_counter() - t0, 1), "cached": False}
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp_file = cached.with_suffix(".tmp")
    tmp_file.write_text(json.dumps(res))
    shutil.move(tmp_file, cached)
    return res
