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
        src = "\n".join(Path(p).read_text() for p in files + [f"{tmp}/src/{name}.v"])
    return src, _da4ml_adder_depth(sol)


def _da4ml_adder_depth(sol) -> int:
    """Adders on the longest path of da4ml's solution (its ops carry their own input ids)."""
    depth: list[int] = []
    for op in sol.ops:
        if op.opcode == -1:  # an input: id0 indexes the inputs, not the ops
            depth.append(0)
            continue
        ins = [i for i in (op.id0, op.id1) if i >= 0]
        d = max((depth[i] for i in ins), default=0)
        depth.append(d + (1 if op.opcode in (0, 1, 4) else 0))  # add, subtract, add a constant
    return max(depth, default=0)


def _csd_depth(layer) -> int:
    """The per-weight datapath's adder depth: a balanced tree over each output's CSD terms."""
    from codesign.core.arith import csd_count

    terms = csd_count(layer.weight).sum(axis=0) + (layer.bias != 0)
    return int(np.ceil(np.log2(max(int(terms.max()), 1))))


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
            src, depth = da4ml_verilog(layer, t_in, f"da_{layer.name}")
            jobs.append((net_name, layer.name, stages[layer.name], src, depth))

    def run(job):
        _, lname, sub, da_src, da_depth = job
        out = {}
        for dp in ("csd", "cmvm"):
            t = time.perf_counter()
            d = emit_verilog(sub, mult="lut", datapath=dp)
            out[f"{dp}_emit_s"] = time.perf_counter() - t
            out[dp] = synthesize(d.verilog, d.top, "xc7", dsp=False)
            out[f"{dp}_depth"] = d.multipliers[lname].get("adder_depth", _csd_depth(sub.layers[0]))
            out[f"{dp}_adders"] = d.multipliers[lname].get("adders")
        out["da4ml"] = synthesize(da_src, f"da_{lname}", "xc7", dsp=False, flatten=True)
        out["da4ml_depth"] = da_depth
        return out

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, jobs))
    rows = []
    print(f"machine: {machine()}")
    print(f"{'network':<22}{'layer':<8}{'csd LUT':>9}{'cmvm LUT':>10}{'da4ml LUT':>11}{'cmvm/da4ml':>12}"
          f"{'depth csd/cmvm/da4ml':>22}{'cmvm s':>8}")
    for (net_name, lname, *_), r in zip(jobs, results):
        ratio = r["cmvm"]["lut"] / max(r["da4ml"]["lut"], 1)
        rows.append({"network": net_name, "layer": lname, "csd_lut": r["csd"]["lut"], "ours_lut": r["cmvm"]["lut"],
                     "da4ml_lut": r["da4ml"]["lut"], "ratio": round(ratio, 3), "csd_ratio":
                     round(r["csd"]["lut"] / max(r["da4ml"]["lut"], 1), 3), "depth_csd": r["csd_depth"],
                     "depth_cmvm": r["cmvm_depth"], "depth_da4ml": r["da4ml_depth"], "cmvm_emit_s":
                     round(r["cmvm_emit_s"], 3), "cmvm_adders": r["cmvm_adders"], "da4ml_synth_s": r["da4ml"]["seconds"]})
        print(f"{net_name:<22}{lname:<8}{r['csd']['lut']:>9,}{r['cmvm']['lut']:>10,}{r['da4ml']['lut']:>11,}"
              f"{ratio:>12.2f}{r['csd_depth']:>10}/{r['cmvm_depth']}/{r['da4ml_depth']:<9}{r['cmvm_emit_s']:>8.2f}")
    for net_name in dict.fromkeys(r["network"] for r in rows):
        sel = [r for r in rows if r["network"] == net_name]
        c, o, t = (sum(r[k] for r in sel) for k in ("csd_lut", "ours_lut", "da4ml_lut"))
        secs = sum(r["cmvm_emit_s"] for r in sel)
        print(f"{net_name:<22}{'TOTAL':<8}{c:>9,}{o:>10,}{t:>11,}{o / max(t, 1):>12.2f}{'':>22}{secs:>8.2f}")
    write_results("da4ml_compare", t0, rows=rows)


if __name__ == "__main__":
    main()
