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
from pathlib import Path
from typing import Any

from codesign.app.artifact import Artifact
from codesign.app.plots import new_figure, png_bytes
from codesign.board import Board, load_board
from codesign.budget import RESOURCES, Budget
from codesign.core.fixed import FixedType
from codesign.errors import BudgetError
from codesign.progress import SILENT, Reporter


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


def _synth_network(net, board: Board, dsp: bool) -> dict[str, int]:
    from rtl_sim.synth import synthesize_layers, total_counts

    return total_counts(synthesize_layers(net, board.synth_family, dsp=dsp))


def run_sweep(out: str | Path, model: Any, data: str, board: str | Board, budgets: str | list[str],
              method: str = "hardware", weights: str | None = None, trust: bool = False,
              input_type: str | None = None, force: bool = False, seed: int = 0,
              progress: Reporter = SILENT, **search: Any) -> dict[str, Any]:
    """Compress ``model`` at each budget, synthesize each result, and plot the Pareto front.

    ``search`` goes to :func:`codesign.compress.search.compress` (precisions, schedule, ...)."""
    from codesign.compress.cost import network_cost, total_cost
    from codesign.compress.search import compress
    from codesign.importers.data import check_fits, load_dataset
    from codesign.importers.load import load, model_name

    b = load_board(board)
    specs = expand_budgets(budgets)
    budgets_ = [Budget.parse(s, b) for s in specs]  # parsed once: malformed budgets fail before anything is written
    t_in = FixedType.parse(input_type) if input_type else None
    art = Artifact(out)
    art.claim(force)
    t0 = time.perf_counter()
    points: list[dict[str, Any]] = []
    with art.step("sweep"):
        net = load(model, weights=weights, trust=trust, input_type=input_type)
        ds = load_dataset(data, seed)
        check_fits(ds, net.input_shape, net.output_shape[-1], net.name)
        with progress.bar("sweep", total=len(specs)) as bar:
            for k, (spec, bud) in enumerate(zip(specs, budgets_)):
                lim = bud.limits
                r = compress(net, ds, bud, method=method, seed=seed, input_type=t_in, **search)
                r.network.save(art.dir / "points" / str(k))
                syn = _synth_network(r.network, b, dsp=lim.get("dsp", 1) != 0)
                points.append({"budget": spec, "limits": lim, "score": r.score, "metric": r.metric,
                               "float_score": r.float_score, "analytic": total_cost(network_cost(r.network, b)),
                               "synth": syn, "sparsity": round(r.network.sparsity, 4),
                               "nonzero": r.network.n_nonzero, "weight_bits": r.precision.weight_bits,
                               "act_bits": r.precision.act_bits, "seconds": round(r.seconds, 1)})
                bar.advance(info=f"{spec}: {r.score:.3f} at {syn['lut']:,} LUTs")
        front = pareto_front(points)
        for i, p in enumerate(points):
            p["pareto"] = i in front
        result = {"model": model_name(model), "data": data, "board": b.name, "method": method, "points": points,
                  "seconds": round(time.perf_counter() - t0, 1)}
        (art.dir / "sweep.json").write_text(json.dumps(result, indent=1))
        _write_pages(art.dir, result)
    return result


HEAD = ["budget", "metric", "score", "Yosys LUT", "Yosys FF", "Yosys DSP", "model LUT", "sparsity", "weight bits",
        "Pareto"]


def _rows(result: dict[str, Any]) -> list[list[str]]:
    return [[p["budget"], p["metric"], f"{p['score']:.4f}", f"{p['synth']['lut']:,}", f"{p['synth']['ff']:,}",
             f"{p['synth']['dsp']:,}", f"{p['analytic']['lut']:,}", f"{p['sparsity']:.1%}", str(p["weight_bits"]),
             "yes" if p["pareto"] else ""] for p in result["points"]]


def plot_pareto(result: dict[str, Any]) -> bytes:
    pts = result["points"]
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
    md += ["", "![Pareto front](pareto.png)", ""]
    (d / "sweep.md").write_text("\n".join(md))
    esc = html.escape
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fpga-codesign sweep</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f0f0f0}}</style></head><body>
<h1>Sweep: {esc(result['model'])} on {esc(result['board'])}</h1>
<table><tr>{''.join(f'<th>{esc(h)}</th>' for h in HEAD)}</tr>
{''.join('<tr>' + ''.join(f'<td>{esc(c)}</td>' for c in r) + '</tr>' for r in rows)}</table>
<img alt="accuracy against LUTs" src="data:image/png;base64,{base64.b64encode(png).decode()}">
</body></html>"""
    (d / "sweep.html").write_text(page)
