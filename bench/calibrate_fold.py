"""Calibrate the folded-layer cost model (``codesign.compress.fold_cost``) against Yosys, part by part.

Three kinds of measurement, all ``synth_xilinx`` (xc7 and xcup), cached by ``rtl_sim.synth``:

- ``--micro``: the two parts whose LUTs depend on a size rather than a bit count, each synthesized alone in the
  emitter's own form: an N:1 input select (a ``case`` over N registered inputs, its select registered, as
  ``rtl_sim.folded._select``) and one bit of a D-word ROM with a registered read (as the weight memory). Their
  LUTs per bit are ``fold_cost.SELECT_LUTS`` and ``fold_cost.ROM_LUTS``. ``--units``: LUT-multiplier units alone
  (``unit_verilog``: input bits x weight bits x 2, 4 or 8 words), ``fold_cost.UNIT_LUTS``. ``--blocks``: ROMs around
  Yosys's block RAM choice, left to it and forced, against ``fold_cost.auto_in_block`` and the model's block count.
- the layers: single folded Dense layers (+ ReLU) whose shapes separate the parts: wide selects (100 inputs,
  the 16-100^5-5 MLP's hidden layers at R = 126), shallow folds (R = 6, the vcu118 fold), LUT multipliers of
  8- and 16-bit inputs, DSP units, deep ROMs.
- the fit: the per-part prices (``fold_cost.LUT_PER``, non-negative least squares on the relative error) over these
  layers, ``bench/folding.py``'s folded MLPs (digits and two random networks) and its folded digits CNN (per stage,
  the rest of the stream priced apart), printing each row's error with the prices in use and with the fitted ones.

Written to ``bench/results/calibrate_fold.json``.

    python bench/calibrate_fold.py --micro            # the select and ROM tables (a minute)
    python bench/calibrate_fold.py --blocks --families xc7   # ROMs around Yosys's block RAM choice
    python bench/calibrate_fold.py --units --families xc7    # LUT-multiplier units alone (fold_cost.UNIT_LUTS)
    python bench/calibrate_fold.py --families xcup    # the layers (about 20 minutes on 2 cores), the fit
    (bench/folding.py's results first: the fit reads them)
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
# (depth, width) of ROMs around Yosys's block RAM choice (fold_cost.xilinx_rom_blocks): shallow and wide, deep and
# narrow (a folded Dense of one MAC unit: 3,280 x 13 is the 28x28 CNN's 400-input layer), and forced to block RAM
UNIT_COPIES = 4  # LUT-multiplier units measured together (their counter and ROM shared, as in a layer)
ROM_BLOCKS = ((257, 32), (288, 32), (300, 8), (600, 20), (700, 20), (1024, 9), (1024, 4), (1500, 12), (2048, 18),
              (3280, 13), (4096, 4), (553, 11), (300, 200), (16, 300))
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


def unit_verilog(aw: int, wb: int, c: int, n: int = UNIT_COPIES, seed: int = 0) -> str:
    """``n`` LUT-multiplier units in the emitter's form: a counter over ``c`` words, one weight ROM read at its next
    value (each unit's ``wb`` random non-zero bits, registered), each unit's registered ``aw``-bit input, its product
    registered and an accumulator of ``aw + wb + 4`` bits (``n`` of them average over the random weights)."""
    rnd = random.Random(seed)
    cw = max((c - 1).bit_length(), 1)
    mask = (1 << wb) - 1
    words = [sum(((rnd.randrange(-(1 << (wb - 1)), 1 << (wb - 1)) or 1) & mask) << (u * wb) for u in range(n))
             for _ in range(c)]
    init = "\n".join(f"    m[{k}] = {n * wb}'h{w:x};" for k, w in enumerate(words))
    pw, acc = aw + wb, aw + wb + 4
    body = "\n".join(f"""  reg signed [{aw - 1}:0] x{u}; reg signed [{pw - 1}:0] p{u}; reg signed [{acc - 1}:0] acc{u};
  wire signed [{wb - 1}:0] w{u} = q[{u * wb + wb - 1}:{u * wb}];
  always @(posedge clk) begin x{u} <= x_in[{u * aw + aw - 1}:{u * aw}]; p{u} <= x{u} * w{u}; acc{u} <= acc{u} + p{u}; end"""
                      for u in range(n))
    return f"""module top(input clk, input [{n * aw - 1}:0] x_in, output [{n * acc - 1}:0] y);
  reg [{cw - 1}:0] cnt; wire [{cw - 1}:0] nx = (cnt == {cw}'d{c - 1}) ? {cw}'d0 : cnt + {cw}'d1;
  reg [{n * wb - 1}:0] m [0:{c - 1}];
  initial begin
{init}
  end
  reg [{n * wb - 1}:0] q;
  always @(posedge clk) begin cnt <= nx; q <= m[nx]; end
{body}
  assign y = {{{", ".join(f"acc{u}" for u in reversed(range(n)))}}};
endmodule"""


def units(family: str) -> dict[str, list[list[int]]]:
    """LUTs per LUT-multiplier unit (``unit_verilog``'s, divided by its copies) by the counter's address bits (C = 2,
    4, 8: 1, 2, 3 bits), input bits (rows, ``UNIT_INPUT_BITS``) and weight bits (columns, ``UNIT_WEIGHT_BITS``)."""
    from codesign.compress.fold_cost import UNIT_INPUT_BITS, UNIT_WEIGHT_BITS

    out = {}
    for a, c in ((1, 2), (2, 4), (3, 8)):
        out[str(a)] = [[round(synthesize(unit_verilog(aw, wb, c), "top", family, dsp=False)["lut"] / UNIT_COPIES, 1)
                        for wb in UNIT_WEIGHT_BITS] for aw in UNIT_INPUT_BITS]
        print(family, "address bits", a, out[str(a)], flush=True)
    return out


def rom_blocks(family: str) -> list[dict]:
    """Where Yosys puts each ``ROM_BLOCKS`` ROM left to itself (``memory="auto"``: no rom_style) and the block RAM
    it takes when forced (``rom_style="block"``), beside the model's choice."""
    from codesign.compress.fold_cost import auto_in_block, memory_cost

    rows = []
    for depth, width in ROM_BLOCKS:
        auto = synthesize(rom_verilog(depth, width), "top", family, dsp=False)
        forced = synthesize(_block_rom(depth, width), "top", family, dsp=False)
        rows.append({"depth": depth, "width": width, "auto": {k: auto[k] for k in ("lut", "ff", "bram")},
                     "block": {k: forced[k] for k in ("lut", "ff", "bram")},
                     "ramb_cells": {k: v for k, v in forced["cells"].items() if "RAMB" in k.upper()},
                     "model_auto_in_block": auto_in_block(depth, width, family),
                     "model_block_bram": memory_cost(depth, width, family, "block")["bram"]})
        print(family, rows[-1], flush=True)
    return rows


def _block_rom(depth: int, width: int) -> str:
    """``rom_verilog``'s ROM with ``rom_style = "block"``."""
    decl = f"  reg [{width - 1}:0] m ["
    return rom_verilog(depth, width).replace(decl, '  (* rom_style = "block" *)' + decl[1:])


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
    """``bench/folding.py``'s measured folded rows (xc7): its random networks, rebuilt from their seeds, and the
    digits MLP (stored in ``tests/models/folded_digits_mlp``), with and without DSPs."""
    from folding import calibration_networks, digits_network

    nets = {"digits": digits_network(), **calibration_networks()}
    res = json.loads((ROOT / "bench" / "results" / "folding.json").read_text())
    out = []
    for row in res["rows"]:
        for mode in ("nodsp", "dsp"):
            if mode in row and row["reuse"] > 1 and row["network"] in nets:
                out.append((nets[row["network"]], row["reuse"], "xc7", mode, row[mode]))
    return out


def priced(net: Network, reuse: int, family: str, mode: str) -> tuple[np.ndarray, float, dict]:
    """A folded MLP's LUT features (summed over its layers), the LUTs priced apart from them (none) and its price."""
    c = network_folded_cost(net, reuse, family, dsp=mode == "dsp")
    feats = np.array([sum(v["features"][k] for v in c["layers"].values()) for k in LUT_PER])
    return feats, 0.0, c


def cnn_points() -> list[tuple[str, str, str, dict, np.ndarray, float, dict]]:
    """``bench/folding.py --cnn``'s folded rows (xc7, per-stage sums): the folded kernels' LUT features, and the LUTs
    of the rest of the stream (window stages, pools, the parallel kernels), priced by the streaming model apart."""
    from folding_cnn import BOARD, cnn_network

    from codesign.board import load_board
    from codesign.compress.conv_cost import cnn_parts
    from codesign.compress.cost import total_cost, network_cost
    from codesign.compress.fold_choice import pixels, reuse_at, with_reuse

    res = json.loads((ROOT / "bench" / "results" / "folding_cnn.json").read_text())
    net, board = cnn_network(), load_board(BOARD)
    out = []
    for row in res["rows"]:
        if not row["reuse_per_pixel"]:
            continue
        folded = with_reuse(net, reuse_at(net, pixels(net) * row["reuse_per_pixel"]))
        for mode in ("nodsp", "dsp"):
            mapping = None if mode == "dsp" else "lut"
            kernels = [p["kernel"] for p in cnn_parts(folded, board, mapping) if p.get("kernel", {}).get("folded")]
            feats = np.array([sum(k["features"][f] for k in kernels) for f in LUT_PER])
            model = total_cost(network_cost(folded, board, mapping))
            fixed = model["lut"] - sum(k["lut"] for k in kernels)
            out.append((f"digits-cnn R={row['reuse_per_pixel']}", "xc7", mode, row[mode], feats, fixed, model))
    return out


def fit(points: list[tuple[str, str, str, dict, np.ndarray, float, dict]]) -> dict:
    """The LUT prices that fit every point's Yosys LUTs best (relative error), each point's LUTs priced apart from
    the features (``fixed``) kept; each point's error before and after, and the FF and DSP errors (counted)."""
    keys = list(LUT_PER)
    A, y, fixed, table = [], [], [], []
    for label, family, mode, counts, f, rest, c in points:
        A.append(f)
        y.append(counts["lut"])
        fixed.append(rest)
        table.append({"point": label, "family": family, "mode": mode,
                      "yosys": {k: counts[k] for k in ("lut", "ff", "dsp")}, "model": {k: c[k] for k in ("lut", "ff", "dsp")}})
    A, y, fixed = np.array(A, float), np.array(y, float), np.array(fixed, float)
    coef, _ = nnls(A / y[:, None], 1 - fixed / y)
    refit = A @ coef + fixed
    for t, r in zip(table, refit):
        t["lut_err"] = round(t["model"]["lut"] / t["yosys"]["lut"] - 1, 3)
        t["lut_err_refit"] = round(r / t["yosys"]["lut"] - 1, 3)
        t["ff_err"] = round(t["model"]["ff"] / max(t["yosys"]["ff"], 1) - 1, 3)
        t["dsp_exact"] = t["model"]["dsp"] == t["yosys"]["dsp"]
    summary = {k: {"max_abs": round(float(np.max(np.abs([t[k] for t in table]))), 3),
                   "mean_abs": round(float(np.mean(np.abs([t[k] for t in table]))), 3),
                   "over_15_percent": int(sum(abs(t[k]) > 0.15 for t in table))}
               for k in ("lut_err", "lut_err_refit", "ff_err")}
    summary["dsp_exact"] = f"{sum(t['dsp_exact'] for t in table)} of {len(table)}"
    return {"lut_per": dict(zip(keys, coef.round(3).tolist())), "summary": summary, "points": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--micro", action="store_true", help="only the select and ROM tables")
    ap.add_argument("--blocks", action="store_true", help="only the ROMs around Yosys's block RAM choice")
    ap.add_argument("--units", action="store_true", help="only the LUT-multiplier units measured alone")
    ap.add_argument("--fit", action="store_true", help="refit LUT_PER over the layers and bench/folding.py's rows")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    args = ap.parse_args()
    t0 = time.perf_counter()
    out = json.loads((ROOT / "bench" / "results" / "calibrate_fold.json").read_text()) \
        if (ROOT / "bench" / "results" / "calibrate_fold.json").is_file() else {}
    out.pop("machine", None), out.pop("seconds", None)
    if args.units:
        out["units"] = {f: units(f) for f in args.families}
    elif args.blocks:
        out["rom_blocks"] = {f: rom_blocks(f) for f in args.families}
    elif args.micro:
        out["micro"] = {f: micro(f) for f in args.families}
    else:
        out["layers"] = measure_layers(tuple(args.families))
        nets = layer_nets()
        points = [(f"{r['layer']} R={r['reuse']}", r["family"], r["mode"], r["yosys"],
                   *priced(*nets[r["layer"]], r["family"], r["mode"])) for r in out["layers"]]
        points += [(f"{n.name} R={rf}", fam, mode, cnt, *priced(n, rf, fam, mode)) for n, rf, fam, mode, cnt in folding_rows()]
        points += cnn_points()
        out["fit"] = fit(points)
        print(json.dumps(out["fit"]["summary"]), "\nfitted", out["fit"]["lut_per"])
        for t in out["fit"]["points"]:
            print(f"{t['point']:28s} {t['family']:5s} {t['mode']:5s} yosys {t['yosys']} model {t['model']} "
                  f"lut {t['lut_err']:+.0%} (refit {t['lut_err_refit']:+.0%}) ff {t['ff_err']:+.0%}")
    write_results("calibrate_fold", t0, **out)


if __name__ == "__main__":
    main()
