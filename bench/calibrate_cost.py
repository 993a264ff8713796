"""Refit the analytic cost model's coefficients against Yosys, and print the error table.

    python bench/calibrate_cost.py [--family xc7] [--seeds 21,22,23] [--holdout 24] [--real] [--dsp]
                                   [--formats calibrated|varied] [--write | --check]

Builds a sweep of random Dense layers (codesign.compress.calibration: fan-in, fan-out, sparsity, weight
and input widths, signedness, result widths, ReLU or not), emits each with rtl_sim,
synthesizes it with Yosys (cached), fits the LUT coefficients by least squares on the relative
error, scores them on held-out seeds, and with --write stores them in
codesign/compress/cost_coeffs.json (shipped with the package). Writes
bench/results/calibrate_cost_<family>[_dsp][_varied].json with the whole table.

--dsp sweeps DSP-mapped layers instead (every weight with more than one CSD digit is a DSP
multiply, synthesized with DSP inference) and fits only the DSP features' coefficients, on what
the shipped LUT-only coefficients leave unexplained; it also compares the DSP counts.

--scale-from xc7 fits one factor instead: the family's LUTs as that many times the xc7 model's
(every coefficient scaled). Few layers determine one factor well where they would over-fit all
eighteen; it is how the LUT4 families (ecp5, used for ice40 and gowin too) are calibrated.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from _common import ROOT, write_results
from codesign.board import SYNTH_FAMILIES

from codesign.compress.calibration import random_layers
from codesign.core.timing import MODELS
from codesign.compress.cost import DSP_FEATURES, FEATURES, LUT_FEATURES, coefficients, output_features, priced_luts
from codesign.core.layers import ReLU
from codesign.core.network import Network
from rtl_sim.synth import synthesize
from codesign.tools import find_yosys
from rtl_sim.verilog import emit_verilog


MAX_NONZERO = 600  # keeps one layer's synthesis under about a minute


def features(net: Network, family: str) -> tuple[np.ndarray, int, float]:
    """The layer's cost features per output (rows, FEATURES order), its DSP count and its output FFs."""
    d = net.layers[0]
    relu = isinstance(net.layers[1], ReLU)
    return output_features(d, net.input_type, d.mult, d.result_type, relu, family)


def sweep(seeds: list[int], n: int, mult: str = "lut", formats: str = "calibrated") -> list[tuple[Network, dict]]:
    return [item for seed in seeds for item in random_layers(seed, n, mult, formats, max_nonzero=MAX_NONZERO)]


def real_layers(family: str) -> list[tuple[np.ndarray, dict]]:
    """The Dense stages of bench/estimator_error.py's networks (built once and cached) with Yosys counts."""
    from estimator_error import networks

    from codesign.compress.cost import dense_stages
    from rtl_sim.synth import synthesize_layers

    out = []
    for name, net in networks().items():
        synth = synthesize_layers(net, family, dsp=False, mult="lut")
        for layer, t_in, out_t, relu in dense_stages(net):
            f, _, ff = output_features(layer, t_in, "lut", out_t, relu, family)
            w = layer.weight
            out.append((f,
                        {"id": f"{name[:8]}/{layer.name}"[:14], "n_in": w.shape[0], "n_out": w.shape[1],
                         "sparsity": float(np.mean(w == 0)), "weight_bits": layer.weight_type.width,
                         "input_bits": t_in.width, "relu": relu, "lut": synth[layer.name]["lut"],
                         "ff": synth[layer.name]["ff"], "model_ff": ff + 1, "dsp": 0, "model_dsp": 0}))
    return out


def fit(X: np.ndarray, y: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """Least squares on relative error (rows weighted 1/LUTs, floored at 100 so a handful of
    LUTs does not outweigh a real layer); coefficients may be negative: the terms overlap.
    ``base``: LUTs already explained (the fit is of what remains)."""
    wts = 1.0 / np.maximum(y, 100.0)
    rest = y - (0.0 if base is None else base)
    coef, *_ = np.linalg.lstsq(X * wts[:, None], rest * wts, rcond=None)
    return coef


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="xc7", choices=SYNTH_FAMILIES)
    ap.add_argument("--layers", type=int, default=24, help="random layers per seed")
    ap.add_argument("--seeds", default="21,22,23", help="sweep seeds the fit uses")
    ap.add_argument("--holdout", default="24", help="sweep seeds only scored, never fitted")
    ap.add_argument("--write", action="store_true", help="store the fit in codesign/compress/cost_coeffs.json")
    ap.add_argument("--real", action="store_true", help="also fit the layers of bench/estimator_error.py's networks")
    ap.add_argument("--dsp", action="store_true", help="sweep DSP-mapped layers and fit the DSP features only")
    ap.add_argument("--formats", default="calibrated", choices=["calibrated", "varied"],
                    help="varied: also random binary points, TRN rounding and WRAP overflow (see codesign.compress.calibration)")
    ap.add_argument("--check", action="store_true", help="score the shipped coefficients instead of refitting")
    ap.add_argument("--scale-from", choices=SYNTH_FAMILIES, default=None,
                    help="fit one factor on that family's coefficients instead of every coefficient")
    args = ap.parse_args()
    if args.write and args.formats != "calibrated":
        ap.error("--write fits the shipped coefficients on the calibrated formats only")

    fit_seeds = [int(x) for x in args.seeds.split(",") if x]
    hold_seeds = [int(x) for x in args.holdout.split(",") if x]
    mult = "dsp" if args.dsp else "lut"
    nets = [(n, dict(m, split="fit")) for n, m in sweep(fit_seeds, args.layers, mult, args.formats)]
    nets += [(n, dict(m, split="holdout")) for n, m in sweep(hold_seeds, args.layers, mult, args.formats)]
    tool = find_yosys()

    def synth(item):  # with the family's delay model, as the flow emits for it (ECP5: each adder its own chain)
        d = emit_verilog(item[0], family=args.family if args.family in MODELS else None)
        return synthesize(d.verilog, d.top, args.family, dsp=args.dsp, tool=tool)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(synth, nets))
    rows = []
    for (net, meta), r in zip(nets, results):
        x, n_dsp, ff = features(net, args.family)
        rows.append((x, dict(meta, lut=r["lut"], ff=r["ff"], model_ff=ff + 1, dsp=r["dsp"], model_dsp=n_dsp)))
    if args.real and not args.dsp:
        rows += [(x, dict(m, split="fit")) for x, m in real_layers(args.family)]
    X = np.array([x.sum(axis=0) for x, _ in rows])  # the fit is linear in the summed features
    y = np.array([m["lut"] for _, m in rows], dtype=float)
    shipped = np.array([coefficients()[args.family][k] for k in FEATURES])
    n_lut = len(LUT_FEATURES)
    if args.check:
        coef = shipped
    elif args.scale_from:
        train = np.array([m["split"] == "fit" for _, m in rows])
        src = np.array([coefficients()[args.scale_from][k] for k in FEATURES])
        p = np.array([priced_luts(x, src) for x, _ in rows])[train]
        wts = 1.0 / np.maximum(y[train], 100.0) ** 2  # least squares on relative error, as fit() does
        scale = float(np.sum(wts * p * y[train]) / np.sum(wts * p * p))
        print(f"{args.family} LUTs = {scale:.4f} x the {args.scale_from} model's")
        coef = src * scale
    else:
        train = np.array([m["split"] == "fit" for _, m in rows])
        coef = shipped.copy()
        if args.dsp:  # the LUT-only coefficients stay; the DSP ones explain the rest
            coef[n_lut:] = fit(X[train][:, n_lut:], y[train], base=X[train][:, :n_lut] @ shipped[:n_lut])
        else:
            coef[:n_lut] = fit(X[train][:, :n_lut], y[train])
    pred = np.array([priced_luts(x, coef) for x, _ in rows])
    print(f"{'layer':<15}{'split':<8}{'in':>4}{'out':>5}{'sparse':>8}{'wbits':>6}{'xbits':>6}{'relu':>6}"
          f"{'yosys LUT':>11}{'model LUT':>11}{'err %':>8}{'yosys FF':>10}{'model FF':>10}{'yosys DSP':>10}{'model DSP':>10}")
    table = []
    for (_, m), p in zip(rows, pred):
        err = 100.0 * (p - m["lut"]) / max(m["lut"], 1)
        table.append(dict(m, model_lut=round(float(p)), err_pct=round(err, 1)))
        print(f"{m['id']:<15}{m['split']:<8}{m['n_in']:>4}{m['n_out']:>5}{m['sparsity']:>8.2f}{m['weight_bits']:>6}"
              f"{m['input_bits']:>6}{str(m['relu']):>6}{m['lut']:>11}{p:>11.0f}{err:>8.1f}{m['ff']:>10}{m['model_ff']:>10.0f}"
              f"{m['dsp']:>10}{m['model_dsp']:>10}")
    for split in ("fit", "holdout"):
        e = np.array([abs(t["err_pct"]) for t in table if t["split"] == split and t["id"].startswith("s")])
        big = np.array([abs(t["err_pct"]) for t in table if t["split"] == split and t["id"].startswith("s") and t["lut"] >= 200])
        if len(e):
            print(f"{split}: random layers within 15 %: {np.sum(e <= 15)}/{len(e)}; of those with >= 200 LUTs: "
                  f"{np.sum(big <= 15)}/{len(big)}; mean |error| {np.mean(e):.1f} %, max {np.max(e):.1f} %")
    if args.dsp:
        dsp_err = np.array([abs(t["model_dsp"] - t["dsp"]) / max(t["dsp"], 1) for t in table])
        print(f"DSP counts within 5 %: {np.sum(dsp_err <= 0.05)}/{len(table)}; exact: {np.sum(dsp_err == 0)}")
    fitted = FEATURES if args.scale_from else DSP_FEATURES if args.dsp else LUT_FEATURES
    print("coefficients:", {k: round(float(v), 4) for k, v in zip(FEATURES, coef) if k in fitted})
    if args.write:
        path = ROOT / "codesign" / "compress" / "cost_coeffs.json"
        allc = json.loads(path.read_text())
        new = {k: float(round(v, 4)) for k, v in zip(FEATURES, coef) if k in fitted}
        allc[args.family].update(new)
        if args.family == "xc7":  # Yosys's LUT and FF counts for xcup equal xc7's: one fit serves both
            allc["xcup"].update(new)
        if args.family == "ecp5":  # the other LUT4 families take ECP5's fit (not calibrated on their own)
            allc["ice40"].update(new)
            allc["gowin"].update(new)
        path.write_text(json.dumps(allc, indent=1) + "\n")
        print(f"wrote {path}")
    suffix = ("_dsp" if args.dsp else "") + ("_varied" if args.formats == "varied" else "")
    write_results(f"calibrate_cost_{args.family}{suffix}", family=args.family,
                  coefficients=dict(zip(FEATURES, coef.tolist())), rows=table)


if __name__ == "__main__":
    main()
