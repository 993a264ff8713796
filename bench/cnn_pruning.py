"""Channel pruning against unstructured pruning on digits-cnn at one fixed budget (one run each).

Both go through the same budget search (``codesign.compress.search.compress``, which hands a CNN
to ``codesign.compress.cnn_search``): "structured" removes whole channels (their filter, the next
layer's input channel, their share of the line buffers), "hardware" removes single kernel and
Dense weights by importance per LUT. Printed and written to bench/results/cnn_pruning.json:
test accuracy (float and compressed), channels kept, kernel sparsity, the analytic LUTs and, when
the streaming RTL emitter and Yosys are there, the Yosys LUTs of the whole streaming design.

    .venv/bin/python bench/cnn_pruning.py [--board pynq-z2] [--budget lut=0.1,dsp=0] [--no-synth]
"""

from __future__ import annotations

import argparse
import time

from _common import write_results

METHODS = ("structured", "hardware")


def yosys_luts(net, family: str) -> dict | None:
    """Yosys counts of the whole streaming design (None when the emitter or Yosys is missing)."""
    try:
        from rtl_sim.stream import emit_stream_verilog
        from rtl_sim.synth import synthesize
    except ImportError:
        return None
    d = emit_stream_verilog(net, mult="lut")
    r = synthesize(d.verilog, d.top, family, dsp=False)
    srl = sum(n for k, n in r["cells"].items() if "SRL" in k.upper())  # shift-register LUTs
    return {"lut": r["lut"], "srl_lut": srl, "ff": r["ff"], "dsp": r["dsp"], "tool": r["tool"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--board", default="pynq-z2")
    ap.add_argument("--budget", default="lut=0.1,dsp=0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-synth", action="store_true")
    args = ap.parse_args()
    from codesign.board import load_board
    from codesign.budget import Budget
    from codesign.compress.channels import channel_report
    from codesign.compress.search import compress
    from codesign.importers.builtin import builtin_model
    from codesign.importers.data import load_digits_dataset

    t0 = time.perf_counter()
    board = load_board(args.board)
    budget = Budget.parse(args.budget, board)
    data = load_digits_dataset(args.seed)
    net = builtin_model("digits-cnn", seed=args.seed)
    rows = []
    for method in METHODS:
        r = compress(net, data, budget, method=method, seed=args.seed)
        row = {"method": method, "float_accuracy": round(r.float_score, 4), "accuracy": round(r.score, 4),
               "analytic": r.cost, "precision": r.precision.weight_bits, "seconds": round(r.seconds, 1),
               "sparsity": round(r.network.sparsity, 4), "epochs": getattr(r, "epochs", None),
               "candidates": [{"weight_bits": h["precision"]["weight_bits"], "fits": h["fits"], "cost": h["cost"],
                               "val": round(h["val"], 4) if "val" in h else None} for h in r.history],
               "layers": [{k: v for k, v in L.items() if k in ("name", "kept", "pruned", "sparsity")}
                          for L in channel_report(r.network, net)]}
        if not args.no_synth:
            row["yosys"] = yosys_luts(r.network, board.synth_family)
        rows.append(row)
        y = row.get("yosys") or {}
        print(f"{method:<11} acc {r.float_score:.3f} -> {r.score:.3f}  analytic LUT {r.cost['lut']:>6}  "
              f"Yosys LUT {y.get('lut', 'n/a')!s:>6}  {r.precision.weight_bits}-bit  "
              f"channels {[L['kept'] for L in row['layers']]}  {r.seconds:.0f} s", flush=True)
    a, b = rows
    winner = max(rows, key=lambda r: r["accuracy"])
    print(f"at {args.budget} on {board.name} ({budget.limits['lut']} LUT): {winner['method']} wins by "
          f"{abs(a['accuracy'] - b['accuracy']) * 100:.1f} accuracy points")
    name = "cnn_pruning" + ("" if args.budget == "lut=0.1,dsp=0" else "_" + args.budget.replace("=", "").replace(",", "_"))
    write_results(name, t0, board=board.name, budget=budget.limits, rows=rows, winner=winner["method"])


if __name__ == "__main__":
    main()
