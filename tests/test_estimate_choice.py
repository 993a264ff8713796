"""``codesign estimate`` synthesizes the datapath ``codesign rtl`` chose (recorded as ``rtl.choice``)."""

from __future__ import annotations

import pytest

import rtl_sim.synth
import rtl_sim.verilog
from codesign.app import flow
from codesign.app.artifact import Artifact
from codesign.board import load_board
from codesign.compress.calibration import small_mlp
from rtl_sim.choice import DatapathChoice
from rtl_sim.synth import COUNTS, stage_networks


@pytest.mark.parametrize("datapath, regs_every", [("csd", 0), ("cmvm", 2)])
def test_estimate_synthesizes_the_datapath_the_rtl_step_chose(tmp_path, monkeypatch, datapath, regs_every):
    art = Artifact(tmp_path / "a")
    art.claim()
    net = small_mlp()
    net.save(art.dir)
    art.update(board=load_board("arty-a7-35").to_json())
    flow.step_rtl(art, regs_every, datapath=datapath)
    choice = DatapathChoice(**art.report()["rtl"]["choice"])
    assert (choice.datapath, choice.adder_regs_every) == (datapath, regs_every)
    emitted, real = [], rtl_sim.verilog.emit_verilog
    monkeypatch.setattr(rtl_sim.verilog, "emit_verilog", lambda *a, **k: emitted.append(real(*a, **k)) or emitted[-1])
    # every layer answered as if cached, so no Yosys runs: what is checked is the Verilog handed to it
    monkeypatch.setattr(rtl_sim.synth, "cached", lambda key: {**{k: 0 for k in COUNTS}, "tool": "yosys (test)",
                                                              "abc9_script": None})
    flow.step_estimate(art)
    stages = [sub for _, sub in stage_networks(net)]
    assert [d.verilog for d in emitted] == [real(s, **choice.emit_kwargs()).verilog for s in stages] * 2  # DSP, LUT
    assert [d.verilog for d in emitted[:len(stages)]] != [real(s).verilog for s in stages]


@pytest.mark.parametrize("mult, jobs_per_stage", [(None, 1), ("dsp", 2)], ids=["adder-graph", "dsp-products"])
def test_a_stage_without_products_is_synthesized_once_for_both_dsp_modes(monkeypatch, mult, jobs_per_stage):
    """An adder graph has nothing a DSP could take, so the DSP mode's netlist is the LUT mode's: one Yosys job
    answers both; a stage with ``*`` products is synthesized in each mode."""
    monkeypatch.setattr(rtl_sim.synth, "cached", lambda key: None)
    net = small_mlp()
    done, todo = rtl_sim.synth.layer_jobs(net, "xc7", (True, False), mult=mult)
    stages = len(stage_networks(net))
    assert len(todo) == jobs_per_stage * stages and not any(done.values())
    assert sorted(m for j in todo for m in j.tag[1]) == [False] * stages + [True] * stages
