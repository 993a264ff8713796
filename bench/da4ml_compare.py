"""Our sparse datapath against da4ml's distributed arithmetic, same weights, same Yosys.

    python bench/da4ml_compare.py

For each Dense layer of the embedded default network, of hls4ml's 6-bit QKeras jet
tagger and of hls4ml's heterogeneous HGQ example (``--networks "hgq mnist heterogeneous"``, each input
in its own HGQ format for both; written to ``da4ml_compare_hgq.json``), da4ml (if installed) builds its constant-matrix-vector-multiply RTL for the same
quantized weights and input type; both are synthesized with the same Yosys (synth_xilinx
xc7, no DSPs) and the table prints our LUTs / da4ml's LUTs. Like for like: da4ml traces the same
function as our stage (the matrix product, then the ReLU and the rounding and overflow to each
type after it), checked equal to our reference on 2,000 inputs before synthesis; ours adds the
stage register (flip-flops). Writes bench/results/da4ml_compare.json.
"""

from __future__ import annotations

import glob
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from _common import machine, write_results


def da4ml_verilog(stage, name: str) -> tuple[str, int]:
    """da4ml's Verilog for one of our stages (a Dense layer and the ReLU/Quant after it), the same
    function as ours, checked on random inputs; and its adder depth."""
    from da4ml.codegen.rtl.rtl_model import VerilogModel
    from da4ml.trace import FixedVariableArray, HWConfig, comb_trace

    from codesign.core.layers import Dense, ReLU

    front = [l for l in stage.layers[:next(j for j, l in enumerate(stage.layers) if isinstance(l, Dense))]]
    layer, t_in = stage.layers[len(front)], stage.input_type
    w = layer.weight * 2.0 ** -layer.weight_type.frac
    b = layer.bias * 2.0 ** -layer.bias_type.frac
    n = w.shape[0]
    k, i, f = np.full(n, int(t_in.signed)), np.full(n, t_in.integer - int(t_in.signed)), np.full(n, t_in.frac)
    if front:  # HGQ: each input in its own format (the stage's first layer casts to them), so da4ml takes them so
        q = front[0]
        k = q.element_signed.astype(int)
        i = np.where(q.element_width > 0, q.element_integer - k, 0)
        f = np.where(q.element_width > 0, q.element_width - q.element_integer, 0)
    # the options hls4ml's distributed-arithmetic pass uses
    inp = FixedVariableArray.from_kif(k, i, f, HWConfig(1, -1, -1),
                                      solver_options={"hard_dc": 2, "search_all_decompose_dc": True})
    x = inp.relu() if any(isinstance(l, ReLU) for l in front) else inp
    product = x @ w + b
    depth = _da4ml_adder_depth(comb_trace(inp, product))  # the matrix product's, as ours is counted
    v = product
    for lyr, t in list(zip(stage.layers, stage.tensor_types()))[len(front):]:
        if isinstance(lyr, ReLU):
            v = v.relu()
        if getattr(lyr, "per_element", False):  # HGQ: each output to its own format (width 0: the constant 0)
            ek = lyr.element_signed.astype(int)
            v = v.quantize(ek, np.where(lyr.element_width > 0, lyr.element_integer - ek, 0),
                           np.where(lyr.element_width > 0, lyr.element_width - lyr.element_integer, 0), t.overflow,
                           t.quant)
        v = _quantize(v, t)
    sol = comb_trace(inp, v)
    _check_same_function(sol, stage)
    with tempfile.TemporaryDirectory() as tmp:
        VerilogModel(sol, name, tmp, print_latency=False).write()
        files = [p for p in sorted(glob.glob(f"{tmp}/src/static/*.v")) if "lookup_table" not in p]
        src = "\n".join(Path(p).read_text() for p in files + [f"{tmp}/src/{name}.v"])
    return src, depth


def _quantize(v, t):
    """``v`` (a da4ml array) to our type ``t``; da4ml has no RND_CONV, so ties-to-even is built
    from its operations as our emitter builds it: floor(x/s + 1/2 - e + e * parity) for an input
    step e, where the parity is the bit of weight s."""
    from da4ml.trace import FixedVariableArray

    k, i, f = int(t.signed), t.integer - int(t.signed), t.frac
    if t.quant != "RND_CONV":
        return v.quantize(k, i, f, t.overflow, t.quant)
    out = []
    for x in v._vars.ravel():
        f_in = x.kif[2]
        if f_in > f:
            parity = x.quantize(0, 1 - f, f, "WRAP", "TRN")
            x = x + (2.0 ** (-f - 1) - 2.0 ** -f_in) + parity * 2.0 ** (f - f_in)
        out.append(x.quantize(k, i, f, t.overflow, "TRN"))
    return FixedVariableArray(np.array(out).reshape(v._vars.shape), v.solver_options, hwconf=v.hwconf)


def _check_same_function(sol, stage, n: int = 2000) -> None:
    """da4ml's solution equals our reference on ``n`` random inputs, corners included."""
    from codesign.core.network import Network

    t = stage.input_type
    lo, hi = t.min_int, t.max_int
    rng = np.random.default_rng(0)
    q = rng.integers(lo, hi + 1, size=(n, stage.input_shape[0]))
    q[0], q[1] = lo, hi
    if getattr(stage.layers[0], "per_element", False):  # HGQ: the inputs that arrive are in their formats
        q = Network(stage.name, stage.input_shape, stage.layers[:1], t).forward_int(q).values
    ours = stage.forward_int(q).as_float()
    theirs = np.array([sol(row * 2.0 ** -t.frac) for row in q], dtype=np.float64)
    if not np.array_equal(ours, theirs):
        bad = int(np.argwhere((ours != theirs).any(axis=1))[0, 0])
        raise SystemExit(f"{stage.name}: da4ml's trace differs from ours at input {q[bad].tolist()}")


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


def _dense(stage):
    from codesign.core.layers import Dense

    return next(l for l in stage.layers if isinstance(l, Dense))


def _csd_depth(layer) -> int:
    """The per-weight datapath's adder depth: a balanced tree over each output's CSD terms."""
    from codesign.core.arith import csd_count

    terms = csd_count(layer.weight).sum(axis=0) + (layer.bias != 0)
    return int(np.ceil(np.log2(max(int(terms.max()), 1))))


NETWORKS = ("digits default flow", "jet qkeras 6-bit", "hgq mnist heterogeneous")


def hgq_dense_stages() -> list[tuple[str, object]]:
    """The Dense stages of hls4ml's heterogeneous HGQ example as flat networks, each opening with the cast to
    its inputs' own formats (``stage_networks``' per-layer units; a flattened image's formats flattened)."""
    import codesign
    from codesign.core.layers import Dense, Flatten, Quant
    from codesign.core.network import Network
    from rtl_sim.synth import stage_networks

    from _common import MODELS

    out = []
    for _, sub in stage_networks(codesign.load(MODELS / "hgq_mnist_heterogeneous.h5")):
        if not any(isinstance(l, Dense) for l in sub.layers):
            continue
        layers = [l for l in sub.layers if not isinstance(l, Flatten)]
        q = layers[0]
        if isinstance(q, Quant) and q.per_element and q.element_width.ndim > 1:
            layers[0] = Quant(q.name, q.result_type, element_width=q.element_width.reshape(-1),
                              element_integer=q.element_integer.reshape(-1),
                              element_signed=q.element_signed.reshape(-1))
        dense = next(l for l in layers if isinstance(l, Dense))
        out.append((dense.name, Network(f"hgq_{dense.name}", (dense.weight.shape[0],), layers, sub.input_type)))
    return out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    ap.add_argument("--depth-slack", type=lambda v: None if v == "none" else int(v), default=argparse.SUPPRESS,
                    help="our adder-depth bound over the minimum, or 'none' (default: the emitter's)")
    args = ap.parse_args()
    try:
        import da4ml  # noqa: F401
    except ImportError:
        print("da4ml is not installed: nothing to compare (pip install da4ml)")
        return
    from estimator_error import networks

    from rtl_sim.synth import stage_networks, synthesize
    from rtl_sim.verilog import emit_verilog

    t0 = time.perf_counter()
    jobs = []
    nets = {n: None for n in args.networks if n == "hgq mnist heterogeneous"}
    if any(n != "hgq mnist heterogeneous" for n in args.networks):
        nets.update(networks())
    for net_name, net in nets.items():
        if net_name not in args.networks:
            continue
        for lname, stage in (hgq_dense_stages() if net is None else stage_networks(net)):
            src, depth = da4ml_verilog(stage, f"da_{lname}")
            jobs.append((net_name, lname, stage, src, depth))

    slack = {"depth_slack": args.depth_slack} if "depth_slack" in vars(args) else {}

    def run(job):
        _, lname, sub, da_src, da_depth = job
        out = {}
        for dp in ("csd", "cmvm"):
            t = time.perf_counter()
            d = emit_verilog(sub, mult="lut", datapath=dp, **slack)
            out[f"{dp}_emit_s"] = time.perf_counter() - t
            out[dp] = synthesize(d.verilog, d.top, "xc7", dsp=False)
            out[f"{dp}_depth"] = d.multipliers[lname].get("adder_depth", _csd_depth(sub.layers[0] if sub.layers[0].name
                                                                                     == lname else _dense(sub)))
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
    name = "da4ml_compare_hgq" if args.networks == ["hgq mnist heterogeneous"] else "da4ml_compare"
    write_results(name, t0, rows=rows)


if __name__ == "__main__":
    main()
