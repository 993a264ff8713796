"""`codesign sweep`: budgets expand, the Pareto front is right, and a real two-budget sweep runs,
with the same figures on local processes and on Ray; a failed point is recorded and the rest finish."""

import json
import signal
import threading
import time

import pytest

from codesign.app.cli import main
from codesign.errors import BudgetError, ConfigError
from codesign.compress.qat import Precision
from codesign.compress.search import Schedule
from codesign.app.sweep import expand_budgets, pareto_front, run_sweep, search_settings

# the smallest real search: one precision, short training
SEARCH = {"precisions": (Precision(4, 6, 10),), "schedule": Schedule(epochs=8, finetune_epochs=2, final_epochs=4)}
SEARCH_CLI = ["--precisions", "4/6/10", "--schedule", "epochs=8,finetune_epochs=2,final_epochs=4"]
BUDGETS = "lut=0.05,0.1,dsp=0"


def figures(point: dict) -> dict:
    """What a point measured: all but the time it took."""
    return {k: v for k, v in point.items() if k != "seconds"}


@pytest.fixture(scope="module")
def local_sweep(digits_float, tmp_path_factory):
    """The two-budget digits sweep on local processes (the default back end)."""
    d = tmp_path_factory.mktemp("local") / "sweep"
    return dict(run_sweep(d, digits_float, "digits", "arty-a7-35", BUDGETS, **SEARCH), dir=d)


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


def test_a_two_budget_digits_sweep_writes_table_plot_and_front(local_sweep):
    r = local_sweep
    pts = r["points"]
    assert [p["budget"] for p in pts] == ["lut=0.05,dsp=0", "lut=0.1,dsp=0"] and r["failed"] == 0
    for p in pts:
        assert p["analytic"]["lut"] <= p["limits"]["lut"] and p["synth"]["dsp"] == 0 and p["synth"]["lut"] > 0
    # twice the LUTs buys more weights
    assert pts[1]["nonzero"] > pts[0]["nonzero"] and pts[1]["synth"]["lut"] > pts[0]["synth"]["lut"]
    assert any(p["pareto"] for p in pts)
    d = r["dir"]
    assert json.loads((d / "sweep.json").read_text())["points"][0]["score"] == pts[0]["score"]
    assert (d / "pareto.png").stat().st_size > 1000 and "data:image/png;base64," in (d / "sweep.html").read_text()
    assert not (d / ".incomplete").exists()


def test_a_sweep_on_a_local_ray_cluster_gives_the_local_figures(ray_session, local_sweep, digits_float, tmp_path):
    r = run_sweep(tmp_path / "sweep", digits_float, "digits", "arty-a7-35", BUDGETS, cluster="ray", **SEARCH)
    assert r["cluster"] == "ray" and r["cpus"] == 2
    assert [figures(p) for p in r["points"]] == [figures(p) for p in local_sweep["points"]]
    # the synthesis cache answered every layer: the driver consulted it before dispatching
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["points"] == r["points"]


def test_a_failed_point_on_ray_is_recorded_the_rest_finish_and_the_cli_exits_1(ray_session, local_sweep,
                                                                               tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", "digits-mlp", "--data", "digits", "--board", "arty-a7-35", "--budgets",
                 "lut=0.001,0.05,dsp=0", "--out", str(out), "--cluster", "ray", "--quiet", *SEARCH_CLI])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("codesign: error: 1 of 2 sweep points failed (first: compress lut=0.001,dsp=0: budget ")
    r = json.loads((out / "sweep.json").read_text())
    bad, good = r["points"]
    assert bad["failed"] and bad["attempts"] == 2 and "is infeasible on arty-a7-35" in bad["error"]
    assert figures(good) == figures(local_sweep["points"][0]) and r["failed"] == 1 and r["cluster"] == "ray"
    assert "failed: `lut=0.001,dsp=0`" in (out / "sweep.md").read_text() and not (out / ".incomplete").exists()


def test_interrupting_a_sweep_cancels_its_jobs_and_marks_the_directory_incomplete(digits_float, tmp_path):
    main_thread = threading.main_thread().ident
    threading.Timer(3.0, signal.pthread_kill, (main_thread, signal.SIGINT)).start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(tmp_path / "sweep", digits_float, "digits", "arty-a7-35", BUDGETS, **SEARCH)
    assert time.perf_counter() - t0 < 30  # cancelled, not waited for
    assert (tmp_path / "sweep" / ".incomplete").read_text().startswith("sweep (failed or interrupted)")
    assert not (tmp_path / "sweep" / "sweep.json").exists()


@pytest.mark.parametrize("precisions, schedule, expected", [
    ("4/6/10", None, {"precisions": (Precision(4, 6, 10),)}),
    ("4/6/10,6/8/12", "epochs=20,final_epochs=10,distill=false",
     {"precisions": (Precision(4, 6, 10), Precision(6, 8, 12)),
      "schedule": Schedule(epochs=20, final_epochs=10, distill=False)}),
])
def test_search_settings_come_from_the_command_line(precisions, schedule, expected):
    assert search_settings(precisions, schedule) == expected


@pytest.mark.parametrize("precisions, schedule, msg", [
    ("4/6", None, r"^malformed --precisions '4/6': write weight/activation/output bits of each candidate, e.g. "),
    (None, "epoch=3", r"^unknown --schedule field 'epoch'; fields: epochs, finetune_epochs, final_epochs, "),
    (None, "epochs=many", r"^--schedule epochs='many': not a whole number$"),
])
def test_malformed_search_settings_are_refused_naming_them(precisions, schedule, msg):
    with pytest.raises(ConfigError, match=msg):
        search_settings(precisions, schedule)
