"""`codesign sweep`: budgets expand, the Pareto front is right, and a real two-budget sweep runs."""

import json

import pytest

from codesign.errors import BudgetError
from codesign.compress.qat import Precision
from codesign.compress.search import Schedule
from codesign.app.sweep import expand_budgets, pareto_front, run_sweep


@pytest.mark.parametrize("spec, budgets", [
    ("lut=0.1,0.2,0.4", ["lut=0.1", "lut=0.2", "lut=0.4"]),
    ("lut=0.1,0.2,dsp=0", ["lut=0.1,dsp=0", "lut=0.2,dsp=0"]),
    ("lut=1000,dsp=0,4", ["lut=1000,dsp=0", "lut=1000,dsp=4"]),
])
def test_a_bare_value_continues_the_resource_before_it(spec, budgets):
    assert expand_budgets(spec) == budgets


@pytest.mark.parametrize("spec, msg", [("0.1,lut=0.2", r"malformed sweep '0.1,lut=0.2': write e.g."),
                                       ("lut=0.1,,0.2", r"malformed sweep 'lut=0.1,,0.2'"),
                                       ("luts=0.1", r"unknown resource 'luts' in sweep 'luts=0.1'; resources: lut, dsp")])
def test_a_malformed_sweep_is_refused_naming_it(spec, msg):
    with pytest.raises(BudgetError, match=msg):
        expand_budgets(spec)


def test_the_pareto_front_drops_dominated_points():
    pts = [{"score": s, "synth": {"lut": l}} for s, l in [(0.90, 1000), (0.85, 1500), (0.95, 3000), (0.95, 2500)]]
    assert pareto_front(pts) == [0, 3]


def test_a_two_budget_digits_sweep_writes_table_plot_and_front(digits_float, tmp_path):
    search = {"precisions": (Precision(4, 6, 10),), "schedule": Schedule(epochs=20, final_epochs=10)}
    r = run_sweep(tmp_path / "sweep", digits_float, "digits", "arty-a7-35", "lut=0.04,0.08,dsp=0", **search)
    pts = r["points"]
    assert [p["budget"] for p in pts] == ["lut=0.04,dsp=0", "lut=0.08,dsp=0"]
    for p in pts:
        assert p["analytic"]["lut"] <= p["limits"]["lut"] and p["synth"]["dsp"] == 0 and p["synth"]["lut"] > 0
    # twice the LUTs buys more weights
    assert pts[1]["nonzero"] > pts[0]["nonzero"] and pts[1]["synth"]["lut"] > pts[0]["synth"]["lut"]
    assert any(p["pareto"] for p in pts)
    d = tmp_path / "sweep"
    assert json.loads((d / "sweep.json").read_text())["points"][0]["score"] == pts[0]["score"]
    assert (d / "pareto.png").stat().st_size > 1000 and "data:image/png;base64," in (d / "sweep.html").read_text()
    assert not (d / ".incomplete").exists()
