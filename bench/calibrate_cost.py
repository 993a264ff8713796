"""Refit the analytic cost model's coefficients against Yosys, and print the error table.

    python bench/calibrate_cost.py [--family xc7] [--layers 24] [--seeds 7,8] [--write | --check]

Builds a sweep of random Dense layers (fan-in, fan-out, sparsity, weight and input widths,
ReLU or not), emits each with rtl_sim, synthesizes it with Yosys (cached), fits the LUT
coefficients by non-negative least squares, and with --write stores them in
codesign/cost_coeffs.json (shipped with the package).
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from _common import ROOT

from codesign.cost import FEATURES, dense_features
from codesign.fixed import FixedType
from codesign.layers import Dense, Output, ReLU
from codesign.network import Network
from rtl_sim.synth import synthesize
from rtl_sim.tools import find_yosys
from rtl_sim.verilog import emit_verilog


def sweep_layer(rng: np.random.Generator, i: int, prefix: str = "") -> tuple[Network, dict]:
    n_in = int(rng.choice([8, 16, 32]))
    n_out = int(rng.choice([4, 8, 16]))
    sparsity = float(rng.choice([0.3, 0.5, 0.7, 0.9]))
    wb = int(rng.choice([3, 4, 6, 8]))
    xb = int(rng.choice([4, 6, 8]))
    relu = bool(rng.random() < 0.6)
    wt = FixedType(wb, 1)
    w = rng.integers(wt.min_int, wt.max_int + 1, size=(n_in, n_out))
    w[rng.random(w.shape) < sparsity] = 0
    b = rng.integers(wt.min_int, wt.max_int + 1, size=n_out)
    rt = FixedType(int(rng.choice([8, 10, 12, 16])), 4, True, "RND_CONV", "SAT")
    d = Dense("fc", w, b, weight_type=wt, bias_type=wt, result_type=rt, mult="lut")
    layers = [d] + ([ReLU("relu")] if relu else []) + [Output("o")]
    net = Network(f"sweep{i}", (n_in,), layers, FixedType(xb, 2, bool(rng.random() < 0.5)))
    return net, {"id": f"{prefix}{net.name}", "n_in": n_in, "n_out": n_out, "sparsity": sparsity, "weight_bits": wb, "input_bits": xb, "relu": relu}


def features(net: Network) -> tuple[np.ndarray, float]:
    d = net.layers[0]
    relu = isinstance(net.layers[1], ReLU)
    f, _, ff = dense_features(d, net.input_type, "lut", d.result_type, relu)
    return np.array([f[k] for k in FEATURES]), ff


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="xc7", choices=["xc7", "xcup", "cyclonev"])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--seeds", default="7,8", help="comma-separated sweep seeds; each gives --layers layers")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--real", action="store_true", help="also fit the layers of bench/estimator_error.py's networks")
    ap.add_argument("--check", action="store_true", help="score the shipped coefficients instead of refitting")
    args = ap.parse_args()
    from scipy.optimize import nnls

    nets = []
    for seed in (int(x) for x in args.seeds.split(",")):
        rng = np.random.default_rng(seed)
        nets += [sweep_layer(rng, i, f"s{seed}_") for i in range(args.layers)]
    tool = find_yosys()

    def synth(item):
        net, _ = item
        d = emit_verilog(net)
        return synthesize(d.verilog, d.top, args.family, dsp=False, tool=tool)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(synth, nets))
    X = [features(n)[0] for n, _ in nets]
    y = [r["lut"] for r in results]
    if args.real:
        # the layers of real networks (bench/estimator_error.py's, built once and cached)
        from estimator_error import networks

        from codesign.cost import dense_stages
        from rtl_sim.synth import stage_networks

        for name, net in networks().items():
            stages = dict(stage_networks(net))
            for layer, t_in, out_t, relu in dense_stages(net):
                d = emit_verilog(stages[layer.name], mult="lut")
                r = synthesize(d.verilog, d.top, args.family, dsp=False, tool=tool)
                f, _, ff = dense_features(layer, t_in, "lut", out_t, relu)
                X.append(np.array([f[k] for k in FEATURES]))
                y.append(r["lut"])
                w = layer.weight
                nets.append((None, {"id": f"{name[:8]}/{layer.name}"[:12], "n_in": w.shape[0], "n_out": w.shape[1],
                                    "sparsity": float(np.mean(w == 0)), "weight_bits": layer.weight_type.width,
                                    "input_bits": t_in.width, "relu": relu, "ff": ff}))
                results.append(r)
    X = np.array(X)
    y = np.array(y, dtype=float)
    # relative least squares: every layer counts, small or large
    wts = 1.0 / np.maximum(y, 1.0)
    if args.check:
        from codesign.cost import coefficients

        coef = np.array([coefficients()[args.family][k] for k in FEATURES])
    else:
        coef, _ = nnls(X * wts[:, None], y * wts)
    pred = X @ coef
    print(f"{'layer':<12}{'in':>4}{'out':>5}{'sparse':>8}{'wbits':>6}{'xbits':>6}{'relu':>6}"
          f"{'yosys LUT':>11}{'model LUT':>11}{'err %':>8}{'yosys FF':>10}{'model FF':>10}")
    errs = []
    for (net, meta), r, p in zip(nets, results, pred):
        err = 100.0 * (p - r["lut"]) / max(r["lut"], 1)
        errs.append(abs(err))
        print(f"{meta['id']:<12}{meta['n_in']:>4}{meta['n_out']:>5}{meta['sparsity']:>8.1f}{meta['weight_bits']:>6}"
              f"{meta['input_bits']:>6}{str(meta['relu']):>6}{r['lut']:>11}{p:>11.0f}{err:>8.1f}{r['ff']:>10}"
              f"{(features(net)[1] if net is not None else meta['ff']) + 1:>10.0f}")
    print(f"mean |error| {np.mean(errs):.1f} %, max {np.max(errs):.1f} %")
    print("coefficients:", dict(zip(FEATURES, np.round(coef, 4))))
    if args.write:
        path = ROOT / "codesign" / "cost_coeffs.json"
        allc = json.loads(path.read_text())
        allc[args.family].update({k: float(round(v, 4)) for k, v in zip(FEATURES, coef)})
        path.write_text(json.dumps(allc, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
