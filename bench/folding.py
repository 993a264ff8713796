"""Folded Dense layers (``rtl_sim.folded``) on the default flow's digits MLP: Yosys counts, II and latency
against the reuse factor R, each design co-simulated bit-exact in Verilator, and the cost model's price
(``codesign.compress.fold_cost``) next to Yosys's counts.

The network is ``codesign compress digits-mlp --data digits --budget lut=0.25,dsp=0`` (the default flow's
compression: 64-28-13-10, 825 nonzero 4-bit weights, stored in ``tests/models/folded_digits_mlp``). Every layer gets
the same R; synthesis is
``synth_xilinx -family xc7`` with ``-nodsp`` (the flow's budget allows no DSP) and with DSPs. Written to
``bench/results/folding.json``.

Two random networks (``small``: the tests' 12-9-7-5, 8-bit inputs; ``mid``: 32-16-10) at R = 2, 4, 8, 32 join
the digits rows: ``--fit`` fits the cost model's LUT prices (``fold_cost.LUT_PER``, least squares on the relative
error, non-negative) over these rows alone and prints them with each row's error. The shipped prices come from
``bench/calibrate_fold.py``, which fits the random networks' rows here with single layers on xcup.

``--hls4ml-only`` (and every full run) adds what hls4ml itself would choose for its 16-100^5-5 MLP on a board (``hls4ml`` in the results):
the configuration ``hls4ml.utils.config_from_keras_model`` writes by default and the reuse factor each Dense keeps
after the Vitis backend's own validation (``convert_from_keras_model``), the smallest reuse factors the backend
accepts that keep every layer at most ``UNROLL_LIMIT`` multipliers, and their multiplier counts. hls4ml gives
no resource estimate without the vendor's HLS tool (its reports are Vivado/Vitis HLS's), so the multipliers are
what it would build: one DSP each at its default ``fixed<16,6>``. Our side (the flow's fold on the same board, its
II and Yosys counts) is read from ``bench/results/folding_mlp.json``.

    python bench/folding.py                      # R = 1, 4, 16, 64, 256 (about half an hour on 2 cores)
    python bench/folding.py --reuse 4,16 --no-dsp --no-calibration
    python bench/folding.py --hls4ml-only        # only hls4ml's choice for the 16-100^5-5 MLP (a minute)
    python bench/folding.py --cnn                # the CNN's sweep (bench/folding_cnn.py), then the plot
    python bench/folding.py --plot               # only the plot, from the stored results

``--cnn`` folds the README's digits CNN at R = 1 ... 148 per pixel (``bench/folding_cnn.py`` says how), each row
co-simulated on 200 images, synthesized per stage and priced; written to ``bench/results/folding_cnn.json``. The
plot (``bench/results/folding.png``, copied to ``docs/benchmarks/folding.png``) draws Yosys's LUT, DSP and BRAM and
the model's LUT error against the II, for the MLP (cycles per sample) and the CNN (cycles per image).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (the repository on sys.path)
import numpy as np
from _common import write_results
from scipy.optimize import nnls

from codesign.compress.fold_cost import LUT_PER, network_folded_cost
from codesign.core.fixed import FixedType
from codesign.core.layers import Output, ReLU
from codesign.core.network import Network
from codesign.core.verify import verification_inputs
from codesign.importers.data import load_digits_dataset
from rtl_sim.folded import emit_folded_verilog
from rtl_sim.folded_sim import cosimulate_folded
from rtl_sim.synth import synthesize
from tests.builders import random_dense

FAMILY = "xc7"
# Vivado/Vitis HLS stops unrolling (and partitioning) past 4,096 elements: a Dense of the Latency strategy with more
# multipliers than that at its reuse factor fails synthesis (hls4ml#1013; hls4ml PR 600: "<= 4096 elements (the
# usual partitioning limit)")
UNROLL_LIMIT = 4096
HLS4ML_MODEL = "KERAS_dense_16x100x100x100x100x100x5.json"
HLS4ML_BOARD = "vcu118"
SAMPLES = 2000
MEMORY_CELLS = ("RAM", "ROM")  # LUTRAM/BRAM primitives Yosys may infer for the weight memory


def digits_network():
    """The default flow's compressed digits MLP as stored in ``tests/models/folded_digits_mlp`` (the search may return
    another network later: ``codesign compress digits-mlp --data digits --budget lut=0.25,dsp=0`` makes it again)."""
    from _common import ROOT

    return Network.load(ROOT / "tests" / "models" / "folded_digits_mlp")


def calibration_networks() -> dict[str, Network]:
    """The random networks the cost model is also fitted on (``small`` is tests/test_folded.py's)."""
    rng = np.random.default_rng(3)
    small = [random_dense(rng, "fc1", 12, 9, "ap_fixed<6,2>", sparsity=0.4,
                          result_type=FixedType(10, 4, True, "RND_CONV", "SAT")), ReLU("r1"),
             random_dense(rng, "fc2", 9, 7, "ap_fixed<5,1>", "ap_fixed<8,3>", sparsity=0.3,
                          result_type=FixedType(9, 3, True, "RND", "WRAP")), ReLU("r2"),
             random_dense(rng, "fc3", 7, 5, "ap_fixed<7,3>", sparsity=0.2), Output("out")]
    rng = np.random.default_rng(7)
    mid = [random_dense(rng, "fc1", 32, 16, "ap_fixed<8,3>", sparsity=0.5,
                        result_type=FixedType(12, 5, True, "RND", "SAT")), ReLU("r1"),
           random_dense(rng, "fc2", 16, 10, "ap_fixed<6,2>", sparsity=0.2), Output("out")]
    return {"small": Network("rnd_fold", (12,), small, FixedType(8, 3)),
            "mid": Network("mid_fold", (32,), mid, FixedType(8, 3))}


def fit(rows: list[dict], nets: dict[str, Network]) -> dict:
    """The LUT prices that fit every row's Yosys LUTs best (relative error), and each row's error with them."""
    keys = list(LUT_PER)
    feats, lut, names = [], [], []
    for row in rows:
        for mode in ("nodsp", "dsp"):
            if mode in row and row["reuse"] > 1:
                c = network_folded_cost(nets[row["network"]], row["reuse"], FAMILY, dsp=mode == "dsp")
                feats.append([sum(v["features"][k] for v in c["layers"].values()) for k in keys])
                lut.append(row[mode]["lut"])
                names.append(f"{row['network']} R={row['reuse']} {mode}")
    A, y = np.array(feats, float), np.array(lut, float)
    coef, _ = nnls(A / y[:, None], np.ones(len(y)))
    err = A @ coef / y - 1
    return {"lut_per": dict(zip(keys, coef.round(3).tolist())),
            "errors": {n: round(float(e), 3) for n, e in zip(names, err)}}


def measure(name: str, net: Network, reuse: int, dsp_modes: tuple[bool, ...], q, block: bool = False) -> dict:
    """One R: the design's II/latency/fold, its co-simulation and its Yosys counts per DSP mode (``block``: and
    with its weight ROMs in block RAM)."""
    d = emit_folded_verilog(net, reuse)
    row = {"network": name, "reuse": reuse, "ii": getattr(d, "ii", 1), "latency": d.latency,
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
        print(name, reuse, "dsp" if dsp else "nodsp", row["dsp" if dsp else "nodsp"], flush=True)
    if block and reuse > 1:  # the weight ROMs as block RAM (rom_style), no DSP
        d = emit_folded_verilog(net, reuse, memory="block")
        s = synthesize(d.verilog, d.top, FAMILY, dsp=False)
        model = network_folded_cost(net, reuse, FAMILY, dsp=False, memory="block")
        row["block_nodsp"] = {**{k: s[k] for k in ("lut", "ff", "dsp", "carry", "bram")},
                              "memory_cells": {k: v for k, v in s["cells"].items() if "RAM" in k.upper()},
                              "model": {k: model[k] for k in ("lut", "ff", "dsp", "bram")}}
        print(name, reuse, "block", row["block_nodsp"], flush=True)
    return row


def hls4ml_choice(board: str = HLS4ML_BOARD) -> dict:
    """hls4ml's own configuration of its 16-100^5-5 MLP for ``board`` (module docstring)."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")  # hls4ml reads a Keras 3 model; its weights do not matter here
    import hls4ml
    import keras

    from _common import MODELS
    from codesign.board import load_board

    arch = json.loads((MODELS / HLS4ML_MODEL).read_text())
    x = inp = keras.Input((arch["config"]["layers"][0]["config"]["batch_input_shape"][1],))
    for layer in arch["config"]["layers"]:
        if layer["class_name"] == "Dense":
            c = layer["config"]
            x = keras.layers.Dense(c["units"], activation=c.get("activation"), name=c["name"])(x)
    model = keras.Model(inp, x)
    b = load_board(board)
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    with tempfile.TemporaryDirectory() as d:
        hm = hls4ml.converters.convert_from_keras_model(model, hls_config=cfg, backend="Vitis", output_dir=d,
                                                        part=b.part, io_type="io_parallel")
        dense = [(l.name, l.get_attr("n_in"), l.get_attr("n_out"), l.get_attr("reuse_factor"), l.get_attr("strategy"))
                 for l in hm.get_layers() if l.class_name == "Dense"]
    backend = hls4ml.backends.get_backend("Vitis")
    layers, every = [], None
    for name, n_in, n_out, rf, strategy in dense:
        valid = backend.get_valid_reuse_factors(n_in, n_out)
        ok = [r for r in valid if n_in * n_out / r <= UNROLL_LIMIT]
        every = set(ok) if every is None else every & set(ok)
        layers.append({"name": name, "n_in": n_in, "n_out": n_out, "default_reuse": rf, "strategy": strategy,
                       "multipliers_default": n_in * n_out // rf, "smallest_valid_reuse": ok[0],
                       "multipliers_smallest": n_in * n_out // ok[0]})
    one = min(every)
    mults = {"default": sum(l["multipliers_default"] for l in layers),
             "smallest_per_layer": sum(l["multipliers_smallest"] for l in layers),
             "smallest_one_for_all": sum(l["n_in"] * l["n_out"] // one for l in layers)}
    return {"board": board, "part": b.part, "dsp_on_board": b.dsp, "hls4ml": hls4ml.__version__,
            "model_config": cfg["Model"], "layers": layers, "smallest_one_reuse_for_all": one,
            "ii": {"default": max(l["default_reuse"] for l in layers),
                   "smallest_per_layer": max(l["smallest_valid_reuse"] for l in layers), "smallest_one_for_all": one},
            "multipliers": mults, "over_unroll_limit_at_default": [l["name"] for l in layers
                                                                   if l["multipliers_default"] > UNROLL_LIMIT],
            "resource_estimate": "none: hls4ml reports resources only from the vendor HLS tool's synthesis reports",
            "ours": ours_on(board)}


def ours_on(board: str) -> dict | None:
    """The flow's fold of the same network on ``board`` (bench/folding_mlp.py's row), if it was measured."""
    from _common import ROOT

    p = ROOT / "bench" / "results" / "folding_mlp.json"
    rows = json.loads(p.read_text()).get("rows", []) if p.is_file() else []
    row = next((r for r in rows if r.get("board") == board), None)
    keys = ("ii", "reuse", "latency", "synth", "analytic", "analytic_now", "cosim", "budget", "stage_synthesis")
    return None if row is None else {k: row.get(k) for k in keys}


def plot_series(mlp: dict, cnn: dict | None) -> list[dict]:
    """The plotted series: per network and DSP mode, (II, Yosys counts, model LUT) per row."""
    out = []
    for name, res, unit in (("MLP (digits)", mlp, "sample"), ("CNN (digits-cnn)", cnn, "image")):
        rows = [r for r in (res or {}).get("rows", []) if r.get("network") in ("digits", "digits-cnn")]
        for mode, label in (("nodsp", "no DSP"), ("dsp", "DSPs"), ("block_nodsp", "no DSP, ROMs in block RAM")):
            pts = [(r["ii"], r[mode]) for r in rows if mode in r]
            if pts:
                out.append({"label": f"{name}, {label}", "unit": unit, "ii": [p[0] for p in pts],
                            **{k: [p[1][k] for p in pts] for k in ("lut", "dsp", "bram")},
                            "model_lut": [p[1]["model"]["lut"] for p in pts]})
    return out


def plot(mlp: dict, cnn: dict | None, out: Path) -> None:
    """LUT, DSP, BRAM and the model's LUT error against the II, log axes (``symlog`` where a count may be 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    for s in plot_series(mlp, cnn):
        style = {"marker": "o" if s["unit"] == "sample" else "s", "linestyle": "-" if "MLP" in s["label"] else "--"}
        axes[0].plot(s["ii"], s["lut"], label=s["label"], **style)
        axes[1].plot(s["ii"], s["dsp"], **style)
        axes[2].plot(s["ii"], s["bram"], **style)
        axes[3].plot(s["ii"], [100 * (m / y - 1) for m, y in zip(s["model_lut"], s["lut"])], **style)
    titles = ("LUT (Yosys)", "DSP (Yosys)", "BRAM, RAMB36 (Yosys)", "model LUT error, %")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("II (MLP: cycles per sample; CNN: cycles per image)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_yscale("log")
    for ax in axes[1:3]:
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
    axes[3].axhspan(-15, 15, color="green", alpha=0.08)
    fig.legend(loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def draw() -> None:
    """The plot from the stored results, into bench/results and docs/benchmarks."""
    import shutil

    from _common import ROOT

    res = ROOT / "bench" / "results"
    cnn = res / "folding_cnn.json"
    plot(json.loads((res / "folding.json").read_text()), json.loads(cnn.read_text()) if cnn.is_file() else None,
         res / "folding.png")
    shutil.copy(res / "folding.png", ROOT / "docs" / "benchmarks" / "folding.png")


def reprice_all() -> None:
    """The stored rows (MLP and CNN) priced again by the cost model as it is now; the Yosys counts and the
    co-simulations kept."""
    from _common import ROOT
    from folding_cnn import reprice

    res = ROOT / "bench" / "results"
    mlp = json.loads((res / "folding.json").read_text())
    nets = {"digits": digits_network(), **calibration_networks()}
    for row in mlp["rows"]:
        for mode in ("nodsp", "dsp", "block_nodsp"):
            if mode in row:
                c = network_folded_cost(nets[row["network"]], row["reuse"], FAMILY, dsp=mode == "dsp",
                                        memory="block" if mode == "block_nodsp" else "auto")
                row[mode]["model"] = {k: c[k] for k in ("lut", "ff", "dsp", "bram")}
    cnn = reprice(json.loads((res / "folding_cnn.json").read_text()))
    for name, r in (("folding", mlp), ("folding_cnn", cnn)):
        r.pop("machine", None)
        write_results(name, None, **r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reuse", default="1,4,16,64,256", help="reuse factors, comma-separated")
    ap.add_argument("--no-dsp", action="store_true", help="only -nodsp synthesis")
    ap.add_argument("--no-calibration", action="store_true", help="only the digits network")
    ap.add_argument("--fit", action="store_true", help="refit the cost model's LUT prices and print them")
    ap.add_argument("--hls4ml-only", action="store_true", help="only hls4ml's choice for its 16-100^5-5 MLP, kept "
                    "beside the stored rows")
    ap.add_argument("--cnn", action="store_true", help="only the CNN's sweep (bench/folding_cnn.py), then the plot")
    ap.add_argument("--plot", action="store_true", help="only the plot, from the stored results")
    ap.add_argument("--cnn-compress", action="store_true", help="compress the CNN again into tests/models")
    ap.add_argument("--reprice", action="store_true", help="price the stored CNN rows again (the model as it is now)")
    args = ap.parse_args()
    if args.plot:
        draw()
        return
    if args.cnn_compress:
        from folding_cnn import compress_again

        compress_again()
        return
    if args.reprice:
        reprice_all()
        draw()
        return
    if args.cnn:
        from folding_cnn import CNN_REUSE, cnn_sweep

        t0 = time.perf_counter()
        reuse = CNN_REUSE if args.reuse == ap.get_default("reuse") else tuple(int(r) for r in args.reuse.split(","))
        write_results("folding_cnn", t0, **cnn_sweep(reuse, (False,) if args.no_dsp else (False, True)))
        draw()
        return
    if args.hls4ml_only:
        from _common import ROOT

        res = json.loads((ROOT / "bench" / "results" / "folding.json").read_text())
        res["hls4ml"] = hls4ml_choice()
        print(json.dumps(res["hls4ml"], indent=1))
        res.pop("machine", None)
        write_results("folding", None, **res)
        return
    t0 = time.perf_counter()
    net = digits_network()
    ds = load_digits_dataset()
    q = verification_inputs(net, ds.X_test, SAMPLES)
    modes = (False,) if args.no_dsp else (False, True)
    rows = [measure("digits", net, int(r), modes, q, block=True) for r in args.reuse.split(",")]
    nets = {"digits": net}
    if not args.no_calibration:
        nets.update(calibration_networks())
        for name in ("small", "mid"):
            cq = verification_inputs(nets[name], None, SAMPLES)
            rows += [measure(name, nets[name], r, modes, cq) for r in (2, 4, 8, 32)]
    fitted = fit(rows, nets) if args.fit else None
    if fitted:
        print(fitted)
    write_results("folding", t0, hls4ml=hls4ml_choice(),
                  network="digits: digits-mlp, the default flow's compression (64-28-13-10, 825 nonzero, "
                  "tests/models/folded_digits_mlp); small, mid: random calibration networks", family=FAMILY, samples=len(q),
                  rows=rows, fit=fitted)
    draw()


if __name__ == "__main__":
    main()
