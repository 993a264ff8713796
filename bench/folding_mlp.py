"""hls4ml's 16-100^5-5 MLP through ``codesign flow`` with no ``--reuse``: the flow folds it by itself when the
fully parallel design does not fit (issue 32), on vcu118 with no budget and on zcu102 at lut=0.5,dsp=0.5.

hls4ml's own weights compute a constant (L1 = 0.01 left every hidden weight below 1.7e-6), so the network is
the same layers with the live weights of ``tests/models/make_dense_distilled.py`` (hls4ml's jet tagger
distilled into them). There is no jet data set: the budgeted run's training data are random N(0, 1) inputs (the
standardized features' scale) labelled by the float model, as ``bench/quality.py``'s ``jet_data``, written as
an ``.npz`` for ``--data``; the no-budget run quantizes at the default precision on random inputs over the input
type. Written to ``bench/results/folding_mlp.json``.

    python bench/folding_mlp.py                        # both runs, Yosys on the folded/compressed design
    python bench/folding_mlp.py --boards vcu118 --no-synth
    python bench/folding_mlp.py --record DIR --board vcu118 --stages   # a finished flow's row; Yosys per stage

``--stages`` synthesizes each Dense stage of the folded design as its own top (``synth_xilinx -family xcup``, DSPs
on; ``rtl_sim.synth.stage_networks``, each stage folded at its layer's reuse): the vcu118 fold is 6,778 MAC units,
hours as one Yosys top on this machine, about twenty minutes per 1,600-unit stage. The stages' sum leaves out only
the top's input register and its in_ready counter.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (the repository on sys.path)
import numpy as np
from _common import MODELS, write_results

import codesign
from codesign.app.artifact import Artifact
from codesign.app.flow import run_flow
from codesign.errors import CodesignError

MODEL = MODELS / "KERAS_dense_16x100x100x100x100x100x5.json"
WEIGHTS = MODELS / "KERAS_dense_16x100x100x100x100x100x5_distilled_weights.h5"
RUNS = {"vcu118": None, "zcu102": "lut=0.5,dsp=0.5"}  # board -> budget
SAMPLES = 2000


def agreement_data(path: Path, seed: int = 0) -> Path:
    """12,000 training and 2,000 test inputs ~ N(0, 1), labelled by the float model's argmax, as an .npz."""
    fnet = codesign.load(MODEL, weights=WEIGHTS)
    X = np.random.default_rng(seed).normal(0, 1.0, size=(14000, 16))
    y = np.argmax(fnet.forward(X), axis=1)
    np.savez(path, X_train=X[:12000], y_train=y[:12000], X_test=X[12000:], y_test=y[12000:])
    return path


def run(board: str, budget: str | None, data: Path, out: Path, synth: bool) -> dict:
    t0 = time.perf_counter()
    try:
        rep = run_flow(out, str(MODEL), str(data) if budget else None, board, budget, weights=str(WEIGHTS),
                       samples=SAMPLES, energy=False, synth=synth, force=True)
        error = None
    except CodesignError as e:  # a design over its budget: the report is still there
        rep, error = Artifact(out).report(), str(e)
    return row_of(rep, board, budget, error, round(time.perf_counter() - t0, 1))


def stage_synthesis(out: Path, family: str = "xcup", cached_only: bool = False) -> dict:
    """Yosys on each Dense stage of the folded design in ``out`` (module docstring), against the cost model
    (``cached_only``: the stages already synthesized; the others are listed as not measured)."""
    from codesign.compress.fold_cost import network_folded_cost
    from codesign.core.network import Network
    from codesign.tools import find_yosys
    from rtl_sim.folded import emit_folded_verilog
    from rtl_sim.synth import FAST_ABC9_SCRIPT, cache_key, cached, stage_networks, synth_command, synthesize

    stages, missing = {}, []
    for name, sn in stage_networks(Network.load(out)):
        d = emit_folded_verilog(sn, None)
        key = cache_key(find_yosys().version, synth_command(family, d.top, True), FAST_ABC9_SCRIPT, d.verilog)
        if cached_only and cached(key) is None:
            missing.append(name)
            continue
        y = synthesize(d.verilog, d.top, family, dsp=True)
        m = network_folded_cost(sn, {l.name: l.reuse for l in sn.layers if hasattr(l, "reuse")}, family)
        stages[name] = {"yosys": {k: y[k] for k in ("lut", "ff", "dsp", "bram")}, "seconds": y["seconds"],
                        "model": {k: m[k] for k in ("lut", "ff", "dsp", "bram")}}
        print(name, stages[name], flush=True)
    total = {w: {k: sum(v[w][k] for v in stages.values()) for k in ("lut", "ff", "dsp", "bram")} for w in ("yosys", "model")}
    return {"family": family, "stages": stages, "total": total, "not_measured": missing}


def row_of(rep: dict, board: str, budget: str | None, error: str | None, seconds: float | None) -> dict:
    rtl, est = rep.get("rtl") or {}, rep.get("estimate") or {}
    row = {"board": board, "budget": budget, "error": error, "notes": rep.get("notes"),
           "precision": rep.get("precision"), "accuracy": rep.get("accuracy"), "nonzero": rep["network"]["nonzero"],
           "kind": rtl.get("kind", "parallel"), "ii": rtl.get("ii", 1), "reuse": rtl.get("reuse"),
           "latency": rtl.get("latency_cycles"), "hls_bit_exact": (rep.get("hls") or {}).get("csim_bit_exact"),
           "cosim": {k: (rep.get("cosim") or {}).get(k) for k in ("bit_exact", "samples", "ii", "latency_cycles")},
           "analytic": est.get("analytic"), "synth": {k: v for k, v in (est.get("synth") or {}).items()
                                                       if k in ("lut", "ff", "dsp", "bram")},
           "fits_budget": rep.get("fits_budget"), "seconds": seconds, "timings_s": rep.get("timings_s")}
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--no-synth", action="store_true", help="no Yosys (the cost model's figures only)")
    ap.add_argument("--record", type=Path, help="a finished flow's directory: its row instead of a new run")
    ap.add_argument("--board", default="vcu118", choices=list(RUNS), help="the board of --record's run")
    ap.add_argument("--stages", action="store_true", help="Yosys per Dense stage of --record's folded design")
    ap.add_argument("--cached", action="store_true", help="with --stages: only the stages already synthesized")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.record:
        row = row_of(Artifact(args.record).report(), args.board, RUNS[args.board], None, None)
        from codesign.compress.fold_cost import network_folded_cost
        from codesign.core.network import Network
        from codesign.board import load_board

        now = network_folded_cost(Network.load(args.record), row["reuse"] or 1, load_board(args.board).synth_family)
        row["analytic_now"] = {k: now[k] for k in ("lut", "ff", "dsp", "bram")}  # the cost model as it is now
        if args.stages:
            row["stage_synthesis"] = stage_synthesis(args.record, cached_only=args.cached)
        write_results("folding_mlp", t0, model=f"{MODEL.name} + {WEIGHTS.name}", samples=SAMPLES, rows=[row])
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = agreement_data(Path(tmp) / "jet_agreement.npz")
        rows = [run(b, RUNS[b], data, Path(tmp) / b, not args.no_synth) for b in args.boards]
    write_results("folding_mlp", t0, model=f"{MODEL.name} + {WEIGHTS.name}", samples=SAMPLES, rows=rows)


if __name__ == "__main__":
    main()
