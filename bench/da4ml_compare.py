"""Our sparse datapath against da4ml's distributed arithmetic, same weights, same Yosys.

    python bench/da4ml_compare.py

For each Dense layer of the embedded default network and of hls4ml's 6-bit QKeras jet
tagger, da4ml (if installed) builds its constant-matrix-vector-multiply RTL for the same
quantized weights and input type; both are synthesized with the same Yosys (synth_xilinx
xc7, no DSPs) and the table prints our LUTs / da4ml's LUTs. Not quite like for like: da4ml's
module is the combinational matrix product only, ours adds the output rounding, saturation,
ReLU and the stage register. Writes bench/results/da4ml_compare.json.
"""

from __future__ import annotations

import glob
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from _common import machine, write_results


def da4ml_verilog(layer, t_in, name: str) -> str:
    """da4ml's Verilog for ``layer``'s weights and bias on inputs of type ``t_in`` (one source)."""
    from da4ml.codegen.rtl.rtl_model import VerilogModel
    from da4ml.trace import FixedVariableArray, HWConfig, comb_trace

    w = layer.weight * 2.0 ** -layer.weight_type.frac
    b = layer.bias * 2.0 ** -layer.bias_type.frac
    n = w.shape[0]
    k = np.full(n, int(t_in.signed))
    i = np.full(n, t_in.integer - int(t_in.signed))
    f = np.full(n, t_in.frac)
    # the options hls4ml's distributed-arithmetic pass uses
    inp = FixedVariableArray.from_kif(k, i, f, HWConfig(1, -1, -1),
                                      solver_options={"hard_dc": 2, "search_all_decompose_dc": True})
    sol = comb_trace(inp, inp @ w + b)
    with tempfile.TemporaryDirectory() as tmp:
        VerilogModel(sol, name, tmp, print_latency=False).write()
        files = [p for p in sorted(glob.glob(f"{tmp}/src/static/*.v")) if "lookup_table" not in p]
        return "\n".join(Path(p).read_text() for p in files + [f"{tmp}/src/{name}.v"])


def main() -> None:
    try:
        import da4ml  # noqa: F401
    except ImportError:
        print("da4ml is not installed: nothing to compare (pip install da4ml)")
        return
    from estimator_error import networks

    from codesign.compress.cost import dense_stages
    from rtl_sim.synth import stage_networks, synthesize
    from rtl_sim.verilog import emit_verilog

    t0 = time.perf_counter()
    jobs = []
    for net_name, net in networks().items():
        if net_name not in ("digits default flow", "jet qkeras 6-bit"):
            continue
        stages = dict(stage_networks(net))
        for layer, t_in, _, _ in dense_stages(net):
            jobs.append((net_name, layer.name, stages[layer.name], da4ml_verilog(layer, t_in, f"da_{layer.name}")))

    def run(job):
        _, lname, sub, da_src = job
        d = emit_verilog(sub, mult="lut")
        ours = synthesize(d.verilog, d.top, "xc7", dsp=False)
        theirs = synthesize(da_src, f"da_{lname}", "xc7", dsp=False, flatten=True)
        return ours, theirs

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, jobs))
    rows = []
    print(f"machine: {machine()}")
    print(f"{'network':<22}{'layer':<8}{'ours LUT':>10}{'da4ml LUT':>11}{'ours/da4ml':>12}")
    for (net_name, lname, _, _), (ours, theirs) in zip(jobs, results):
        ratio = ours["lut"] / max(theirs["lut"], 1)
        rows.append({"network": net_name, "layer": lname, "ours_lut": ours["lut"], "da4ml_lut": theirs["lut"],
                     "ratio": round(ratio, 3), "da4ml_synth_s": theirs["seconds"]})
        print(f"{net_name:<22}{lname:<8}{ours['lut']:>10,}{theirs['lut']:>11,}{ratio:>12.2f}")
    for net_name in dict.fromkeys(r["network"] for r in rows):
        o = sum(r["ours_lut"] for r in rows if r["network"] == net_name)
        t = sum(r["da4ml_lut"] for r in rows if r["network"] == net_name)
        print(f"{net_name:<22}{'TOTAL':<8}{o:>10,}{t:>11,}{o / max(t, 1):>12.2f}")
    write_results("da4ml_compare", t0, rows=rows)


if __name__ == "__main__":
    main()
