"""The embedded default flow end to end, and re-running one step on its directory."""

import json

from codesign.app.cli import main


def test_default_flow_passes_every_check(default_run):
    code, out = default_run
    rep = json.loads((out / "report.json").read_text())
    print(json.dumps({k: rep[k] for k in ("accuracy", "estimate", "cosim", "hls", "timings_s")}, indent=1, default=str))
    assert code == 0
    assert rep["hls"]["csim_bit_exact"] is True and rep["hls"]["samples"] >= 10000
    assert rep["cosim"]["bit_exact"] is True and rep["cosim"]["mismatches"] == 0 and rep["cosim"]["samples"] >= 10000
    assert rep["cosim"]["latency_cycles"] == rep["rtl"]["latency_cycles"] and rep["cosim"]["ii"] == 1
    assert rep["fits_budget"] is True and rep["fits_judged_on"] == "synth"
    assert rep["estimate"]["synth"]["lut"] <= rep["budget"]["lut"]
    assert not (out / ".incomplete").exists()


def test_the_analytic_estimate_of_the_default_network_is_within_15_percent_of_yosys(default_run):
    _, out = default_run
    est = json.loads((out / "report.json").read_text())["estimate"]
    assert abs(est["analytic"]["lut"] - est["synth"]["lut"]) <= 0.15 * est["synth"]["lut"]
    assert abs(est["analytic"]["ff"] - est["synth"]["ff"]) <= 0.05 * est["synth"]["ff"]
    assert est["analytic"]["dsp"] == est["synth"]["dsp"] == 0


def test_report_numbers_equal_report_json(default_run):
    _, out = default_run
    rep = json.loads((out / "report.json").read_text())
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for doc in (html, md):
        assert f"{rep['estimate']['synth']['lut']:,}" in doc
        assert f"{rep['cosim']['latency_cycles']} cycles" in doc
        assert f"{rep['accuracy']['compressed']:.4f}" in doc
    assert html.count("data:image/png;base64,") == 2


def test_one_step_can_be_rerun_alone(default_run):
    _, out = default_run
    assert main(["cosim", str(out), "--samples", "12000", "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["cosim"]["samples"] == 12000 and rep["cosim"]["bit_exact"]


def test_a_relative_output_directory_works(tmp_path, monkeypatch, small_mlp):
    """The default --out is relative (codesign-out); the tools run in folders of their own."""
    monkeypatch.chdir(tmp_path)
    from codesign.app.artifact import Artifact
    from codesign.app.flow import step_cosim, step_rtl

    small_mlp.save(tmp_path / "rel")
    art = Artifact("rel")
    art.update(board={"name": "arty-a7-35"})
    step_rtl(art)
    res = step_cosim(art, samples=10000)
    assert res["bit_exact"] and res["mismatches"] == 0
