"""The execution layer measured: a 6-point digits sweep on local processes and on a local Ray
instance (same machine, same run), and two concurrent `codesign flow` runs against one.

    python bench/cluster_sweep.py [--skip-sweep] [--skip-flows]

Sweep: budgets lut=0.03..0.16 (dsp=0) with the default search, once per back end, each with an
empty synthesis cache, then once more on Ray with the cache warm (a repeated sweep). Ray's wall
time includes starting and stopping its instance. The figures of every point must be identical.

Flows: the embedded default `codesign flow` alone (all CPUs), then two started together, each
pinned to one CPU (`taskset`), so each sizes its torch and BLAS thread pools to that one CPU, then
two started together unpinned, as two users or two terminals would start them.
The machine is shared: its load average is printed beside every figure.
Writes bench/results/cluster_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, machine, write_results

BUDGETS = "lut=0.03,0.04,0.06,0.08,0.12,0.16,dsp=0"


def load() -> float:
    return round(os.getloadavg()[0], 1)


def figures(result: dict) -> list[dict]:
    return [{k: v for k, v in p.items() if k != "seconds"} for p in result["points"]]


def sweep(cluster: str, out: Path) -> dict:
    from codesign import jobs
    from codesign.app.sweep import run_sweep

    l0, t0 = load(), time.perf_counter()
    with jobs.executor(cluster) as ex:  # a Ray instance starts here and stops on leaving
        t_up = time.perf_counter() - t0
        r = run_sweep(out, "digits-mlp", "digits", "arty-a7-35", BUDGETS, cluster=ex, force=True)
        t_run = time.perf_counter() - t0 - t_up
    wall = time.perf_counter() - t0
    return {"cluster": cluster, "wall_s": round(wall, 1), "startup_s": round(t_up, 1), "sweep_s": round(t_run, 1),
            "compress_s": [p["seconds"] for p in r["points"]], "load_before": l0, "load_after": load(),
            "figures": figures(r)}


def flows(n: int, cache: Path, tmp: Path, pin: bool = True) -> dict:
    """``n`` default flows started together; with n > 1 and ``pin`` each pinned to its own CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    procs = []
    l0, t0 = load(), time.perf_counter()
    tag = f"{n}{'p' if pin else 'u'}"  # each measurement its own caches and output folders
    for i in range(n):
        c = tmp / f"cache-{tag}-{i}"
        shutil.copytree(cache, c, ignore=shutil.ignore_patterns("synth", "bulk"))  # the trained model only
        env = dict(os.environ, CODESIGN_CACHE=str(c), PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "codesign.app.cli", "flow", "--out", str(tmp / f"flow-{tag}-{i}"), "--force",
               "--quiet"]
        if n > 1 and pin:
            cmd = ["taskset", "-c", str(cpus[i % len(cpus)]), *cmd]
        procs.append((subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
                      time.perf_counter()))
    walls = []
    for p, t in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"codesign flow failed: {err.strip()}")
        walls.append(round(time.perf_counter() - t0, 1))
    compress = [json.loads((tmp / f"flow-{tag}-{i}" / "report.json").read_text())["timings_s"]["compress"]
                for i in range(n)]
    return {"flows": n, "pinned": n > 1 and pin, "wall_s": walls, "compress_s": compress, "load_before": l0, "load_after": load()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-flows", action="store_true")
    args = ap.parse_args()
    t_all = time.perf_counter()
    res: dict = {"load_at_start": load()}
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        cache = tmp / "cache"
        os.environ["CODESIGN_CACHE"] = str(cache)
        from codesign.importers.builtin import builtin_model

        builtin_model("digits-mlp")  # trained once, outside every measurement
        if not args.skip_sweep:
            runs = []
            for cluster in ("local", "ray"):
                shutil.rmtree(cache / "synth", ignore_errors=True)  # each back end synthesizes from scratch
                runs.append(sweep(cluster, tmp / f"sweep-{cluster}"))
            runs.append(dict(sweep("ray", tmp / "sweep-ray-warm"), cluster="ray (synthesis cache warm)"))
            same = all(r["figures"] == runs[0]["figures"] for r in runs)
            print(f"machine: {machine()}")
            print(f"6-point digits sweep ({BUDGETS}), default search; identical figures on every back end: {same}")
            print(f"{'back end':<30}{'wall s':>8}{'start s':>9}{'sweep s':>9}{'x local':>9}{'load':>12}")
            for r in runs:
                print(f"{r['cluster']:<30}{r['wall_s']:>8.1f}{r['startup_s']:>9.1f}{r['sweep_s']:>9.1f}"
                      f"{r['wall_s'] / runs[0]['wall_s']:>9.2f}{r['load_before']:>6.1f}-{r['load_after']:<5.1f}")
            res["sweep"] = {"budgets": BUDGETS, "identical": same, "runs": [
                {k: v for k, v in r.items() if k != "figures"} for r in runs],
                "points": runs[0]["figures"]}
            write_results("cluster_sweep", t_all, **res)  # kept should the flows part not finish
            if not same:
                raise SystemExit("the back ends disagree: see bench/results/cluster_sweep.json")
        else:  # keep the last run's sweep in the results, marked as such
            prev = ROOT / "bench" / "results" / "cluster_sweep.json"
            if prev.is_file() and "sweep" in (old := json.loads(prev.read_text())):
                res["sweep"] = dict(old["sweep"], kept_from_an_earlier_run=True)
        if not args.skip_flows:
            one = flows(1, cache, tmp)
            two = flows(2, cache, tmp)
            free = flows(2, cache, tmp, pin=False)
            ratio, ratio_free = (max(r["wall_s"]) / one["wall_s"][0] for r in (two, free))
            print(f"{'codesign flow':<30}{'wall s':>16}{'compress s':>16}{'load':>12}")
            for r in (one, two, free):
                at_once = f"{r['flows']} at once" + (", pinned" if r["pinned"] else ", unpinned" * (r["flows"] > 1))
                print(f"{at_once:<30}{', '.join(map(str, r['wall_s'])):>16}"
                      f"{', '.join(map(str, r['compress_s'])):>16}{r['load_before']:>6.1f}-{r['load_after']:<5.1f}")
            # the compression alone (report.json's compress step), where the search's thread sizing shows
            c_ratio, c_ratio_free = (max(r["compress_s"]) / one["compress_s"][0] for r in (two, free))
            print(f"two concurrent flows / one: {ratio:.2f}x pinned, {ratio_free:.2f}x unpinned; their compress "
                  f"steps: {c_ratio:.2f}x pinned, {c_ratio_free:.2f}x unpinned")
            res["flows"] = {"one": one, "two": two, "two_unpinned": free, "ratio": round(ratio, 2),
                            "ratio_unpinned": round(ratio_free, 2), "compress_ratio": round(c_ratio, 2),
                            "compress_ratio_unpinned": round(c_ratio_free, 2)}
    write_results("cluster_sweep", t_all, **res)


if __name__ == "__main__":
    main()
