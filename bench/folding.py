"""Folded Dense layers (``rtl_sim.folded``) on the default flow's digits MLP: Yosys counts, II and latency
against the reuse factor R, each design co-simulated bit-exact in Verilator, and the cost model's price
(``codesign.compress.fold_cost``) next to Yosys's counts.

The network is ``codesign compress digits-mlp --data digits --budget lut=0.25,dsp=0`` (the default flow's
compression: 64-28-13-10, 842 nonzero 4-bit weights). Every layer gets the same R; synthesis is
``synth_xilinx -family xc7`` with ``-nodsp`` (the flow's budget allows no DSP) and with DSPs. Written to
``bench/results/folding.json``.

    python bench/folding.py                      # R = 1, 4, 16, 64, 256 (about half an hour on 2 cores)
    python bench/folding.py --reuse 4,16 --no-dsp
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (the repository on sys.path)
from _common import write_results

from codesign.compress.fold_cost import network_folded_cost
from codesign.core.verify import verification_inputs
from codesign.importers.data import load_digits_dataset
from rtl_sim.folded import emit_folded_verilog
from rtl_sim.folded_sim import cosimulate_folded
from rtl_sim.synth import synthesize

FAMILY = "xc7"
SAMPLES = 2000
MEMORY_CELLS = ("RAM", "ROM")  # LUTRAM/BRAM primitives Yosys may infer for the weight memory


def digits_network():
    """The default flow's compressed digits MLP (compressed once, cached in the temporary directory)."""
    from codesign.app.cli import main
    from codesign.core.network import Network

    d = Path(tempfile.gettempdir()) / "codesign-bench-folding" / "digits"
    if not (d / "network.json").is_file():
        args = ["compress", "digits-mlp", "--data", "digits", "--budget", "lut=0.25,dsp=0"]
        if main([*args, "--out", str(d), "--force", "--quiet"]) != 0:
            sys.exit("compressing digits-mlp failed")
    return Network.load(d)


def measure(net, reuse: int, dsp_modes: tuple[bool, ...], q) -> dict:
    """One R: the design's II/latency/fold, its co-simulation and its Yosys counts per DSP mode."""
    d = emit_folded_verilog(net, reuse)
    row = {"reuse": reuse, "ii": getattr(d, "ii", 1), "latency": d.latency,
           "folds": getattr(d, "folds", {})}
    if reuse > 1:
        r = cosimulate_folded(net, d, q)
        row["cosim"] = {"samples": r.samples, "mismatches": r.mismatches, "bit_exact": r.bit_exact,
                        "measured_ii": r.ii, "measured_latency": r.latency_cycles}
    for dsp in dsp_modes:
        t0 = time.perf_counter()
        s = synthesize(d.verilog, d.top, FAMILY, dsp=dsp)
        mem = {k: v for k, v in s["cells"].items() if k.lstrip("\\$").upper().startswith(MEMORY_CELLS)}
        model = network_folded_cost(net, reuse, FAMILY, dsp=dsp)
        row["dsp" if dsp else "nodsp"] = {**{k: s[k] for k in ("lut", "ff", "dsp", "carry", "bram")},
                                          "memory_cells": mem, "yosys_s": round(time.perf_counter() - t0, 1),
                                          "model": {k: model[k] for k in ("lut", "ff", "dsp", "bram")}}
        print(reuse, "dsp" if dsp else "nodsp", row["dsp" if dsp else "nodsp"], flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reuse", default="1,4,16,64,256", help="reuse factors, comma-separated")
    ap.add_argument("--no-dsp", action="store_true", help="only -nodsp synthesis")
    args = ap.parse_args()
    t0 = time.perf_counter()
    net = digits_network()
    ds = load_digits_dataset()
    q = verification_inputs(net, ds.X_test, SAMPLES)
    modes = (False,) if args.no_dsp else (False, True)
    rows = [measure(net, int(r), modes, q) for r in args.reuse.split(",")]
    write_results("folding", t0, network="digits-mlp, default flow compression (64-28-13-10, 842 nonzero)",
                  family=FAMILY, samples=len(q), rows=rows)


if __name__ == "__main__":
    main()
