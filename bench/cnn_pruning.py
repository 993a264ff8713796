"""Channel pruning against unstructured pruning on a CNN at one fixed budget (one run each).

Both go through the one budget search (``codesign.compress.search.compress``, the MLP's loop:
screen-then-refine, equalization, loss-per-LUT ranking), then the flow's fit on Yosys
(``codesign.app.flow.fit_on_synthesis``: pruned further while synthesis puts it over the budget):
"structured" removes whole channels (their filter, the next layer's input channel, their share of
the line buffers; channels tied across an Add together), "hardware" removes single kernel and
Dense weights by loss per LUT. Printed and written to bench/results/cnn_pruning*.json: test
accuracy (float and compressed), channels kept, kernel sparsity, the analytic LUTs and the Yosys
counts of the streaming design (the sum over its stages, as the flow judges the fit).

    .venv/bin/python bench/cnn_pruning.py [--model digits-cnn|digits-resnet] [--board pynq-z2]
        [--budget lut=0.1,dsp=0] [--methods structured,hardware] [--no-synth]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from _common import write_results

METHODS = ("structured", "hardware")


def yosys_counts(net, board) -> dict:
    """Yosys counts of the streaming design as the RTL step emits it for the board's clock, summed over its
    stages (what the flow's fit on synthesis judges)."""
    from rtl_sim.choice import DatapathChoice
    from rtl_sim.synth import synthesize_layer_modes, total_counts

    choice = DatapathChoice.for_board(board.synth_family, board.clock_mhz)
    c = total_counts(synthesize_layer_modes(net, board.synth_family, (False,), choice=choice)[False])
    return {k: c[k] for k in ("lut", "ff", "dsp") if k in c}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits-cnn")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--board", default="pynq-z2")
    ap.add_argument("--budget", default="lut=0.1,dsp=0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refine", type=float, default=None, help="the refine factor of the schedule (default: the search's)")
    ap.add_argument("--no-synth", action="store_true")
    args = ap.parse_args()
    from codesign.board import load_board
    from codesign.budget import Budget
    from codesign.app.flow import fit_on_synthesis
    from codesign.compress.channels import channel_report
    from codesign.compress.search import Schedule, compress, schedule_for
    from codesign.importers.builtin import builtin_model
    from codesign.importers.data import load_digits_dataset

    t0 = time.perf_counter()
    board = load_board(args.board)
    budget = Budget.parse(args.budget, board)
    data = load_digits_dataset(args.seed)
    net = builtin_model(args.model, seed=args.seed)
    rows = []
    for method in args.methods.split(","):
        schedule = schedule_for(net, Schedule())
        if args.refine is not None:
            schedule = dataclasses.replace(schedule, refine=args.refine)
        r = compress(net, data, budget, method=method, seed=args.seed, schedule=schedule)
        searched = {"accuracy": round(r.score, 4), "analytic": r.cost}
        if not args.no_synth:
            r = fit_on_synthesis(r, net, data, budget)
        row = {"method": method, "float_accuracy": round(r.float_score, 4), "accuracy": round(r.score, 4),
               "analytic": r.cost, "precision": r.precision.weight_bits, "seconds": round(r.seconds, 1),
               "sparsity": round(r.network.sparsity, 4), "epochs": r.epochs, "searched": searched,
               "tightened": r.network.metadata.get("tightened"),
               "candidates": [{"weight_bits": h["precision"]["weight_bits"], "fits": h["fits"], "cost": h["cost"],
                               "val": round(h["val"], 4) if "val" in h else None} for h in r.history],
               "layers": [{k: v for k, v in L.items() if k in ("name", "kept", "pruned", "sparsity")}
                          for L in channel_report(r.network, net)]}
        if not args.no_synth:
            row["yosys"] = yosys_counts(r.network, board)
            row["fits_on_yosys"] = all(row["yosys"].get(k, 0) <= v for k, v in budget.limits.items())
        rows.append(row)
        y = row.get("yosys") or {}
        print(f"{method:<11} acc {r.float_score:.3f} -> {r.score:.3f}  analytic LUT {r.cost['lut']:>6}  "
              f"Yosys LUT {y.get('lut', 'n/a')!s:>6}  {r.precision.weight_bits}-bit  "
              f"channels {[L['kept'] for L in row['layers']]}  {r.seconds:.0f} s", flush=True)
    if len(rows) == 2:
        a, b = rows
        winner = max(rows, key=lambda r: r["accuracy"])
        print(f"at {args.budget} on {board.name} ({budget.limits['lut']} LUT): {winner['method']} wins by "
              f"{abs(a['accuracy'] - b['accuracy']) * 100:.1f} accuracy points")
    name = "cnn_pruning" + ("" if args.model == "digits-cnn" else "_" + args.model.replace("digits-", ""))
    name += "" if args.budget == "lut=0.1,dsp=0" else "_" + args.budget.replace("=", "").replace(",", "_")
    if args.refine is not None:
        name += f"_refine{args.refine:g}"
    if args.methods != ",".join(METHODS):
        name += "_" + args.methods.replace(",", "_")
    write_results(name, t0, model=args.model, board=board.name, budget=budget.limits, rows=rows,
                  winner=max(rows, key=lambda r: r["accuracy"])["method"])


if __name__ == "__main__":
    main()
