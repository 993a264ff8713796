"""Energy per inference against accuracy: the dense 16-bit baseline, the LUT-budgeted and the energy-budgeted
compressions of the default digits network, each priced by simulating its Yosys netlist (``rtl_sim.activity``)
and by the fast activity model (``codesign.core.activity_model``); and the fast model's calibration. The jet
tagger (hls4ml's 16-64-32-32-5) likewise: its float model's 16-bit baseline, the QKeras 6-bit network as imported
and a LUT-budgeted compression of the float one, scored by agreement with the float model (``quality.jet_data``).

Every design is the xc7 datapath the default flow builds for the Arty A7-35 (pipelined for its 100 MHz clock,
LUT-only, II = 1), fed consecutive samples of the digits test set (random inputs for the random networks).
Energy is per inference at 10^8 inferences/s; the fast model prices the same activity kinds with the same
coefficients (``codesign.core.energy``). Written to ``bench/results/energy.json`` (the comparison) and
``bench/results/energy_calibration.json`` (the fit and its residuals); the simulated activity is kept in
``bench/results/energy_activity.json`` so a second run only re-prices.

    python bench/energy.py                 # the three digits designs and the three jet tagger designs
    python bench/energy.py --networks jet  # re-run one network (the other's last results are kept)
    python bench/energy.py --calibrate     # refit the fast model's factors (prints CALIBRATION for the module)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (the repository on sys.path)
import numpy as np
from _common import ROOT, write_results
from scipy.optimize import nnls

from codesign.board import load_board
from codesign.core.activity_model import CALIBRATION, FIT_FANOUT, FIT_KINDS, fast_energy, stage_features
from codesign.core.energy import energy_per_inference
from codesign.core.network import Network

BOARD = "arty-a7-35"
FAMILY = "xc7"
CLOCK = 100.0
SAMPLES = 500
EMIT = {"clock_mhz": CLOCK, "family": FAMILY}  # the flow's RTL for the Arty: pipelined for its clock
ACTIVITY = ROOT / "bench" / "results" / "energy_activity.json"


# ---- the designs -----------------------------------------------------------------------------------------
def digits_test(net: Network, n: int = SAMPLES) -> np.ndarray:
    from codesign.importers.data import load_dataset, shaped_for

    ds = shaped_for(load_dataset("digits", 0), net.input_shape)
    return net.quantize_input(ds.X_test[:n]).reshape(min(n, len(ds.X_test)), -1)


def random_inputs(net: Network, n: int = SAMPLES, seed: int = 11) -> np.ndarray:
    t = net.input_type
    return np.random.default_rng(seed).integers(t.min_int, t.max_int + 1, size=(n, net.input_shape[0]))


def compressed(name: str, args: list[str]) -> Network:
    """``codesign compress`` with ``args``, once (cached in the temporary directory)."""
    from codesign.app.cli import main

    d = Path(tempfile.gettempdir()) / "codesign-bench-energy" / name
    if not (d / "network.json").is_file():
        if main(["compress", *args, "--out", str(d), "--force", "--quiet"]) != 0:
            sys.exit(f"compressing {name} failed")
    return Network.load(d)


def calibration_designs() -> dict[str, tuple[Network, np.ndarray, dict]]:
    """The fit's designs: a tiny layer (tests/test_energy.py's, unpipelined), the tests' random 16-12-8-4 MLP,
    the same pruned to 40 % of its weights, and the default flow's compressed digits MLP."""
    from codesign.compress.calibration import small_mlp
    from tests.test_energy import tiny_layer

    tiny = tiny_layer()
    small = small_mlp()
    pruned = small_mlp()
    r = np.random.default_rng(5)
    for layer in pruned.layers:
        if getattr(layer, "weight", None) is not None:
            layer.weight[r.random(layer.weight.shape) < 0.6] = 0
    digits = compressed("digits-lut", ["digits-mlp", "--data", "digits", "--budget", "lut=0.25,dsp=0"])
    return {"tiny": (tiny, random_inputs(tiny, 400), {}), "small": (small, random_inputs(small), EMIT),
            "small_pruned": (pruned, random_inputs(pruned), EMIT), "digits": (digits, digits_test(digits), EMIT)}


# ---- simulation, cached ----------------------------------------------------------------------------------
def _key(net: Network, q: np.ndarray, emit: dict) -> str:
    h = hashlib.sha256(json.dumps(emit, sort_keys=True).encode() + np.ascontiguousarray(q).tobytes())
    for layer in net.layers:
        for a in ("weight", "bias"):
            v = getattr(layer, a, None)
            if v is not None:
                h.update(np.ascontiguousarray(v).tobytes())
        h.update(str(getattr(layer, "result_type", None)).encode())
    return h.hexdigest()[:16]


def simulated(net: Network, q: np.ndarray, emit: dict) -> list[dict[str, Any]]:
    """Each stage's netlist activity (``rtl_sim.activity.network_activity``), kept in ACTIVITY by design."""
    from rtl_sim.activity import network_activity

    store = json.loads(ACTIVITY.read_text()) if ACTIVITY.is_file() else {}
    key = _key(net, q, emit)
    if key not in store:
        acts = [a.to_json() for a in network_activity(net, q, FAMILY, emit=emit)]
        bad = [a["stage"] for a in acts if not a["bit_exact"]]
        if bad:
            sys.exit(f"{net.name}: the netlist of {bad} is not bit-exact")
        store = json.loads(ACTIVITY.read_text()) if ACTIVITY.is_file() else {}
        store[key] = acts
        ACTIVITY.parent.mkdir(exist_ok=True)
        ACTIVITY.write_text(json.dumps(store, indent=1) + "\n")
    return store[key]


def is_simulated(net: Network, q: np.ndarray, emit: dict) -> bool:
    """Whether ``net``'s activity on ``q`` is already in ACTIVITY (pricing it again costs nothing)."""
    return ACTIVITY.is_file() and _key(net, q, emit) in json.loads(ACTIVITY.read_text())


def sim_energy(acts: list[dict], part: str) -> dict[str, Any]:
    return energy_per_inference(acts, FAMILY, part, CLOCK, CLOCK * 1e6)


# ---- the fit ---------------------------------------------------------------------------------------------
def fit(rows: list[tuple[Any, dict]]) -> dict[str, Any]:
    """CALIBRATION's entry for FAMILY from (stage features, simulated stage activity) pairs: per kind, NNLS of
    its toggles per inference, and of its toggles x fan-out, on its features (relative residuals), and
    netlist flip-flops per register bit."""
    out: dict[str, Any] = {"toggles": {}, "fanout": {}}
    for kind, feats in FIT_KINDS.items():
        y = np.array([a["toggles"][kind] / a["samples"] for _, a in rows])
        if not y.any():
            out["toggles"][kind] = dict(CALIBRATION[FAMILY]["toggles"].get(kind, {}))
            continue
        A = np.array([[f.toggles[k] for k in feats] for f, _ in rows])
        wgt = 1.0 / np.maximum(y, 1.0)
        coef, _ = nnls(A * wgt[:, None], y * wgt)
        out["toggles"][kind] = {k: round(float(c), 4) for k, c in zip(feats, coef) if c > 0}
    for kind, feats in FIT_FANOUT.items():
        y = np.array([a["toggle_fanout"][kind] / a["samples"] for _, a in rows])
        if not y.any():
            out["fanout"][kind] = dict(CALIBRATION[FAMILY]["fanout"].get(kind, {}))
            continue
        A = np.array([[f.toggles[k] for k in feats] for f, _ in rows])
        wgt = 1.0 / np.maximum(y, 1.0)
        coef, _ = nnls(A * wgt[:, None], y * wgt)
        out["fanout"][kind] = {k: round(float(c), 4) for k, c in zip(feats, coef) if c > 0}
    out["ff_per_bit"] = round(sum(a["ff"] for _, a in rows) / max(sum(f.register_bits for f, _ in rows), 1), 4)
    return out


def residuals(designs: dict, part: str) -> list[dict[str, Any]]:
    """Per design and stage: the simulated and the fast model's dynamic energy (mid), and the error."""
    out = []
    for name, (net, q, emit) in designs.items():
        sim = sim_energy(simulated(net, q, emit), part)
        fast = fast_energy(net, q, FAMILY, part, CLOCK, pipelined=bool(emit))
        row = {"design": name, "sim_dynamic_nj": sim["mid"]["dynamic_j"] * 1e9,
               "fast_dynamic_nj": fast["mid"]["dynamic_j"] * 1e9, "layers": {}}
        row["error"] = row["fast_dynamic_nj"] / row["sim_dynamic_nj"] - 1
        for st, e in sim["mid"]["dynamic_layers_j"].items():
            f = fast["mid"]["dynamic_layers_j"][st]
            row["layers"][st] = {"sim_nj": round(e * 1e9, 5), "fast_nj": round(f * 1e9, 5), "error": round(f / e - 1, 4)}
        out.append(row)
    return out


def calibrate() -> dict[str, Any]:
    """Fit CALIBRATION[FAMILY] over the calibration designs (simulated once, then kept), print it, each design's
    error in and out of the fit, and write bench/results/energy_calibration.json."""
    import codesign.core.activity_model as am

    part = load_board(BOARD).part
    designs = calibration_designs()
    rows, by_design = [], {}
    for name, (net, q, emit) in designs.items():
        acts = simulated(net, q, emit)
        feats = stage_features(net, q, CLOCK if emit else None, FAMILY)
        by_design[name] = list(zip(feats, acts))
        rows += by_design[name]
    held_out = {}  # each design priced by a fit over the others: the model's error on a design it has not seen
    for name in designs:
        am.CALIBRATION[FAMILY] = dict(fit([r for k, v in by_design.items() if k != name for r in v]), source="held out")
        r = residuals({name: designs[name]}, part)[0]
        held_out[name] = round(r["error"], 4)
        print(f"held out: {name:14s} fast {r['fast_dynamic_nj']:.4f} nJ vs simulated {r['sim_dynamic_nj']:.4f} nJ "
              f"({r['error']:+.1%})")
    cal = fit(rows)
    cal["source"] = (f"bench/energy.py --calibrate: NNLS over {len(rows)} stages of {', '.join(designs)} "
                     f"(xc7 netlists simulated on up to {SAMPLES} samples)")
    am.CALIBRATION[FAMILY] = am.CALIBRATION["xcup"] = cal
    print(json.dumps(cal, indent=1))
    res = residuals(designs, part)
    for r in res:
        print(f"{r['design']:14s} sim {r['sim_dynamic_nj']:.4f} nJ  fast {r['fast_dynamic_nj']:.4f} nJ  "
              f"{r['error']:+.1%}  " + "  ".join(f"{k} {v['error']:+.1%}" for k, v in r["layers"].items()))
    write_results("energy_calibration", calibration=cal, residuals=res, held_out_error=held_out)
    return cal


# ---- the comparison --------------------------------------------------------------------------------------
BASELINE_SIM_LUTS = 25_000  # above this the baseline's netlist simulation takes too long here: fast model only
SIMULATE_LARGE = False  # --simulate-large: simulate the jet designs above BASELINE_SIM_LUTS too (hours here)


def design_row(name: str, net: Network, ds: Any, board: Any, simulate: bool,
               q: np.ndarray | None = None) -> dict[str, Any]:
    """One design's accuracy (agreement for the jet tagger), size, LUTs and energy (simulated and fast) on the
    quantized inputs ``q`` (default: the whole digits test set)."""
    from codesign.compress.cost import network_cost, total_cost
    from codesign.compress.search import score

    q = digits_test(net, len(ds.X_test)) if q is None else q
    cost = total_cost(network_cost(net, board, "lut"))
    fast = fast_energy(net, q, FAMILY, board.part, CLOCK)
    row: dict[str, Any] = {
        "design": name, "accuracy": round(score(net, ds.X_test, ds.y_test, ds.task), 4),
        "analytic_lut": cost["lut"], "analytic_ff": cost["ff"],
        "layers": {l.name: {"shape": list(l.weight.shape), "nonzero": int(np.count_nonzero(l.weight)),
                            "weight_bits": l.weight_type.width} for l in net.weighted_layers()},
        "inputs_used": int(np.count_nonzero(np.any(net.weighted_layers()[0].weight != 0, axis=1))),
        "fast": {"dynamic_nj": fast["mid"]["dynamic_j"] * 1e9, "total_nj": fast["mid"]["total_j"] * 1e9,
                 "layers_nj": {k: v * 1e9 for k, v in fast["mid"]["dynamic_layers_j"].items()}},
        "static_nj": fast["mid"]["static_j"] * 1e9}
    if simulate:
        sim = sim_energy(simulated(net, q, EMIT), board.part)
        row["simulated"] = {"dynamic_nj": sim["mid"]["dynamic_j"] * 1e9, "total_nj": sim["mid"]["total_j"] * 1e9,
                            "range_total_nj": [sim["low"]["total_j"] * 1e9, sim["high"]["total_j"] * 1e9],
                            "toggle_rate": sim["toggle_rate"], "netlist_lut_outputs": netlist_luts(simulated(net, q, EMIT)),
                            "layers_nj": {k: v * 1e9 for k, v in sim["mid"]["dynamic_layers_j"].items()}}
        row["fast_error"] = row["fast"]["dynamic_nj"] / row["simulated"]["dynamic_nj"] - 1
    else:
        row["simulated"] = None
        row["not_simulated"] = f"{cost['lut']:,} analytic LUTs: above {BASELINE_SIM_LUTS:,}, the netlist simulation " \
                               "takes too long on this machine; the fast model only"
    return row


def netlist_luts(acts: list[dict]) -> int:
    """LUT output nets of the simulated Yosys netlists (all stages): about their LUT count."""
    return sum(a["cells"].get("lut", 0) for a in acts)


def ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's total and dynamic energy over the baseline's (rows[0]), simulated where it was, else fast."""
    def e(r: dict, k: str) -> float:
        return (r["simulated"] or r["fast"])[k]

    for r in rows:
        r["ratio_to_baseline"] = {k: round(e(r, k) / e(rows[0], k), 4) for k in ("total_nj", "dynamic_nj")}


def kept_inputs(net: Network) -> set[int]:
    return set(np.flatnonzero(np.any(net.weighted_layers()[0].weight != 0, axis=1)).tolist())


def compare_digits(board: Any) -> dict[str, Any]:
    """The digits MLP: the dense 16-bit baseline, the LUT-budgeted and the energy-budgeted compressions."""
    from codesign.budget import format_energy
    from codesign.compress.cost import network_cost, total_cost
    from codesign.compress.energy_cost import energy_pj
    from codesign.compress.quantize import quantize_network
    from codesign.compress.search import default_input_type
    from codesign.importers.builtin import builtin_model
    from codesign.importers.data import load_dataset

    ds = load_dataset("digits", 0)
    flt = builtin_model("digits-mlp")
    base = quantize_network(flt, default_input_type(ds.X_train), 16, result_bits=16, calib=ds.X_train)
    lut = compressed("digits-lut", ["digits-mlp", "--data", "digits", "--budget", "lut=0.25,dsp=0"])
    # the energy budget: the LUT-budgeted design's energy by the fast model, as the search prices it
    e_lut = energy_pj(lut, board, ds.X_val, "lut")
    spec = f"energy={format_energy(e_lut)},dsp=0"
    energy = compressed(f"digits-{spec}", ["digits-mlp", "--data", "digits", "--budget", spec])
    rows = [design_row("dense 16-bit baseline", base, ds, board,
                       total_cost(network_cost(base, board, "lut"))["lut"] <= BASELINE_SIM_LUTS),
            design_row("LUT-budgeted (lut=0.25,dsp=0)", lut, ds, board, True),
            design_row(f"energy-budgeted ({spec})", energy, ds, board, True)]
    a, b = kept_inputs(lut), kept_inputs(energy)
    diff = {"inputs_kept_lut": len(a), "inputs_kept_energy": len(b), "inputs_kept_both": len(a & b),
            "nonzero_per_layer_lut": {k: v["nonzero"] for k, v in rows[1]["layers"].items()},
            "nonzero_per_layer_energy": {k: v["nonzero"] for k, v in rows[2]["layers"].items()},
            "precision_lut": lut.metadata.get("precision"), "precision_energy": energy.metadata.get("precision")}
    print(json.dumps(diff))
    return {"score": "test accuracy", "samples": len(ds.X_test), "energy_budget_pj": e_lut, "designs": rows,
            "pruning_difference": diff}


JET_BUDGET = "lut=0.5,dsp=0"  # 10,400 of the Arty A7-35's 20,800 LUTs


def compare_jet(board: Any) -> dict[str, Any]:
    """hls4ml's jet tagger: the float model's dense 16-bit baseline, the QKeras 6-bit network as imported, and a
    LUT-budgeted compression of the float one; agreement with the float model's argmax in place of accuracy."""
    import codesign
    from codesign.budget import Budget
    from codesign.compress.cost import network_cost, total_cost
    from codesign.compress.quantize import quantize_network
    from codesign.compress.search import compress
    from quality import jet_data

    flt, ds = jet_data()
    base = quantize_network(flt, "ap_fixed<16,6,AP_RND_CONV,AP_SAT>", 16, result_bits=16, calib=ds.X_train)
    qk = codesign.load(ROOT / "tests" / "models" / "qkeras_3layer.json")
    d = Path(tempfile.gettempdir()) / "codesign-bench-energy" / f"jet-{JET_BUDGET}"
    if not (d / "network.json").is_file():
        compress(flt, ds, Budget.parse(JET_BUDGET, board), seed=0).network.save(d)
    lut = Network.load(d)

    def q(net: Network) -> np.ndarray:  # energy on the first SAMPLES held-out inputs; agreement on all of them
        return net.quantize_input(ds.X_test[:SAMPLES]).reshape(SAMPLES, -1)

    def small(net: Network) -> bool:  # as for the digits baseline: large netlists only if asked or already done
        return (SIMULATE_LARGE or is_simulated(net, q(net), EMIT)
                or total_cost(network_cost(net, board, "lut"))["lut"] <= BASELINE_SIM_LUTS)

    rows = [design_row(name, net, ds, board, small(net), q(net)) for name, net in
            (("dense 16-bit baseline", base), ("QKeras 6-bit, as imported", qk), (f"LUT-budgeted ({JET_BUDGET})", lut))]
    return {"score": "agreement with the float model (random N(0,1) inputs)", "samples": SAMPLES,
            "agreement_samples": len(ds.X_test), "lut_budget": JET_BUDGET, "designs": rows}


NETWORKS = {"digits": compare_digits, "jet": compare_jet}


def compare(t0: float, networks: list[str]) -> None:
    """Run ``networks``, keep the others' results from the last bench/results/energy.json, plot and write it."""
    board = load_board(BOARD)
    old = json.loads((ROOT / "bench" / "results" / "energy.json").read_text()) \
        if (ROOT / "bench" / "results" / "energy.json").is_file() else {}
    results = old.get("networks") or ({"digits": {k: old[k] for k in ("samples", "energy_budget_pj", "designs",
                                                                        "pruning_difference")}} if old else {})
    for name in networks:
        results[name] = res = NETWORKS[name](board)
        ratios(res["designs"])
        for r in res["designs"]:
            sim = r["simulated"]
            print(f"{name:6s} {r['design']:40s} score {r['accuracy']:.3f}  LUT {r['analytic_lut']:7,}  "
                  f"fast {r['fast']['total_nj']:.3f} nJ  x{r['ratio_to_baseline']['total_nj']:.3f}"
                  + (f"  simulated {sim['total_nj']:.3f} nJ (dynamic {sim['dynamic_nj']:.3f}, fast {r['fast_error']:+.1%})"
                     if sim else "  (not simulated)"), flush=True)
    for res in results.values():  # kept results from before the ratios were recorded
        ratios(res["designs"])
    plot(results, ROOT / "docs" / "benchmarks" / "energy.png")
    write_results("energy", t0, board=BOARD, family=FAMILY, clock_mhz=CLOCK, inferences_per_s=CLOCK * 1e6,
                  networks=results, calibration=CALIBRATION[FAMILY]["source"])


def plot(results: dict[str, dict[str, Any]], out: Path) -> None:
    """Score against energy per inference, one panel per network: simulated (filled) and fast model (open)."""
    from codesign.app.plots import new_figure, png_bytes

    fig = new_figure(figsize=(6.4 * len(results), 3.6), dpi=110)
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, (name, res) in zip(axes, results.items()):
        _panel(ax, name, res)
    fig.tight_layout()
    out.write_bytes(png_bytes(fig))


def _panel(ax: Any, name: str, res: dict[str, Any]) -> None:
    for r, c in zip(res["designs"], ("tab:gray", "tab:blue", "tab:green")):
        ax.scatter([r["fast"]["total_nj"]], [r["accuracy"] * 100], facecolors="none", edgecolors=c, s=60)
        if r["simulated"]:
            ax.scatter([r["simulated"]["total_nj"]], [r["accuracy"] * 100], color=c, s=30, label=r["design"])
        else:
            ax.scatter([], [], color=c, label=r["design"] + " (fast model only)")
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference, nJ (dynamic + static, mid; open: fast model)")
    ax.set_ylabel(f"{res.get('score', 'test accuracy').split(' (')[0]}, %")
    title = {"digits": "digits MLP", "jet": "jet tagger"}.get(name, name)
    ax.set_title(f"{title} on the {BOARD} (xc7, {CLOCK:g} MHz, 1 inference/cycle)", fontsize=9)
    ax.legend(fontsize=7)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calibrate", action="store_true", help="refit the fast model's factors and print them")
    ap.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS),
                    help="the networks to (re)run; the others' last results are kept")
    ap.add_argument("--simulate-large", action="store_true",
                    help=f"simulate the jet designs above {BASELINE_SIM_LUTS:,} analytic LUTs too (slow)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    global SIMULATE_LARGE
    SIMULATE_LARGE = args.simulate_large
    if args.calibrate:
        calibrate()
        return
    compare(t0, args.networks)


if __name__ == "__main__":
    main()
