"""The fast activity model (codesign.core.activity_model) and the energy budget it prices (``energy=50nJ``).

Its check against the simulated netlist shares tests/test_energy.py's tiny-layer simulation, so it lives there."""

from __future__ import annotations

import numpy as np
import pytest

from codesign.board import load_board
from codesign.budget import format_budget, parse_budget
from codesign.compress.calibration import small_mlp
from codesign.core.activity_model import fast_energy, stage_features
from codesign.errors import BudgetError

ARTY = "arty-a7-35"


@pytest.mark.parametrize("spec, want", [("energy=50nJ", {"energy": 50_000}), ("energy=2.5uJ", {"energy": 2_500_000}),
                                        ("energy=2.5µJ", {"energy": 2_500_000}),
                                        ("lut=0.5,energy = 800pJ", {"lut": 10_400, "energy": 800}),
                                        ("energy=1e3pJ,dsp=0", {"energy": 1000, "dsp": 0})])
def test_energy_budget_syntax(spec, want):
    assert parse_budget(spec, load_board(ARTY)) == want


@pytest.mark.parametrize("spec, msg", [
    ("energy=50", r"^malformed energy budget '50': write a number and a unit per inference, e\.g\. 'energy=50nJ' or "
                  r"'energy=2\.5uJ' \(units: pJ, nJ, uJ, mJ\)$"),
    ("energy=5kJ", r"^malformed energy budget '5kJ': write a number and a unit"),
    ("energy=-3nJ", r"^malformed energy budget '-3nJ'"),
    ("energy=0.2pJ", r"^energy budget '0\.2pJ' is below 1 pJ per inference; give at least 1pJ$"),
])
def test_malformed_energy_budgets_are_refused_naming_the_parameter(spec, msg):
    with pytest.raises(BudgetError, match=msg):
        parse_budget(spec, load_board(ARTY))


def test_an_energy_budget_as_a_dict_takes_the_same_units():
    assert parse_budget({"lut": 100, "energy": "3nJ"}, load_board(ARTY)) == {"lut": 100, "energy": 3000}


def test_budget_prints_energy_with_its_unit():
    assert format_budget({"lut": 5200, "energy": 1250}) == "lut=5200,energy=1.25nJ"


def random_inputs(n: int, seed: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, size=(n, 16))


def test_constant_inputs_toggle_nothing():
    feats = stage_features(small_mlp(), np.full((50, 16), 37))
    assert [sum(f.toggles.values()) for f in feats] == [0.0, 0.0, 0.0]


def test_input_toggles_are_the_bit_flips_between_consecutive_samples():
    q = random_inputs(40)
    words = q & 0xFF  # the 8-bit input type, two's complement
    flips = sum(bin(int(v)).count("1") for v in np.bitwise_xor(words[1:], words[:-1]).ravel())
    assert stage_features(small_mlp(), q)[0].toggles["input"] * 39 == pytest.approx(flips, abs=1e-9)


def test_pipelining_for_a_faster_clock_adds_registers_and_their_toggles():
    q = random_inputs(60)
    flat = stage_features(small_mlp(), q)[0]
    fast = stage_features(small_mlp(), q, 250.0, "xc7")[0]
    assert fast.cycles > flat.cycles and fast.register_bits > flat.register_bits
    assert fast.toggles["register"] > flat.toggles["register"] and fast.toggles["sum"] == flat.toggles["sum"]


def test_fast_energy_has_the_simulated_models_shape_and_falls_with_pruning():
    q = random_inputs(100)
    net = small_mlp()
    e = fast_energy(net, q, "xc7", "xc7a35ticsg324-1L", 100.0)
    assert list(e["mid"]["dynamic_layers_j"]) == ["fc1", "fc2", "fc3"]
    assert e["low"]["dynamic_j"] < e["mid"]["dynamic_j"] < e["high"]["dynamic_j"]
    assert e["mid"]["total_j"] == pytest.approx(e["mid"]["dynamic_j"] + e["mid"]["static_j"])
    net.layers[0].weight[: 8] = 0  # half the first layer's inputs pruned away
    assert fast_energy(net, q, "xc7", "xc7a35ticsg324-1L", 100.0)["mid"]["dynamic_j"] < e["mid"]["dynamic_j"]


@pytest.mark.slow
def test_an_energy_budget_that_binds_is_met_by_the_fast_model(digits_float, digits):
    """A short search of the digits MLP under 1 nJ per inference on the Arty (its static energy at 10^8
    inferences/s is 0.75 nJ): the result's fast-model energy is within the budget, and the LUTs alone would
    not have asked for that much pruning."""
    from codesign.budget import Budget
    from codesign.compress.energy_cost import energy_pj
    from codesign.compress.qat import Precision
    from codesign.compress.search import Schedule, compress

    short = Schedule(epochs=3, finetune_epochs=1, final_epochs=4, prune_steps=4)
    board = load_board(ARTY)
    r = compress(digits_float, digits, Budget.parse("energy=1nJ,dsp=0", board), seed=3, schedule=short,
                 precisions=(Precision(4, 6, 10),))
    assert r.cost["energy"] <= 1000
    assert energy_pj(r.network, board, digits.X_val, "lut") == r.cost["energy"]
    assert r.cost["lut"] < board.lut  # (no LUT budget was given)
