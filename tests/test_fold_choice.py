"""The fold the budget asks for (codesign.compress.fold_choice): the smallest II whose folded design fits."""

from __future__ import annotations

import pytest

from codesign.compress.fold_choice import candidate_iis, reuse_at, smallest_fitting_fold, with_reuse
from codesign.compress.fold_cost import network_folded_cost
from codesign.errors import BudgetError
from rtl_sim.folded import emit_folded_verilog
from tests.test_folded import _random_net

FAMILY = "xc7"


@pytest.fixture(scope="module")
def net():
    return _random_net()


@pytest.fixture(scope="module")
def parallel_lut(net) -> int:
    return network_folded_cost(net, 1, FAMILY)["lut"]


def test_a_budget_the_parallel_design_fits_keeps_every_layer_parallel(net, parallel_lut):
    f = smallest_fitting_fold(net, {"lut": parallel_lut, "dsp": 0}, FAMILY)
    assert f.ii == 1 and set(f.reuse.values()) == {1}


@pytest.mark.parametrize("share", [0.6, 0.3])
def test_a_tighter_budget_takes_the_smallest_ii_that_fits(net, parallel_lut, share):
    limits = {"lut": int(parallel_lut * share)}
    f = smallest_fitting_fold(net, limits, FAMILY)
    iis = candidate_iis(net)
    assert f.ii > 1 and f.cost["lut"] <= limits["lut"]
    tried = [t for t in iis if max(reuse_at(net, t).values()) < max(f.reuse.values())]
    assert all(network_folded_cost(net, reuse_at(net, t), FAMILY)["lut"] > limits["lut"] for t in tried)


def test_every_layer_is_folded_to_the_ii_capped_at_its_nonzero_weights(net):
    nonzero = {l.name: int((l.weight != 0).sum()) for l in net.weighted_layers()}
    assert reuse_at(net, 20) == {n: min(20, k) for n, k in nonzero.items()}


def test_the_rtl_of_the_chosen_fold_has_the_ii_the_cost_model_priced(net, parallel_lut):
    f = smallest_fitting_fold(net, {"lut": int(parallel_lut * 0.5)}, FAMILY)
    d = emit_folded_verilog(with_reuse(net, f.reuse))  # each layer's own reuse, as the RTL step reads it
    assert d.ii == f.ii


def test_a_budget_no_fold_meets_names_the_binding_resource():
    with pytest.raises(BudgetError, match=r"does not fit even folded to II \d+ on xc7: lut [\d,]+ > 10; allow"):
        smallest_fitting_fold(_random_net(), {"lut": 10}, FAMILY)
