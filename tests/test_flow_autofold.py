"""Without ``--reuse`` the flow folds by itself when the fully parallel design does not fit; without data the
result types are sized on random inputs over the input type, and a network whose output does not depend on its
input is named before synthesis reduces it to a constant (hls4ml's 16-100^5-5 MLP)."""

from __future__ import annotations

import numpy as np
import pytest
from codesign.app import flow
from codesign.app.artifact import Artifact
from codesign.app.fold_step import fold_when_over
from codesign.board import load_board
from codesign.budget import Budget
from codesign.compress.fold_choice import smallest_fitting_fold, with_reuse
from codesign.compress.fold_cost import network_folded_cost
from codesign.core.layers import Dense, Output, ReLU
from codesign.core.network import Network

SAME_OUTPUT = "gives the same output for all"


def _float_net(n_hidden: int, scale: float = 1.0) -> Network:
    rng = np.random.default_rng(0)
    layers = [Dense("fc1", rng.normal(0, 0.5, (16, n_hidden)) * scale, rng.normal(0, 0.1, n_hidden)), ReLU("r1"),
              Dense("fc2", rng.normal(0, 0.3, (n_hidden, 5)), rng.normal(0, 0.1, 5)), Output("out")]
    return Network("mlp", (16,), layers)


def _compressed(tmp_path, net: Network, board: str) -> Artifact:
    """``net`` quantized by the flow's compress step with no data and no budget, for ``board``."""
    art = Artifact(tmp_path / "a")
    art.claim()
    flow.step_compress(art, "mlp", None, Budget.parse(None, load_board(board)), loaded=net)
    return art


def test_without_data_the_result_types_are_sized_on_random_inputs_over_the_input_type(tmp_path):
    rep = _compressed(tmp_path, _float_net(8), "arty-a7-35").report()
    assert "512 random inputs uniform over the input type" in rep["precision"]
    assert not any(SAME_OUTPUT in n for n in rep["notes"])


def test_a_network_whose_output_ignores_its_input_is_named_in_the_notes(tmp_path):
    rep = _compressed(tmp_path, _float_net(8, scale=1e-12), "arty-a7-35").report()
    assert any(SAME_OUTPUT in n for n in rep["notes"])


def test_the_flow_folds_by_itself_when_the_parallel_design_does_not_fit_the_board(tmp_path):
    art = _compressed(tmp_path, _float_net(64), "arty-a7-35")  # 16-bit inputs: 46,872 LUTs in parallel, over 20,800
    assert art.report()["fits_budget"] is False
    unfolded = Network.load(art.dir)
    spec = fold_when_over(art)
    b = load_board("arty-a7-35")
    fold = smallest_fitting_fold(unfolded, {"lut": int(b.lut * 0.96), "dsp": b.dsp, "bram": b.bram}, b.synth_family)
    assert spec == ",".join(f"{k}={v}" for k, v in fold.reuse.items()) and fold.ii > 1
    assert {l.name: l.reuse for l in Network.load(art.dir).layers if isinstance(l, Dense)} == fold.reuse
    assert any("folded the Dense layers by itself" in n and f"II {fold.ii} cycles" in n
               for n in art.report()["notes"])
    assert flow.step_rtl(art, reuse=spec)["kind"] == "folded"


def test_a_network_that_fits_stays_fully_parallel(tmp_path):
    art = _compressed(tmp_path, _float_net(8), "arty-a7-35")
    assert fold_when_over(art) is None
    assert all(l.reuse == 1 for l in Network.load(art.dir).layers if isinstance(l, Dense))


def test_a_saved_fold_does_not_change_the_price_of_the_fully_parallel_layers(tmp_path):
    """A second ``--reuse auto`` reads the network the first one saved: its R = 1 candidate is the parallel design."""
    net = Network.load(_compressed(tmp_path, _float_net(64), "arty-a7-35").dir)
    ones = {l.name: 1 for l in net.layers if isinstance(l, Dense)}
    saved = with_reuse(net, {k: 16 for k in ones})
    assert network_folded_cost(saved, ones, "xc7") == network_folded_cost(net, ones, "xc7")


@pytest.mark.slow
def test_flow_folds_the_8_bit_digits_mlp_by_itself_on_an_arty_and_it_is_bit_exact_at_the_designed_ii(tmp_path):
    """No budget, no --reuse: 32,209 LUTs in parallel by the model, over the Arty's 20,800 (less 4 %)."""
    rep = flow.run_flow(tmp_path / "run", "digits-mlp", "digits", "arty-a7-35", None, samples=2000, energy=False)
    assert any("folded the Dense layers by itself" in n for n in rep["notes"])
    assert rep["rtl"]["kind"] == "folded" and rep["rtl"]["ii"] > 1 and rep["hls"]["csim_bit_exact"]
    assert rep["cosim"]["bit_exact"] and (rep["cosim"]["samples"], rep["cosim"]["ii"]) == (2000, rep["rtl"]["ii"])
    assert rep["fits_budget"] and rep["fits_judged_on"] == "synth"
