"""The ``digits`` search: weights rounded to fewer CSD digits, on the layer's grid and held there."""

import numpy as np
import pytest
import torch

from codesign.board import load_board
from codesign.budget import Budget
from codesign.compress.digits import digit_count, digit_scores, frozen, lower_digit, remove_digits
from codesign.compress.qat import Precision
from codesign.compress.qcnn import assign_types, network_from_qcnn, qcnn_from_network
from codesign.compress.search import Schedule, compress, train
from codesign.core import fixed
from codesign.core.arith import csd_count, csd_digits

SHORT = Schedule(epochs=3, finetune_epochs=1, final_epochs=2, prune_steps=4, extra_steps=8)


def test_lower_digit_removes_the_lowest_csd_digit():
    q = np.arange(-300, 301)
    low = lower_digit(q)
    lowest = np.array([1 << min((k for k, _ in csd_digits(abs(int(v)))), default=0) for v in q])
    nz = q != 0
    assert np.array_equal(csd_count(low[nz]), csd_count(q[nz]) - 1)
    assert np.array_equal(np.abs(low - q)[nz], lowest[nz])
    assert list(lower_digit(np.array([7, 5, 6, -3, 11, 0]))) == [8, 4, 8, -4, 12, 0]


@pytest.fixture
def typed(digits_float, digits):
    model = qcnn_from_network(digits_float)
    assign_types(model, Precision(6, 8, 12, digits.input_type), digits.X_train)
    return model


def test_a_rounded_weight_stays_on_the_grid_through_fine_tuning_and_matches_the_reference(typed, digits):
    before = digit_count(typed)
    ranking = digit_scores(typed, digits.X_train, digits.y_train, digits.task)
    assert remove_digits(typed, ranking, 200) >= 200
    assert digit_count(typed) <= before - 200
    held = [(s, frozen(s) > 0) for s in typed.weighted()]
    rounded = [s.effective_weight().detach()[f].clone() for s, f in held]
    assert sum(int(f.sum()) for _, f in held) > 0
    train(typed, digits, 1, 1e-2, seed=0)
    for (s, f), w in zip(held, rounded):
        assert torch.equal(s.effective_weight().detach()[f], w)
        assert np.array_equal(fixed.quantize(w.numpy(), s.weight_type) * 2.0 ** -s.weight_type.frac, w.numpy())
    net = network_from_qcnn(typed, "q", {})
    with torch.no_grad():
        qat = typed(torch.tensor(digits.X_test, dtype=torch.float64)).numpy()
    assert np.array_equal(qat, net.forward(digits.X_test))


@pytest.fixture(scope="module")
def searched(digits_float, digits):
    """The digits MLP searched with ``method="digits"`` on a short schedule at 6-bit weights."""
    budget = Budget.parse("lut=0.25,dsp=0", load_board("arty-a7-35"))
    r = compress(digits_float, digits, budget, method="digits", seed=0, schedule=SHORT,
                 precisions=(Precision(6, 8, 12),))
    return budget, r


@pytest.mark.slow  # about 10 s of training alone (30 s on a loaded machine); the step itself is tested above
def test_the_digits_search_fits_its_budget_with_fewer_digits_per_weight(searched, digits):
    budget, r = searched
    assert r.cost["lut"] <= budget.limits["lut"] and r.network.metadata["method"] == "digits"
    w = np.concatenate([l.weight[l.weight != 0] for l in r.network.weighted_layers()])
    assert np.mean(csd_count(w)) < 1.5  # 6-bit weights unrounded average about 2 digits
    with torch.no_grad():
        qat = r.model(torch.tensor(digits.X_test, dtype=torch.float64)).numpy()
    assert np.array_equal(qat, r.network.forward(digits.X_test))


@pytest.mark.slow
def test_a_digits_search_result_cosimulates_bit_exact(searched, digits, tmp_path):
    from codesign.core.verify import verification_inputs
    from rtl_sim.cosim import cosimulate, describe_mismatch, write_rtl

    net = searched[1].network
    write_rtl(net, tmp_path / "rtl")
    q = verification_inputs(net, digits.X_test, 2000)
    r = cosimulate(net, tmp_path / "rtl", tmp_path / "cosim", q, mode="bulk")
    assert r.mismatches == 0 and r.samples >= 2000 and r.bit_exact, describe_mismatch(r)
