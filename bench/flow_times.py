"""Tool time per stage of `codesign flow` on the embedded default, and where the time goes.

    python bench/flow_times.py [--out DIR]

Runs the default flow twice in one process: cold (empty caches: the built-in model trains and Yosys runs) and
warm (the cache answers), and prints each stage's seconds and its share of the total.
Writes bench/results/flow_times.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import machine, write_results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from codesign.app.flow import run_flow

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CODESIGN_CACHE"] = str(Path(tmp) / "cache")  # both caches start empty
        for tag in ("cold", "warm"):
            t0 = time.perf_counter()
            rep = run_flow(Path(args.out or tmp) / tag, force=True, budget="lut=0.25,dsp=0")
            runs[tag] = {"stages_s": rep["timings_s"], "wall_s": round(time.perf_counter() - t0, 1)}
    print(f"machine: {machine()}")
    print(f"{'stage':<10}{'cold s':>9}{'share':>8}{'warm s':>9}{'share':>8}")
    for stage in runs["cold"]["stages_s"]:
        c, w = runs["cold"]["stages_s"][stage], runs["warm"]["stages_s"].get(stage, 0.0)
        print(f"{stage:<10}{c:>9.1f}{c / runs['cold']['wall_s']:>8.0%}{w:>9.1f}{w / runs['warm']['wall_s']:>8.0%}")
    print(f"{'total':<10}{runs['cold']['wall_s']:>9.1f}{'':>8}{runs['warm']['wall_s']:>9.1f}")
    write_results("flow_times", **runs)


if __name__ == "__main__":
    main()
