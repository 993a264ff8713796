"""The budget search chooses the fold (codesign.compress.fold_choice.choose_fold): ``ii=`` in --budget and
``--throughput``, the II ladder each candidate is priced on, and a search whose result carries its reuse factors."""

from __future__ import annotations

import numpy as np
import pytest

from codesign.app.cli import main
from codesign.board import load_board
from codesign.budget import Budget
from codesign.compress.fold_choice import FOLD_OVER, candidate_iis, choose_fold, designed_ii, folded_price
from codesign.compress.fold_cost import network_folded_cost
from codesign.compress.qat import Precision
from codesign.compress.search import Schedule
from codesign.core.layers import Dense, Output, ReLU
from codesign.core.network import Network
from codesign.errors import ConfigError
from codesign.importers.data import Dataset
from tests.test_folded import _random_net

ARTY = load_board("arty-a7-35")  # 100 MHz
FAMILY = "xc7"


@pytest.mark.parametrize("spec, throughput, limits, ii", [
    ("lut=0.5,dsp=0.5,ii=4", None, {"lut": 10400, "dsp": 45}, 4),
    ("lut=20000", "1e6", {"lut": 20000}, 100),  # 100 MHz / 1e6 inferences/s
    ("lut=20000", "3e7", {"lut": 20000}, 3),  # rounded down: the II keeps at least that throughput
    ({"lut": 100, "ii": 2}, None, {"lut": 100}, 2),
    ("lut=0.5", None, {"lut": 10400}, None),
])
def test_budget_takes_an_ii_or_a_throughput_at_the_boards_clock(spec, throughput, limits, ii):
    b = Budget.parse(spec, ARTY, throughput)
    assert (b.limits, b.ii) == (limits, ii)
    assert b.terms == {**limits, **({"ii": ii} if ii else {})}


@pytest.mark.parametrize("spec, throughput, msg", [
    ("lut=0.5,ii=2", "1e6", "--budget ii=2 and --throughput 1e6 both set the II: give one of them"),
    ("lut=0.5,ii=0", None, r"budget ii=0: the initiation interval is a whole number of cycles of at least 1 "
                           r"\(e.g. 'ii=4'\), or give --throughput in inferences/s"),
    ("ii=2.5", None, r"budget ii=2.5: the initiation interval is a whole number"),
    ("ii=1,ii=2", None, r"budget 'ii=1,ii=2' gives ii twice; give one initiation interval"),
    ("lut=0.5", "fast", r"--throughput 'fast': give inferences per second, a number above 0, e.g. 1e6"),
    ("lut=0.5", "-5", r"--throughput '-5': give inferences per second"),
    ("lut=0.5", "2e8", r"--throughput 2e\+08 inferences/s is above one per cycle at the 100 MHz clock \(1e\+08/s at most\)"),
])
def test_a_bad_ii_or_throughput_is_a_config_error_naming_it(spec, throughput, msg):
    with pytest.raises(ConfigError, match=f"^{msg}"):
        Budget.parse(spec, ARTY, throughput)


def test_the_cli_refuses_ii_and_throughput_together_in_one_line(tmp_path, capsys):
    code = main(["flow", "--budget", "lut=0.5,ii=2", "--throughput", "1e6", "--out", str(tmp_path / "o")])
    assert code == 2 and not (tmp_path / "o").exists()
    assert capsys.readouterr().err == "codesign: error: --budget ii=2 and --throughput 1e6 both set the II: give one of them\n"


@pytest.fixture(scope="module")
def net() -> Network:
    return _random_net()


@pytest.fixture(scope="module")
def parallel(net) -> dict[str, int]:
    return {k: int(v) for k, v in network_folded_cost(net, 1, FAMILY).items() if k in ("lut", "ff", "dsp", "bram")}


def test_a_design_that_fits_in_parallel_stays_parallel(net, parallel):
    c = choose_fold(net, parallel, {"lut": parallel["lut"]}, FAMILY, True, 8)
    assert (c.ii, c.bound_by) == (1, "none")


def test_without_ii_a_design_a_little_over_is_pruned_not_folded(net, parallel):
    c = choose_fold(net, parallel, {"lut": int(parallel["lut"] / FOLD_OVER) + 1}, FAMILY, True, None)
    assert c.ii == 1 and "pruned rather than folded" in c.reason


def test_the_smallest_ii_that_fits_unpruned_is_chosen_and_the_resource_over_before_it_named(net, parallel):
    rung = candidate_iis(net)[6]
    aim = {"lut": folded_price(net, rung, FAMILY)["lut"]}
    c = choose_fold(net, parallel, aim, FAMILY, True, None)
    smaller = [t for t in candidate_iis(net) if t < c.ii]
    assert c.ii <= rung and c.cost["lut"] <= aim["lut"] and c.bound_by == "lut"
    assert all(folded_price(net, t, FAMILY)["lut"] > aim["lut"] for t in smaller if t > 1)


def test_an_ii_aim_caps_the_ladder_and_is_named_when_it_binds(net, parallel):
    c = choose_fold(net, parallel, {"lut": 10}, FAMILY, True, 4)  # nothing fits: the least over, at most II 4
    assert c.ii <= 4 and c.bound_by in ("ii", "lut") and "up to the budget ii=4" in c.reason


def _mlp_task(seed: int = 0) -> tuple[Network, Dataset]:
    """A float 16-24-4 MLP and 900 samples labelled by a random teacher (distinct from it)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(900, 16))
    y = np.argmax(X @ rng.normal(size=(16, 4)), axis=1)
    layers = [Dense("fc1", rng.normal(0, 0.4, (16, 24)), np.zeros(24)), ReLU("r1"),
              Dense("fc2", rng.normal(0, 0.4, (24, 4)), np.zeros(4)), Output("out")]
    ds = Dataset("teacher", X[:600], y[:600], X[600:750], y[600:750], X[750:], y[750:], "classification", 4)
    return Network("mlp", (16,), layers), ds


SHORT = Schedule(epochs=3, finetune_epochs=1, final_epochs=1, prune_steps=2, extra_steps=2)


@pytest.fixture(scope="module")
def folded_run(tmp_path_factory):
    """The flow's compress step on the tiny MLP at lut=1200,dsp=20,ii=16 (one short search, one precision)."""
    from codesign.app import flow
    from codesign.app.artifact import Artifact

    net, ds = _mlp_task()
    tmp = tmp_path_factory.mktemp("fold_search")
    data = tmp / "teacher.npz"
    np.savez(data, X_train=np.concatenate([ds.X_train, ds.X_val]), y_train=np.concatenate([ds.y_train, ds.y_val]),
             X_test=ds.X_test, y_test=ds.y_test)
    art = Artifact(tmp / "a")
    art.claim()
    flow.step_compress(art, "mlp", str(data), Budget.parse("lut=1200,dsp=20,ii=16", ARTY), loaded=net,
                       search={"precisions": (Precision(6, 8, 12),), "schedule": SHORT})
    return art


def test_with_an_ii_the_search_prices_the_fold_and_the_network_carries_its_reuse(folded_run):
    out = Network.load(folded_run.dir)
    fold, est = out.metadata["fold"], folded_run.report()["estimate"]
    reuse = {l.name: l.reuse for l in out.layers if isinstance(l, Dense)}
    assert fold["target_ii"] > 1 and fold["ii"] == designed_ii(out) <= 16
    assert reuse == {l.name: min(fold["target_ii"], int(np.count_nonzero(l.weight))) for l in out.layers
                     if isinstance(l, Dense)}
    priced = network_folded_cost(out, reuse, FAMILY)
    assert est["analytic"]["lut"] == priced["lut"] <= 1200 and est["analytic_ii"] == fold["ii"]


def test_the_flow_builds_the_fold_the_search_chose_and_its_report_says_why(folded_run):
    from codesign.app import flow

    rep = folded_run.report()
    fold = rep["fold"]
    assert rep["budget"] == {"lut": 1200, "dsp": 20, "ii": 16}
    assert any(f"folded the Dense layers to II {fold['ii']} cycles (budget ii=16)" in n and "bound by" in n
               for n in rep["notes"])
    rtl = flow.step_rtl(folded_run)  # no --reuse: the saved network's factors
    assert rtl["kind"] == "folded" and rtl["ii"] == fold["ii"] <= 16


def test_without_a_search_an_ii_caps_the_flows_own_fold_and_names_it_when_none_fits(tmp_path):
    from codesign.app.artifact import Artifact
    from codesign.app.fold_step import fold_when_over
    from codesign.compress.quantize import quantize_network
    from codesign.core.fixed import FixedType
    from codesign.errors import BudgetError
    from tests.test_flow_autofold import _float_net

    art = Artifact(tmp_path / "a")
    art.claim()
    quantize_network(_float_net(32), FixedType(16, 6, True, "RND_CONV", "SAT"), 8, result_bits=16).save(art.dir)
    # as the compress step records a parallel design over the whole board, with only an ii in the budget
    art.update(board=ARTY.to_json(), budget={"ii": 2}, estimate={"analytic": {"lut": 10**6, "dsp": 0}})
    with pytest.raises(BudgetError, match=r"network 'mlp' does not fit at II <= 2 even folded to II 2 on xc7: dsp"):
        fold_when_over(art)


@pytest.mark.slow
def test_flow_with_an_ii_budget_folds_the_digits_mlp_bit_exact_at_the_designed_ii(tmp_path):
    """docs/guide/folding.md's run: lut=0.1,dsp=0.5,ii=64 on the Arty, 96.4 % at II 58 with the fold prices of
    b024107 (95.8 % at II 64 before; 93.9 % fully parallel)."""
    from codesign.app import flow

    rep = flow.run_flow(tmp_path / "run", "digits-mlp", "digits", "arty-a7-35", "lut=0.1,dsp=0.5,ii=64", samples=2000,
                        energy=False)
    assert rep["rtl"]["kind"] == "folded" and 1 < rep["rtl"]["ii"] <= 64 and rep["fold"]["ii"] == rep["rtl"]["ii"]
    assert rep["hls"]["csim_bit_exact"] and rep["cosim"]["bit_exact"] and rep["cosim"]["ii"] == rep["rtl"]["ii"]
    assert rep["fits_budget"] and rep["fits_judged_on"] == "synth"


def test_an_ii_a_network_cannot_reach_is_refused_before_anything_is_written(tmp_path):
    from codesign.core.layers import Flatten

    rng = np.random.default_rng(0)
    img = Network("img", (4, 4, 1), [Flatten("flat"), Dense("fc", rng.normal(size=(16, 3)), np.zeros(3)),
                                     Output("out")])
    from codesign.app import flow

    with pytest.raises(ConfigError, match=r"^budget ii=8: network 'img' streams 16 pixels per image, one a cycle at "
                                          r"most, so its II \(cycles per image\) is at least 16; give ii >= 16$"):
        flow.run_flow(tmp_path / "o", img, None, "arty-a7-35", "lut=0.5,ii=8")
    assert not (tmp_path / "o").exists()
