"""Folded datapaths in the flow: ``--reuse`` on ``codesign rtl``/``flow``, and the cosim and estimate of a folded design.

``--reuse R`` (every Dense layer), ``name=R,...`` (the others stay 1) or ``auto`` (the smallest II whose
folded design fits the budget in report.json, else the board, by ``compress.fold_choice``) is written into the
saved network's ``Dense.reuse`` (what the HLS project reads too); the RTL step then emits
``rtl_sim.folded``'s design, which takes one sample every II cycles through ``in_ready``. Its co-simulation is
``rtl_sim.folded_sim`` (bit-exact, and the measured latency and II equal to the designed ones), and it is
synthesized whole, as one Yosys top, since its control and memories do not split into per-layer stages.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from codesign.app.artifact import Artifact
from codesign.board import Board, load_board
from codesign.budget import resource_limits
from codesign.core.fixed import FixedType
from codesign.core.layers import Conv, Dense
from codesign.core.network import Network
from codesign.errors import ConfigError

DESIGN_JSON = "design.json"
KIND = "folded"


def parse_reuse(spec: str, net: Network) -> int | dict[str, int] | str:
    """``--reuse``: a whole number for every Dense layer, ``name=R,...`` or ``auto``; a bad value is a one-line
    ConfigError naming the parameter. A streaming CNN is folded by its layers' own reuse (the search's ``ii=``)."""
    if len(net.input_shape) > 1:
        raise ConfigError(f"--reuse {spec}: network {net.name!r} is a streaming CNN, which --reuse does not fold yet; "
                          "give the budget an ii (e.g. --budget lut=0.1,ii=N) and the search folds it")
    names = [l.name for l in net.layers if isinstance(l, Dense)]
    s = str(spec).strip()
    if s == "auto":
        return s

    def factor(v: str, what: str) -> int:
        if not v.strip().isdigit() or int(v) < 1:
            raise ConfigError(f"--reuse {what}{v!r}: a reuse factor is a whole number of at least 1 (or 'auto')")
        return int(v)

    if "=" not in s:
        return factor(s, "")
    out: dict[str, int] = {}
    for part in s.split(","):
        name, _, v = part.partition("=")
        name = name.strip()
        if name not in names:
            raise ConfigError(f"--reuse {name}=...: {net.name!r} has no Dense layer {name!r} "
                              f"(its Dense layers: {', '.join(names)})")
        out[name] = factor(v, f"{name}=")
    return out


def auto_reuse(net: Network, report: dict[str, Any], board: Board) -> dict[str, int]:
    """The smallest-II fold whose cost-model price is within the budget's LUT/DSP/BRAM (the board's without one)."""
    from codesign.compress.fold_choice import smallest_fitting_fold

    limits = {k: v for k, v in resource_limits(report.get("budget"), board).items() if k in ("lut", "dsp", "bram")}
    limits.setdefault("bram", board.bram)
    fold = smallest_fitting_fold(net, limits, board.synth_family, dsp=limits.get("dsp", board.dsp) > 0,
                                 max_ii=(report.get("budget") or {}).get("ii"))
    return fold.reuse


def apply_reuse(art: Artifact, spec: str) -> dict[str, int]:
    """Set ``Dense.reuse`` on DIR's saved network by ``--reuse`` and save it; the factors by layer."""
    from codesign.compress.fold_choice import with_reuse
    from rtl_sim.folded import reuse_of

    net = Network.load(art.dir)
    r = parse_reuse(spec, net)
    if r == "auto":
        rep = art.report()
        r = auto_reuse(net, rep, load_board(rep["board"]["name"]))
    reuse = reuse_of(net, r)
    with_reuse(net, reuse).save(art.dir)
    return reuse


def is_folded(rtl: dict[str, Any] | None) -> bool:
    """Whether the RTL step recorded a folded design (some Dense layer at R > 1)."""
    return bool(rtl) and rtl.get("kind") == KIND


def write_folded_rtl(net: Network, out_dir: Path) -> Any:
    """Emit the folded design by each Dense layer's ``reuse`` into ``out_dir``: ``<top>.v``, its AXI4-Stream wrapper
    ``<top>_axis.v`` and UART top ``<top>_uart.v`` (both read the core's ``in_ready``), and design.json."""
    from rtl_sim.axis import emit_axis_wrapper
    from rtl_sim.folded import emit_folded_verilog
    from rtl_sim.uart import emit_uart_top

    d = emit_folded_verilog(net, None)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{d.top}.v").write_text(d.verilog)
    (out_dir / f"{d.top}_axis.v").write_text(emit_axis_wrapper(d))
    (out_dir / f"{d.top}_uart.v").write_text(emit_uart_top(d))
    meta = asdict(d)
    meta.pop("verilog")
    meta["in_type"], meta["out_type"] = d.in_type.to_hls(), d.out_type.to_hls()
    (out_dir / DESIGN_JSON).write_text(json.dumps({"kind": KIND, **meta}, indent=1))
    return d


def rtl_section(d: Any, clock_mhz: float | None) -> dict[str, Any]:
    """report.json's ``rtl`` for a folded design."""
    return {"kind": KIND, "top": d.top, "files": [f"rtl/{d.top}{s}.v" for s in ("", "_axis", "_uart")],
            "latency_cycles": d.latency, "ii": d.ii, "reuse": d.reuse, "folds": d.folds, "clock_mhz": clock_mhz,
            "timing": None}


def load_folded(rtl_dir: Path) -> Any:
    """The FoldedDesign ``write_folded_rtl`` wrote (the Verilog re-read from disk)."""
    from rtl_sim.folded import FoldedDesign

    meta = json.loads((rtl_dir / DESIGN_JSON).read_text())
    meta.pop("kind")
    meta["in_type"], meta["out_type"] = FixedType.parse(meta["in_type"]), FixedType.parse(meta["out_type"])
    return FoldedDesign(verilog=(rtl_dir / f"{meta['top']}.v").read_text(), **meta)


def cosim_folded(net: Network, rtl_dir: Path, q: Any) -> Any:
    """``rtl_sim.folded_sim`` on the design in ``rtl_dir`` (its ``bit_exact`` also needs latency and II as designed)."""
    from rtl_sim.folded_sim import cosimulate_folded

    return cosimulate_folded(net, load_folded(rtl_dir), q)


def estimate_folded(net: Network, rtl: dict[str, Any], family: str, synth: bool, dsp: bool = True,
                    memory: str = "auto") -> dict[str, Any]:
    """The cost model's price of the folded design and, with ``synth``, Yosys's counts of it as one top, with
    DSP inference as ``dsp`` says (a budget of no DSPs: none) and without (one run when it has no product)."""
    from codesign.compress.fold_cost import network_folded_cost
    from rtl_sim.folded import emit_folded_verilog
    from rtl_sim.synth import COUNTS, multiplies, synthesize

    reuse = {k: int(v) for k, v in rtl["reuse"].items()}
    cost = network_folded_cost(net, reuse, family, dsp, memory)
    est: dict[str, Any] = {"analytic": {k: cost[k] for k in ("lut", "ff", "dsp", "bram")}, "analytic_ii": cost["ii"],
                           "analytic_layers": cost["layers"]}
    if synth:
        d = emit_folded_verilog(net, reuse, memory=memory)
        lut_run = synthesize(d.verilog, d.top, family, dsp=False)
        dsp_run = synthesize(d.verilog, d.top, family, dsp=True) if dsp and multiplies(d.verilog) else lut_run
        est["synth"] = {"tool": dsp_run["tool"], "abc9_script": dsp_run["abc9_script"], "target": family,
                        **{k: dsp_run[k] for k in COUNTS}, "lut_only": {k: lut_run[k] for k in COUNTS},
                        "method": "the folded design synthesized whole, as one top"}
    return est


def foldable(net: Network) -> bool:
    """Whether ``rtl_sim.folded`` builds the network folded: a chain with Dense layers on a flat input (a streaming
    CNN folds in its own emitter, ``rtl_sim.stream_fold``)."""
    from codesign.compress.fold_choice import foldable as folds

    return len(net.input_shape) == 1 and folds(net)


def fold_note(net: Network, fold: dict[str, Any], budget: Any) -> str:
    """The report's note on the II the compression search chose (``net.metadata["fold"]``) and the term that bound it."""
    reuse = ", ".join(f"{l.name}={l.reuse}" for l in net.layers if isinstance(l, (Conv, Dense)))
    aim = f" (budget ii={budget.ii})" if budget.ii else " (no ii in the budget)"
    bound = {"none": "no budget term: it fits unpruned", "ii": "the budget's ii"}.get(fold["bound_by"], fold["bound_by"])
    if fold["ii"] == 1:
        return f"the compression search kept the design fully parallel, II 1{aim}: {fold['reason']}"
    what = "convolutions and Dense layers" if len(net.input_shape) > 1 else "Dense layers"
    per = " per image" if len(net.input_shape) > 1 else ""
    return (f"the compression search folded the {what} to II {fold['ii']} cycles{per}{aim}, reuse {reuse}: "
            f"{fold['reason']}; bound by {bound}")


def fold_when_over(art: Artifact) -> str | None:
    """The reuse factors the flow gives a network whose fully parallel design (report.json's analytic price) is over
    the budget's LUT/DSP/BRAM (the board's without one), less the compression search's headroom on LUTs for the cost
    model's error: the smallest-II fold within the same limits, saved on DIR's network with a note in the report.
    None when the parallel design fits, or the network is not a Dense chain or carries its own factors already."""
    from codesign.compress.fold_choice import smallest_fitting_fold, with_reuse
    from codesign.compress.search import Schedule

    rep, net = art.report(), Network.load(art.dir)
    if not foldable(net) or any(l.reuse > 1 for l in net.layers if isinstance(l, Dense)):
        return None
    board = load_board(rep["board"]["name"])
    limits = {k: v for k, v in resource_limits(rep.get("budget"), board).items() if k in ("lut", "dsp", "bram")}
    limits.setdefault("bram", board.bram)
    aim = {k: int(v * (1 - Schedule().headroom)) if k == "lut" else v for k, v in limits.items()}
    cost = rep["estimate"]["analytic"]
    if all(cost.get(k, 0) <= v for k, v in aim.items()):
        return None
    fold = smallest_fitting_fold(net, aim, board.synth_family, dsp=limits.get("dsp", board.dsp) > 0,
                                 max_ii=(rep.get("budget") or {}).get("ii"))
    with_reuse(net, fold.reuse).save(art.dir)
    over = ", ".join(f"{k} {cost.get(k, 0):,} > {v:,}" for k, v in aim.items() if cost.get(k, 0) > v)
    note = (f"the fully parallel design does not fit ({over}: the cost model's price against the limit less "
            f"{Schedule().headroom:.0%} headroom): the flow folded the Dense layers by itself, the smallest II whose "
            f"folded design fits: II {fold.ii} cycles (reuse {', '.join(f'{k}={v}' for k, v in fold.reuse.items())})")
    art.update(notes=[*(rep.get("notes") or []), note])
    return ",".join(f"{k}={v}" for k, v in fold.reuse.items())
