"""Issue 33's third-party-style case: a BatchNorm MLP trained outside this repository, compressed by `codesign flow`.

    python bench/third_party_bn.py [--seeds 7,1,2] [--budgets lut=0.2,dsp=0 lut=0.1,dsp=0,ii=1]

Each seed trains `tests/models/make_bn_mlp_digits.py`'s 64-48-24-10 BatchNorm MLP (plain PyTorch, its own
training loop, exported with torch.export) in a separate process, then runs the flow on a PYNQ-Z2 at each
budget (no energy step; 2,000 verification vectors) and records the float and compressed test accuracy, the
Yosys LUTs and whether the design fits. The issue asks for >= float - 1 pt at 20 % of the LUTs and
>= float - 3 pt at 10 %, on Yosys. Writes bench/results/third_party_bn.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import MODELS, write_results

BUDGETS = ("lut=0.2,dsp=0", "lut=0.1,dsp=0,ii=1")


def run_point(model: Path, budget: str, out: Path) -> dict:
    """One `codesign flow` on the PYNQ-Z2; the figures its report.json holds."""
    cmd = [sys.executable, "-m", "codesign.app.cli", "flow", str(model), "--data", "digits", "--board", "pynq-z2",
           "--budget", budget, "--no-energy", "--samples", "2000", "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    r = json.loads((out / "report.json").read_text())
    synth = r["estimate"]["synth"]
    return {"budget": budget, "float": r["accuracy"]["float"], "compressed": r["accuracy"]["compressed"],
            "drop_pt": round(100 * (r["accuracy"]["float"] - r["accuracy"]["compressed"]), 2),
            "yosys_lut": synth["lut"], "lut_limit": r["budget"]["lut"], "fits": r["fits_budget"],
            "precision": r.get("precision"), "ii": (r.get("timing") or {}).get("ii"),
            "csim_bit_exact": r["hls"]["csim_bit_exact"], "cosim_bit_exact": r["cosim"]["bit_exact"],
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="7,1,2")
    ap.add_argument("--budgets", nargs="+", default=list(BUDGETS))
    args = ap.parse_args()
    t0, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            model = Path(tmp) / f"bn_mlp_seed{seed}.pt2"
            subprocess.run([sys.executable, str(MODELS / "make_bn_mlp_digits.py"), "--seed", str(seed),
                            "--out", str(model)], check=True)
            for i, budget in enumerate(args.budgets):
                row = {"seed": seed, **run_point(model, budget, Path(tmp) / f"s{seed}-{i}")}
                rows.append(row)
                print(json.dumps(row), flush=True)
    write_results("third_party_bn", t0, board="pynq-z2", rows=rows)


if __name__ == "__main__":
    main()
