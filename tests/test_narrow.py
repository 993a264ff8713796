"""The narrower dense start: a candidate the search trains only where pruning leaves little, kept only if it
validates better."""

import numpy as np
import pytest
import torch
from torch import nn

from codesign.app.flow import compress_network as compress
from codesign.compress.narrow import NARROW_KEPT, kept_fraction, narrow_wanted, narrowable, narrowed, widest_scale
from codesign.compress.qat import Precision
from codesign.compress.qcnn import qcnn_from_network
from codesign.compress.search import Schedule
from codesign.core.layers import Add, Conv2D, Dense, Flatten, MaxPool2D, Output, ReLU
from codesign.core.network import Network
from codesign.importers.torch_import import network_from_module

TINY = Schedule(epochs=4, finetune_epochs=2, final_epochs=2, prune_steps=4, screen=0.5, refine=2.0)
PRECS = (Precision(3, 6, 10), Precision(4, 6, 10))


def _mlp(rng, widths=(16, 12, 8, 4)) -> Network:
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(Dense(f"fc{i}", rng.normal(0, 0.5, (a, b)), rng.normal(0, 0.1, b)))
        if i < len(widths) - 2:
            layers.append(ReLU(f"relu{i}"))
    return Network("mlp", (widths[0],), layers + [Output("output", "linear")])


def test_narrowing_scales_every_hidden_width_alike_and_keeps_the_outputs(rng):
    teacher = qcnn_from_network(_mlp(rng, (16, 40, 20, 4)))
    model = narrowed(teacher, 0.5, seed=0)
    assert [s.weight.shape[1] for s in model.stages] == [20, 10, 4]
    assert [s.weight.shape[0] for s in model.stages] == [16, 20, 10]
    assert all(float(s.mask.min()) == 1.0 for s in model.stages)  # dense
    assert [s.relu for s in model.stages] == [s.relu for s in teacher.stages]


def test_the_widest_scale_is_the_largest_whose_price_fits_the_aim():
    def priced(s):  # LUTs grow with the square of the width, as a dense MLP's weights do
        return {"lut": int(10000 * s * s), "dsp": 0}

    s = widest_scale(priced, {"lut": 2500, "dsp": 0}, 1.0)
    assert priced(s)["lut"] <= 2500 < priced(s + 0.01)["lut"]
    assert widest_scale(priced, {"lut": 2500, "dsp": 0}, 0.5) > s  # trained weights cheaper: wider
    assert widest_scale(priced, {"lut": 20000, "dsp": 0}, 1.0) == 1.0


def test_a_narrow_start_is_wanted_only_when_pruned_hard_and_below_the_float_network(rng):
    teacher = qcnn_from_network(_mlp(rng))
    pruned = qcnn_from_network(_mlp(rng))
    for s in pruned.stages:
        m = s.mask.view(-1)
        m[: int(len(m) * (1 - NARROW_KEPT / 2))] = 0.0
    assert kept_fraction(pruned, teacher) < NARROW_KEPT
    assert narrow_wanted(pruned, 0.90, teacher, 0.95, "classification")
    assert not narrow_wanted(pruned, 0.945, teacher, 0.95, "classification")  # within the gap
    assert not narrow_wanted(teacher, 0.90, teacher, 0.95, "classification")  # dense: not pruned hard


def _cnn(rng) -> Network:
    return Network("cnn", (6, 6, 1), [Conv2D("conv", rng.normal(0, 0.5, (3, 3, 1, 8)), np.zeros(8)), ReLU("relu"),
                                      MaxPool2D("pool", (2, 2)), Flatten("flat"),
                                      Dense("fc", rng.normal(0, 0.5, (32, 3)), np.zeros(3)), Output("output", "linear")])


def test_a_chain_is_narrowed_and_a_branched_network_is_not(rng):
    assert narrowable(qcnn_from_network(_mlp(rng)))
    assert narrowable(qcnn_from_network(_cnn(rng)))
    branched = Network("res", (4,), [Dense("d", rng.normal(size=(4, 4))), ReLU("r"), Dense("e", rng.normal(size=(4, 4))),
                                     Add("add", inputs=("e", "r")), Output("output", "linear")])
    assert not narrowable(qcnn_from_network(branched))


def test_narrowing_a_cnn_scales_its_channels_and_the_flattened_rows_with_them(rng):
    model = narrowed(qcnn_from_network(_cnn(rng)), 0.5, seed=0)
    conv, fc = model.weighted()
    assert tuple(conv.weight.shape) == (3, 3, 1, 4)
    assert tuple(fc.weight.shape) == (4 * 4, 3)  # 2x2 positions of 4 channels
    assert model(torch.zeros(2, 36, dtype=torch.float64)).shape == (2, 3)


def test_a_cnn_narrowed_by_one_from_the_teacher_is_the_teacher(rng):
    teacher = qcnn_from_network(_cnn(rng))
    X = torch.tensor(rng.normal(size=(5, 36)))
    with torch.no_grad():
        np.testing.assert_array_equal(narrowed(teacher, 1.0, 0, init="teacher")(X).numpy(), teacher(X).numpy())


@pytest.fixture(scope="module")
def small_float(digits):
    """A 64-24-10 float MLP trained on digits for a few epochs (96-97 %): cheap to price and to search."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    m = nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))
    X, y = torch.tensor(digits.X_train, dtype=torch.float32), torch.tensor(digits.y_train)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(10):
        for b in torch.randperm(len(X)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(m(X[b]), y[b]).backward()
            opt.step()
    return network_from_module(m.eval(), name="mlp24")


@pytest.fixture(scope="module")
def tight(small_float):
    """At 4 % of an Arty's LUTs on a short schedule: pruned hard, well below float."""
    return compress(small_float, "digits", "arty-a7-35", "lut=0.04,dsp=0,ii=1", seed=1, schedule=TINY,
                    precisions=PRECS)


def test_the_search_trains_a_narrow_start_where_the_budget_is_tight(tight):
    narrow = [h for h in tight.history if "narrow" in h]
    assert len(narrow) == 1
    assert narrow[0]["narrow"]["scale"] < 1.0 and narrow[0]["epochs"] > 0


def test_the_result_fits_the_budget(tight):
    assert tight.cost["lut"] <= tight.budget["lut"]


def test_the_baselines_never_train_a_narrow_start(small_float):
    r = compress(small_float, "digits", "arty-a7-35", "lut=0.04,dsp=0,ii=1", method="magnitude", seed=1,
                 schedule=TINY, precisions=PRECS)
    assert not any("narrow" in h for h in r.history)


def test_where_the_screened_best_is_well_below_float_the_magnitude_ranking_is_screened_too(tight):
    screens = [h for h in tight.history if h.get("ranking") == "magnitude" and not h.get("refined")]
    assert len(screens) == 1 and screens[0]["epochs"] < max(h["epochs"] for h in tight.history if h.get("refined"))


def test_the_search_returns_the_candidate_that_validates_best_of_all_it_tried(tight):
    from codesign.compress.search import score
    from codesign.importers.data import load_dataset

    d = load_dataset("digits", 1)
    vals = [h["val"] for h in tight.history if "val" in h]
    assert score(tight.model, d.X_val, d.y_val, d.task) == max(vals)  # the same model, the same sum
