"""The energy step: the synthesized netlist's activity on the data set (``rtl_sim.activity``) priced by the
family's energy model (``codesign.core.energy``) at the design's clock and throughput (report.json's
``timing``); report.json's ``energy`` section and ``energy/activity.json``."""

from __future__ import annotations

import json
import time
from typing import Any

from codesign.app.artifact import Artifact
from codesign.board import load_board
from codesign.core.energy import COEFFICIENTS, energy_per_inference
from codesign.core.network import Network
from codesign.errors import BackendError, VerificationError
from codesign.progress import SILENT, Reporter

ENERGY_SAMPLES = 1000  # the activity settles within a few hundred samples (docs/energy.md)


def energy_supported(board_name: str, net: Network, rep: dict[str, Any] | None = None) -> bool:
    """Whether this design can be priced: a family with coefficients and cell models, a chain of Dense stages,
    and (given report.json's ``rep``) RTL with a clock to price it at."""
    from rtl_sim.activity import ACTIVITY_FAMILIES
    from rtl_sim.stream import is_streaming

    fam = load_board(board_name).synth_family
    timed = rep is None or bool((rep.get("rtl") or {}).get("timing"))
    return fam in COEFFICIENTS and fam in ACTIVITY_FAMILIES and net.is_chain and not is_streaming(net) and timed


def step_energy(art: Artifact, samples: int | None = None, progress: Reporter = SILENT) -> dict[str, Any]:
    """Simulate each stage's Yosys netlist on ``samples`` verification vectors (the test set first) and
    price the toggles; refuses a netlist that is not bit-exact against the reference."""
    from codesign.app.flow import verification_samples
    from codesign.app.report import timing_section
    from rtl_sim.activity import network_activity
    from rtl_sim.choice import DatapathChoice

    art.require()
    t0 = time.perf_counter()
    rep = art.report()
    net = Network.load(art.dir)
    b = load_board(rep["board"]["name"])
    if not energy_supported(b.name, net):
        raise BackendError(f"energy: board {b.name!r} (family {b.synth_family}) or this network (a CNN or a graph) "
                           f"has no activity model yet; families with one: {', '.join(COEFFICIENTS)}")
    timing = rep.get("timing") or timing_section(rep)
    if not timing:
        raise BackendError(f"{art.dir}: no timing in report.json; run 'codesign rtl {art.dir}' first")
    choice = DatapathChoice.from_report(rep.get("rtl") or {}, b.synth_family)  # the Verilog rtl/ holds
    q = verification_samples(art, net, samples or ENERGY_SAMPLES)[: samples or ENERGY_SAMPLES]
    if rep.get("data") and not samples:  # the data set's samples only: the corner and random vectors after them
        from codesign.importers.data import load_dataset, shaped_for  # switch more than real data does

        q = q[: max(len(shaped_for(load_dataset(rep["data"], 0), net.input_shape).X_test), 1)]
    with art.step("energy", "energy") as tmp:
        with progress.status(f"simulating the Yosys netlist of each layer on {len(q)} samples (Verilator, SAIF)"):
            acts = [a.to_json() for a in network_activity(net, q, b.synth_family, emit=choice.emit_kwargs())]
        bad = [a for a in acts if not a["bit_exact"]]
        if bad:
            raise VerificationError(f"energy: the synthesized netlist of layer {bad[0]['stage']!r} differs from the "
                                    f"reference on {bad[0]['mismatches']} of {bad[0]['samples']} samples")
        e = energy_per_inference(acts, b.synth_family, b.part, float(timing["clock_mhz"]),
                                 float(timing["inferences_per_s"]))
        (tmp / "activity.json").write_text(json.dumps(acts, indent=1))
    res = {"samples": len(q), "method": "each layer's Yosys netlist simulated in Verilator with the cell models, "
           "toggles per net from its SAIF trace", "layers": {a["stage"]: {k: a[k] for k in (
               "toggle_rate", "toggles_per_inference", "nets", "ff")} for a in acts}, **e,
           "seconds": round(time.perf_counter() - t0, 1)}
    limit = (rep.get("budget") or {}).get("energy")  # --budget energy=...: pJ per inference, judged on the simulation
    fit = {}
    if limit:
        res["budget_pj"], res["fits_budget"] = limit, e["mid"]["total_j"] * 1e12 <= limit
        fit = {"fits_budget": bool(rep.get("fits_budget", True)) and res["fits_budget"]}
    art.update(energy=res, **fit)
    art.timing("energy", time.perf_counter() - t0)
    return res


def energy_text(e: dict[str, Any] | None) -> str:
    """report.json's energy in one line: total (dynamic + static) and its range, power, toggle rate."""
    if not e:
        return "–"
    m, lo, hi = e["mid"], e["low"], e["high"]
    nj = lambda j: f"{j * 1e9:,.3g} nJ"  # noqa: E731
    return (f"{nj(m['total_j'])} per inference ({nj(lo['total_j'])}–{nj(hi['total_j'])}): dynamic {nj(m['dynamic_j'])} "
            f"+ static {nj(m['static_j'])}; {m['power_w'] * 1e3:,.3g} mW at {e['clock_mhz']:g} MHz, "
            f"{e['inferences_per_s']:,.0f} inferences/s; toggle rate {e['toggle_rate']:.1%} (vectorless "
            f"{e['vectorless_toggle_rate']:.1%} would give {nj(m['vectorless_dynamic_j'])} dynamic)"
            + (f"; {'within' if e['fits_budget'] else 'OVER'} the energy budget of {nj(e['budget_pj'] * 1e-12)}"
               if "budget_pj" in e else ""))


def plot_energy(e: dict[str, Any]) -> bytes:
    """Dynamic energy per inference of each layer (nJ), the model's range as error bars, beside what the
    vectorless 12.5 % toggle rate would have said for the whole network."""
    import numpy as np

    from codesign.app.plots import new_figure, png_bytes

    names = list(e["mid"]["dynamic_layers_j"])
    mid = np.array([e["mid"]["dynamic_layers_j"][n] for n in names]) * 1e9
    lo = np.array([e["low"]["dynamic_layers_j"][n] for n in names]) * 1e9
    hi = np.array([e["high"]["dynamic_layers_j"][n] for n in names]) * 1e9
    fig = new_figure(figsize=(7, 3.2), dpi=110)
    ax = fig.subplots()
    x = np.arange(len(names))
    ax.bar(x, mid, 0.6, yerr=[mid - lo, hi - mid], capsize=4, label="dynamic, simulated activity (model range)")
    ax.set_xticks(x, names)
    ax.set_ylabel("nJ per inference")
    ax.set_title(f"Dynamic energy per layer (toggle rate {e['toggle_rate']:.1%}; the vectorless 12.5 % would "
                 f"give {e['mid']['vectorless_dynamic_j'] * 1e9:,.3g} nJ in all)", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)
