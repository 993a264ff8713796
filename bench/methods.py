"""Hardware-aware compression against the other ways to get a network of the same size.

    python bench/methods.py [--cases digits-mlp bn-64-64-32 ...] [--seeds 3] [--workers 2] [--no-plot]

For each network and LUT budget (0 DSP, a PYNQ-Z2's xc7 fabric, the fastest design: an MLP fully parallel at `ii=1`,
a streaming CNN at a pixel a cycle, ``point_budget``), the methods get the same budget and the same training budget
(the epochs ours spent, over the training split):

1. ``hardware``: our search as shipped (``codesign.compress``, its precisions and schedule; where its
   screened best is 1 pt or more below float it also screens the magnitude ranking, and where the best
   keeps under a quarter of the weights it also trains a narrower dense start: ``codesign/compress/narrow.py``);
2. ``magnitude``: magnitude pruning + QAT at the precision (1) chose, the same search loop
   (polynomial schedule, fine-tuning, distillation) ranking weights by |w| instead of by
   importance per LUT: what the Keras/hls4ml pruning API does;
3. ``structured``: whole neurons removed (same loop and precision);
4. ``scratch``: a narrower network of the same shape (every hidden width scaled alike, dense),
   trained from random weights, float then QAT at (1)'s precision, distilled from the float
   model like the others, its width chosen so the cost model puts it at the budget (the search's
   narrow start, ``narrow.narrow_candidate``, on all of (1)'s epochs);
5. ``digits``: the search of (1) with per-weight widths (``method="digits"``, its own precision
   choice and schedule, as (1)): besides pruning, it rounds single weights to fewer CSD digits,
   ranked with the pruning by loss per LUT (codesign/compress/digits.py).

(2)-(4) get the epochs (1) spent, spread over their own schedule. The CNNs (the built-in ``digits-cnn`` and
``digits-resnet``) are compared on (1)-(4): single kernel and Dense weights by loss per LUT (ours) or by |w|, whole
channels (``structured``), and a narrower CNN from scratch (every convolution's channels scaled alike; not for the
residual network, whose channels are tied across its Adds). Each result is synthesized
with Yosys per layer (LUT-only, as the flow's ``lut_only`` count; a CNN's stages as the flow emits them) and
compared at those LUTs:
the table gives accuracy and Yosys LUTs per budget and method, the plot accuracy against Yosys
LUTs. Networks: the built-in ``digits-mlp``, two PyTorch MLPs with BatchNorm trained here
(64-64-32-10 and the issue's 64-48-24-10) on digits (accuracy on its 360-image test split),
and hls4ml's float jet tagger (argmax agreement with the float model on held-out random
inputs, as bench/quality.py). With ``--seeds N`` every method runs on seeds 0..N-1 (the same seeds
for every method) and the table gives mean ± standard deviation per cell; ours against the best other
method is a win or a loss only outside one standard deviation of the paired per-seed difference.
Writes bench/results/methods.{json,md,png} (``--name``).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

from _common import MODELS, ROOT, machine, write_results
from codesign import jobs

BOARD = "pynq-z2"
METHODS = ("hardware", "magnitude", "structured", "scratch", "digits")
# LUT budgets (absolute, 0 DSP): from where the networks start to break to where they are near float
CASES = {
    "bn-64-48-24": (10640,),  # the network at its budget (20 % of a PYNQ-Z2)
    "digits-mlp": (1500, 2500, 4000, 6500),
    "bn-64-64-32": (2500, 4000, 6500, 10640),
    "jet-float": (5000, 8000, 12000, 16000),
    "digits-cnn": (1600, 2660, 4000),  # 2,660: 5 % of a PYNQ-Z2 (bench/cnn_pruning.py's point)
    "digits-resnet": (4000, 6500),  # its dense 3-bit design prices ~9,800 LUT: at 16,000 all methods tie at dense
}
CNN_CASES = ("digits-cnn", "digits-resnet")
# the methods a CNN is compared on: channels (structured), single weights by loss per LUT (ours) or by |w|, and
# a narrower CNN from scratch; the digits rounding is for Dense layers
CNN_METHODS = ("hardware", "magnitude", "structured", "scratch")
SEED = 0


# ---- networks ------------------------------------------------------------------------------
def train_bn_mlp(sizes: tuple[int, ...], seed: int = SEED, epochs: int = 120):
    """A Linear-BatchNorm-ReLU MLP trained on digits with Adam, as a PyTorch user would; imported."""
    import torch
    from torch import nn

    from codesign.importers.data import load_digits_dataset
    from codesign.importers.torch_import import network_from_module

    data = load_digits_dataset(seed)
    torch.manual_seed(seed)
    mods: list = []
    for i in range(len(sizes) - 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            mods += [nn.BatchNorm1d(sizes[i + 1]), nn.ReLU()]
    model = nn.Sequential(*mods)
    X, y = torch.tensor(data.X_train, dtype=torch.float32), torch.tensor(data.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), 32):
            b = perm[i : i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[b]), y[b]).backward()
            opt.step()
    return network_from_module(model.eval(), name="bn-" + "-".join(map(str, sizes[1:-1])))


def jet_case(seed: int = 0):
    """hls4ml's float jet tagger and random inputs labelled by it (agreement, not accuracy)."""
    import codesign
    from codesign.importers.data import Dataset

    fnet = codesign.load(MODELS / "KERAS_3layer.json")
    X = np.random.default_rng(seed).normal(0, 1.0, size=(5000, 16))
    y = np.argmax(fnet.forward(X), axis=1)
    # 2,000 to train on (bench/quality.py: 8,000): the jet points are the bench's slowest
    return fnet, Dataset("jet-agreement", X[:2000], y[:2000], X[2000:3000], y[2000:3000], X[3000:], y[3000:],
                         "classification", 5, None)


def load_case(case: str):
    """(float network, data set), trained networks cached on disk."""
    from codesign.core.network import Network
    from codesign.importers.builtin import builtin_model
    from codesign.importers.data import load_digits_dataset
    from codesign.tools import cache_dir

    if case == "digits-mlp" or case in CNN_CASES:
        return builtin_model(case, seed=SEED), load_digits_dataset(SEED)
    if case == "jet-float":
        return jet_case()
    sizes = (64, *map(int, case.split("-")[1:]), 10)
    d = cache_dir() / "bench-methods" / f"{case}-seed{SEED}-v1"
    if not (d / "network.json").is_file():
        train_bn_mlp(sizes).save(d)
    return Network.load(d), load_digits_dataset(SEED)


# ---- the four methods ----------------------------------------------------------------------
def scaled_schedule(net, epochs: int):
    """The search's schedule for one precision (a CNN's: the shorter CNN schedule), stretched to spend about
    ``epochs`` epochs."""
    from dataclasses import replace

    from codesign.compress.search import Schedule, schedule_for

    base = schedule_for(net, Schedule())
    one = base.epochs + base.finetune_epochs * base.prune_steps + base.final_epochs
    f = epochs / one  # fewer than one schedule too: a search that stopped early (at the float network) spent less
    return replace(base, epochs=max(1, round(base.epochs * f)), finetune_epochs=max(1, round(base.finetune_epochs * f)),
                   final_epochs=max(1, round(base.final_epochs * f)))


def scratch(net, data, budget, prec, epochs: int, seed: int = SEED):
    """A narrower dense network of the same depth trained from scratch to ``budget`` on ``epochs`` (its width
    probe included): the search's narrow start (codesign/compress/narrow.py) as a method of its own, trimmed
    by magnitude if it ends above. (network, epochs, width scale, probe ratio)."""
    from codesign.compress.narrow import narrow_candidate
    from codesign.compress.qcnn import network_from_qcnn, qcnn_from_network
    from codesign.compress.search import Schedule, _Search, _trim, shrink

    sch = Schedule()
    aim = {k: int(v * (1 - sch.headroom)) if k in ("lut", "ff") else v for k, v in budget.limits.items()}
    teacher = qcnn_from_network(net)
    ctx = _Search(data, budget, aim, "magnitude", "lut", teacher, seed)
    model, _, info = narrow_candidate(ctx, teacher, prec, epochs,
                                      lambda m: _trim(ctx, m, prec, ctx.cost(m), sch, seed + 500))
    out = shrink(network_from_qcnn(model, net.name, {"method": "scratch", "width_scale": info.scale}))
    return out, ctx.spent[0], info.scale, info.probe_ratio


def run_point(case: str, lut: int, methods: tuple[str, ...], seed: int = SEED) -> list[dict]:
    """Every method at one budget of one network (a worker process's job): rows with networks. ``seed`` is the
    searches' (the data split and the BatchNorm MLPs' training keep ``SEED``)."""
    import torch

    torch.set_num_threads(1)
    from codesign.app.flow import fit_on_synthesis
    from codesign.board import load_board
    from codesign.budget import Budget
    from codesign.compress.search import compress, score
    from codesign.compress.narrow import narrowable
    from codesign.compress.qcnn import qcnn_from_network
    from codesign.errors import BudgetError

    net, data = load_case(case)
    budget = Budget.parse(point_budget(net, lut), load_board(BOARD))
    rows = []
    t0 = time.perf_counter()
    hw = fit_on_synthesis(compress(net, data, budget, method="hardware", seed=seed), net, data, budget)
    rows.append(_row(case, lut, "hardware", hw.network, hw.score, hw.float_score, hw.epochs, t0,
                     precision=hw.precision.weight_bits))
    if "digits" in methods:  # the same search, same seed and schedule, per-weight digit counts
        t0 = time.perf_counter()
        dg = fit_on_synthesis(compress(net, data, budget, method="digits", seed=seed), net, data, budget)
        rows.append(_row(case, lut, "digits", dg.network, dg.score, hw.float_score, dg.epochs, t0,
                         precision=dg.precision.weight_bits))
    sch = scaled_schedule(net, hw.epochs)
    for m in ("magnitude", "structured"):
        if m not in methods:
            continue
        t0 = time.perf_counter()
        try:
            r = compress(net, data, budget, method=m, seed=seed, precisions=(hw.precision,), schedule=sch)
            r = fit_on_synthesis(r, net, data, budget)
            rows.append(_row(case, lut, m, r.network, r.score, hw.float_score, r.epochs, t0))
        except BudgetError as e:
            rows.append({**_row(case, lut, m, None, None, hw.float_score, 0, t0), "error": str(e)})
    if "scratch" in methods and not narrowable(qcnn_from_network(net)):
        rows.append({**_row(case, lut, "scratch", None, None, hw.float_score, 0, time.perf_counter()),
                     "error": "a branched network is not narrowed (its channels are tied across the merges)"})
    elif "scratch" in methods:
        t0 = time.perf_counter()
        out, spent, scale, ratio = scratch(net, data, budget, hw.precision, hw.epochs, seed)
        rows.append(_row(case, lut, "scratch", out, score(out, data.X_test, data.y_test, data.task),
                         hw.float_score, spent, t0, width_scale=round(scale, 3), probe_ratio=ratio))
    print(f"  {case} lut={lut}: " + ", ".join(f"{r['method']} {r['accuracy'] or float('nan'):.3f}" for r in rows)
          + f" ({sum(r['seconds'] for r in rows):.0f} s)", flush=True)
    return rows


def point_budget(net, lut: int) -> dict:
    """The budget every method gets at one point: ``lut`` LUTs, no DSP, and the fastest design. An MLP at II 1
    (fully parallel); a streaming CNN at its pixels per image (a pixel a cycle: its Dense tail may fold over the
    image at no cost in throughput, for every method alike); a branched CNN, which does not fold, with no II."""
    from codesign.compress.fold_choice import foldable, pixels

    return {"lut": lut, "dsp": 0, **({"ii": pixels(net)} if foldable(net) else {})}


def _row(case, lut, method, net, acc, float_acc, epochs, t0, **extra) -> dict:
    from codesign.board import load_board
    from codesign.compress.cost import network_cost, total_cost
    from codesign.core.arith import csd_count

    r = {"case": case, "budget_lut": lut, "method": method, "accuracy": acc, "float": float_acc, "epochs": epochs,
         "seconds": round(time.perf_counter() - t0, 1), **extra}
    if net is not None:
        r["model_lut"] = total_cost(network_cost(net, load_board(BOARD), "lut"))["lut"]
        r["nonzero"] = int(sum(int(np.count_nonzero(l.weight)) for l in net.weighted_layers()))
        r["csd_digits"] = int(sum(int(csd_count(l.weight).sum()) for l in net.weighted_layers()))
        r["widths"] = [int(l.weight.shape[-1]) for l in net.weighted_layers()]
        r["network"] = net
        if net.metadata.get("tightened"):
            r["tightened"] = net.metadata["tightened"]  # the cost model's error synthesis found, pruned away
    return r


# ---- synthesis, table, plot ------------------------------------------------------------------
def synthesize(rows: list[dict]) -> None:
    """Yosys LUT-only counts per layer: an MLP's layers unpipelined; a CNN's stages as the flow emits and judges
    them (pipelined for the board's clock, a folded tail folded: ``synthesize_layer_modes``)."""
    from cnn_pruning import yosys_counts

    from codesign.board import load_board
    from rtl_sim.synth import synthesize_layers, total_counts

    todo = [r for r in rows if r.get("network") is not None]
    b = load_board(BOARD)
    for i, r in enumerate(todo):
        net = r.pop("network")
        if r["case"] in CNN_CASES:  # the streaming design's stages as the flow's fit on Yosys judges them
            t = yosys_counts(net, b)
        else:
            t = total_counts(synthesize_layers(net, "xc7", dsp=False))
        r["yosys_lut"], r["yosys_dsp"], r["yosys_ff"] = t["lut"], t["dsp"], t["ff"]
        r["fits_yosys"] = t["lut"] <= r["budget_lut"] and t["dsp"] == 0
        if (i + 1) % 8 == 0 or i + 1 == len(todo):
            print(f"  synthesized {i + 1}/{len(todo)}", flush=True)


def table(rows: list[dict], n_test: dict[str, int]) -> str:
    """One line per network and budget: each method's accuracy (Yosys LUTs); the best in bold."""
    out = ["| network | budget LUT | " + " | ".join(METHODS) + " | ours − best other (pt) |",
           "| --- | ---: | " + " | ".join("---:" for _ in METHODS) + " | ---: |"]
    for case in dict.fromkeys(r["case"] for r in rows):
        for lut in sorted({r["budget_lut"] for r in rows if r["case"] == case}):
            by = {r["method"]: r for r in rows if r["case"] == case and r["budget_lut"] == lut}
            accs = {m: by[m]["accuracy"] for m in METHODS if m in by and by[m]["accuracy"] is not None}
            best = max(accs.values())
            cells = []
            for m in METHODS:
                if m not in accs:
                    cells.append("–")
                    continue
                a = f"{100 * accs[m]:.1f}"
                a = f"**{a}**" if accs[m] >= best - 1.0 / n_test[case] - 1e-9 else a  # a tie: within one test sample
                cells.append(f"{a} ({by[m]['yosys_lut']:,})")
            others = [v for m, v in accs.items() if m != "hardware"]
            diff = 100 * (accs.get("hardware", float("nan")) - max(others)) if others else float("nan")
            out.append(f"| {case} (float {100 * by['hardware']['float']:.1f}) | {lut:,} | " + " | ".join(cells)
                       + f" | {diff:+.1f} |")
    return "\n".join(out)


def seeds_table(rows: list[dict], seeds: list[int]) -> str:
    """Mean ± standard deviation over the seeds per method (Yosys LUTs: the mean), and ours against the best
    other method by the mean: the difference of the paired per-seed scores, a win or a loss only outside one
    standard deviation of that difference, else a tie. Only designs that fit their budget on Yosys count
    ("[k of n]": the seeds that gave one)."""
    out = [f"| network | budget LUT | " + " | ".join(METHODS) + f" | ours − best other (pt, {len(seeds)} seeds) | verdict |",
           "| --- | ---: | " + " | ".join("---:" for _ in METHODS) + " | ---: | --- |"]
    for case in dict.fromkeys(r["case"] for r in rows):
        for lut in sorted({r["budget_lut"] for r in rows if r["case"] == case}):
            # a design over its budget on Yosys (or none: the method found no network that fits) is no result
            acc = {m: {r["seed"]: r["accuracy"] for r in rows if r["case"] == case and r["budget_lut"] == lut
                       and r["method"] == m and r.get("accuracy") is not None and r.get("fits_yosys")}
                   for m in METHODS}
            lut_of = {m: [r["yosys_lut"] for r in rows if r["case"] == case and r["budget_lut"] == lut
                          and r["method"] == m and r.get("fits_yosys")] for m in METHODS}
            cells = [f"{100 * np.mean(list(a.values())):.1f} ± {100 * np.std(list(a.values())):.1f} "
                     f"({np.mean(lut_of[m]):,.0f})" + (f" [{len(a)} of {len(seeds)}]" if len(a) < len(seeds) else "")
                     if a else "–" for m, a in acc.items()]
            others = {m: a for m, a in acc.items() if m != "hardware" and a}
            verdict, diff = "–", "–"
            if acc["hardware"] and others:
                best = max(others, key=lambda m: np.mean(list(others[m].values())))
                common = sorted(set(acc["hardware"]) & set(others[best]))
                d = 100 * np.array([acc["hardware"][sd] - others[best][sd] for sd in common])
                sd_d = float(np.std(d)) if len(d) > 1 else 0.0
                verdict = "win" if d.mean() > sd_d else "loss" if d.mean() < -sd_d else "tie"
                verdict += f" (vs {best})"
                diff = f"{d.mean():+.1f} ± {sd_d:.1f}"
            fl = next(r["float"] for r in rows if r["case"] == case)
            out.append(f"| {case} (float {100 * fl:.1f}) | {lut:,} | " + " | ".join(cells) + f" | {diff} | {verdict} |")
    return "\n".join(out)


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, axes = plt.subplots(1, len(cases), figsize=(4.2 * len(cases), 3.6), squeeze=False)
    styles = {"hardware": ("C0", "o"), "magnitude": ("C1", "s"), "structured": ("C2", "^"), "scratch": ("C3", "x"),
              "digits": ("C4", "D")}
    for ax, case in zip(axes[0], cases):
        for m in METHODS:
            mine = [r for r in rows if r["case"] == case and r["method"] == m and r.get("accuracy") is not None
                    and r.get("fits_yosys")]
            pts = []  # per budget: mean Yosys LUTs, mean accuracy and its spread over the seeds
            for lut in sorted({r["budget_lut"] for r in mine}):
                at = [r for r in mine if r["budget_lut"] == lut]
                accs = [100 * r["accuracy"] for r in at]
                pts.append((np.mean([r["yosys_lut"] for r in at]), np.mean(accs), np.std(accs)))
            if pts:
                c, mk = styles[m]
                x, y, e = zip(*pts)
                ax.errorbar(x, y, yerr=e if max(e) > 0 else None, marker=mk, color=c, label=m, capsize=2)
        fl = next(r["float"] for r in rows if r["case"] == case)
        ax.axhline(100 * fl, color="gray", ls=":", lw=1, label="float")
        ax.set_title(case)
        ax.set_xlabel("Yosys LUTs (xc7, 0 DSP)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy / agreement (%)")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                    help="the methods (a CNN's: those of CNN_METHODS among them)")
    ap.add_argument("--workers", type=int, default=2, help="budget points compressed at once on local processes (one CPU each)")
    ap.add_argument("--cluster", default=None, help="local (default), ray, auto or ray://HOST:PORT: where the points run")
    ap.add_argument("--budgets", nargs="+", type=int, help="LUT budgets instead of each case's own")
    ap.add_argument("--name", default="methods", help="results file name (bench/results/NAME.{json,md,png})")
    ap.add_argument("--seed", type=int, default=SEED, help="the searches' seed (every method)")
    ap.add_argument("--seeds", type=int, help="run seeds 0..N-1 and report mean and spread per cell (overrides --seed)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--report", action="store_true", help="table and plot from the finished points only")
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"machine: {machine()}", flush=True)
    for case in args.cases:  # train the BatchNorm MLPs once, before the workers need them
        load_case(case)
    budgets = {c: tuple(args.budgets or CASES[c]) for c in args.cases}
    seeds = list(range(args.seeds)) if args.seeds else [args.seed]
    points = [(c, lut, sd) for c in args.cases for lut in budgets[c] for sd in seeds]
    rows: list[dict] = []
    todo = []
    for c, lut, sd in points:  # points finished by an earlier run of the same code are read back
        done = _load_point(c, lut, sd)
        if done is not None and {r["method"] for r in done} >= set(case_methods(c, args.methods)):
            rows += [{**r, "seed": sd} for r in done]
        elif not args.report:
            todo.append((c, lut, sd))
    print(f"{len(points) - len(todo)} points from earlier runs, {len(todo)} to compute", flush=True)
    with _executor(args.cluster, args.workers) as ex:  # the toolkit's job layer: local processes or Ray
        for c, lut, sd in todo:
            ex.submit(jobs.Job(f"{c}-{lut}-seed{sd}", run_point, (c, lut, case_methods(c, args.methods), sd), tag=sd))
        for i, o in enumerate(ex.as_completed()):
            if not o.ok:
                raise SystemExit(f"point {o.job.name} failed: {o.error}")
            point = o.value
            synthesize(point)  # at once, so an interrupted run keeps every finished point
            _save_point(point, o.job.tag)
            rows += [{**r, "seed": o.job.tag} for r in point]
            print(f"[{i + 1}/{len(todo)} points, {time.perf_counter() - t0:.0f} s]", flush=True)
    compress_s = time.perf_counter() - t0
    rows = [r for r in rows if r["method"] in args.methods]
    order = {(c, lut): i for i, (c, lut) in enumerate((c, l) for c in args.cases for l in budgets[c])}
    rows.sort(key=lambda r: (order[(r["case"], r["budget_lut"])], METHODS.index(r["method"])))
    n_test = {c: len(load_case(c)[1].y_test) for c in args.cases}
    md = table(rows, n_test) if len(seeds) == 1 else seeds_table(rows, seeds)
    print(md)
    res = ROOT / "bench" / "results"
    (res / f"{args.name}.md").write_text(md + "\n")
    if not args.no_plot and rows:
        plot(rows, res / f"{args.name}.png")
    write_results(args.name, t0, board=BOARD, compress_seconds=round(compress_s, 1), rows=rows,
                  datapath=_datapath())


def case_methods(case: str, methods) -> tuple[str, ...]:
    return tuple(m for m in methods if case not in CNN_CASES or m in CNN_METHODS)


@contextlib.contextmanager
def _executor(cluster: str | None, workers: int):
    """``codesign.jobs.executor`` for ``cluster``; on local processes at most ``workers`` points at once (each
    compression trains on one thread: the job layer sizes its thread pools to its one CPU)."""
    if jobs.parse_cluster(cluster) is not None:
        with jobs.executor(cluster) as ex:
            yield ex
        return
    ex = jobs.Executor(jobs.LocalProcesses(max(1, workers)))
    try:
        yield ex
    finally:
        ex.close()


def _point_file(case: str, lut: int, seed: int = SEED):
    """Where one point's rows are kept: keyed by the compression code, this script and the RTL emitter."""
    import hashlib

    from codesign.tools import cache_dir

    h = hashlib.sha256()
    for f in sorted((ROOT / "codesign" / "compress").glob("*.py")) + [ROOT / "bench" / "methods.py",
                                                                       ROOT / "rtl_sim" / "verilog.py"]:
        h.update(f.read_bytes())
    return cache_dir() / "bench-methods" / "points" / h.hexdigest()[:12] / (
        f"{case}-{lut}.json" if seed == SEED else f"{case}-{lut}-seed{seed}.json")


def _load_point(case: str, lut: int, seed: int = SEED) -> list[dict] | None:
    import json

    p = _point_file(case, lut, seed)
    return json.loads(p.read_text()) if p.is_file() else None


def _save_point(rows: list[dict], seed: int = SEED) -> None:
    import json

    p = _point_file(rows[0]["case"], rows[0]["budget_lut"], seed)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(rows, default=float))


def _datapath() -> str:
    """Which Dense datapath the Verilog emitter built (the synthesized LUTs depend on it)."""
    import subprocess

    head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", "--", "rtl_sim/verilog.py"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "--", "rtl_sim/"]).returncode != 0
    return head + (" (with uncommitted changes)" if dirty else "")


if __name__ == "__main__":
    import methods  # the workers import the functions from the module, not from __main__

    methods.main()
