"""The HLS step's time at three sizes, before (hls4ml's own build) and after (hls.build), split into
writing the project, compiling the C simulation and simulating.

    python bench/hls_scale.py [--samples N] [--only digits,jet,mlp] [--no-before mlp]

Networks: the embedded default (digits MLP compressed to lut=0.25 of an Arty A7-35T), hls4ml's
QKeras jet tagger (tests/models/qkeras_3layer.json, zcu102) and hls4ml's 16-100^5-5 MLP
(tests/models/KERAS_dense_16x100x100x100x100x100x5.json at the default precision, vcu118), all on
Vitis in the default form (distributed arithmetic at reuse 1). Per network, in one run:

- before: ``write_project``, then hls4ml's ``compile()`` (it writes the project again and runs its
  ``build_lib.sh``, g++ -O3) and ``predict``, as the HLS step did before;
- after, cold: the HLS step as it is now (``codesign hls DIR``) with empty caches;
- after, warm: the same step again (the project and the library come from the cache).

Each row says whether it was bit-exact. The machine is shared: the load average (1 min) before and
after each row is recorded, and CPU seconds (this process and its compilers) beside wall seconds.
Writes bench/results/hls_scale.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

from _common import ROOT, machine, write_results

NETWORKS = {
    "digits": ("digits-mlp", "digits", "arty-a7-35", "lut=0.25,dsp=0"),
    "jet": (str(ROOT / "tests" / "models" / "qkeras_3layer.json"), None, "zcu102", None),
    "mlp": (str(ROOT / "tests" / "models" / "KERAS_dense_16x100x100x100x100x100x5.json"), None, "vcu118", None),
}


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Clock:
    """Wall and CPU seconds of a stretch, and the load average around it."""

    def __enter__(self) -> "Clock":
        self.load0, self.w0, self.c0 = os.getloadavg()[0], time.perf_counter(), cpu_s()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w0, cpu_s() - self.c0
        self.load = (round(self.load0, 1), round(os.getloadavg()[0], 1))


def before(art_dir: Path, samples: int) -> dict:
    """The HLS step as it was: hls4ml writes, compiles (writing again, build_lib.sh at -O3) and predicts."""
    import numpy as np

    from codesign.app.artifact import Artifact
    from codesign.app.flow import verification_samples
    from codesign.board import load_board
    from codesign.core import fixed
    from codesign.core.network import Network
    from codesign.core.verify import compare_with_reference
    from hls.project import write_project

    art = Artifact(art_dir)
    net = Network.load(art.dir)
    board = load_board(art.report()["board"]["name"])
    out = Path(tempfile.mkdtemp(dir=art.dir, prefix="before."))
    row: dict = {}
    with Clock() as c:
        p = write_project(net, board, "vitis", out / "project")
    row.update(write_s=c.wall, write_cpu_s=c.cpu)
    with Clock() as c, contextlib.redirect_stdout(io.StringIO()):
        p.model.compile()
    row.update(compile_s=c.wall, compile_cpu_s=c.cpu, load=c.load)
    q = verification_samples(art, net, samples)
    x = np.ascontiguousarray(fixed.to_float(q, net.input_type).reshape(len(q), -1))
    with Clock() as c, contextlib.redirect_stdout(io.StringIO()):
        y = np.asarray(p.model.predict(x), dtype=np.float64).reshape(len(q), -1)
    row.update(simulate_s=c.wall, simulate_cpu_s=c.cpu)
    out_t = net.forward_int(q[:1]).type
    row["bit_exact"] = compare_with_reference(net, q, fixed.quantize(y, out_t.with_modes("TRN", "SAT"))).bit_exact
    row["samples"] = len(q)
    return row


def after(art_dir: Path, samples: int) -> dict:
    from codesign.app.artifact import Artifact
    from codesign.app.flow import step_hls

    with Clock() as c:
        r = step_hls(Artifact(art_dir), "vitis", samples)
    return {"write_s": r["write_s"], "compile_s": r["compile_s"], "simulate_s": r["simulate_s"], "step_s": c.wall,
            "step_cpu_s": c.cpu, "load": c.load, "bit_exact": r["csim_bit_exact"], "samples": r["samples"],
            "cached": r["cached"], "project_from_cache": r["project_from_cache"], "units": r["units"],
            "flags": r["flags"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--only", default="mlp,jet,digits")
    ap.add_argument("--no-before", default="", help="networks whose hls4ml build is not measured (e.g. mlp)")
    ap.add_argument("--keep", default=None, help="folder for the artifacts (default: a temporary one)")
    args = ap.parse_args()
    from codesign.app.artifact import Artifact
    from codesign.app.flow import step_compress
    from codesign.board import load_board
    from codesign.budget import Budget

    t0 = time.perf_counter()
    results: dict = {"samples": args.samples, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        os.environ["CODESIGN_CACHE"] = str(root / "cache")
        for name in args.only.split(","):
            model, data, board, budget = NETWORKS[name]
            art = Artifact(root / name)
            art.claim(force=True)
            step_compress(art, model, data, Budget.parse(budget, load_board(board)))
            res: dict = {"network": art.report()["network"]["params"]}
            if name not in args.no_before.split(","):
                res["before"] = before(art.dir, args.samples)
                print(name, "before", json.dumps(res["before"]), flush=True)
            for tag in ("cold", "warm"):
                res[tag] = after(art.dir, args.samples)
                print(name, tag, json.dumps(res[tag]), flush=True)
            results[name] = res
            write_results("hls_scale", t0, **results)  # what is measured so far, in case a later network fails
    print(f"machine: {machine()}")
    print(f"{'network':<8}{'run':<7}{'write s':>9}{'compile s':>11}{'sim s':>8}{'total s':>9}{'CPU s':>8}"
          f"{'load':>12}  bit-exact")
    for name, res in results.items():
        if not isinstance(res, dict):
            continue
        for tag in ("before", "cold", "warm"):
            r = res.get(tag)
            if r is None:
                continue
            total = r.get("step_s", r["write_s"] + r["compile_s"] + r["simulate_s"])
            cpu = r.get("step_cpu_s", r.get("write_cpu_s", 0) + r.get("compile_cpu_s", 0) + r.get("simulate_cpu_s", 0))
            print(f"{name:<8}{tag:<7}{r['write_s']:>9.1f}{r['compile_s']:>11.1f}{r['simulate_s']:>8.1f}{total:>9.1f}"
                  f"{cpu:>8.0f}{str(r['load']):>12}  {r['bit_exact']}")
    write_results("hls_scale", t0, **results)


if __name__ == "__main__":
    main()
