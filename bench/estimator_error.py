"""Estimator error: the analytic cost model against Yosys, per layer, on real networks.

    python bench/estimator_error.py [--family xc7] [--dsp]

Networks: the embedded default (digits compressed as `codesign flow` does), the digits model
quantized to 4 bits (PTQ, unpruned), hls4ml's 6-bit QKeras jet tagger, and hls4ml's
70 %-pruned float jet tagger quantized to 6 bits. Each Dense
stage is synthesized on its own (LUT-only, as compression prices it for ``dsp=0`` budgets);
prints LUT and FF, model versus Yosys, with the relative error. Writes
bench/results/estimator_error.json. ``--dsp``: every weight with more than one CSD digit is a
multiply and Yosys infers DSPs (the model's DSP-mapped pricing; DSP counts compared too);
writes estimator_error_dsp.json. The random-layer sweep is bench/calibrate_cost.py --check.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import MODELS, ROOT, write_results
from codesign.board import SYNTH_FAMILIES, load_board


def networks() -> dict:
    """The networks, each built once and then kept in the cache (compression takes minutes)."""
    from codesign.tools import cache_dir
    from codesign.core.network import Network

    import hashlib

    # compression depends on the cost coefficients: rebuild when they change
    coeffs = (ROOT / "codesign" / "compress" / "cost_coeffs.json").read_bytes() + (ROOT / "codesign" / "compress" / "search.py").read_bytes()
    root = cache_dir() / "bench-networks" / hashlib.sha256(coeffs).hexdigest()[:12]
    names = ["digits default flow", "digits 4-bit PTQ", "jet qkeras 6-bit", "jet 70%-pruned 6-bit"]
    dirs = {n: root / n.replace(" ", "_").replace("%", "pct") for n in names}
    if all((d / "network.json").is_file() for d in dirs.values()):
        return {n: Network.load(d) for n, d in dirs.items()}
    built = build_networks()
    for n, net in built.items():
        net.save(dirs[n])
    return built


def build_networks() -> dict:
    import codesign
    from codesign.importers.builtin import builtin_model
    from codesign.app.flow import compress_network as compress
    from codesign.app.flow import DEFAULT_BOARD, DEFAULT_BUDGET
    from codesign.importers.data import load_dataset
    from codesign.core.fixed import FixedType
    from codesign.compress.quantize import quantize_network

    digits = builtin_model("digits-mlp")
    data = load_dataset("digits")
    jet_t = FixedType(16, 6, True, "RND_CONV", "SAT")
    jet_pruned = codesign.load(MODELS / "KERAS_3layer.json", weights=MODELS / "KERAS_3layer_70pruned_retrained_weights.h5")
    rng = np.random.default_rng(0)
    return {
        # the embedded default: what `codesign flow` builds with no arguments
        "digits default flow": compress(digits, data, DEFAULT_BOARD, DEFAULT_BUDGET, seed=0).network,
        "digits 4-bit PTQ": quantize_network(digits, data.input_type, weight_bits=4, result_bits=10, calib=data.X_train),
        "jet qkeras 6-bit": codesign.load(MODELS / "qkeras_3layer.json"),
        "jet 70%-pruned 6-bit": quantize_network(jet_pruned, jet_t, weight_bits=6, result_bits=12,
                                                 calib=rng.normal(0, 1, (2000, 16))),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="xc7", choices=SYNTH_FAMILIES)
    ap.add_argument("--yosys-abc9", action="store_true", help="Yosys's default ABC9 script instead of ours")
    ap.add_argument("--dsp", action="store_true", help="DSP-mapped multiplies, synthesized with DSP inference")
    args = ap.parse_args()
    from codesign.compress.cost import network_cost
    from rtl_sim.synth import FAST_ABC9_SCRIPT, synthesize_layers

    script = None if args.yosys_abc9 else FAST_ABC9_SCRIPT

    board = load_board({"xc7": "arty-a7-35", "xcup": "zcu104", "cyclonev": "de10-nano"}[args.family])
    t0 = time.perf_counter()
    rows = []
    mult = "dsp" if args.dsp else "lut"
    for name, net in networks().items():
        model = network_cost(net, board, mapping=mult)
        synth = synthesize_layers(net, args.family, dsp=args.dsp, mult=mult, abc9_script=script)
        results = list(synth.values())
        for layer, r in synth.items():
            m = model[layer]
            rows.append({"network": name, "layer": layer, "yosys_lut": r["lut"], "model_lut": round(m.lut),
                         "lut_err_pct": round(100.0 * (m.lut - r["lut"]) / max(r["lut"], 1), 1),
                         "yosys_ff": r["ff"], "model_ff": round(m.ff),
                         "ff_err_pct": round(100.0 * (m.ff - r["ff"]) / max(r["ff"], 1), 1),
                         "yosys_dsp": r["dsp"], "model_dsp": round(m.dsp)})
        tot_y = sum(r["lut"] for r in results)
        tot_m = sum(c.lut for c in model.values())
        rows.append({"network": name, "layer": "TOTAL", "yosys_lut": tot_y, "model_lut": round(tot_m),
                     "lut_err_pct": round(100.0 * (tot_m - tot_y) / max(tot_y, 1), 1),
                     "yosys_ff": sum(r["ff"] for r in results), "model_ff": round(sum(c.ff for c in model.values())),
                     "ff_err_pct": None, "yosys_dsp": sum(r["dsp"] for r in results),
                     "model_dsp": round(sum(c.dsp for c in model.values()))})
    print(f"{'network':<22}{'layer':<10}{'Yosys LUT':>10}{'model LUT':>10}{'err %':>8}{'Yosys FF':>10}{'model FF':>10}"
          f"{'err %':>8}{'Yosys DSP':>10}{'model DSP':>10}")
    for r in rows:
        ffe = "" if r["ff_err_pct"] is None else f"{r['ff_err_pct']:.1f}"
        print(f"{r['network']:<22}{r['layer']:<10}{r['yosys_lut']:>10}{r['model_lut']:>10}{r['lut_err_pct']:>8.1f}"
              f"{r['yosys_ff']:>10}{r['model_ff']:>10}{ffe:>8}{r['yosys_dsp']:>10}{r['model_dsp']:>10}")
    write_results("estimator_error" + ("_dsp" if args.dsp else ""), t0, family=args.family, rows=rows)


if __name__ == "__main__":
    main()
