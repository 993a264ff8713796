"""``codesign rtl --reuse`` and the steps after it: a folded design co-simulated, priced and synthesized whole."""

from __future__ import annotations

import json
import shutil

import pytest

import rtl_sim.synth
from codesign.app import flow
from codesign.app.artifact import Artifact
from codesign.app.cli import main
from codesign.app.report import write_report
from codesign.board import load_board
from codesign.compress.fold_choice import smallest_fitting_fold
from codesign.compress.fold_cost import network_folded_cost
from codesign.core.layers import Dense
from codesign.core.network import Network
from rtl_sim.synth import COUNTS
from tests.test_folded import MIXED, _random_net

SPEC = ",".join(f"{k}={v}" for k, v in MIXED.items())  # test_folded's design: one Verilator build between them


def _artifact(path, budget=None) -> Artifact:
    art = Artifact(path / "a")
    art.claim()
    _random_net().save(art.dir)
    art.update(board=load_board("arty-a7-35").to_json(), **({"budget": budget} if budget else {}))
    return art


def test_rtl_reuse_then_cosim_is_bit_exact_at_the_designed_ii(tmp_path, capsys):
    art = _artifact(tmp_path)
    assert main(["rtl", str(art.dir), "--reuse", SPEC, "--quiet"]) == 0
    assert main(["cosim", str(art.dir), "--samples", "300", "--quiet"]) == 0
    write_report(art)
    rep = json.loads((art.dir / "report.json").read_text())
    assert {l.name: l.reuse for l in Network.load(art.dir).layers if isinstance(l, Dense)} == MIXED
    assert (rep["rtl"]["reuse"], rep["rtl"]["ii"]) == (MIXED, 4)
    assert rep["cosim"]["bit_exact"] and rep["cosim"]["mismatches"] == 0 and rep["cosim"]["samples"] == 300
    assert (rep["cosim"]["ii"], rep["cosim"]["latency_cycles"]) == (4, rep["rtl"]["latency_cycles"])
    assert (rep["timing"]["ii"], rep["timing"]["inferences_per_s"]) == (4, round(100e6 / 4))


def test_rtl_without_reuse_folds_by_the_saved_networks_own_factors(tmp_path):
    """After a ``--reuse`` run the network keeps its factors (HLS writes them): a plain ``codesign rtl`` agrees."""
    art = _artifact(tmp_path)
    flow.step_rtl(art, reuse=SPEC)
    assert (flow.step_rtl(art)["reuse"], art.report()["rtl"]["ii"]) == (MIXED, 4)


@pytest.mark.parametrize("spec", ["0", "fc1=0", "fc9=2", "fc1=x", "-1"])
def test_a_bad_reuse_is_a_one_line_error_naming_the_parameter(tmp_path, capsys, spec):
    art = _artifact(tmp_path)
    assert main(["rtl", str(art.dir), f"--reuse={spec}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--reuse" in err
    assert not (art.dir / "rtl").exists()


def test_auto_reuse_takes_the_smallest_fold_that_fits_the_budget(tmp_path):
    budget = {"lut": 1500, "dsp": 0}
    art = _artifact(tmp_path, budget)
    res = flow.step_rtl(art, reuse="auto")
    fold = smallest_fitting_fold(_random_net(), {**budget, "bram": load_board("arty-a7-35").bram}, "xc7", dsp=False)
    assert fold.ii > 1 and (res["reuse"], res["ii"]) == (fold.reuse, fold.ii)


def test_estimate_prices_the_folded_design_and_synthesizes_it_whole(tmp_path, monkeypatch):
    art = _artifact(tmp_path)
    flow.step_rtl(art, reuse=SPEC)
    top = art.report()["rtl"]["top"]
    runs = []
    monkeypatch.setattr(rtl_sim.synth, "synthesize", lambda v, t, fam, dsp=True, **k: runs.append((v, t, dsp)) or
                        {**{c: 0 for c in COUNTS}, "tool": "yosys (test)", "abc9_script": None})
    est = flow.step_estimate(art)
    verilog = (art.dir / "rtl" / f"{top}.v").read_text()
    assert runs == [(verilog, top, False), (verilog, top, True)]  # one top per DSP mode, no per-layer stages
    cost = network_folded_cost(_random_net(), MIXED, "xc7", True)
    assert est["analytic"] == {k: cost[k] for k in ("lut", "ff", "dsp", "bram")} and est["analytic_ii"] == 4


@pytest.mark.slow
def test_default_flow_folded_by_the_cli_is_bit_exact_on_the_test_set_and_synthesized_whole(default_run, tmp_path):
    code, out = default_run
    assert code == 0
    art = Artifact(shutil.copytree(out, tmp_path / "run"))
    assert main(["rtl", str(art.dir), "--reuse", "16", "--quiet"]) == 0
    assert main(["cosim", str(art.dir), "--samples", "2000", "--quiet"]) == 0
    assert main(["estimate", str(art.dir), "--no-energy", "--quiet"]) == 0
    rep = art.report()
    assert rep["cosim"]["bit_exact"] and (rep["cosim"]["samples"], rep["cosim"]["ii"]) == (2000, 16)
    assert rep["estimate"]["synth"]["method"].startswith("the folded design") and rep["estimate"]["synth"]["lut"] > 0
