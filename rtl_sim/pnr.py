"""Place and route with nextpnr on boards with an open toolchain, and their bitstreams.

ECP5 (nextpnr-ecp5, ecppack), iCE40 (nextpnr-ice40, icepack) and Gowin (nextpnr-himbaechel,
apicula's gowin_pack), all from PyPI (the yowasp packages run them in WebAssembly; a native
``nextpnr-*`` on PATH is preferred, and ``CODESIGN_NEXTPNR_<ARCH>`` / ``CODESIGN_<PACKER>``
override the paths). Yosys synthesizes (``synth_ecp5`` / ``synth_ice40`` / ``synth_gowin``,
Yosys's own ABC9 script: this is the implementation, not the quick count), nextpnr places and
routes against the board's pins and the target clock, seeded, and writes ``--report``: the Fmax
per clock, the critical paths and the utilisation are read from that JSON, not the log.

A core has more IO bits than a board has pins, so the core is wrapped in a top on the board's own
pins (clk, uart_rx, uart_tx, the LEDs). A top that already has those ports (the UART top of
``rtl_sim.uart``) is used as it is, its reset tied low; any other core (ports clk, rst,
in_valid, in_data, out_valid, out_data) gets a shift-register top here: the input shifts in one bit
a clock on ``uart_rx``, a full sample is handed to the core, its result is loaded into a register
that shifts out on ``uart_tx``, and the LEDs show the result's low bits. All the core's IO is
registered in the top, so the critical path nextpnr reports is the core's (or the top's own).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codesign.board import Board, Pnr
from codesign.errors import BackendError, BudgetError, ToolFailedError, ToolNotFoundError
from codesign.families import FAMILIES
from codesign.progress import SILENT, Reporter
from codesign.tools import Tool, find_yosys, first_error_line
from rtl_sim.synth import count_cells, synth_command

# each architecture's tools and nextpnr's utilisation names for our resources (codesign.families)
_PNR = {name: f.pnr for name, f in FAMILIES.items() if f.pnr is not None}
NEXTPNR = {arch: p.nextpnr for arch, p in _PNR.items()}
YOWASP_NEXTPNR = {arch: p.yowasp_nextpnr for arch, p in _PNR.items()}
PACKER = {arch: p.packer for arch, p in _PNR.items()}
BITSTREAM_SUFFIX = {arch: p.bitstream_suffix for arch, p in _PNR.items()}
RESOURCES: dict[str, dict[str, str | tuple[str, ...]]] = {arch: p.resources for arch, p in _PNR.items()}
BOARD_PORTS = {"clk", "uart_rx", "uart_tx", "led"}
CORE_PORTS = {"clk", "rst", "in_valid", "in_data", "out_valid", "out_data"}
WRAPPER_TOP = "codesign_board_top"
TIMEOUT_S = 4 * 3600


@dataclass
class PnrResult:
    """What one place and route measured."""

    tool: str  # "nextpnr-ecp5 0.11.1"
    device: str
    target_mhz: float
    fmax_mhz: dict[str, float]  # per clock net, as nextpnr names it
    critical_path_ns: float
    critical_path: dict[str, Any]  # from/to cell and net, the segments' count
    utilisation: dict[str, dict[str, int]]  # lut/ff/dsp/bram/io: used, available (nextpnr's cells)
    synth: dict[str, int]  # Yosys's counts of the netlist nextpnr placed (LUT4, FF, carry, DSP, BRAM)
    top: str
    wrapper: str  # "uart" (the board top given) or "shift-register" (made here)
    seed: int
    bitstream: Path | None
    log: Path
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def fmax(self) -> float:
        """The slowest clock's Fmax (the design has one clock)."""
        return min(self.fmax_mhz.values())

    def to_json(self, base: Path | None = None) -> dict[str, Any]:
        d = asdict(self)

        def rel(p: Path | None) -> str | None:
            if p is None:
                return None
            return str(p.relative_to(base)) if base is not None else str(p)

        d.update(fmax_mhz=round(self.fmax, 2), fmax_per_clock=self.fmax_mhz, bitstream=rel(self.bitstream),
                 log=rel(self.log), meets_target=self.fmax >= self.target_mhz)
        return d


# ---- tools -------------------------------------------------------------------------------------

def _find(names: tuple[str, ...], env_var: str, what: str, package: str) -> tuple[str, ...]:
    override = os.environ.get(env_var)
    if override:
        if not Path(override).is_file():
            raise ToolNotFoundError(f"{env_var}={override!r} is not a file; point it at a {what} binary")
        return (override,)
    for name in names:
        beside = Path(sys.executable).parent / name
        if beside.is_file():
            return (str(beside),)
        if shutil.which(name):
            return (shutil.which(name),)  # type: ignore[return-value]
    raise ToolNotFoundError(f"{what} not found: pip install {package} (or put {names[0]} on PATH, or set {env_var})")


def find_nextpnr(arch: str) -> Tool:
    """nextpnr for ``arch`` (ecp5, ice40, gowin) with its version."""
    cmd = _find((NEXTPNR[arch], YOWASP_NEXTPNR[arch]), f"CODESIGN_NEXTPNR_{arch.upper()}", NEXTPNR[arch],
                YOWASP_NEXTPNR[arch])
    try:
        out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=1800)
    except OSError as e:
        raise ToolNotFoundError(f"{NEXTPNR[arch]} at {cmd[0]} cannot run ({e})") from None
    m = re.search(r"Version nextpnr-(\S+?)\)", out.stdout + out.stderr)
    if not m:
        raise ToolNotFoundError(f"{NEXTPNR[arch]} at {cmd[0]} did not report a version: {(out.stderr or out.stdout).strip()[:200]}")
    return Tool(NEXTPNR[arch], cmd, {}, m.group(1))


def find_packer(arch: str) -> Tool:
    native, wheel = PACKER[arch]
    pkg = _PNR[arch].packer_package
    cmd = _find((native, wheel), f"CODESIGN_{native.upper()}", native, pkg)
    return Tool(native, cmd, {}, "")


def _run(tool: Tool, args: list[str], cwd: Path, log: Path, what: str) -> subprocess.CompletedProcess:
    """Run a tool in ``cwd`` (relative paths: yowasp's sandbox sees only it), its output appended to ``log``."""
    try:
        proc = subprocess.run([*tool.command, *args], cwd=cwd, capture_output=True, text=True, env=tool.environ(),
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ToolFailedError(f"{what}: {tool.name} did not finish in {TIMEOUT_S} s") from None
    with log.open("a") as f:
        f.write(f"==== {tool.name} {' '.join(args)}\n{proc.stdout}\n{proc.stderr}\n")
    return proc


# ---- the board top and the constraints ---------------------------------------------------------

def module_ports(verilog: str, top: str) -> dict[str, tuple[str, int]]:
    """The ports of module ``top`` in ``verilog``: name -> (direction, width)."""
    m = re.search(rf"\bmodule\s+{re.escape(top)}\b\s*(#\s*\((?:[^()]|\([^()]*\))*\))?\s*\((.*?)\);", verilog, re.S)
    if not m:
        raise BackendError(f"module {top!r} not found in the RTL given to place and route")
    ports = {}
    for d, msb, lsb, name in re.findall(r"\b(input|output)\s+(?:wire|reg)?\s*(?:\[(\d+):(\d+)\])?\s*(\w+)", m.group(2)):
        ports[name] = (d, int(msb) - int(lsb) + 1 if msb else 1)
    return ports


def shift_register_top(top: str, n_in: int, n_out: int, n_led: int) -> str:
    """A top on the board's pins around a core with ``n_in`` input and ``n_out`` output bits."""
    cw = max(1, (n_in - 1).bit_length())
    led = f"out_data[{min(n_led, n_out) - 1}:0]" if n_led <= n_out else f"{{{n_led - n_out}'b0, out_data}}"
    s_in = f"{{uart_rx, sin[{n_in - 1}:1]}}" if n_in > 1 else "uart_rx"
    s_out = f"{{1'b0, sout[{n_out - 1}:1]}}" if n_out > 1 else "1'b0"
    return f"""// Board top made by fpga-codesign's rtl_sim.pnr: {top}'s IO from the board's pins. Do not edit.
// uart_rx shifts in one input bit a clock (LSB first); every {n_in} clocks the sample goes to the core;
// a result is loaded into the output register, which shifts out on uart_tx; the LEDs show its low bits.
`default_nettype none
module {WRAPPER_TOP} (
  input  wire clk,
  input  wire uart_rx,
  output wire uart_tx,
  output reg  [{n_led - 1}:0] led
);
  reg [3:0] por = 4'd0;  // power-on reset from the bitstream's initial values
  always @(posedge clk) if (!por[3]) por <= por + 4'd1;
  wire rst = ~por[3];
  reg [{n_in - 1}:0] sin = {n_in}'d0;
  reg [{cw - 1}:0] cnt = {cw}'d0;
  reg in_valid = 1'b0;
  reg [{n_in - 1}:0] in_data = {n_in}'d0;
  always @(posedge clk) begin
    sin <= {s_in};
    in_valid <= cnt == {cw}'d{n_in - 1};
    if (cnt == {cw}'d{n_in - 1}) begin
      cnt <= {cw}'d0;
      in_data <= {s_in};
    end else begin
      cnt <= cnt + {cw}'d1;
    end
  end
  wire out_valid;
  wire [{n_out - 1}:0] out_data;
  {top} core (.clk(clk), .rst(rst), .in_valid(in_valid), .in_data(in_data), .out_valid(out_valid), .out_data(out_data));
  reg [{n_out - 1}:0] sout = {n_out}'d0;
  always @(posedge clk) begin
    sout <= out_valid ? out_data : {s_out};
    if (out_valid) led <= {led};
  end
  assign uart_tx = sout[0];
endmodule
"""


def uart_board_top(top: str, n_led: int, led_width: int, clock_hz: int | None = None) -> str:
    """A top on the board's pins around a board-level top (``rtl_sim.uart``'s): reset tied low, LEDs sized,
    and its ``CLK_HZ`` parameter (when given) set to the board's oscillator, so the baud rate is right."""
    used = min(n_led, led_width)
    params = f" #(.CLK_HZ({clock_hz}))" if clock_hz else ""
    pad = f"  assign led[{n_led - 1}:{used}] = {n_led - used}'d0;\n" if n_led > used else ""
    return f"""// Board top made by fpga-codesign's rtl_sim.pnr around {top}. Do not edit.
`default_nettype none
module {WRAPPER_TOP} (
  input  wire clk,
  input  wire uart_rx,
  output wire uart_tx,
  output wire [{n_led - 1}:0] led
);
  wire [{led_width - 1}:0] core_led;
  {top}{params} core (.clk(clk), .rst(1'b0), .uart_rx(uart_rx), .uart_tx(uart_tx), .led(core_led));
  assign led[{used - 1}:0] = core_led[{used - 1}:0];
{pad}endmodule
"""


def board_top(verilog: str, top: str, board: Board) -> tuple[str, str]:
    """The wrapper's Verilog and its kind ("uart" or "shift-register") for core ``top`` on the board."""
    ports = module_ports(verilog, top)
    n_led = max(1, len(board.pnr.led))  # type: ignore[union-attr]
    if BOARD_PORTS <= set(ports):
        has_clk_hz = re.search(rf"\bmodule\s+{re.escape(top)}\s*#\s*\([^;]*\bCLK_HZ\b", verilog) is not None
        clock_hz = round(board.clock_mhz * 1e6) if has_clk_hz else None
        return uart_board_top(top, n_led, ports["led"][1], clock_hz), "uart"
    if set(ports) != CORE_PORTS:
        raise BackendError(f"module {top!r} has ports {', '.join(sorted(ports))}; place and route takes a core "
                           f"({', '.join(sorted(CORE_PORTS))}) or a board top ({', '.join(sorted(BOARD_PORTS))})")
    return shift_register_top(top, ports["in_data"][1], ports["out_data"][1], n_led), "shift-register"


def constraints(pnr: Pnr, n_led: int) -> tuple[str, str]:
    """The constraint file's name and text: LPF (ECP5), PCF (iCE40) or CST (Gowin), from the board's pins."""
    pins = [(role, site) for role, site in pnr.pins if role in ("clk", "uart_rx", "uart_tx")]
    pins += [(f"led[{i}]", site) for i, site in enumerate(pnr.led[:n_led])]
    if pnr.arch == "ecp5":
        lines = [f'LOCATE COMP "{n}" SITE "{s}";\nIOBUF PORT "{n}" IO_TYPE={pnr.io_standard};' for n, s in pins]
        return "board.lpf", "\n".join(lines) + "\n"
    if pnr.arch == "ice40":
        return "board.pcf", "".join(f"set_io -nowarn {n} {s}\n" for n, s in pins)
    lines = [f'IO_LOC "{n}" {s};' + (f'\nIO_PORT "{n}" IO_TYPE={pnr.io_standard};' if not n.startswith("led") else "")
             for n, s in pins]
    return "board.cst", "\n".join(lines) + "\n"


# ---- the run -----------------------------------------------------------------------------------

def _sources(rtl: str | Path | list[str | Path]) -> list[Path]:
    paths = [Path(p) for p in rtl] if isinstance(rtl, list) else [Path(rtl)]
    files: list[Path] = []
    for p in paths:
        files += sorted(p.glob("*.v")) if p.is_dir() else [p]
    missing = [str(f) for f in files if not f.is_file()]
    if missing or not files:
        raise BackendError(f"no Verilog to place and route at {missing or [str(p) for p in paths]}")
    return files


def nextpnr_args(pnr: Pnr, cst: str, clock_mhz: float, seed: int) -> list[str]:
    """nextpnr's arguments for the board (the netlist synth.json, the report report.json)."""
    common = ["--json", "synth.json", "--report", "report.json", "--freq", f"{clock_mhz:g}", "--seed", str(seed),
              "--timing-allow-fail"]
    if pnr.arch == "ecp5":
        return [f"--{pnr.device}", "--package", pnr.package, "--speed", pnr.speed, "--lpf", cst,
                "--textcfg", "top.config", *common]
    if pnr.arch == "ice40":
        return [f"--{pnr.device}", "--package", pnr.package, "--pcf", cst, "--asc", "top.asc", *common]
    return ["--device", pnr.device, "--vopt", f"family={pnr.family}", "--vopt", f"cst={cst}",
            "--write", "pnr.json", *common]


def packer_args(pnr: Pnr, out: str) -> list[str]:
    if pnr.arch == "ecp5":
        return ["--compress", "top.config", out]
    if pnr.arch == "ice40":
        return ["top.asc", out]
    return ["-d", pnr.family, "-o", out, "pnr.json"]


UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.M)


def does_not_fit(log_text: str, board: Board) -> BudgetError | None:
    """The one-line error for a design nextpnr could not place for lack of a resource, else None."""
    over = [(name, int(u), int(a)) for name, u, a, _ in UTIL_LINE.findall(log_text) if int(u) > int(a)]
    if not over:
        return None
    name, used, avail = max(over, key=lambda x: x[1] / max(x[2], 1))
    ours = next((k for k, v in RESOURCES[board.pnr.arch].items()  # type: ignore[union-attr]
                 if name == v or (not isinstance(v, str) and name in v)), name)
    return BudgetError(f"the design does not fit {board.name} ({board.part}): it needs {used:,} {name} "
                       f"({ours}), the part has {avail:,} ({used - avail:,} over, {100 * used / avail:.0f} %); "
                       f"compress it under a smaller budget (e.g. --budget {ours}={0.8 * avail / used:.2f})"
                       if ours in ("lut", "ff", "dsp", "bram") else
                       f"the design does not fit {board.name} ({board.part}): it needs {used:,} {name}, the part "
                       f"has {avail:,} ({used - avail:,} over); compress it under a smaller --budget")


def parse_report(report: dict[str, Any], arch: str) -> tuple[dict[str, float], float, dict[str, Any], dict]:
    """Fmax per clock, the critical path's delay (ns) and ends, and the utilisation from nextpnr's JSON report."""
    fmax = {clk: round(float(v["achieved"]), 2) for clk, v in report.get("fmax", {}).items()}
    if not fmax:
        raise ToolFailedError("nextpnr's report has no clock: the design has no register on its clock")
    best: tuple[float, dict[str, Any]] = (0.0, {})
    for cp in report.get("critical_paths", []):
        if "<async>" in (cp.get("from", ""), cp.get("to", "")):
            continue
        segs = cp.get("path", [])
        ns = sum(float(s.get("delay", 0.0)) for s in segs)
        if segs and ns > best[0]:
            nets = [s["net"] for s in segs if s.get("net")]
            best = (ns, {"from_cell": segs[0]["from"]["cell"], "to_cell": segs[-1]["to"]["cell"],
                         "from_net": nets[0] if nets else None, "to_net": nets[-1] if nets else None,
                         "clock": cp.get("from"), "segments": len(segs),
                         "logic_ns": round(sum(float(s.get("delay", 0)) for s in segs if s.get("type") == "logic"), 3),
                         "routing_ns": round(sum(float(s.get("delay", 0)) for s in segs if s.get("type") == "routing"), 3)})
    util = report.get("utilization", {})
    ours = {}
    for k, v in RESOURCES[arch].items():
        names = (v,) if isinstance(v, str) else v
        if names[0] in util:
            ours[k] = {"used": sum(int(util.get(n, {}).get("used", 0)) for n in names),
                       "available": int(util[names[0]]["available"])}
    ours["nextpnr"] = {k: v for k, v in util.items() if v.get("used")}  # type: ignore[assignment]
    return fmax, round(best[0], 3), best[1], ours


def place_and_route(rtl: str | Path | list[str | Path], top: str, board: Board, out_dir: str | Path,
                    clock_mhz: float | None = None, seed: int = 1, progress: Reporter = SILENT) -> PnrResult:
    """Synthesize ``top`` (wrapped on the board's pins), place and route it with nextpnr at ``clock_mhz``
    (default: the board's clock) and pack the bitstream, all in ``out_dir``."""
    if board.pnr is None:
        raise BackendError(f"board {board.name!r} ({board.part}) has no open place-and-route toolchain; boards "
                           "with one have a 'pnr' entry (codesign boards lists them: ecp5, ice40, gowin)")
    pnr, arch = board.pnr, board.pnr.arch
    clock = float(clock_mhz or board.clock_mhz)
    yosys, nextpnr, packer = find_yosys(), find_nextpnr(arch), find_packer(arch)
    files = _sources(rtl)
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "pnr.log"
    log.write_text("")
    verilog = "\n".join(f.read_text() for f in files)
    wrapper, kind = board_top(verilog, top, board)
    n_led = max(1, len(pnr.led))
    for f in files:
        shutil.copy(f, out / f.name)
    (out / f"{WRAPPER_TOP}.v").write_text(wrapper)
    cst, text = constraints(pnr, n_led)
    (out / cst).write_text(text)
    names = " ".join(f.name for f in files) + f" {WRAPPER_TOP}.v"
    seconds: dict[str, float] = {}
    bit = f"{top}{BITSTREAM_SUFFIX[arch]}"
    with progress.bar(f"place and route on {board.name} ({NEXTPNR[arch]} {nextpnr.version})", total=3) as bar:
        t0 = time.perf_counter()
        script = (f"read_verilog -sv {names}; {synth_command(arch, WRAPPER_TOP, dsp=True)} -json synth.json; "
                  "tee -q -o stat.json stat -json")
        proc = _run(yosys, ["-q", "-p", script], out, log, "Yosys")
        if proc.returncode != 0:
            raise ToolFailedError(f"Yosys synthesis of {top} for {board.name} failed: "
                                  f"{first_error_line(proc.stdout + proc.stderr)} (log: {log})")
        mods = json.loads((out / "stat.json").read_text()).get("modules", {})
        cells = (mods.get(WRAPPER_TOP) or mods.get(f"\\{WRAPPER_TOP}") or {}).get("num_cells_by_type", {})
        seconds["synth"] = round(time.perf_counter() - t0, 1)
        bar.advance(info=f"synthesized ({seconds['synth']:.0f} s)")
        t0 = time.perf_counter()
        proc = _run(nextpnr, nextpnr_args(pnr, cst, clock, seed), out, log, "nextpnr")
        seconds["pnr"] = round(time.perf_counter() - t0, 1)
        if proc.returncode != 0:
            raise does_not_fit(proc.stderr + proc.stdout, board) or ToolFailedError(
                f"{NEXTPNR[arch]} failed on {top} for {board.name}: {first_error_line(proc.stderr + proc.stdout)} "
                f"(log: {log})")
        bar.advance(info=f"placed and routed ({seconds['pnr']:.0f} s)")
        t0 = time.perf_counter()
        proc = _run(packer, packer_args(pnr, bit), out, log, "packer")
        if proc.returncode != 0 or not (out / bit).is_file() or (out / bit).stat().st_size == 0:
            raise ToolFailedError(f"{packer.name} wrote no bitstream for {top}: "
                                  f"{first_error_line(proc.stderr + proc.stdout)} (log: {log})")
        seconds["pack"] = round(time.perf_counter() - t0, 1)
        bar.advance(info=f"bitstream {bit}")
    fmax, cp_ns, cp, util = parse_report(json.loads((out / "report.json").read_text()), arch)
    synth = count_cells(cells, arch)
    if "ff" not in util:  # iCE40's logic cells hold LUT and FF together: the FFs as Yosys counts them
        util["ff"] = {"used": synth["ff"], "available": board.ff}
    return PnrResult(tool=f"{NEXTPNR[arch]} {nextpnr.version}", device=board.part, target_mhz=clock,
                     fmax_mhz=fmax, critical_path_ns=cp_ns, critical_path=cp, utilisation=util, synth=synth,
                     top=top, wrapper=kind, seed=seed, bitstream=out / bit, log=log, seconds=seconds)
