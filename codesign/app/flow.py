"""The stages as functions over an artifact directory: compress -> hls -> rtl -> cosim -> estimate.

Each step reads what earlier steps wrote in ``DIR`` and writes its own output and its
``report.json`` section, so any step can be re-run alone (the CLI subcommands call these).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codesign import jobs
from codesign.app.artifact import Artifact
from codesign.board import Board, load_board
from codesign.budget import Budget, resource_limits
from codesign.compress.cost import fits, network_cost, total_cost
from codesign.core.fixed import FixedType
from codesign.core.layers import Dense
from codesign.core.network import Network
from codesign.errors import BackendError, CodesignError, ConfigError, VerificationError
from codesign.importers.data import Dataset, check_fits, load_dataset, shaped_for
from codesign.importers.load import load, model_name
from codesign.progress import SILENT, Reporter

if TYPE_CHECKING:
    from codesign.compress.search import CompressResult, Schedule

DEFAULT_MODEL = "digits-mlp"
DEFAULT_DATA = "digits"
DEFAULT_BOARD = "arty-a7-35"
DEFAULT_BUDGET = "lut=0.25,dsp=0"  # the embedded default shows the co-design: a quarter of an Arty A7-35T
DEFAULT_WEIGHT_BITS, DEFAULT_RESULT_BITS = 8, 16
MIN_VERIFY_SAMPLES = 10000


def network_summary(net: Network) -> dict[str, Any]:
    layers = []
    for layer, shape, t in zip(net.layers, net.shapes(), net.tensor_types()):
        d: dict[str, Any] = {"name": layer.name, "kind": layer.kind, "shape": list(shape), "type": str(t) if t else None}
        if layer.inputs:  # a graph: the layers (or "input") it reads; a chain's layer reads the one before it
            d["inputs"] = list(layer.inputs)
        if hasattr(layer, "weight_type"):
            d.update({"weights": int(layer.weight.size), "nonzero": int(np.count_nonzero(layer.weight)),
                      "sparsity": round(layer.sparsity, 4), "weight_type": str(layer.weight_type),
                      "bias_type": str(layer.bias_type), "accum_type": str(layer.accum_type),
                      "result_type": str(layer.result_type) if layer.result_type else None})
        layers.append(d)
    out = {"name": net.name, "layers": layers, "params": net.n_params, "nonzero": net.n_nonzero,
           "sparsity": round(net.sparsity, 4), "input_type": str(net.input_type)}
    if len(net.input_shape) > 1:  # a CNN: channels kept and pruned per layer, kernel sparsity per tap
        from codesign.compress.channels import channel_report

        out["channels"] = channel_report(net)
    return out


def _score(net: Network, data: Dataset) -> float:
    out = net.forward(data.X_test)
    if data.task == "classification":
        return float(np.mean(np.argmax(out, axis=-1) == data.y_test))
    return -float(np.mean((out.reshape(len(out), -1) - data.y_test.reshape(len(out), -1)) ** 2))


def compress_network(net: Network, data: str | Dataset = DEFAULT_DATA, board: str | Board = DEFAULT_BOARD,
                     budget: str | dict | Budget = DEFAULT_BUDGET, method: str = "hardware", seed: int = 0,
                     input_type: str | FixedType | None = None, **search: Any):
    """The Python API's compression (``codesign.compress_network``): names and budget strings are
    resolved here, once; ``search`` goes to :func:`codesign.compress.search.compress`."""
    from codesign.compress.search import compress

    b = load_board(board)
    ds = shaped_for(load_dataset(data, seed), net.input_shape)
    t_in = FixedType.parse(input_type) if isinstance(input_type, str) else input_type
    return compress(net, ds, Budget.parse(budget, b), method=method, seed=seed, input_type=t_in, **search)


def step_compress(art: Artifact, model: Any, data: str | None, budget: Budget, method: str = "hardware",
                  weights: str | None = None, trust: bool = False, input_type: str | None = None, seed: int = 0,
                  progress: Reporter = SILENT, loaded: Network | None = None, synth: bool = False,
                  search: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load the model; compress it under ``budget`` (parsed, with its board), or (no limits) quantize
    it at the default precision. ``loaded`` is the model already loaded by a caller that checked it
    before claiming the directory. With ``synth``, the compressed network is synthesized and, if
    Yosys puts it over the budget, pruned further (``fit_on_synthesis``). ``search`` goes to
    :func:`codesign.compress.search.compress` (``precisions``, ``schedule``: a shorter search)."""
    from codesign.compress.quantize import CALIBRATION_SAMPLES, calibration_inputs, constant_output, quantize_network
    from codesign.compress.search import compress, default_input_type

    t0 = time.perf_counter()
    b, limits = budget.board, budget.limits
    t_in_given = FixedType.parse(input_type) if input_type else None
    with art.step("compress"):
        if loaded is not None:
            net = loaded
        else:
            with progress.status(f"loading {model}"):
                net = load(model, weights=weights, trust=trust, input_type=input_type)
        ds = shaped_for(load_dataset(data, seed), net.input_shape) if data else None  # digits as 8x8x1 for a CNN
        if ds is not None:
            check_fits(ds, net.input_shape, net.output_shape[-1], net.name)
        accuracy: dict[str, Any] = {"metric": "accuracy", "float": None, "compressed": None, "test_samples": 0}
        notes: list[str] = []
        if ds is None:
            notes.append("no data set given: accuracy not measured; verification uses random and corner inputs")
        if limits:
            if ds is None:
                raise CodesignError("compression under a budget needs training data: pass --data")
            r = compress(net, ds, budget, method=method, seed=seed, input_type=t_in_given, progress=progress,
                         **(search or {}))
            # an MLP's fold is synthesized whole, later; a CNN's, folded or not, stage by stage, here and later
            if synth and ((r.network.metadata.get("fold") or {}).get("ii", 1) == 1 or len(net.input_shape) > 1):
                r = fit_on_synthesis(r, net, ds, budget, progress, (search or {}).get("schedule"))
                if r.history and "tightened" in r.history[-1]:
                    notes.append(f"synthesis put the search's result over the budget (cost model off by "
                                 f"{r.network.metadata['tightened']}): pruned further to fit on Yosys")
            small = r.network
            accuracy = {"metric": r.metric, "float": r.float_score, "compressed": r.score,
                        "test_samples": int(len(ds.y_test))}
            precision_note = f"chosen by the search: {r.precision.weight_bits}-bit weights, {r.precision.act_bits}-bit activations"
        else:
            if net.quantized:
                small = net
                precision_note = "as imported (already fixed point)"
            else:
                t_in = t_in_given or (
                    ds.input_type if ds is not None and ds.input_type else
                    default_input_type(ds.X_train) if ds is not None else FixedType(16, 6, True, "RND_CONV", "SAT"))
                calib = ds.X_train if ds is not None else None
                with progress.status("quantizing at the default precision"):
                    small = quantize_network(net, t_in, DEFAULT_WEIGHT_BITS, result_bits=DEFAULT_RESULT_BITS, calib=calib)
                sized_on = "the data" if ds is not None else (
                    f"{CALIBRATION_SAMPLES} random inputs uniform over the input type (no data set)")
                precision_note = (f"default precision (no budget): {DEFAULT_WEIGHT_BITS}-bit weights, "
                                  f"{DEFAULT_RESULT_BITS}-bit results sized on {sized_on}, input {t_in}")
            if ds is not None:
                fnet = net
                accuracy = {"metric": "accuracy" if ds.task == "classification" else "neg_mse",
                            "float": _score(fnet, ds) if not fnet.quantized else None,
                            "compressed": _score(small, ds), "test_samples": int(len(ds.y_test))}
        probe = ds.X_train[:CALIBRATION_SAMPLES] if ds is not None else calibration_inputs(small.input_type,
                                                                                           net.input_shape)
        if constant_output(net, probe):  # the hardware is then a constant too: say why before synthesis shows it
            notes.append(f"the {'float ' if not net.quantized else ''}model gives the same output for all {len(probe)} "
                         f"{'training' if ds is not None else 'random'} inputs: its weights do not pass the input "
                         f"through, so the design computes a constant and synthesis removes its datapath")
        small.metadata["precision_note"] = precision_note
        small.save(art.dir)
        fold = small.metadata.get("fold")
        if fold:
            from codesign.app.fold_step import estimate_folded, fold_note

            notes.append(fold_note(small, fold, budget))
        if fold and fold["ii"] > 1 and len(small.input_shape) == 1:  # a folded CNN: the CNN cost model, below
            est = estimate_folded(small, {"reuse": {l.name: l.reuse for l in small.layers if isinstance(l, Dense)}},
                                  b.synth_family, False, dsp=not budget.lut_only)
        else:  # a folded CNN's MAC units priced without DSPs where the budget allows none, as the search priced them
            mapping = "lut" if fold and fold["ii"] > 1 and budget.lut_only else None
            est = {"analytic": total_cost(network_cost(small, b, mapping)),
                   "analytic_layers": {k: v.as_dict() for k, v in network_cost(small, b, mapping).items()}}
        art.update(
            model=model_name(model), data=data, board=b.to_json(), budget=budget.terms, method=method if limits else None,
            network=network_summary(small), accuracy=accuracy, precision=precision_note, notes=notes or None,
            estimate=est, fits_budget=fits(est["analytic"], limits or b.resources()), fits_judged_on="analytic",
            **({"fold": fold} if fold else {}),
        )
    art.timing("compress", time.perf_counter() - t0)
    return art.report()


REFITS = 2  # rounds of synthesis and tightening before the flow reports that the design does not fit


def fit_on_synthesis(r: CompressResult, net: Network, ds: Dataset, budget: Budget,
                     progress: Reporter = SILENT, schedule: Schedule | None = None) -> CompressResult:
    """``r``, pruned further (``search.tighten``, fine-tuned on ``schedule``: the search's, default the default)
    until Yosys puts it within the budget, at most ``REFITS`` times. The layers are synthesized as the RTL step
    will emit them (pipelined for the board's clock), so the fit is judged on the design that is built and they
    stay in the cache for the estimate step."""
    from codesign.compress.search import Schedule, tighten
    from rtl_sim.choice import DatapathChoice
    from rtl_sim.synth import synthesize_layer_modes, total_counts

    b = budget.board
    choice = DatapathChoice.for_board(b.synth_family, b.clock_mhz)
    for _ in range(REFITS):
        if r.model is None:  # a result without its trained model cannot be continued; its fit is reported as it is
            return r
        with progress.status("synthesizing the compressed network to check its fit"):
            dsp = not budget.lut_only
            counts = total_counts(synthesize_layer_modes(r.network, b.synth_family, (dsp,), choice=choice)[dsp])
        if fits(counts, budget.limits):
            return r
        with progress.status(f"over the budget on Yosys ({counts['lut']:,} LUTs): pruning further"):
            r = tighten(r, net, ds, budget, counts, schedule or Schedule())
    return r


def verification_samples(art: Artifact, net: Network, n_total: int | None = None) -> np.ndarray:
    """``n_total`` vectors (default 10,000): the test set (when there is one), corner and random vectors."""
    from codesign.core.verify import verification_inputs

    rep = art.report()
    X = None
    if rep.get("data"):
        ds = shaped_for(load_dataset(rep["data"], 0), net.input_shape)
        X = ds.X_test
    return verification_inputs(net, X, max(n_total or MIN_VERIFY_SAMPLES, 1))


def has_hls_backend(board: Board) -> bool:
    """Whether hls4ml has a backend for the board's vendor (none for Lattice and Gowin parts: the flow
    verifies those boards' designs by RTL co-simulation and place and route)."""
    from hls.project import BACKENDS

    return board.vendor in BACKENDS


def step_hls(art: Artifact, backend: str | None = None, samples: int | None = None, form: str = "auto",
             progress: Reporter = SILENT) -> dict[str, Any]:
    from codesign.tools import cache_dir
    from hls.cached import write_project_cached
    from hls.project import BACKENDS, check_backend

    art.require()
    t0 = time.perf_counter()
    net = Network.load(art.dir)
    b = load_board(art.report()["board"]["name"])
    if not has_hls_backend(b):
        raise BackendError(f"board {b.name!r} ({b.vendor} {b.part}): hls4ml has no backend for {b.vendor} parts; "
                           f"'codesign rtl', 'cosim' and 'implement' build and check its design")
    backend = check_backend(b, backend or BACKENDS[b.vendor][0])
    with art.step("hls", "hls") as tmp:
        with progress.status(f"writing the hls4ml {backend} project"):
            t_w = time.perf_counter()
            project, reused = write_project_cached(net, b, backend, tmp / "project", cache_dir("hls-projects"), form=form)
            t_w = time.perf_counter() - t_w
        q = verification_samples(art, net, samples)
        res = _csim_with_progress(project, net, q, progress)
        res.update({"project": "hls/project/", "part": b.part, "clock_mhz": b.clock_mhz, "write_s": round(t_w, 2),
                    "project_from_cache": reused})
        if res["csim_bit_exact"] is False:
            art.update(hls=res)
            raise VerificationError(
                f"hls4ml C simulation differs from the reference on {res['mismatches']} of {res['samples']} samples; "
                f"first: {res['first_mismatch']}"
            )
    art.update(hls=res)
    art.timing("hls", time.perf_counter() - t0)
    return res


def _csim_with_progress(project: Any, net: Network, q: np.ndarray, progress: Reporter) -> dict[str, Any]:
    """``csim_check`` with a bar for the compile (when the cache does not have the library) and one for
    the simulation."""
    from hls.build import estimate_build_seconds
    from hls.csim import csim_check

    with progress.bars() as bars:
        state: dict[str, Any] = {}

        def build_start(units: list) -> None:
            est = estimate_build_seconds(units)
            state["build"] = bars.add(f"compiling the C simulation ({len(units)} units, g++)",
                                      sum(u.lines for u in units), info=f"estimate {est:.0f} s on an idle machine")

        def unit_done(unit: Any) -> None:
            state["build"].advance(unit.lines, info=unit.source)

        lock = threading.Lock()  # the simulation reports from several threads

        def samples_done(n: int) -> None:
            with lock:
                if "sim" not in state:
                    state["sim"] = bars.add(f"C simulation ({project.backend}), {len(q):,} samples", len(q))
                state["sim"].advance(n)

        return csim_check(project, net, q, on_build_start=build_start, on_unit=unit_done, on_samples=samples_done)


def step_rtl(art: Artifact, adder_regs_every: int = 0, progress: Reporter = SILENT,
             datapath: str = "cmvm", clock_mhz: float | None = None, reuse: str | None = None) -> dict[str, Any]:
    """Emit the Verilog; its pipeline registers placed for ``clock_mhz`` (default: the board's clock) by the
    board family's delay model (``codesign.core.timing``), or every ``adder_regs_every`` adder levels.
    ``reuse`` (``--reuse R|name=R,...|auto``): the Dense layers folded by ``codesign.app.fold_step``."""
    from rtl_sim.choice import DatapathChoice
    from rtl_sim.cosim import write_rtl

    art.require()
    t0 = time.perf_counter()
    saved = Network.load(art.dir)
    if reuse is None and len(saved.input_shape) == 1:  # the saved network's own reuse factors (a folded run's, or an
        # import's hints), as HLS reads them; a streaming CNN's are read by its emitter (rtl_sim.stream_fold)
        folds = {l.name: int(l.reuse) for l in saved.layers if isinstance(l, Dense) and l.reuse > 1}
        reuse = ",".join(f"{k}={v}" for k, v in folds.items()) or None
    if reuse is not None:
        from codesign.app import fold_step

        factors = fold_step.apply_reuse(art, reuse)
        if any(r > 1 for r in factors.values()):
            net = Network.load(art.dir)
            with art.step("rtl", "rtl") as tmp:
                with progress.status(f"emitting the folded Verilog (reuse {factors})"):
                    d = fold_step.write_folded_rtl(net, tmp)
            res = fold_step.rtl_section(d, clock_mhz or art.report()["board"].get("clock_mhz"))
            art.update(rtl=res)
            art.timing("rtl", time.perf_counter() - t0)
            return res
    net = Network.load(art.dir)
    board = art.report()["board"]
    choice = DatapathChoice.for_board(load_board(board["name"]).synth_family, clock_mhz or board.get("clock_mhz"),
                                      datapath, adder_regs_every)
    with art.step("rtl", "rtl") as tmp:
        with progress.status("emitting Verilog"):
            d = write_rtl(net, tmp, **choice.emit_kwargs())
    files = [f"rtl/{p.name}" for p in sorted((art.dir / "rtl").glob(f"{d.top}*.v"))]
    res = {"top": d.top, "files": files, "latency_cycles": d.latency,
           "adder_regs_every": adder_regs_every, "datapath": datapath, "multipliers": d.multipliers,
           "clock_mhz": choice.clock_mhz, "timing": d.timing, "choice": choice.to_json()}
    if getattr(d, "cycles_per_image", None):
        res["cycles_per_image"] = d.cycles_per_image
    if getattr(d, "reuse", None):  # a folded streaming CNN (rtl_sim.stream_fold): its II per image
        res.update(ii=d.cycles_per_image, cycles_per_pixel=d.cycles_per_pixel, reuse=d.reuse,
                   folds={k: v["folded"] for k, v in d.multipliers.items() if "folded" in v})
    if reuse is not None:  # --reuse chose every layer fully parallel
        res.update(reuse=factors, ii=1)
    art.update(rtl=res)
    art.timing("rtl", time.perf_counter() - t0)
    return res


def step_cosim(art: Artifact, samples: int | None = None, mode: str = "bulk", progress: Reporter = SILENT,
               cluster: str | jobs.Executor | None = None) -> dict[str, Any]:
    """Co-simulate the RTL against the reference; a large bulk sample set runs in shards on ``cluster``."""
    from rtl_sim.cosim import cosimulate, describe_mismatch

    art.require()
    if not (art.dir / "rtl").is_dir():
        raise BackendError(f"{art.dir}: no rtl/ here; run 'codesign rtl {art.dir}' first")
    t0 = time.perf_counter()
    net = Network.load(art.dir)
    q = verification_samples(art, net, samples)
    from codesign.app import fold_step

    folded = fold_step.is_folded(art.report().get("rtl"))
    with art.step("cosim", "cosim") as tmp:
        with progress.status(f"co-simulating {len(q)} samples in Verilator ({'folded' if folded else mode})"):
            r = (fold_step.cosim_folded(net, art.dir / "rtl", q) if folded
                 else cosimulate(net, art.dir / "rtl", tmp, q, mode=mode, cluster=cluster))
        res = r.to_json()
        (tmp / "result.json").write_text(json.dumps(res, indent=1))
    art.update(cosim=res)
    art.timing("cosim", time.perf_counter() - t0)
    if not r.bit_exact:
        raise VerificationError(f"RTL co-simulation is not bit-exact: {describe_mismatch(r)}; latency "
                                f"{r.latency_cycles} (designed {r.designed_latency}), II {r.ii}")
    return res


def step_formal(art: Artifact, timeout_s: int = 300, progress: Reporter = SILENT) -> list[dict[str, Any]]:
    """Prove, per Dense layer, the shared adder graph equal to the per-weight datapath for every input;
    recorded as ``cosim.formal`` in report.json. A layer the solver does not finish is "timeout"."""
    from rtl_sim.formal import prove_network

    art.require()
    net = Network.load(art.dir)
    with progress.status(f"proving the datapaths equal (Yosys, {timeout_s} s per layer at most)"):
        results = [r.to_json() for r in prove_network(net, timeout_s)]
    cosim = dict(art.report().get("cosim") or {}, formal=results)
    art.update(cosim=cosim)
    bad = [r for r in results if r["status"] == "disproven"]
    if bad:
        raise VerificationError(f"layer {bad[0]['layer']!r}: the cmvm datapath differs from the csd one, e.g. for "
                                f"input {bad[0].get('counterexample')}")
    return results


def step_estimate(art: Artifact, board: str | None = None, synth: bool = True, progress: Reporter = SILENT,
                  cluster: str | jobs.Executor | None = None) -> dict[str, Any]:
    """Analytic estimate and Yosys synthesis per layer (with and without DSP inference) of the datapath the RTL
    step chose (``rtl_sim.choice``; the default one when no RTL step ran), the Yosys runs as jobs on ``cluster``
    (``codesign.jobs.executor``; the cache answers unchanged layers)."""
    from codesign.tools import find_yosys
    from rtl_sim.choice import DatapathChoice
    from rtl_sim.synth import (
        COUNTS,
        stage_networks,
        synthesize_layer_modes,
        total_counts,
    )

    art.require()
    t0 = time.perf_counter()
    net = Network.load(art.dir)
    b = load_board(board or art.report()["board"]["name"])
    rtl = art.report().get("rtl") or {}  # the datapath and registers the RTL step chose are priced and synthesized
    from codesign.app import fold_step

    folded = fold_step.is_folded(rtl)
    if folded:  # one top: its control and memories do not split into per-layer stages
        if synth:
            find_yosys()
        with progress.status("pricing and synthesizing the folded design whole (Yosys)"):
            est = fold_step.estimate_folded(net, rtl, b.synth_family, synth,
                                            dsp=(art.report().get("budget") or {}).get("dsp", b.dsp) > 0)
    else:
        choice = DatapathChoice.from_report(rtl, load_board(art.report()["board"]["name"]).synth_family)
        # a folded CNN's MAC units (a "*" each) take no DSP where the budget allows none: priced and counted so
        no_dsp = (len(net.input_shape) > 1 and any(int(r) > 1 for r in (rtl.get("reuse") or {}).values())
                  and (art.report().get("budget") or {}).get("dsp", b.dsp) == 0)
        analytic = network_cost(net, b, "lut" if no_dsp else None, regs_every=choice.adder_regs_every,
                                clock_mhz=choice.clock_mhz or 0, datapath=choice.datapath)
        est = {"analytic": total_cost(analytic), "analytic_layers": {k: v.as_dict() for k, v in analytic.items()}}
    with art.step("estimate", "estimate") as tmp:
        if synth and folded:
            (tmp / "synth.json").write_text(json.dumps(est["synth"], indent=1))
        elif synth:
            find_yosys()  # before the step's folder is made
            with progress.bar("Yosys synthesis per layer", total=2 * len(stage_networks(net))) as bar:
                by_dsp = synthesize_layer_modes(net, b.synth_family, (True, False), cluster=cluster,
                                                on_done=lambda name: bar.advance(info=name), choice=choice)
            runs = {"dsp_mapped": by_dsp[True], "lut_only": by_dsp[False]}
            layers: dict[str, Any] = {}
            for mode, res in runs.items():
                for name, r in res.items():
                    layers.setdefault(name, {})[mode] = {k: r[k] for k in COUNTS}
            tot = {mode: total_counts(res) for mode, res in runs.items()}
            first = next(iter(runs["dsp_mapped"].values()))
            est["synth"] = {"tool": first["tool"], "abc9_script": first["abc9_script"], "target": b.synth_family,
                            "note": b.synth_note or None,
                            **tot["lut_only" if no_dsp else "dsp_mapped"], "lut_only": tot["lut_only"], "layers": layers,
                            "method": "each layer synthesized as its own top; totals are the sums"
                            + ("; a folded CNN under a budget of no DSPs: the counts without DSP inference" if no_dsp
                               else "")}
            (tmp / "synth.json").write_text(json.dumps(est["synth"], indent=1))
        res_board = {k: getattr(b, k) for k in ("lut", "ff", "dsp", "bram")}
        basis = est.get("synth", est["analytic"])
        est["utilization_pct"] = {k: round(100.0 * basis.get(k, 0) / v, 2) for k, v in res_board.items() if v}
    rep = art.report()
    limits = {**resource_limits(rep.get("budget"), b), **{k: v for k, v in (rep.get("budget") or {}).items() if k == "ii"}}
    judged = {k: est.get("synth", {}).get(k, est["analytic"].get(k, 0)) for k in limits}
    if "ii" in limits:  # the budget's II, judged on the design the RTL step built
        judged["ii"] = int(rtl.get("ii") or 1)
    art.update(estimate=est, fits_budget=fits(judged, limits), fits_judged_on="synth" if synth else "analytic")
    art.timing("estimate", time.perf_counter() - t0)
    return est


def step_implement(art: Artifact, board: str | None = None, seed: int = 1, clock_mhz: float | None = None,
                   progress: Reporter = SILENT) -> dict[str, Any]:
    """Place and route ``rtl/`` with nextpnr on a board with an open toolchain (``rtl_sim.pnr``): the
    bitstream, logs and ``pnr.json`` in ``implement/``, and report.json's ``implement`` section. The target
    clock is ``clock_mhz``, else the one the RTL was pipelined for, else the board's. The board top is the
    UART top (``rtl/<top>_uart.v``) when the RTL step wrote one, else ``rtl_sim.pnr``'s shift-register top."""
    from rtl_sim.pnr import place_and_route

    art.require()
    rep = art.report()
    rtl = rep.get("rtl") or {}
    if not rtl.get("top") or not (art.dir / "rtl").is_dir():
        raise BackendError(f"{art.dir}: no rtl/ here; run 'codesign rtl {art.dir}' first")
    b = load_board(board or rep["board"]["name"])
    if b.pnr is None:
        from codesign.board import board_names

        open_boards = [n for n in board_names() if load_board(n).pnr is not None]
        raise BackendError(f"board {b.name!r} ({b.part}) has no open place-and-route toolchain: build it with the "
                           f"vendor's tools (hls/ has the project); boards with one: {', '.join(open_boards)}")
    top = rtl["top"]
    uart = art.dir / "rtl" / f"{top}_uart.v"
    files = [art.dir / "rtl" / f"{top}.v"] + ([uart] if uart.is_file() else [])
    target = float(clock_mhz or rtl.get("clock_mhz") or b.clock_mhz)
    t0 = time.perf_counter()
    with art.step("implement", "implement") as tmp:
        r = place_and_route(files, f"{top}_uart" if uart.is_file() else top, b, tmp, target, seed=seed,
                            progress=progress)
        res = {k: (f"implement/{v}" if k in ("bitstream", "log") and v else v) for k, v in r.to_json(tmp).items()}
        res["board"] = b.name
        (tmp / "pnr.json").write_text(json.dumps(res, indent=1))
    art.update(implement=res)
    art.timing("implement", time.perf_counter() - t0)
    return res


def step_export(art: Artifact, onnx_path: str | Path, float64: bool = True) -> dict[str, Any]:
    """Write the network in ``DIR`` as QONNX; recorded in report.json under ``export``."""
    from codesign.errors import ModelFileError

    art.require()
    net = Network.load(art.dir)
    path = Path(onnx_path)
    if path.suffix.lower() != ".onnx":
        raise ModelFileError(f"--onnx {str(path)!r}: the file name must end in .onnx")
    model = net.to_onnx(path, float64=float64)
    casts = sorted({n.name.split(".")[0] for n in model.graph.node if n.op_type == "Cast"})
    res = {"onnx": str(path.absolute()), "nodes": len(model.graph.node), "float64_layers": casts,
           "format": "QONNX" if net.quantized else "ONNX (float)"}
    if (art.dir / "report.json").is_file():
        art.update(export=res)
    return res


@dataclasses.dataclass(frozen=True)
class FlowOptions:
    """How ``run_flow`` runs, beyond what it compresses for which board (``codesign flow``'s options)."""

    backend: str | None = None  # the HLS backend (default: the board vendor's)
    weights: str | None = None  # a Keras .json model's weights file
    trust: bool = False  # unpickle a PyTorch module file
    input_type: str | None = None  # the input's fixed-point type, e.g. "ap_fixed<8,3>"
    force: bool = False  # overwrite a non-empty output directory
    samples: int | None = None  # verification samples (default: the whole test split)
    method: str = "hardware"  # the compression method
    synth: bool = True  # Yosys: fit the compressed network on synthesis and count the estimate
    progress: Reporter = SILENT
    cluster: str | None = None  # where the Yosys and co-simulation jobs run (codesign.jobs.executor)
    clock_mhz: float | None = None  # the design's clock (default: the board's): places the pipeline registers
    energy: bool = True  # energy per inference from the synthesized netlist's activity (codesign.app.energy)
    reuse: str | None = None  # --reuse R|name=R,...|auto: Dense layers folded (codesign.app.fold_step)
    throughput: str | float | None = None  # --throughput: inferences/s at the clock, the budget's II


def run_flow(out: str | Path, model: Any = DEFAULT_MODEL, data: str | None = DEFAULT_DATA,
             board: str = DEFAULT_BOARD, budget: str | dict | None = None, options: FlowOptions | None = None,
             **overrides: Any) -> dict[str, Any]:
    """load -> compress -> hls -> rtl -> cosim -> estimate -> report, in ``out``; the Yosys runs (and
    the shards of a large co-simulation) are jobs on ``options.cluster`` (``codesign.jobs.executor``).
    ``options.clock_mhz`` (default: the board's clock) places the pipeline registers, and compression prices
    them. ``overrides`` are ``FlowOptions`` fields given by name (``run_flow(..., synth=False)``)."""
    from codesign.app.report import write_report
    from codesign.tools import preflight

    if options is not None and not isinstance(options, FlowOptions):
        raise TypeError(f"run_flow: options must be a FlowOptions, not {options!r}; give the rest by name")
    o = dataclasses.replace(options or FlowOptions(), **overrides)
    backend, weights, trust, input_type, progress = o.backend, o.weights, o.trust, o.input_type, o.progress
    clock_mhz, synth = o.clock_mhz, o.synth
    b = load_board(board)
    if clock_mhz is not None:
        if not clock_mhz > 0:  # before anything is written
            raise ConfigError(f"clock {clock_mhz!r} MHz: give a positive frequency, e.g. --clock 100")
        b = dataclasses.replace(b, clock_mhz=float(clock_mhz))  # the design's clock, which the cost model prices
    bud = Budget.parse(budget, b, o.throughput)  # parsed once, here: a malformed budget fails before anything is written
    if backend:
        from hls.project import check_backend

        check_backend(b, backend)
    with progress.status(f"loading {model}"):  # a model file that cannot be read leaves no directory behind
        net = load(model, weights=weights, trust=trust, input_type=input_type)
    if bud.ii:  # an ii on a network that does not fold fails before anything is written
        from codesign.compress.fold_choice import require_foldable

        require_foldable(net, bud.ii)
    if o.reuse is not None:  # a bad --reuse fails before anything is written
        from codesign.app.fold_step import parse_reuse

        parse_reuse(o.reuse, net)
    preflight(cosim=True, synth=synth)  # a missing tool is reported before minutes of compression
    if b.pnr is not None:  # the flow ends with place and route: its tools too
        from rtl_sim.pnr import find_nextpnr, find_packer

        find_nextpnr(b.pnr.arch), find_packer(b.pnr.arch)
    with jobs.executor(o.cluster) as ex:  # before anything is written: a bad --cluster or a missing Ray fails first
        art = Artifact(out)
        art.claim(o.force)
        step_compress(art, model, data, bud, o.method, weights, trust, input_type, progress=progress, loaded=net,
                      synth=synth)
        reuse = None
        if o.reuse is not None:  # before the HLS step, which writes the same ReuseFactor
            from codesign.app.fold_step import apply_reuse

            reuse = ",".join(f"{k}={v}" for k, v in apply_reuse(art, o.reuse).items())
        else:  # fully parallel when it fits, else folded by itself (the report's notes say so)
            from codesign.app.fold_step import fold_when_over

            reuse = fold_when_over(art)
        if has_hls_backend(b):
            step_hls(art, backend, o.samples, progress=progress)
        step_rtl(art, progress=progress, clock_mhz=clock_mhz, reuse=reuse)
        step_cosim(art, o.samples, progress=progress, cluster=ex)
        step_estimate(art, synth=synth, progress=progress, cluster=ex)
        if b.pnr is not None:
            step_implement(art, progress=progress)
        if synth and o.energy:
            from codesign.app.energy import energy_supported, step_energy

            if energy_supported(b.name, Network.load(art.dir), art.report()):
                step_energy(art, progress=progress)
    write_report(art)
    rep = art.report()
    if rep.get("fits_budget") is False:
        basis = {**rep["estimate"].get("synth", rep["estimate"]["analytic"]), "ii": (rep.get("rtl") or {}).get("ii") or 1}
        over = {k: f"{basis.get(k, 0):,} > {v:,}" for k, v in {**resource_limits(rep.get("budget"), b),
                                                               **(rep.get("budget") or {})}.items()
                if basis.get(k, 0) > v}
        e = rep.get("energy") or {}
        if e.get("fits_budget") is False:  # judged on the simulated netlist's energy, mid
            over["energy"] = f"{e['mid']['total_j'] * 1e12:,.0f} pJ > {e['budget_pj']:,} pJ (simulated)"
        raise VerificationError(f"the design does not fit ({rep['fits_judged_on']}): {over}; see {art.dir / 'report.html'}")
    return rep
