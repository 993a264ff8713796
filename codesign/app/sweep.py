"""``codesign sweep``: compression at several budgets, and accuracy against synthesized LUTs.

Each budget's network is compressed, emitted as RTL and synthesized with Yosys; the points
that no other point beats on both accuracy and LUTs form the Pareto front. Writes
``sweep.json``, ``sweep.md``, a self-contained ``sweep.html`` and ``pareto.png``, and each
point's network under ``points/<n>/``.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from codesign import jobs
from codesign.app.artifact import Artifact
from codesign.app.plots import new_figure, png_bytes
from codesign.board import Board, load_board
from codesign.budget import RESOURCES, Budget
from codesign.core.fixed import FixedType
from codesign.core.network import Network
from codesign.errors import BudgetError, ConfigError, JobsFailedError
from codesign.importers.data import Dataset
from codesign.progress import SILENT, Bar, Reporter


def expand_budgets(specs: str | list[str]) -> list[str]:
    """Budget strings from sweep specs: ``lut=0.1,0.2,0.4,dsp=0`` is three budgets (a bare
    value continues the resource before it); several specs are concatenated."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    out: list[str] = []
    for spec in specs:
        values: dict[str, list[str]] = {}
        key = None
        for part in (p.strip() for p in spec.split(",")):
            if "=" in part:
                key, v = (s.strip() for s in part.split("=", 1))
                if key not in RESOURCES:
                    raise BudgetError(f"unknown resource {key!r} in sweep {spec!r}; resources: {', '.join(RESOURCES)}")
                values.setdefault(key, []).append(v)
            elif key is None or not part:
                raise BudgetError(f"malformed sweep {spec!r}: write e.g. 'lut=0.1,0.2,0.4' or 'lut=0.1,0.2,dsp=0'")
            else:
                values[key].append(part)
        keys = list(values)
        for combo in itertools.product(*(values[k] for k in keys)):
            out.append(",".join(f"{k}={v}" for k, v in zip(keys, combo)))
    if not out:
        raise BudgetError("sweep needs at least one budget, e.g. --budgets lut=0.1,0.2,0.4")
    return out


def search_settings(precisions: str | None = None, schedule: str | None = None) -> dict[str, Any]:
    """``compress`` keyword arguments from the CLI: ``--precisions 4/6/10,6/8/12`` (weight/activation/
    output bits of each candidate) and ``--schedule epochs=20,final_epochs=10`` (``Schedule`` fields)."""
    import dataclasses

    from codesign.compress.qat import Precision
    from codesign.compress.search import Schedule

    out: dict[str, Any] = {}
    if precisions is not None:
        cands = []
        for part in precisions.split(","):
            bits = part.strip().split("/")
            if len(bits) != 3 or not all(b.isdigit() and 1 <= int(b) <= 32 for b in bits):
                raise ConfigError(f"malformed --precisions {precisions!r}: write weight/activation/output bits of "
                                  "each candidate, e.g. 4/6/10,6/8/12")
            cands.append(Precision(*(int(b) for b in bits)))
        out["precisions"] = tuple(cands)
    if schedule is not None:
        defaults = {f.name: f.default for f in dataclasses.fields(Schedule)}
        values: dict[str, Any] = {}
        for part in schedule.split(","):
            k, _, v = (x.strip() for x in part.partition("="))
            if k not in defaults:
                raise ConfigError(f"unknown --schedule field {k!r}; fields: {', '.join(defaults)}")
            kind = type(defaults[k])
            if kind is bool:
                if v.lower() not in ("true", "false"):
                    raise ConfigError(f"--schedule {k}={v!r}: write true or false")
                values[k] = v.lower() == "true"
                continue
            try:
                values[k] = kind(v)
            except ValueError:
                raise ConfigError(f"--schedule {k}={v!r}: not {'a whole number' if kind is int else 'a number'}") from None
        out["schedule"] = Schedule(**values)
    return out


def pareto_front(points: list[dict[str, Any]]) -> list[int]:
    """Indices of points no other point beats (higher score at no more LUTs, or fewer LUTs at no lower score)."""
    front = []
    for i, p in enumerate(points):
        dominated = any(
            q["score"] >= p["score"] and q["synth"]["lut"] <= p["synth"]["lut"]
            and (q["score"] > p["score"] or q["synth"]["lut"] < p["synth"]["lut"])
            for j, q in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front


def compress_point(net: Network, data: Dataset, budget: Budget, method: str, seed: int,
                   input_type: FixedType | None, search: dict[str, Any]) -> dict[str, Any]:
    """One sweep point, run as a job: ``net`` compressed under ``budget``; the network and its figures."""
    from codesign.compress.cost import network_cost, total_cost
    from codesign.compress.search import compress

    r = compress(net, data, budget, method=method, seed=seed, input_type=input_type, **search)
    return {"network": r.network, "score": r.score, "metric": r.metric, "float_score": r.float_score,
            "analytic": total_cost(network_cost(r.network, budget.board)), "sparsity": round(r.network.sparsity, 4),
            "nonzero": r.network.n_nonzero, "weight_bits": r.precision.weight_bits, "act_bits": r.precision.act_bits,
            "seconds": round(r.seconds, 1)}


@dataclass
class _Point:
    """A point in flight: its figures so far, and the layers whose synthesis is outstanding."""

    spec: str
    limits: dict[str, int]
    figures: dict[str, Any] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    synth: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 1

    @property
    def dsp(self) -> bool:
        return self.limits.get("dsp", 1) != 0

    def finished(self) -> bool:
        return self.error is not None or (bool(self.figures) and len(self.synth) == len(self.layers))

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"budget": self.spec, "limits": self.limits, "failed": True, "error": self.error,
                    "attempts": self.attempts}
        from rtl_sim.synth import total_counts

        f = self.figures
        return {"budget": self.spec, "limits": self.limits, "score": f["score"], "metric": f["metric"],
                "float_score": f["float_score"], "analytic": f["analytic"],
                "synth": total_counts({name: self.synth[name] for name in self.layers}), **{
                    k: f[k] for k in ("sparsity", "nonzero", "weight_bits", "act_bits", "seconds")}}


def _run_points(ex: jobs.Executor, art: Artifact, net: Network, ds: Dataset, board: Board, specs: list[str],
                budgets: list[Budget], method: str, seed: int, t_in: FixedType | None, search: dict[str, Any],
                bar: Bar) -> list[dict[str, Any]]:
    """Compression jobs for every budget; as each returns, the driver saves its network and sends
    out the Yosys jobs its layers need (the synthesis cache answers the rest)."""
    from rtl_sim.synth import layer_jobs, stage_networks, store
    from codesign.tools import find_yosys

    tool = find_yosys()  # the driver keys the synthesis cache by its Yosys
    points = [_Point(spec, bud.limits) for spec, bud in zip(specs, budgets)]
    for k, bud in enumerate(budgets):
        ex.submit(jobs.Job(f"compress {specs[k]}", compress_point, (net, ds, bud, method, seed, t_in, search),
                           tag=(k, None)))
    for o in ex.as_completed():
        k, layer = o.job.tag
        p = points[k]
        if p.error is not None:
            continue  # another of its jobs failed already
        if not o.ok:
            p.error = f"{o.job.name}: {o.error}"
            p.attempts = o.attempts
        elif layer is None:  # its compression
            small = o.value.pop("network")
            small.save(art.dir / "points" / str(k))
            p.figures = o.value
            p.layers = [name for name, _ in stage_networks(small)]
            done, todo = layer_jobs(small, board.synth_family, (p.dsp,), tool)
            p.synth.update(done[p.dsp])
            for j in todo:
                ex.submit(jobs.Job(f"{p.spec}: {j.name}", j.fn, j.args, j.kwargs, tag=(k, j.tag)))
        else:
            name, _, key = layer
            store(key, o.value)
            p.synth[name] = o.value
        if p.finished():
            bar.advance(info=f"{p.spec}: failed" if p.error else
                        f"{p.spec}: {p.figures['score']:.3f} at {sum(r['lut'] for r in p.synth.values()):,} LUTs")
    return [p.to_json() for p in points]


@dataclass(frozen=True)
class SweepOptions:
    """How ``run_sweep`` runs, beyond what it compresses for which board at which budgets."""

    method: str = "hardware"  # the compression method
    weights: str | None = None  # a Keras .json model's weights file
    trust: bool = False  # unpickle a PyTorch module file
    input_type: str | None = None  # the input's fixed-point type
    force: bool = False  # overwrite a non-empty output directory
    seed: int = 0  # the data split's and the search's seed
    progress: Reporter = SILENT
    cluster: str | jobs.Executor | None = None  # where the points and their Yosys runs go (codesign.jobs.executor)
    cpus_per_job: int = 1
    search: dict[str, Any] = field(default_factory=dict)  # to codesign.compress.search.compress


def sweep_options(options: SweepOptions | None, overrides: dict[str, Any]) -> SweepOptions:
    """``options`` with ``overrides``: a ``SweepOptions`` field by name replaces it, any other name is a search
    setting added to ``search``."""
    if options is not None and not isinstance(options, SweepOptions):
        raise TypeError(f"run_sweep: options must be a SweepOptions, not {options!r}; give the rest by name")
    o = options or SweepOptions()
    names = {f.name for f in fields(SweepOptions)}
    search = {**o.search, **{k: v for k, v in overrides.items() if k not in names}}
    return replace(o, **{k: v for k, v in overrides.items() if k in names}, search=search)


def run_sweep(out: str | Path, model: Any, data: str, board: str | Board, budgets: str | list[str],
              options: SweepOptions | None = None, **overrides: Any) -> dict[str, Any]:
    """Compress ``model`` at each budget, synthesize each result, and plot the Pareto front.

    The points and their layers' Yosys runs are jobs on ``options.cluster`` (``codesign.jobs.executor``:
    local processes, or Ray), ``cpus_per_job`` CPUs each. A point whose job fails (after one
    retry) is recorded in ``sweep.json`` with its error, the others finish, and then
    ``JobsFailedError`` is raised. ``options.search`` goes to :func:`codesign.compress.search.compress`
    (precisions, schedule, ...). ``overrides`` are ``SweepOptions`` fields by name; any other name is a search
    setting (``run_sweep(..., cluster="ray", epochs=2)``)."""
    from codesign.importers.data import check_fits, load_dataset, shaped_for
    from codesign.importers.load import load, model_name

    o = sweep_options(options, overrides)
    method, weights, trust, input_type, seed = o.method, o.weights, o.trust, o.input_type, o.seed
    progress, cluster = o.progress, o.cluster
    b = load_board(board)
    specs = expand_budgets(budgets)
    budgets_ = [Budget.parse(s, b) for s in specs]  # parsed once: malformed budgets fail before anything is written
    t_in = FixedType.parse(input_type) if input_type else None
    with jobs.executor(cluster, o.cpus_per_job) as ex:  # before anything is written: Ray may be missing
        art = Artifact(out)
        art.claim(o.force)
        t0 = time.perf_counter()
        with art.step("sweep"):
            net = load(model, weights=weights, trust=trust, input_type=input_type)
            ds = shaped_for(load_dataset(data, seed), net.input_shape)
            check_fits(ds, net.input_shape, net.output_shape[-1], net.name)
            with progress.bar("sweep", total=len(specs)) as bar:
                points = _run_points(ex, art, net, ds, b, specs, budgets_, method, seed, t_in, o.search, bar)
            ok = [i for i, p in enumerate(points) if not p.get("failed")]
            front = {ok[i] for i in pareto_front([points[i] for i in ok])}
            for i in ok:
                points[i]["pareto"] = i in front
            failed = [p for p in points if p.get("failed")]
            result = {"model": model_name(model), "data": data, "board": b.name, "method": method, "points": points,
                      "failed": len(failed), "cluster": ex.name, "cpus": ex.backend.cpus,
                      "cpus_per_job": ex.cpus_per_job, "seconds": round(time.perf_counter() - t0, 1)}
            (art.dir / "sweep.json").write_text(json.dumps(result, indent=1))
            _write_pages(art.dir, result)
    if failed:
        err = JobsFailedError(f"{len(failed)} of {len(points)} sweep points failed (first: {failed[0]['error']}); "
                              f"the others are in {art.dir / 'sweep.json'}")
        err.result = result
        raise err
    return result


HEAD = ["budget", "metric", "score", "Yosys LUT", "Yosys FF", "Yosys DSP", "model LUT", "sparsity", "weight bits",
        "Pareto"]


def _ok(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in result["points"] if not p.get("failed")]


def _rows(result: dict[str, Any]) -> list[list[str]]:
    return [[p["budget"], p["metric"], f"{p['score']:.4f}", f"{p['synth']['lut']:,}", f"{p['synth']['ff']:,}",
             f"{p['synth']['dsp']:,}", f"{p['analytic']['lut']:,}", f"{p['sparsity']:.1%}", str(p["weight_bits"]),
             "yes" if p["pareto"] else ""] for p in _ok(result)]


def plot_pareto(result: dict[str, Any]) -> bytes:
    pts = _ok(result)
    fig = new_figure(figsize=(6.5, 4), dpi=110, layout="constrained")
    ax = fig.subplots()
    ax.scatter([p["synth"]["lut"] for p in pts], [p["score"] for p in pts], color="#888", label="compressed")
    front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["synth"]["lut"])
    ax.plot([p["synth"]["lut"] for p in front], [p["score"] for p in front], "o-", color="C0", label="Pareto front")
    for p in pts:
        ax.annotate(p["budget"], (p["synth"]["lut"], p["score"]), fontsize=7, xytext=(4, -10), textcoords="offset points",
                    annotation_clip=True)
    if pts and pts[0]["float_score"] is not None:
        ax.axhline(pts[0]["float_score"], color="grey", linestyle=":", label="float model")
    ax.set_xlabel("LUTs (Yosys)")
    ax.set_ylabel(pts[0]["metric"] if pts else "score")
    ax.set_title(f"{result['model']} on {result['board']}")
    ax.legend(fontsize=8)
    ax.margins(x=0.15, y=0.1)
    return png_bytes(fig)


def _write_pages(d: Path, result: dict[str, Any]) -> None:
    png = plot_pareto(result)
    (d / "pareto.png").write_bytes(png)
    rows = _rows(result)
    md = [f"# fpga-codesign sweep: {result['model']} on {result['board']}", "",
          "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    failed = [p for p in result["points"] if p.get("failed")]
    md += [""] + [f"- failed: `{p['budget']}`: {p['error']}" for p in failed]
    md += ["", "![Pareto front](pareto.png)", ""]
    (d / "sweep.md").write_text("\n".join(md))
    esc = html.escape
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fpga-codesign sweep</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f0f0f0}}</style></head><body>
<h1>Sweep: {esc(result['model'])} on {esc(result['board'])}</h1>
<table><tr>{''.join(f'<th>{esc(h)}</th>' for h in HEAD)}</tr>
{''.join('<tr>' + ''.join(f'<td>{esc(c)}</td>' for c in r) + '</tr>' for r in rows)}</table>
{''.join(f'<p>failed: <code>{esc(p["budget"])}</code>: {esc(p["error"])}</p>' for p in failed)}
<img alt="accuracy against LUTs" src="data:image/png;base64,{base64.b64encode(png).decode()}">
</body></html>"""
    (d / "sweep.html").write_text(page)
