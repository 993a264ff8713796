"""``codesign``: the command line (see DESIGN.md for the contract).

Exit codes: 0 every check passed; 1 a check failed (bit-exactness); 2 bad input or a missing
tool (one line on stderr naming the problem and the fix); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from codesign.errors import CodesignError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def _positive(v: str) -> int:
    if not v.isdigit() or int(v) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {v!r}")
    return int(v)


def _mhz(v: str) -> float:
    try:
        f = float(v)
    except ValueError:
        f = float("nan")
    if not 0 < f < 10_000:
        raise argparse.ArgumentTypeError(f"must be a clock in MHz above 0, e.g. 100 or 250, not {v!r}")
    return f


REUSE_HELP = ("fold the Dense layers: R cycles per sample for every layer, name=R,... per layer, or auto (the "
              "smallest II that fits the budget by the cost model); default: the saved network's factors (flow: fully "
              "parallel when that fits the budget, else auto)")


THROUGHPUT_HELP = ("inferences/s the design must keep at the board's clock (--clock): the budget's ii, "
                   "clock/throughput cycles per sample (instead of ii= in --budget)")


def cluster_args(p: argparse.ArgumentParser, per_job: bool = False) -> None:
    from codesign.jobs import CLUSTERS, ENV_CLUSTER

    p.add_argument("--cluster", default=None, help=f"where the jobs run: {CLUSTERS} (default: ${ENV_CLUSTER} or local)")
    if per_job:
        p.add_argument("--cpus-per-job", type=_positive, default=1,
                       help="CPUs (torch and BLAS threads) each sweep point gets (default: 1)")


def build_parser() -> argparse.ArgumentParser:
    from codesign.app.flow import DEFAULT_BOARD, DEFAULT_MODEL

    ap = argparse.ArgumentParser(prog="codesign", description="Neural networks onto FPGAs, verified bit for bit.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("boards", help="table of boards and their resources")
    _common(p)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--weights", help="Keras weights .h5 for a .json model (default: <stem>_weights.h5 beside it)")
        p.add_argument("--trust-pickle", action="store_true", help="allow unpickling a full .pt module (runs its code)")
        p.add_argument("--input-type", help="input fixed-point type, e.g. 'ap_fixed<16,6>' (QKeras models)")
        p.add_argument("--method", default="hardware", choices=["hardware", "magnitude", "structured", "digits"])

    p = sub.add_parser("flow", help="load -> compress -> hls -> rtl -> cosim -> estimate -> report")
    p.add_argument("model", nargs="?", default=None, help=f"model file or built-in name (default: {DEFAULT_MODEL})")
    p.add_argument("--data", default=None, help="built-in name or .npz (default with no MODEL or a built-in one: digits)")
    p.add_argument("--board", default=DEFAULT_BOARD)
    p.add_argument("--budget", default=None, help="e.g. lut=0.5,dsp=0.25 or lut=20000; energy=50nJ (per inference, "
                   "priced by the fast activity model, checked on the simulated netlist); ii=4: at most 4 cycles per "
                   "sample (the search may fold the Dense layers; a CNN's convolutions too, its ii in cycles per image)")
    p.add_argument("--backend", default=None, help="vitis|vivado (Xilinx), quartus|oneapi (Intel)")
    p.add_argument("--out", default="codesign-out")
    p.add_argument("--force", action="store_true", help="replace a previous run in --out")
    p.add_argument("--samples", type=_positive, default=None, help="verification vectors (default 10000)")
    p.add_argument("--no-synth", action="store_true", help="skip Yosys synthesis (analytic estimate only)")
    p.add_argument("--clock", type=_mhz, default=None, metavar="MHZ",
                   help="target clock: pipeline registers placed for it by the delay model (default: the board's)")
    p.add_argument("--no-energy", action="store_true",
                   help="skip the energy step (the Yosys netlist simulated for its switching activity)")
    p.add_argument("--reuse", default=None, help=REUSE_HELP)
    p.add_argument("--throughput", default=None, metavar="INF_PER_S", help=THROUGHPUT_HELP)
    cluster_args(p)
    model_args(p)
    _common(p)

    p = sub.add_parser("compress", help="compress MODEL under a budget into DIR")
    p.add_argument("model")
    p.add_argument("--data", required=True)
    p.add_argument("--board", default=DEFAULT_BOARD)
    p.add_argument("--budget", required=True, help="e.g. lut=0.5,dsp=0.25, lut=20000 or energy=50nJ; ii=4: at most "
                   "4 cycles per sample (the search may fold the Dense layers; a CNN's convolutions too, its ii in cycles per "
                   "image)")
    p.add_argument("--throughput", default=None, metavar="INF_PER_S", help=THROUGHPUT_HELP)
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    model_args(p)
    _common(p)

    p = sub.add_parser("sweep", help="compress at several budgets; accuracy against synthesized LUTs")
    p.add_argument("model")
    p.add_argument("--data", required=True)
    p.add_argument("--board", default=DEFAULT_BOARD)
    p.add_argument("--budgets", required=True, nargs="+",
                   help="e.g. lut=0.1,0.2,0.4 (three budgets) or lut=0.1,0.2,dsp=0")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    p.add_argument("--precisions", help="candidate weight/activation/output bits, e.g. 4/6/10,6/8/12 (default: five)")
    p.add_argument("--schedule", help="training per candidate, e.g. epochs=20,final_epochs=10 (default: epochs=60,...)")
    cluster_args(p, per_job=True)
    model_args(p)
    _common(p)

    p = sub.add_parser("hls", help="hls4ml project + C simulation check")
    p.add_argument("dir")
    p.add_argument("--backend", default=None)
    p.add_argument("--samples", type=_positive, default=None, help="verification vectors (default 10000)")
    p.add_argument("--form", default="auto", choices=["auto", "da", "latency", "unrolled", "compressed"])
    _common(p)

    p = sub.add_parser("rtl", help="emit Verilog")
    p.add_argument("dir")
    p.add_argument("--adder-regs-every", type=int, default=0,
                   help="a register every k adder-tree levels (overrides --clock; 0: placed by the clock)")
    p.add_argument("--clock", type=_mhz, default=None, metavar="MHZ",
                   help="target clock: pipeline registers placed for it by the delay model (default: the board's)")
    p.add_argument("--datapath", default="cmvm", choices=["cmvm", "csd"],
                   help="cmvm: one shared adder graph per layer (default); csd: one multiplier per weight")
    p.add_argument("--reuse", default=None, help=REUSE_HELP)
    _common(p)

    p = sub.add_parser("cosim", help="co-simulate the Verilog in Verilator against the reference")
    p.add_argument("dir")
    p.add_argument("--samples", type=_positive, default=None, help="verification vectors (default 10000)")
    p.add_argument("--mode", default="bulk", choices=["bulk", "cocotb"])
    p.add_argument("--formal", action="store_true",
                   help="also prove, per Dense layer, the cmvm datapath equal to the csd one for every input (Yosys)")
    p.add_argument("--formal-timeout", type=_positive, default=300, help="seconds for the proof of each layer")
    cluster_args(p)
    _common(p)

    p = sub.add_parser("classify", help="classify test samples on a board running DIR's UART top (rtl/<top>_uart.v)")
    p.add_argument("dir")
    p.add_argument("--port", required=True, help="the board's serial device, e.g. /dev/ttyUSB0")
    p.add_argument("--data", default="digits", help="built-in name or .npz whose test samples are sent (default digits)")
    p.add_argument("--samples", type=_positive, default=None, help="test samples to send (default: all)")
    p.add_argument("--baud", type=_positive, default=115200, help="the UART top's baud rate (default 115200)")
    _common(p)

    p = sub.add_parser("estimate", help="analytic and Yosys resource estimates")
    p.add_argument("dir")
    p.add_argument("--board", default=None)
    p.add_argument("--no-synth", action="store_true")
    p.add_argument("--no-energy", action="store_true", help="skip energy per inference (netlist activity)")
    cluster_args(p)
    _common(p)

    p = sub.add_parser("export", help="write the network in DIR as QONNX (FINN, hls4ml, qonnx)")
    p.add_argument("dir")
    p.add_argument("--onnx", required=True, help="the .onnx file to write")
    p.add_argument("--float32", action="store_true",
                   help="no Cast-to-float64 nodes around wide accumulators (for tools that do not take Cast)")
    _common(p)

    p = sub.add_parser("implement", help="place and route with nextpnr and write a bitstream (ECP5, iCE40, Gowin boards)")
    p.add_argument("dir")
    p.add_argument("--board", default=None, help="a board with an open toolchain (default: the directory's board)")
    p.add_argument("--seed", type=_positive, default=1, help="nextpnr's placement seed (default 1)")
    p.add_argument("--target-mhz", type=float, default=None,
                   help="nextpnr's target clock (default: the clock the RTL was pipelined for, else the board's)")
    _common(p)

    p = sub.add_parser("report", help="write report.md and report.html")
    p.add_argument("dir")
    _common(p)
    return ap


def cmd_boards(args: argparse.Namespace) -> Any:
    from rich.console import Console
    from rich.table import Table

    from codesign.board import board_names, load_board

    boards = [load_board(n) for n in board_names()]
    if args.json:
        return [b.to_json() for b in boards]
    t = Table(title="Boards")
    for h in ("name", "vendor", "family", "part", "LUT/ALM", "FF", "DSP", "BRAM", "MHz"):
        t.add_column(h, justify="right" if h in ("LUT/ALM", "FF", "DSP", "BRAM", "MHz") else "left")
    for b in boards:
        t.add_row(b.name, b.vendor, b.family, b.part, f"{b.lut:,}", f"{b.ff:,}", f"{b.dsp:,}", f"{b.bram:,}",
                  f"{b.clock_mhz:g}")
    Console(width=max(Console().width, 130)).print(t)
    return None


def run(args: argparse.Namespace) -> Any:
    from codesign.app.artifact import Artifact
    from codesign.progress import Reporter

    rep = Reporter(quiet=args.quiet or args.json)
    if args.cmd == "boards":
        return cmd_boards(args)
    if args.cmd == "flow":
        from codesign.app import flow

        from codesign.importers.builtin import BUILTIN_DATA

        model = args.model or flow.DEFAULT_MODEL
        # a built-in model brings its own data set; a model file has none unless given
        data = args.data if args.data is not None else (flow.DEFAULT_DATA if args.model is None
                                                         else BUILTIN_DATA.get(str(args.model)))
        budget = args.budget if args.budget is not None else (flow.DEFAULT_BUDGET if args.model is None else None)
        options = flow.FlowOptions(args.backend, args.weights, args.trust_pickle, args.input_type, args.force,
                                   args.samples, args.method, synth=not args.no_synth, progress=rep,
                                   cluster=args.cluster, clock_mhz=args.clock, energy=not args.no_energy,
                                   reuse=args.reuse, throughput=args.throughput)
        result = flow.run_flow(args.out, model, data, args.board, budget, options)
        rep.print(f"report: {Artifact(args.out).dir / 'report.html'}")
        return result
    if args.cmd == "compress":
        from codesign.app import flow
        from codesign.board import load_board
        from codesign.budget import Budget
        from codesign.importers.load import load

        budget = Budget.parse(args.budget, load_board(args.board), args.throughput)  # before anything is written
        net = load(args.model, weights=args.weights, trust=args.trust_pickle, input_type=args.input_type)
        art = Artifact(args.out)
        art.claim(args.force)
        return flow.step_compress(art, args.model, args.data, budget, args.method, args.weights,
                                  args.trust_pickle, args.input_type, progress=rep, loaded=net)
    if args.cmd == "sweep":
        from codesign.app.sweep import SweepOptions, run_sweep, search_settings

        options = SweepOptions(args.method, args.weights, args.trust_pickle, args.input_type, args.force,
                               progress=rep, cluster=args.cluster, cpus_per_job=args.cpus_per_job,
                               search=search_settings(args.precisions, args.schedule))
        result = run_sweep(args.out, args.model, args.data, args.board, args.budgets, options)
        rep.print(f"sweep: {Artifact(args.out).dir / 'sweep.html'}")
        return result
    art = Artifact(args.dir)
    from codesign.app import flow

    if args.cmd == "hls":
        return flow.step_hls(art, args.backend, args.samples, args.form, progress=rep)
    if args.cmd == "rtl":
        return flow.step_rtl(art, args.adder_regs_every, progress=rep, datapath=args.datapath, clock_mhz=args.clock,
                             reuse=args.reuse)
    if args.cmd == "cosim":
        res = flow.step_cosim(art, args.samples, args.mode, progress=rep, cluster=args.cluster)
        if args.formal:
            res = dict(res, formal=flow.step_formal(art, args.formal_timeout, progress=rep))
        return res
    if args.cmd == "estimate":
        res = flow.step_estimate(art, args.board, synth=not args.no_synth, progress=rep, cluster=args.cluster)
        from codesign.app.energy import energy_supported, energy_text, step_energy
        from codesign.core.network import Network

        if not args.no_synth and not args.no_energy and energy_supported(art.report()["board"]["name"],
                                                                          Network.load(art.dir), art.report()):
            res = dict(res, energy=step_energy(art, progress=rep))
            rep.print(f"energy: {energy_text(res['energy'])}")
        return res
    if args.cmd == "export":
        res = flow.step_export(art, args.onnx, float64=not args.float32)
        rep.print(f"QONNX: {res['onnx']}")
        return res
    if args.cmd == "implement":
        res = flow.step_implement(art, args.board, args.seed, args.target_mhz, progress=rep)
        rep.print(f"bitstream: {art.dir / res['bitstream']}; Fmax {res['fmax_mhz']:.1f} MHz "
                  f"(target {res['target_mhz']:g}), critical path {res['critical_path_ns']:.2f} ns")
        return res
    if args.cmd == "classify":
        from codesign.app.board_host import classify_dataset
        from codesign.errors import VerificationError

        art.require()
        res = classify_dataset(art.dir, args.port, args.data, args.samples, args.baud)
        if not res["bit_exact"]:
            raise VerificationError(f"the board's replies differ from the reference on {res['mismatches']} of "
                                    f"{res['samples']} samples; first: {res['first_mismatch']}")
        rep.print(f"board: {res['samples']} samples, accuracy {res['accuracy']:.4f}, every reply bit-exact")
        return res
    if args.cmd == "report":
        from codesign.app.report import write_report

        art.require()
        write_report(art)
        rep.print(f"report: {art.dir / 'report.html'}")
        return art.report()
    raise AssertionError(args.cmd)


def _caused_by_interrupt(e: BaseException) -> bool:
    """Whether Ctrl-C raised ``e``: an extension module interrupted while it initializes re-raises the
    KeyboardInterrupt as an ImportError caused by it (scipy's HiGHS does, under sklearn's import)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    from codesign import jobs

    args = build_parser().parse_args(argv)
    jobs.size_threads(jobs.available_cpus())  # a plain run's torch and BLAS threads: the CPUs it may use
    try:
        result = run(args)
    except CodesignError as e:
        print(f"codesign: error: {e}", file=sys.stderr)
        return e.exit_code
    except (KeyboardInterrupt, Exception) as e:
        if not _caused_by_interrupt(e):
            raise
        print("codesign: interrupted; the output directory is marked incomplete", file=sys.stderr)
        return 130
    if args.json and result is not None:
        print(json.dumps(result, indent=1, default=str))
    return 0


def entry() -> None:
    """The ``codesign`` command: ``main``'s result as the process's exit status."""
    code = main()
    if code == 130:
        # An interrupt that crossed an extension's PyRun_String (TensorFlow's and Ray's do) sets
        # a flag that makes CPython kill itself with SIGINT after a normal ``sys.exit(130)``
        # under ``python -m``; the output directory is already marked, so leave directly.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    entry()
