"""CNN compression: QAT equals the reference, channel pruning shrinks the next layer, the conv cost
model, default-precision PTQ and the budget search on a small CNN (the full digits-cnn run is slow)."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from codesign.board import load_board
from codesign.budget import Budget
from codesign.compress.channels import (
    channel_report,
    channel_scores,
    prune_channels,
    remove_unit,
    shrink,
)
from codesign.compress.conv_cost import cnn_parts, kernel_dense, live_outputs
from codesign.compress.cost import dense_cost, network_cost, total_cost
from codesign.compress.prune import prune_weights, scores
from codesign.compress.qat import Precision
from codesign.compress.qcnn import assign_types, network_from_qcnn, qcnn_from_network
from codesign.compress.quantize import quantize_network
from codesign.compress.search import Schedule, compress, train
from codesign.core.layers import Conv2D, Dense, Flatten, MaxPool2D, Output, ReLU
from codesign.core.network import Network
from codesign.errors import LayerError

BOARD = load_board("pynq-z2")


def _he(rng, *shape):
    return rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)


def small_cnn(rng, c1=4, c2=6, padding="valid") -> Network:
    """conv3x3 -> ReLU -> max-pool 2 -> conv3x3 -> ReLU -> Flatten -> Dense on 8x8x1 (digits-cnn's shape)."""
    layers = [Conv2D("conv1", _he(rng, 3, 3, 1, c1), np.zeros(c1), padding=padding), ReLU("relu1"),
              MaxPool2D("pool1", (2, 2)), Conv2D("conv2", _he(rng, 3, 3, c1, c2), np.zeros(c2)), ReLU("relu2"),
              Flatten("flatten")]
    n_flat = int(np.prod(Network("t", (8, 8, 1), layers).output_shape))
    layers += [Dense("fc", _he(rng, n_flat, 10), np.zeros(10)), Output("output", "softmax")]
    return Network("small-cnn", (8, 8, 1), layers)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small tensors: one torch thread is faster than two on a busy machine (see search.TRAIN_THREADS)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(digits):
    shape = (8, 8, 1)
    return dataclasses.replace(digits, X_train=digits.X_train.reshape(-1, *shape),
                               X_val=digits.X_val.reshape(-1, *shape), X_test=digits.X_test.reshape(-1, *shape))


@pytest.fixture(scope="module")
def cnn_float(images):
    """The small CNN trained in float for a few epochs (the teacher)."""
    torch.manual_seed(0)
    model = qcnn_from_network(small_cnn(np.random.default_rng(0)))
    train(model, images, 6, 3e-3, seed=0)
    return network_from_qcnn(model, "small-cnn", {})


@pytest.fixture
def qcnn(cnn_float, images):
    model = qcnn_from_network(cnn_float)
    assign_types(model, Precision(4, 6, 10, images.input_type), images.X_train)
    return model


def _qat_out(model, X):
    with torch.no_grad():
        return model(torch.tensor(X, dtype=torch.float64)).numpy()


@pytest.mark.parametrize("prec", [Precision(3, 6, 10), Precision(6, 8, 12)])
def test_qat_cnn_forward_equals_the_integer_reference_bit_for_bit(cnn_float, images, prec):
    model = qcnn_from_network(cnn_float)
    assign_types(model, Precision(prec.weight_bits, prec.act_bits, prec.out_bits, images.input_type), images.X_train)
    net = network_from_qcnn(model, "q", {})
    qat = _qat_out(model, images.X_test)
    ref = net.forward(images.X_test)
    assert np.array_equal(qat, ref)
    assert np.array_equal(np.argmax(qat, axis=1), np.argmax(ref, axis=1))


def test_qat_cnn_with_same_padding_and_strides_equals_the_reference(images, rng):
    layers = [Conv2D("c1", _he(rng, 3, 3, 1, 3), rng.normal(size=3) * 0.1, strides=(2, 1), padding="same"),
              ReLU("r1"), Conv2D("c2", _he(rng, 2, 2, 3, 4), np.zeros(4), padding="same"), Flatten("f"),
              Dense("fc", _he(rng, 4 * 8 * 4, 10), np.zeros(10)), Output("o")]
    model = qcnn_from_network(Network("pad", (8, 8, 1), layers))
    assign_types(model, Precision(5, 7, 12, images.input_type), images.X_train)
    assert np.array_equal(_qat_out(model, images.X_test), network_from_qcnn(model, "q", {}).forward(images.X_test))


def test_average_pooling_trains_and_exports_exactly(images, rng):
    from codesign.core import layers as L

    if not hasattr(L, "AvgPool2D"):
        pytest.fail("the IR has no AvgPool2D")
    layers = [Conv2D("c1", _he(rng, 3, 3, 1, 4), np.zeros(4), padding="same"), ReLU("r1"), L.AvgPool2D("ap", (2, 2)),
              Conv2D("c2", _he(rng, 3, 3, 4, 6), np.zeros(6)), ReLU("r2"), L.GlobalAvgPool2D("gap"),
              Dense("fc", _he(rng, 6, 10), np.zeros(10)), Output("o")]
    model = qcnn_from_network(Network("avg", (8, 8, 1), layers))
    assign_types(model, Precision(6, 8, 12, images.input_type), images.X_train)
    net = network_from_qcnn(model, "q", {})
    assert [l.kind for l in net.layers if "Pool" in l.kind] == ["AvgPool2D", "GlobalAvgPool2D"]
    assert np.array_equal(_qat_out(model, images.X_test), net.forward(images.X_test))


def test_relu_after_average_pooling_is_refused_naming_the_layer(rng):
    from codesign.core import layers as L

    layers = [Conv2D("c1", _he(rng, 3, 3, 1, 2), np.zeros(2)), L.AvgPool2D("ap", (2, 2)), ReLU("late_relu"),
              Flatten("f"), Dense("fc", _he(rng, 18, 10), np.zeros(10))]
    with pytest.raises(LayerError, match=r"^layer 'late_relu': CNN compression expects each ReLU right after a Conv, "
                                         r"Dense or Add that nothing else reads \(max-pooling between them is fine\)$"):
        qcnn_from_network(Network("bad", (8, 8, 1), layers))


def _live_channel(qcnn, stage: int) -> int:
    """A channel of the stage that shrink keeps as it is (weights that can lift it above zero)."""
    w = qcnn.weighted()[stage].effective_weight().detach().numpy()
    return int(np.argmax((w > 0).reshape(-1, w.shape[-1]).sum(axis=0)))


def test_removing_a_channel_removes_the_next_convs_input_channel(qcnn, images):
    before = shrink(network_from_qcnn(qcnn, "q", {}))
    j = _live_channel(qcnn, 0)
    remove_unit(qcnn, 0, j)
    assert not qcnn.weighted()[1].mask.numpy()[:, :, j, :].any()
    net = network_from_qcnn(qcnn, "q", {})
    small = shrink(net)
    n = before.layer("conv1").weight.shape[-1] - 1
    assert small.layer("conv1").weight.shape[-1] == n and small.layer("conv2").weight.shape[-2] == n
    assert np.array_equal(small.forward(images.X_test), net.forward(images.X_test))


def test_removing_a_channel_before_flatten_removes_its_dense_rows(qcnn, images):
    before = shrink(network_from_qcnn(qcnn, "q", {}))
    remove_unit(qcnn, 1, _live_channel(qcnn, 1))  # conv2's output is 1x1: one row of fc per channel
    net = network_from_qcnn(qcnn, "q", {})
    small = shrink(net)
    n = before.layer("conv2").weight.shape[-1] - 1
    assert small.layer("conv2").weight.shape[-1] == n and small.layer("fc").weight.shape[0] == n
    assert np.array_equal(small.forward(images.X_test), net.forward(images.X_test))
    report = {r["name"]: r for r in channel_report(small, before)}
    assert (report["conv2"]["kept"], report["conv2"]["pruned"]) == (n, 1)


def test_shrink_drops_a_channel_that_never_rises_above_zero(qcnn, images):
    with torch.no_grad():
        conv1 = qcnn.weighted()[0]
        conv1.weight[..., 0] = -conv1.weight[..., 0].abs()  # inputs are non-negative: the sum stays <= 0
        conv1.bias[0] = -1.0
    net = network_from_qcnn(qcnn, "q", {})
    small = shrink(net)
    assert small.layer("conv1").weight.shape[-1] < net.layer("conv1").weight.shape[-1]
    assert np.array_equal(small.forward(images.X_test), net.forward(images.X_test))


def test_a_pruned_channel_costs_less_in_both_layers(qcnn):
    net = shrink(network_from_qcnn(qcnn, "q", {}))
    before = {p["name"]: p for p in cnn_parts(net, BOARD, "lut")}
    remove_unit(qcnn, 0, _live_channel(qcnn, 0))
    after = {p["name"]: p for p in cnn_parts(shrink(network_from_qcnn(qcnn, "q", {})), BOARD, "lut")}
    assert after["conv1"]["kernel"]["lut"] < before["conv1"]["kernel"]["lut"]
    assert after["conv2"]["kernel"]["lut"] < before["conv2"]["kernel"]["lut"]
    line = lambda parts: parts["conv2"]["stream"]["delay_line"]["bits"]  # noqa: E731
    c = net.layer("conv2").weight.shape[-2]
    assert line(after) == line(before) * (c - 1) // c


def test_conv_kernel_is_priced_as_a_dense_over_the_window(qcnn):
    net = network_from_qcnn(qcnn, "q", {})
    conv2 = net.layer("conv2")
    t_in = net.tensor_types()[net.layers.index(net.layer("pool1"))]
    parts = {p["name"]: p for p in cnn_parts(net, BOARD, "lut")}
    relu_t = net.layer("relu2").result_type
    assert parts["conv2"]["kernel"] == dense_cost(kernel_dense(conv2), t_in, "xc7", "lut", relu_t, True,
                                                  clock_mhz=BOARD.clock_mhz).as_dict()
    # the delay line: two rows of the 3-wide input and two pixels of conv1's non-constant channels
    live = int(live_outputs(kernel_dense(net.layer("conv1")), net.input_type, True).sum())
    assert parts["conv2"]["stream"]["delay_line"]["bits"] == (2 * 3 + 2) * live * t_in.width
    assert set(network_cost(net, BOARD, "lut")) == {"conv1", "pool1", "conv2", "flatten", "fc"}


def test_hardware_channel_scores_rank_every_prunable_channel(qcnn, images):
    ranked = channel_scores(qcnn, images.X_train[:200], images.y_train[:200], "classification", BOARD, "lut")
    assert sorted((k, j) for _, k, j in ranked) == [(0, j) for j in range(4)] + [(1, j) for j in range(6)]
    assert prune_channels(qcnn, ranked, 3) == 3


def test_unstructured_pruning_masks_kernel_weights_and_they_stay_zero(qcnn, images):
    ranked = scores(qcnn, images.X_train[:200], images.y_train[:200], images.task, "hardware")
    assert prune_weights(qcnn, ranked, 60) == 60
    masks = [s.mask.clone() for s in qcnn.weighted()]
    train(qcnn, images, 1, 1e-2, seed=0)
    for stage, m in zip(qcnn.weighted(), masks):
        assert torch.equal(stage.mask, m) and torch.all(stage.effective_weight().detach()[m == 0] == 0)


def test_default_precision_quantizes_a_float_cnn_exactly(cnn_float, images):
    q = quantize_network(cnn_float, images.input_type, 8, result_bits=16, calib=images.X_train)
    assert all(l.quantized for l in q.weighted_layers())
    agree = np.mean(np.argmax(q.forward(images.X_test), 1) == np.argmax(cnn_float.forward(images.X_test), 1))
    assert agree > 0.97
    assert total_cost(network_cost(q, BOARD))["lut"] > 0


TINY = Schedule(epochs=3, finetune_epochs=1, final_epochs=2, prune_steps=2, extra_steps=2)


@pytest.mark.parametrize("method", ["structured", "hardware"])
def test_search_dispatches_a_cnn_and_fits_the_budget(cnn_float, digits, method):
    model = qcnn_from_network(cnn_float)  # where the search starts: the float network typed at the precision
    assign_types(model, Precision(4, 6, 10, digits.input_type), digits.X_train.reshape(-1, 8, 8, 1))
    start = total_cost(network_cost(network_from_qcnn(model, "q", {}), BOARD, "lut"))
    budget = Budget.parse(f"lut={start['lut'] * 3 // 4},dsp=0", BOARD)
    r = compress(cnn_float, digits, budget, method=method, schedule=TINY, precisions=(Precision(4, 6, 10),))
    assert r.cost["lut"] <= budget.limits["lut"] and r.cost["dsp"] == 0
    assert r.network.input_shape == (8, 8, 1) and r.score > 0.5
    kept = r.network.metadata["channels"]
    assert kept["fc"]["pruned"] == 0 and set(kept) == {"conv1", "conv2", "fc"}
    if method == "structured":
        assert kept["conv1"]["pruned"] + kept["conv2"]["pruned"] > 0


@pytest.mark.slow
def test_digits_cnn_compresses_to_95_percent_within_a_third_of_pynq_z2(digits):
    from codesign.importers.builtin import builtin_model

    net = builtin_model("digits-cnn")
    budget = Budget.parse("lut=0.3,dsp=0", BOARD)
    r = compress(net, digits, budget, method="hardware")
    assert r.score >= 0.95 and r.cost["lut"] <= budget.limits["lut"]
    q = r.network
    X = digits.X_test.reshape(-1, *q.input_shape)
    small = copy.deepcopy(q)
    assert np.array_equal(shrink(small).forward(X), q.forward(X))


def _stream_yosys(net, datapath):
    """Yosys LUT/FF of every stage of the streaming design (per-stage synthesis, as the flow estimates)."""
    from rtl_sim.stream import emit_stream_verilog, is_streaming
    from rtl_sim.synth import stage_networks, synthesize
    from rtl_sim.verilog import emit_verilog

    tot = {"lut": 0, "ff": 0}
    for _, sub in stage_networks(net):
        kw = {"datapath": datapath} if datapath else {}
        d = (emit_stream_verilog(sub, mult="lut", stream_out=True, **kw) if is_streaming(sub)
             else emit_verilog(sub, mult="lut", **kw))
        r = synthesize(d.verilog, d.top, "xc7", dsp=False)
        tot = {k: tot[k] + r[k] for k in tot}
    return tot


@pytest.fixture(scope="module")
def digits_cnn_q4(digits):
    """The built-in digits-cnn typed at 4-bit weights (QAT's types, no training): what the budget search
    starts from at its cheapest precisions."""
    from codesign.importers.builtin import builtin_model
    from codesign.importers.data import shaped_for

    net = builtin_model("digits-cnn")
    d = shaped_for(digits, net.input_shape)
    model = qcnn_from_network(net)
    assign_types(model, Precision(4, 6, 10, d.input_type), d.X_train)
    return shrink(network_from_qcnn(model, "digits_cnn_q4", {}))


@pytest.mark.slow
def test_streaming_cnn_cost_is_within_15_percent_of_yosys(digits_cnn_q4):
    model = total_cost(network_cost(digits_cnn_q4, BOARD, "lut"))
    yosys = _stream_yosys(digits_cnn_q4, None)  # the emitters' default kernel datapath
    assert abs(model["lut"] / yosys["lut"] - 1) <= 0.15 and abs(model["ff"] / yosys["ff"] - 1) <= 0.15


@pytest.fixture(scope="module")
def cnn_searched(cnn_float, digits):
    """The small CNN searched by the one loop (one precision, TINY schedule) into 3/4 of its typed cost."""
    model = qcnn_from_network(cnn_float)
    assign_types(model, Precision(4, 6, 10, digits.input_type), digits.X_train.reshape(-1, 8, 8, 1))
    start = total_cost(network_cost(network_from_qcnn(model, "q", {}), BOARD, "lut"))
    budget = Budget.parse(f"lut={start['lut'] * 3 // 4},dsp=0", BOARD)
    return budget, compress(cnn_float, digits, budget, schedule=TINY, precisions=(Precision(4, 6, 10),))


def test_a_cnn_synthesis_puts_over_the_budget_is_tightened_by_the_model_error_found(cnn_searched, cnn_float,
                                                                                   digits):
    from codesign.compress.search import tighten

    budget, r = cnn_searched
    measured = {"lut": int(r.cost["lut"] * 1.15), "dsp": 0}  # as if Yosys counted 15 % more than the model
    t = tighten(r, cnn_float, digits, budget, measured, TINY)
    aim = int(budget.limits["lut"] * (1 - TINY.headroom) / 1.15)
    assert t.cost["lut"] <= aim < r.cost["lut"]
    assert t.network.n_nonzero < r.network.n_nonzero and t.precision == r.precision
    assert t.history[-1]["tightened"]["lut"] == pytest.approx(1.15, abs=1e-3) and t.epochs > r.epochs
    assert set(t.network.metadata["channels"]) == {"conv1", "conv2", "fc"}


def test_a_kernel_weights_importance_is_the_loss_its_removal_costs_to_second_order(qcnn, images):
    """``loss_importance`` of a kernel weight is ``w² · mean_n g_n²`` with ``g_n`` its per-sample gradient
    (summed over every pixel the kernel serves), checked against autograd sample by sample."""
    from codesign.compress.prune import loss_importance

    X, y = images.X_train[:12], images.y_train[:12]
    imp = loss_importance(qcnn, X, y, "classification")
    conv2 = qcnn.weighted()[1]
    g2 = torch.zeros_like(conv2.weight)
    for i in range(len(X)):
        qcnn.zero_grad()
        out = qcnn(torch.tensor(X[i : i + 1]))
        torch.nn.functional.cross_entropy(out, torch.as_tensor(y[i : i + 1])).backward()
        g2 += conv2.weight.grad**2  # the straight-through gradient reaches the weight as at its sums
    with torch.no_grad():
        want = (conv2.effective_weight() ** 2 * g2 / len(X)).numpy()
    assert imp[1].shape == tuple(conv2.weight.shape)
    assert np.allclose(imp[1], want, rtol=1e-9, atol=1e-15)


def test_kernel_weights_are_ranked_by_loss_per_lut(qcnn, images):
    from codesign.compress.prune import loss_importance, weight_costs

    X, y = images.X_train[:200], images.y_train[:200]
    imp, costs = loss_importance(qcnn, X, y, "classification"), weight_costs(qcnn, BOARD.synth_family, 50.0)
    ranked = scores(qcnn, X, y, "classification", "hardware", BOARD.synth_family)
    for k, stage in enumerate(qcnn.weighted()):
        live = stage.mask.numpy() > 0
        assert np.array_equal(ranked[k][live], (imp[k] / np.maximum(costs[k], 1e-3))[live])
        assert np.all(np.isinf(ranked[k][~live]))


def test_equalization_leaves_a_cnns_float_function_unchanged_and_balances_its_channels(cnn_float, images):
    from codesign.compress.qcnn import equalize

    model = qcnn_from_network(cnn_float)
    x = torch.tensor(images.X_test[:256])
    with torch.no_grad():
        before = model(x)
        equalize(model)
        assert torch.allclose(model(x), before, rtol=1e-10, atol=1e-12)
        c1, c2 = model.weighted()[:2]
        assert torch.allclose(c1.weight.abs().amax(dim=(0, 1, 2)), c2.weight.abs().amax(dim=(0, 1, 3)), rtol=0.05)


def test_the_other_rankings_screened_below_float_include_whole_channels_for_a_cnn_only(qcnn):
    from codesign.compress.search import screen_rankings

    assert screen_rankings(qcnn) == ("magnitude", "structured")
    mlp = Network("mlp", (4,), [Dense("fc", np.ones((4, 3))), Output("output", "linear")])
    assert screen_rankings(qcnn_from_network(mlp)) == ("magnitude",)


@pytest.fixture(scope="module")
def cnn_tight(images, digits):
    """The small CNN trained longer than ``cnn_float``, searched into 55 % of its typed cost (not folded: within
    twice the budget), two precisions screened: well below the float network on validation."""
    torch.manual_seed(0)
    model = qcnn_from_network(small_cnn(np.random.default_rng(0)))
    train(model, images, 30, 3e-3, seed=0)
    cnn_float = network_from_qcnn(model, "small-cnn", {})
    model = qcnn_from_network(cnn_float)
    assign_types(model, Precision(4, 6, 10, digits.input_type), digits.X_train.reshape(-1, 8, 8, 1))
    start = total_cost(network_cost(network_from_qcnn(model, "q", {}), BOARD, "lut"))
    budget = Budget.parse(f"lut={start['lut'] * 55 // 100},dsp=0", BOARD)
    return compress(cnn_float, digits, budget, schedule=TINY, precisions=(Precision(3, 6, 10), Precision(4, 6, 10)))


def test_a_cnn_search_well_below_float_screens_channel_pruning_at_its_best_precision(cnn_tight):
    r = cnn_tight
    screens = [h for h in r.history if h.get("ranking") and not h.get("refined")]
    best_screened = max((h for h in r.history if "ranking" not in h and "val" in h), key=lambda h: h["val"])
    assert [h["ranking"] for h in screens] == ["magnitude", "structured"]
    assert all(h["precision"] == best_screened["precision"] for h in screens)
