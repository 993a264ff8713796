"""Calibrate the folded-layer cost model (``codesign.compress.fold_cost``) against Yosys, part by part.

Two kinds of measurement, both ``synth_xilinx`` (xc7 and xcup), cached by ``rtl_sim.synth``:

- ``--micro``: the two parts whose LUTs depend on a size rather than a bit count, each synthesized alone in the
  emitter's own form: an N:1 input select (a ``case`` over N registered inputs, its select registered, as
  ``rtl_sim.folded._select``) and one bit of a D-word ROM with a registered read (as the weight memory). Their
  LUTs per bit are ``fold_cost.MUX_LUTS`` and ``fold_cost.ROM_LUTS``.
- the layers: single folded Dense layers (+ ReLU) whose shapes separate the parts: wide selects (100 inputs,
  the 16-100^5-5 MLP's hidden layers at R = 126), shallow folds (R = 6, the vcu118 fold), LUT multipliers of
  8- and 16-bit inputs, DSP units, deep ROMs. ``--fit`` fits the per-part prices (``fold_cost.LUT_PER``, non-negative
  least squares on the relative error) over these layers and ``bench/folding.py``'s networks, and prints each
  row's error with the prices in use and with the fitted ones.

Written to ``bench/results/calibrate_fold.json``.

    python bench/calibrate_fold.py --micro            # the select and ROM tables (a minute)
    python bench/calibrate_fold.py --families xcup    # the layers (about 20 minutes on 2 cores), the fit
"""

from __future__ import annotations

import argparse
import json
import random
import time

import _common  # noqa: F401  (the repository on sys.path)
import numpy as np
from _common import ROOT, write_results
from scipy.optimize import nnls

from codesign.compress.fold_cost import LUT_PER, network_folded_cost
from codesign.core.fixed import FixedType
from codesign.core.layers import Output, ReLU
from codesign.core.network import Network
from rtl_sim.folded import emit_folded_verilog
from rtl_sim.synth import synthesize
from tests.builders import random_dense

FAMILIES = ("xcup", "xc7")
MUX_SIZES = (2, 3, 4, 5, 6, 8, 9, 12, 16, 17, 24, 32, 33, 48, 64, 65, 100, 128, 192, 256)
ROM_DEPTHS = (2, 4, 8, 16, 32, 64, 65, 96, 100, 126, 128, 160, 192, 200, 256, 384, 512)
# (name, inputs, outputs, weight type, input type, R, sparsity): single layers, each with a ReLU and an 8-bit result
LAYERS = [
    ("wide_r126", 100, 12, "ap_fixed<6,1>", "ap_ufixed<8,3>", 126, None),  # the II-126 MLP's hidden layers
    ("wide_r32", 100, 8, "ap_fixed<6,1>", "ap_ufixed<8,3>", 32, None),
    ("wide_r6", 100, 6, "ap_fixed<8,1>", "ap_ufixed<8,3>", 6, None),  # the vcu118 fold's hidden layers
    ("in16_r6", 16, 12, "ap_fixed<8,1>", "ap_fixed<16,6>", 6, None),  # its first layer (16-bit inputs)
    ("mid_r64", 64, 8, "ap_fixed<4,1>", "ap_fixed<8,3>", 64, 0.3),
    ("mid_r16", 64, 8, "ap_fixed<4,1>", "ap_fixed<8,3>", 16, 0.3),
    ("narrow_r4", 24, 16, "ap_fixed<8,2>", "ap_ufixed<6,2>", 4, 0.2),
    ("narrow_r24", 24, 16, "ap_fixed<8,2>", "ap_ufixed<6,2>", 24, 0.2),
    ("deep_r200", 40, 10, "ap_fixed<5,1>", "ap_ufixed<8,3>", 200, 0.1),
]


def mux_verilog(n: int, bits: int) -> str:
    """An N:1 select of ``bits``-bit registered inputs, as the emitter writes it (a case with a default), registered."""
    sb = max((n - 1).bit_length(), 1)
    arms = " ".join(f"{sb}'d{k}: a = x[{k * bits + bits - 1}:{k * bits}];" for k in range(1, n))
    return f"""module top(input clk, input [{n * bits - 1}:0] x_in, input [{sb - 1}:0] s_in, output reg [{bits - 1}:0] y);
  reg [{n * bits - 1}:0] x; reg [{sb - 1}:0] s; reg [{bits - 1}:0] a;
  always @* begin case (s) {arms} default: a = x[{bits - 1}:0]; endcase end
  always @(posedge clk) begin x <= x_in; s <= s_in; y <= a; end
endmodule"""


def rom_verilog(depth: int, width: int, seed: int = 0) -> str:
    """A ROM of random words with a registered read at a registered address, as the weight memory."""
    rnd = random.Random(seed)
    aw = max((depth - 1).bit_length(), 1)
    init = "\n".join(f"    m[{k}] = {width}'h{rnd.getrandbits(width):x};" for k in range(depth))
    return f"""module top(input clk, input [{aw - 1}:0] a, output reg [{width - 1}:0] q);
  reg [{width - 1}:0] m [0:{depth - 1}];
  initial begin
{init}
  end
  always @(posedge clk) q <= m[a];
endmodule"""


def micro(family: str) -> dict:
    """LUTs per bit of an N:1 select (8 bits wide) and of a D-word ROM (32 random bits wide, every bit live)."""
    mux = {}
    for n in MUX_SIZES:
        s = synthesize(mux_verilog(n, 8), "top", family, dsp=False)
        mux[n] = s["lut"] / 8
    rom = {}
    for d in ROM_DEPTHS:
        s = synthesize(rom_verilog(d, 32), "top", family, dsp=False)
        rom[d] = {"lut_per_bit": s["lut"] / 32, "ff": s["ff"]}
    print(family, "select LUT/bit", mux, "\nROM LUT/bit", {d: r["lut_per_bit"] for d, r in rom.items()}, flush=True)
    return {"select_lut_per_bit": mux, "rom": rom}


def layer_network(name: str, n_in: int, n_out: int, wt: str, it: str, sparsity: float | None) -> Network:
    rng = np.random.default_rng(sum(map(ord, name)))
    d = random_dense(rng, "fc", n_in, n_out, wt, "ap_fixed<12,4>", sparsity=sparsity,
                     result_type=FixedType(8, 4, True, "RND", "SAT"))
    return Network(f"cal_{name}", (n_in,), [d, ReLU("r"), Output("out")], FixedType.parse(it))


def measure_layers(families: tuple[str, ...]) -> list[dict]:
    rows = []
    for name, n_in, n_out, wt, it, r, sp in LAYERS:
        net = layer_network(name, n_in, n_out, wt, it, sp)
        d = emit_folded_verilog(net, r)
        for family in families:
            for dsp in (True, False):
                t0 = time.perf_counter()
                s = synthesize(d.verilog, d.top, family, dsp=dsp)
                row = {"layer": name, "reuse": r, "family": family, "mode": "dsp" if dsp else "nodsp",
                       "units": d.folds["fc"]["units"], "cycles": d.folds["fc"]["cycles"],
                       "yosys": {k: s[k] for k in ("lut", "ff", "dsp", "carry", "bram")},
                       "yosys_s": round(time.perf_counter() - t0, 1)}
                rows.append(row)
                print(row, flush=True)
    return rows


def layer_nets() -> dict[str, tuple[Network, int]]:
    return {name: (layer_network(name, n_in, n_out, wt, it, sp), r) for name, n_in, n_out, wt, it, r, sp in LAYERS}


def folding_rows() -> list[tuple[Network, int, str, str, dict]]:
    """``bench/folding.py``'s measured rows of its random networks (xc7, rebuilt from their seeds). Its digits rows
    are left out: the network they measured is the compression search's result at the time, which the search no
    longer returns (compressed again, its folds have other DSP counts)."""
    from folding import calibration_networks

    nets = calibration_networks()
    res = json.loads((ROOT / "bench" / "results" / "folding.json").read_text())
    out = []
    for row in res["rows"]:
        for mode in ("nodsp", "dsp"):
            if mode in row and row["reuse"] > 1 and row["network"] in nets:
                out.append((nets[row["network"]], row["reuse"], "xc7", mode, row[mode]))
    return out


def priced(net: Network, reuse: int, family: str, mode: str) -> tuple[np.ndarray, dict]:
    c = network_folded_cost(net, reuse, family, dsp=mode == "dsp")
    feats = np.array([sum(v["features"][k] for v in c["layers"].values()) for k in LUT_PER])
    return feats, c


def fit(points: list[tuple[str, Network, int, str, str, dict]]) -> dict:
    """The LUT prices that fit every point's Yosys LUTs best (relative error); each point's error before and after,
    and the FF and DSP errors (counted, not fitted)."""
    keys = list(LUT_PER)
    A, y, table = [], [], []
    for label, net, reuse, family, mode, counts in points:
        f, c = priced(net, reuse, family, mode)
        A.append(f)
        y.append(counts["lut"])
        table.append({"point": label, "family": family, "mode": mode, "yosys": {k: counts[k] for k in ("lut", "ff", "dsp")},
                      "model": {k: c[k] for k in ("lut", "ff", "dsp")}})
    A, y = np.array(A, float), np.array(y, float)
    coef, _ = nnls(A / y[:, None], np.ones(len(y)))
    refit = A @ coef
    for t, r in zip(table, refit):
        t["lut_err"] = round(t["model"]["lut"] / t["yosys"]["lut"] - 1, 3)
        t["lut_err_refit"] = round(r / t["yosys"]["lut"] - 1, 3)
        t["ff_err"] = round(t["model"]["ff"] / max(t["yosys"]["ff"], 1) - 1, 3)
        t["dsp_exact"] = t["model"]["dsp"] == t["yosys"]["dsp"]
    summary = {k: {"max_abs": round(float(np.max(np.abs([t[k] for t in table]))), 3),
                   "mean_abs": round(float(np.mean(np.abs([t[k] for t in table]))), 3)}
               for k in ("lut_err", "lut_err_refit", "ff_err")}
    summary["dsp_exact"] = f"{sum(t['dsp_exact'] for t in table)} of {len(table)}"
    return {"lut_per": dict(zip(keys, coef.round(3).tolist())), "summary": summary, "points": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--micro", action="store_true", help="only the select and ROM tables")
    ap.add_argument("--fit", action="store_true", help="refit LUT_PER over the layers and bench/folding.py's rows")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    args = ap.parse_args()
    t0 = time.perf_counter()
    out = json.loads((ROOT / "bench" / "results" / "calibrate_fold.json").read_text()) \
        if (ROOT / "bench" / "results" / "calibrate_fold.json").is_file() else {}
    out.pop("machine", None), out.pop("seconds", None)
    if args.micro:
        out["micro"] = {f: micro(f) for f in args.families}
    else:
        out["layers"] = measure_layers(tuple(args.families))
        nets = layer_nets()
        points = [(f"{r['layer']} R={r['reuse']}", *nets[r["layer"]], r["family"], r["mode"], r["yosys"])
                  for r in out["layers"]]
        points += [(f"{n.name} R={rf}", n, rf, fam, mode, cnt) for n, rf, fam, mode, cnt in folding_rows()]
        out["fit"] = fit(points)
        print(json.dumps(out["fit"]["summary"]), "\nfitted", out["fit"]["lut_per"])
        for t in out["fit"]["points"]:
            print(f"{t['point']:28s} {t['family']:5s} {t['mode']:5s} yosys {t['yosys']} model {t['model']} "
                  f"lut {t['lut_err']:+.0%} (refit {t['lut_err_refit']:+.0%}) ff {t['ff_err']:+.0%}")
    write_results("calibrate_fold", t0, **out)


if __name__ == "__main__":
    main()
