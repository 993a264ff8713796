"""``report.md`` and a self-contained ``report.html`` (plots embedded as PNG) from ``report.json``."""

from __future__ import annotations

import base64
import html
from typing import Any

import numpy as np

from codesign.app.artifact import Artifact
from codesign.app.plots import new_figure, png_bytes
from codesign.core.layers import Conv, Dense, Weighted
from codesign.core.network import Network


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def layer_rows(rep: dict[str, Any]) -> list[list[str]]:
    est = rep.get("estimate", {})
    an = est.get("analytic_layers", {})
    sy = est.get("synth", {}).get("layers", {})
    rows = []
    for l in rep.get("network", {}).get("layers", []):
        inputs = ", ".join(l.get("inputs", [])) or "–"  # a layer of a graph names what it reads
        if "weights" not in l:
            if "inputs" in l:  # a merge or a branch's first layer: a row without weights
                a = an.get(l["name"], {})
                rows.append([l["name"], inputs, "×".join(map(str, l["shape"])), "–", "–", "–", l.get("type") or "float",
                             _fmt(a.get("lut")), _fmt(a.get("dsp")), _fmt(a.get("ff")), "–", "–", "–"])
            continue
        a = an.get(l["name"], {})
        s = sy.get(l["name"], {}).get("dsp_mapped", {})
        rows.append([l["name"], inputs, "×".join(map(str, l["shape"])), f"{l['sparsity']:.1%}",
                     f"{l['nonzero']:,}/{l['weights']:,}", l["weight_type"], l.get("result_type") or l.get("accum_type"),
                     _fmt(a.get("lut")), _fmt(a.get("dsp")), _fmt(a.get("ff")),
                     _fmt(s.get("lut")), _fmt(s.get("dsp")), _fmt(s.get("ff"))])
    return rows


LAYER_HEAD = ["layer", "inputs", "outputs", "sparsity", "nonzero", "weight type", "result type",
              "LUT (model)", "DSP (model)", "FF (model)", "LUT (Yosys)", "DSP (Yosys)", "FF (Yosys)"]


def _yes_no(v: Any) -> str:
    return {True: "yes", False: "NO"}.get(v, "–")


def _exact(v: Any) -> str:
    return {True: "bit-exact", False: "NOT bit-exact"}.get(v, "not checked")


def timing_section(rep: dict[str, Any]) -> dict[str, Any] | None:
    """report.json's "timing": cycles (measured by the co-simulation when it ran), II, the target clock and
    the clock the design runs at, estimated by the delay model or measured by nextpnr when an implement
    step ran, latency in ns and inferences/s at that clock. None before the RTL step."""
    rtl = rep.get("rtl") or {}
    t = rtl.get("timing")
    cos = rep.get("cosim") or {}
    if not t and rtl.get("ii"):  # a folded design (codesign.app.fold_step): no delay model for it yet
        return _folded_timing(rtl, cos)
    if not t:
        return None
    cycles = cos.get("latency_cycles") or rtl.get("latency_cycles")
    ii = float(cos.get("ii") or t.get("ii") or 1.0)
    target = t.get("target_mhz")
    out = {"cycles": cycles, "ii": ii, "clock_target_mhz": target, "model_critical_path_ns": t["critical_path_ns"],
           "model_fmax_mhz": t["fmax_mhz"], "model": f"{t['family']} delay model ({t['model']}: {t['model_source']})"}
    fmax, basis = t["fmax_mhz"], f"estimated by the {t['family']} delay model ({t['model']})"
    imp = rep.get("implement") or {}
    measured = imp.get("fmax_mhz")
    if measured:
        fmax, basis = float(measured), f"measured by {imp.get('tool') or 'nextpnr'} place and route"
        out["measured_fmax_mhz"] = fmax
        out["model_error"] = round(t["critical_path_ns"] * fmax / 1000.0 - 1, 3)
    clock = min(target, fmax) if target else fmax
    out.update({"clock_mhz": round(clock, 1), "clock_basis": basis, "meets_target": bool(not target or fmax >= target),
                "latency_ns": round(cycles * 1000.0 / clock, 1) if cycles else None,
                "inferences_per_s": round(clock * 1e6 / ii)})
    return out


def _folded_timing(rtl: dict[str, Any], cos: dict[str, Any]) -> dict[str, Any]:
    """A folded design's timing: the co-simulation's cycles and II at the target clock (not checked by a model)."""
    cycles = cos.get("latency_cycles") or rtl.get("latency_cycles")
    ii, clock = float(cos.get("ii") or rtl["ii"]), float(rtl["clock_mhz"])
    return {"cycles": cycles, "ii": ii, "designed_ii": rtl["ii"], "clock_target_mhz": clock, "clock_mhz": clock,
            "clock_basis": "the target clock (no delay model for a folded datapath yet)", "meets_target": None,
            "latency_ns": round(cycles * 1000.0 / clock, 1) if cycles else None,
            "inferences_per_s": round(clock * 1e6 / ii)}


def timing_text(t: dict[str, Any] | None) -> str:
    if not t:
        return "–"
    met = "" if t["meets_target"] is not False else f" (target {t['clock_target_mhz']:g} MHz NOT met)"
    return (f"{t['cycles']} cycles = {t['latency_ns']:,} ns at {t['clock_mhz']:g} MHz{met}, {t['clock_basis']}; "
            f"II {t['ii']:g}, {t['inferences_per_s']:,} inferences/s")


def implement_text(imp: dict[str, Any]) -> str:
    """report.json's "implement" section in one line: nextpnr's Fmax, critical path, utilisation, bitstream."""
    u = imp.get("utilisation", {})
    used = ", ".join(f"{u[k]['used']:,}/{u[k]['available']:,} {k.upper() if k != 'lut' else 'LUT4'}"
                     for k in ("lut", "ff", "dsp", "bram", "io") if k in u)
    cp = imp.get("critical_path") or {}
    met = "met" if imp.get("meets_target") else "NOT met"
    return (f"{imp.get('tool')} on {imp.get('board')} ({imp.get('device')}): Fmax {imp.get('fmax_mhz', 0):.1f} MHz "
            f"(target {imp.get('target_mhz', 0):g} MHz {met}), critical path {imp.get('critical_path_ns', 0):.2f} ns "
            f"({cp.get('from_net')} → {cp.get('to_net')}); {used}; {imp.get('wrapper')} board top; "
            f"bitstream {imp.get('bitstream')}")


def summary_items(rep: dict[str, Any]) -> list[tuple[str, str]]:
    b = rep.get("board", {})
    acc = rep.get("accuracy", {})
    cos = rep.get("cosim", {})
    hls = rep.get("hls", {})
    est = rep.get("estimate", {})
    syn = est.get("synth", {})
    items = [
        ("board", f"{b.get('name')} ({b.get('part')}), {b.get('lut', 0):,} LUT, {b.get('dsp', 0):,} DSP, {b.get('ff', 0):,} FF"),
        ("budget", ", ".join(f"{k}={v:,}" for k, v in (rep.get("budget") or {}).items()) or "none (whole board)"),
        ("precision", rep.get("precision", "–")),
        ("accuracy (float → compressed)",
         f"{_fmt(acc.get('float'))} → {_fmt(acc.get('compressed'))} on {acc.get('test_samples', 0)} test samples"
         if acc.get("test_samples") else "not measured (no data set)"),
        ("estimate LUT/DSP/FF (model)", "/".join(_fmt(est.get("analytic", {}).get(k)) for k in ("lut", "dsp", "ff"))),
        ("estimate LUT/DSP/FF (Yosys)", "/".join(_fmt(syn.get(k)) for k in ("lut", "dsp", "ff")) + (f" ({syn.get('tool')}, {syn.get('target')})" if syn else "")),
        ("fits budget", f"{_yes_no(rep.get('fits_budget'))} (judged on "
         f"{'Yosys synthesis' if rep.get('fits_judged_on') == 'synth' else 'the analytic model'})"),
        ("HLS C simulation", f"{hls.get('backend')}: {_exact(hls.get('csim_bit_exact'))} on {hls.get('samples')} samples"
         + (f" — skipped: {hls.get('csim_skipped')}" if hls.get("csim_skipped") else "") if hls else "not run"),
        ("RTL co-simulation", f"{cos.get('simulator')}: {_exact(cos.get('bit_exact'))}, {cos.get('mismatches')} mismatches "
         f"on {cos.get('samples')} samples" if cos else "not run"),
        ("latency", timing_text(rep.get("timing") or timing_section(rep))),
    ]
    if rep.get("implement"):
        items.append(("place and route", implement_text(rep["implement"])))
    if rep.get("energy"):
        from codesign.app.energy import energy_text

        items.append(("energy per inference", energy_text(rep["energy"])))
    return items


def plot_resources(rep: dict[str, Any]) -> bytes:
    est = rep.get("estimate", {})
    an = est.get("analytic_layers", {})
    sy = est.get("synth", {}).get("layers", {})
    names = list(an)
    fig = new_figure(figsize=(7, 3.2), dpi=110)
    ax = fig.subplots()
    x = np.arange(len(names))
    ax.bar(x - 0.2, [an[n]["lut"] for n in names], 0.4, label="LUT (model)")
    if sy:
        ax.bar(x + 0.2, [sy.get(n, {}).get("dsp_mapped", {}).get("lut", 0) for n in names], 0.4, label="LUT (Yosys)")
    budget = (rep.get("budget") or {}).get("lut")
    if budget:
        ax.axhline(budget, color="red", linestyle="--", label=f"LUT budget ({budget:,}, whole network)")
    ax.set_xticks(x, names)
    ax.set_ylabel("LUTs")
    ax.set_title("Resources per layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def plot_sparsity(net: Network) -> bytes:
    """Nonzero weights of every weighted layer: a Dense as outputs x inputs, a convolution as output
    channels x (kernel tap, input channel) — the kernel-sparsity picture of the layer's datapath."""
    weighted = [l for l in net.layers if isinstance(l, Weighted)]
    fig = new_figure(figsize=(3.0 * len(weighted), 3.2), dpi=110)
    axes = fig.subplots(1, len(weighted), squeeze=False)
    for ax, layer in zip(axes[0], weighted):
        w = layer.weight.reshape(-1, layer.weight.shape[-1])
        ax.imshow(w.T != 0, cmap="Greys", aspect="auto", interpolation="nearest")
        ax.set_title(f"{layer.name}: {layer.sparsity:.0%} pruned", fontsize=9)
        conv = isinstance(layer, Conv)
        ax.set_xlabel("kernel tap x input channel" if conv else "input")
        ax.set_ylabel("output channel" if conv else "output")
    fig.suptitle("Nonzero weights (black)", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def plot_graph(net: Network) -> bytes:
    """The network as a graph, top to bottom: one box per layer (kind, output shape, and for a weighted layer
    the output units kept of those it has), the main path on the left, branches to the right, an arrow per edge."""
    sources = net.sources()
    hidden = {l.name for l in net.layers if l.kind == "Output"}
    order = [l for l in net.layers if l.name not in hidden]
    col: dict[str, int] = {"input": 0}
    for i, layer in enumerate(order):  # a layer that does not read the one before it opens a side column
        prev = order[i - 1].name if i else "input"
        srcs = sources[layer.name]
        if layer.merge:  # a merge rejoins the leftmost branch it reads
            col[layer.name] = min(col[s] for s in srcs)
        else:
            col[layer.name] = col[prev] if prev in srcs else max(col[s] for s in srcs) + 1
    y = {"input": 0, **{l.name: i + 1 for i, l in enumerate(order)}}
    fig = new_figure(figsize=(5.5, 0.42 * (len(order) + 1) + 0.6), dpi=110)
    ax = fig.subplots()
    shapes = dict(zip([l.name for l in net.layers], net.shapes()))
    boxes = {"input": f"input {tuple(net.input_shape)}"}
    for layer in order:
        label = f"{layer.name}: {layer.kind} {tuple(shapes[layer.name])}"
        if isinstance(layer, Weighted):
            w = layer.weight.reshape(-1, layer.weight.shape[-1])
            label += f"  {int((w.any(axis=0) | (layer.bias != 0)).sum())}/{w.shape[1]} kept"
        boxes[layer.name] = label
    for name, text in boxes.items():
        ax.text(col[name] * 2.2, -y[name], text, ha="left", va="center", fontsize=7,
                bbox={"boxstyle": "round", "fc": "#eef3fb" if col[name] == 0 else "#fbefe6", "ec": "#888"})
    for layer in order:
        for s in sources[layer.name]:
            s = s if s not in hidden else sources[s][0]
            ax.annotate("", xy=(col[layer.name] * 2.2 - 0.05, -y[layer.name] + 0.2),
                        xytext=(col[s] * 2.2 - 0.05, -y[s] - 0.2),
                        arrowprops={"arrowstyle": "->", "color": "#555", "lw": 0.8,
                                    "connectionstyle": "arc3,rad=0.25" if y[layer.name] - y[s] > 1 else "arc3"})
    ax.set_xlim(-0.3, 2.2 * max(col.values()) + 4.5)
    ax.set_ylim(-len(order) - 0.7, 0.7)
    ax.axis("off")
    ax.set_title("Layers and shortcuts (output units kept per weighted layer)", fontsize=9)
    fig.tight_layout()
    return png_bytes(fig)


def write_report(art: Artifact) -> None:
    """Write report.md, report.html and the two PNG plots from report.json."""
    timing = timing_section(art.report())
    if timing is not None:
        art.update(timing=timing)
    rep = art.report()
    net = Network.load(art.dir)
    res_png, sp_png = plot_resources(rep), plot_sparsity(net)
    graph_png = None if net.is_chain else plot_graph(net)
    (art.dir / "resources.png").write_bytes(res_png)
    (art.dir / "sparsity.png").write_bytes(sp_png)
    if graph_png is not None:
        (art.dir / "graph.png").write_bytes(graph_png)
    energy_png = None
    if rep.get("energy"):
        from codesign.app.energy import plot_energy

        energy_png = plot_energy(rep["energy"])
        (art.dir / "energy.png").write_bytes(energy_png)
    items = summary_items(rep)
    rows = layer_rows(rep)
    md = [f"# fpga-codesign report: {rep.get('network', {}).get('name')}", ""]
    md += [f"- **{k}**: {v}" for k, v in items]
    md += ["", "## Layers", "", "| " + " | ".join(LAYER_HEAD) + " |", "|" + "---|" * len(LAYER_HEAD)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    channels = rep.get("network", {}).get("channels") or []
    if any(c["kind"].startswith("Conv") for c in channels):
        md += ["", "## Channels and neurons kept", "", "| layer | units | kept | pruned | nonzero | sparsity |",
               "|---|---|---:|---:|---:|---:|"]
        md += [f"| {c['name']} | {c['units']} | {c['kept']} | {c['pruned']} | {c['nonzero']:,}/{c['weights']:,} | "
               f"{c['sparsity']:.1%} |" for c in channels]
    md += ["", "![resources](resources.png)", "", "![sparsity](sparsity.png)", ""]
    if graph_png is not None:
        md += ["![graph](graph.png)", ""]
    if energy_png is not None:
        md += ["![energy](energy.png)", ""]
    for n in rep.get("notes") or []:
        md.append(f"> {n}")
    (art.dir / "report.md").write_text("\n".join(md) + "\n")
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    esc = html.escape
    verdict_ok = all(rep.get(k, {}).get(f) is not False for k, f in (("hls", "csim_bit_exact"), ("cosim", "bit_exact"))) \
        and rep.get("fits_budget") is not False
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fpga-codesign report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th{{background:#f0f0f0}}td:first-child,th:first-child{{text-align:left}}
.ok{{color:#070;font-weight:bold}}.bad{{color:#b00;font-weight:bold}}dt{{font-weight:bold;margin-top:6px}}</style></head><body>
<h1>fpga-codesign report: {esc(str(rep.get('network', {}).get('name')))}</h1>
<p class="{'ok' if verdict_ok else 'bad'}">{'All checks passed' if verdict_ok else 'A check failed'}</p>
<dl>{''.join(f'<dt>{esc(k)}</dt><dd>{esc(str(v))}</dd>' for k, v in items)}</dl>
<h2>Layers</h2><table><tr>{''.join(f'<th>{esc(h)}</th>' for h in LAYER_HEAD)}</tr>
{''.join('<tr>' + ''.join(f'<td>{esc(str(c))}</td>' for c in r) + '</tr>' for r in rows)}</table>
<h2>Resources</h2><img alt="resources per layer" src="data:image/png;base64,{b64(res_png)}">
<h2>Sparsity</h2><img alt="sparsity pattern" src="data:image/png;base64,{b64(sp_png)}">
{'' if graph_png is None else f'<h2>Graph</h2><img alt="layers and shortcuts" src="data:image/png;base64,{b64(graph_png)}">'}
{'' if energy_png is None else f'<h2>Energy</h2><img alt="dynamic energy per layer" src="data:image/png;base64,{b64(energy_png)}">'}
{''.join(f'<p><em>{esc(n)}</em></p>' for n in rep.get('notes') or [])}
</body></html>"""
    (art.dir / "report.html").write_text(page)
