"""Refit the analytic cost model's coefficients against Yosys, and print the error table.

    python bench/calibrate_cost.py [--family xc7] [--seeds 21,22,23] [--holdout 24] [--real] [--write | --check]

Builds a sweep of random Dense layers (fan-in, fan-out, sparsity, weight and input widths and
signedness, ReLU or not), emits each with rtl_sim, synthesizes it with Yosys (cached), fits
the LUT coefficients by least squares on the relative error, scores them on held-out seeds,
and with --write stores them in codesign/cost_coeffs.json (shipped with the package). Writes
bench/results/calibrate_cost_<family>.json with the whole table.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from _common import ROOT, write_results

from codesign.cost import FEATURES, dense_features
from codesign.fixed import FixedType
from codesign.layers import Dense, Output, ReLU
from codesign.network import Network
from rtl_sim.synth import synthesize
from rtl_sim.tools import find_yosys
from rtl_sim.verilog import emit_verilog


MAX_NONZERO = 600  # keeps one layer's synthesis under about a minute


def sweep_layer(rng: np.random.Generator, i: int, prefix: str = "") -> tuple[Network, dict]:
    """A random LUT-mapped Dense layer: fan-in/out, sparsity, weight and input widths and signedness,
    rounding/saturating result, optional ReLU; at most MAX_NONZERO nonzero weights."""
    n_in = int(rng.choice([8, 16, 32, 64]))
    n_out = int(rng.choice([4, 8, 16, 32]))
    sparsity = float(rng.choice([0.3, 0.5, 0.7, 0.9]))
    sparsity = max(sparsity, 1.0 - MAX_NONZERO / (n_in * n_out))
    wb = int(rng.choice([3, 4, 6, 8]))
    xb = int(rng.choice([4, 6, 8, 12, 16]))
    relu = bool(rng.random() < 0.6)
    wt = FixedType(wb, 1)
    w = rng.integers(wt.min_int, wt.max_int + 1, size=(n_in, n_out))
    w[rng.random(w.shape) < sparsity] = 0
    b = rng.integers(wt.min_int, wt.max_int + 1, size=n_out)
    rt = FixedType(int(rng.choice([8, 10, 12, 16])), 4, True, "RND_CONV", "SAT")
    d = Dense("fc", w, b, weight_type=wt, bias_type=wt, result_type=rt, mult="lut")
    layers = [d] + ([ReLU("relu")] if relu else []) + [Output("o")]
    net = Network(f"sweep{i}", (n_in,), layers, FixedType(xb, min(xb - 1, 4), bool(rng.random() < 0.5)))
    return net, {"id": f"{prefix}{net.name}", "n_in": n_in, "n_out": n_out, "sparsity": round(sparsity, 2),
                 "weight_bits": wb, "input_bits": xb, "relu": relu}


def features(net: Network) -> tuple[np.ndarray, float]:
    d = net.layers[0]
    relu = isinstance(net.layers[1], ReLU)
    f, _, ff = dense_features(d, net.input_type, "lut", d.result_type, relu)
    return np.array([f[k] for k in FEATURES]), ff


def sweep(seeds: list[int], n: int) -> list[tuple[Network, dict]]:
    nets = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        nets += [sweep_layer(rng, i, f"s{seed}_") for i in range(n)]
    return nets


def real_layers(family: str) -> list[tuple[np.ndarray, dict]]:
    """The Dense stages of bench/estimator_error.py's networks (built once and cached) with Yosys counts."""
    from estimator_error import networks

    from codesign.cost import dense_stages
    from rtl_sim.synth import synthesize_layers

    out = []
    for name, net in networks().items():
        synth = synthesize_layers(net, family, dsp=False, mult="lut")
        for layer, t_in, out_t, relu in dense_stages(net):
            f, _, ff = dense_features(layer, t_in, "lut", out_t, relu)
            w = layer.weight
            out.append((np.array([f[k] for k in FEATURES]),
                        {"id": f"{name[:8]}/{layer.name}"[:14], "n_in": w.shape[0], "n_out": w.shape[1],
                         "sparsity": float(np.mean(w == 0)), "weight_bits": layer.weight_type.width,
                         "input_bits": t_in.width, "relu": relu, "lut": synth[layer.name]["lut"],
                         "ff": synth[layer.name]["ff"], "model_ff": ff + 1}))
    return out


def fit(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on relative error (rows weighted 1/LUTs, floored at 100 so a handful of
    LUTs does not outweigh a real layer); coefficients may be negative: the terms overlap."""
    wts = 1.0 / np.maximum(y, 100.0)
    coef, *_ = np.linalg.lstsq(X * wts[:, None], y * wts, rcond=None)
    return coef


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="xc7", choices=["xc7", "xcup", "cyclonev"])
    ap.add_argument("--layers", type=int, default=24, help="random layers per seed")
    ap.add_argument("--seeds", default="21,22,23", help="sweep seeds the fit uses")
    ap.add_argument("--holdout", default="24", help="sweep seeds only scored, never fitted")
    ap.add_argument("--write", action="store_true", help="store the fit in codesign/cost_coeffs.json")
    ap.add_argument("--real", action="store_true", help="also fit the layers of bench/estimator_error.py's networks")
    ap.add_argument("--check", action="store_true", help="score the shipped coefficients instead of refitting "
                    "(on the summed features, before the floor at zero per output that dense_cost applies)")
    args = ap.parse_args()

    fit_seeds = [int(x) for x in args.seeds.split(",") if x]
    hold_seeds = [int(x) for x in args.holdout.split(",") if x]
    nets = [(n, dict(m, split="fit")) for n, m in sweep(fit_seeds, args.layers)]
    nets += [(n, dict(m, split="holdout")) for n, m in sweep(hold_seeds, args.layers)]
    tool = find_yosys()

    def synth(item):
        d = emit_verilog(item[0])
        return synthesize(d.verilog, d.top, args.family, dsp=False, tool=tool)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(synth, nets))
    rows = []
    for (net, meta), r in zip(nets, results):
        x, ff = features(net)
        rows.append((x, dict(meta, lut=r["lut"], ff=r["ff"], model_ff=ff + 1)))
    if args.real:
        rows += [(x, dict(m, split="fit")) for x, m in real_layers(args.family)]
    X = np.array([x for x, _ in rows])
    y = np.array([m["lut"] for _, m in rows], dtype=float)
    if args.check:
        from codesign.cost import coefficients

        coef = np.array([coefficients()[args.family][k] for k in FEATURES])
    else:
        train = np.array([m["split"] == "fit" for _, m in rows])
        coef = fit(X[train], y[train])
    pred = np.maximum(X @ coef, 0.0)
    print(f"{'layer':<15}{'split':<8}{'in':>4}{'out':>5}{'sparse':>8}{'wbits':>6}{'xbits':>6}{'relu':>6}"
          f"{'yosys LUT':>11}{'model LUT':>11}{'err %':>8}{'yosys FF':>10}{'model FF':>10}")
    table = []
    for (_, m), p in zip(rows, pred):
        err = 100.0 * (p - m["lut"]) / max(m["lut"], 1)
        table.append(dict(m, model_lut=round(float(p)), err_pct=round(err, 1)))
        print(f"{m['id']:<15}{m['split']:<8}{m['n_in']:>4}{m['n_out']:>5}{m['sparsity']:>8.2f}{m['weight_bits']:>6}"
              f"{m['input_bits']:>6}{str(m['relu']):>6}{m['lut']:>11}{p:>11.0f}{err:>8.1f}{m['ff']:>10}{m['model_ff']:>10.0f}")
    for split in ("fit", "holdout"):
        e = np.array([abs(t["err_pct"]) for t in table if t["split"] == split and t["id"].startswith("s")])
        big = np.array([abs(t["err_pct"]) for t in table if t["split"] == split and t["id"].startswith("s") and t["lut"] >= 200])
        if len(e):
            print(f"{split}: random layers within 15 %: {np.sum(e <= 15)}/{len(e)}; of those with >= 200 LUTs: "
                  f"{np.sum(big <= 15)}/{len(big)}; mean |error| {np.mean(e):.1f} %, max {np.max(e):.1f} %")
    print("coefficients:", dict(zip(FEATURES, np.round(coef, 4))))
    if args.write:
        path = ROOT / "codesign" / "cost_coeffs.json"
        allc = json.loads(path.read_text())
        allc[args.family] = {**{k: float(round(v, 4)) for k, v in zip(FEATURES, coef)},
                             **{k: allc[args.family][k] for k in ("lut_per_dsp", "mux_per_bit")}}
        path.write_text(json.dumps(allc, indent=1) + "\n")
        print(f"wrote {path}")
    write_results(f"calibrate_cost_{args.family}", family=args.family, coefficients=dict(zip(FEATURES, coef.tolist())),
                  rows=table)


if __name__ == "__main__":
    main()
