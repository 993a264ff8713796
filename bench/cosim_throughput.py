"""Co-simulation throughput on a jet-tagger-sized network, as ratios measured in one run.

    python bench/cosim_throughput.py [--samples 100000] [--cocotb-samples 5000]

Network: hls4ml's 70 %-pruned float jet tagger (16-64-32-32-5) at the default precision.
Rows: the numpy reference, hls4ml's C simulation (Vivado, Latency), per-cycle cocotb, and the
bulk Verilator harness; builds are timed apart from simulation. Writes bench/results/cosim_throughput.json.
"""

from __future__ import annotations

import argparse
import tempfile
import os
import time
from pathlib import Path

from _common import MODELS, machine, write_results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=100000)
    ap.add_argument("--cocotb-samples", type=int, default=5000)
    args = ap.parse_args()
    import codesign
    from codesign.board import load_board
    from codesign.compress.quantize import quantize_network
    from hls.csim import csim_check
    from hls.project import write_project
    from codesign.core.verify import verification_inputs
    from rtl_sim.cosim import build_bulk, cosimulate, load_design, run_bulk, write_rtl

    fnet = codesign.load(MODELS / "KERAS_3layer.json", weights=MODELS / "KERAS_3layer_70pruned_retrained_weights.h5")
    net = quantize_network(fnet, "ap_fixed<16,6,AP_RND_CONV,AP_SAT>", 8, result_bits=16)
    q = verification_inputs(net, None, args.samples)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        net.forward_int(q)
        rows.append(("numpy reference", len(q), 0.0, time.perf_counter() - t0))

        p = write_project(net, load_board("zcu102"), "vivado", tmp / "hls", form="latency")
        r = csim_check(p, net, q)
        assert r["csim_bit_exact"], r
        rows.append(("hls4ml C simulation", len(q), r["compile_s"], len(q) / r["samples_per_s"]))

        write_rtl(net, tmp / "rtl")
        small = q[: args.cocotb_samples]
        t0 = time.perf_counter()
        rc = cosimulate(net, tmp / "rtl", tmp / "cocotb", small, mode="cocotb")
        total = time.perf_counter() - t0
        assert rc.bit_exact
        sim = len(small) / rc.samples_per_s
        rows.append(("cocotb per-cycle", len(small), total - sim, sim))

        design = load_design(tmp / "rtl")
        os.environ["CODESIGN_CACHE"] = str(tmp / "cache")  # the harness cache starts empty: the build is timed
        t0 = time.perf_counter()
        exe = build_bulk(design)
        build = time.perf_counter() - t0
        rb = run_bulk(design, exe, tmp / "bulk", q)
        rows.append(("Verilator bulk", len(q), build, rb["sim_s"]))
        rfull = cosimulate(net, tmp / "rtl", tmp / "bulk", q, mode="bulk")
        assert rfull.bit_exact and rfull.mismatches == 0

    base = rows[2][1] / rows[2][3]
    print(f"machine: {machine()}")
    print(f"network: 16-64-32-32-5, {net.sparsity:.0%} sparse, bit-exact everywhere")
    print(f"{'driver':<22}{'samples':>9}{'build s':>9}{'sim s':>9}{'samples/s':>13}{'x cocotb':>10}")
    out = []
    for name, n, b, s in rows:
        sps = n / max(s, 1e-9)
        print(f"{name:<22}{n:>9}{b:>9.1f}{s:>9.2f}{sps:>13,.0f}{sps / base:>10.1f}")
        out.append({"driver": name, "samples": n, "build_s": round(b, 2), "sim_s": round(s, 3),
                    "samples_per_s": round(sps, 1), "ratio_to_cocotb": round(sps / base, 2)})
    write_results("cosim_throughput", rows=out)


if __name__ == "__main__":
    main()
