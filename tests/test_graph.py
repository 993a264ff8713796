"""The graph IR: layers that name their inputs, Add and Concatenate, exact in the reference."""

import json

import numpy as np
import pytest

from codesign.core import fixed
from codesign.core.fixed import FixedType
from codesign.core.layers import Add, Concatenate, Dense, Output, ReLU
from codesign.core.network import INPUT, Network
from codesign.errors import LayerError
from tests.builders import random_dense

W = FixedType.parse("ap_fixed<4,1>")
B = FixedType.parse("ap_fixed<8,3>")


def _dense(name, n_in, n_out, seed, **kw):
    return random_dense(np.random.default_rng(seed), name, n_in, n_out, W, B, biases=(-64, 64), **kw)


def residual_net(result_type=None):
    """x -> a -> relu -> b, plus a shortcut dense s on the input; add; concatenate with the relu."""
    layers = [_dense("a", 4, 6, 1, result_type="ap_fixed<10,4,AP_RND,AP_SAT>"), ReLU("r"),
              _dense("b", 6, 6, 2, result_type="ap_fixed<12,5,AP_RND,AP_SAT>"),
              _dense("s", 4, 6, 3, inputs=(INPUT,)),
              Add("add", inputs=("b", "s"), result_type=result_type), Concatenate("cat", inputs=("add", "r")),
              Output("out")]
    return Network("res", (4,), layers, "ap_fixed<8,2>")


def _exact(values, t):
    return [int(v) for v in np.asarray(values).ravel()], t.frac


def test_add_is_the_exact_sum_with_aligned_binary_points():
    net = residual_net()
    x = np.random.default_rng(0).normal(size=(50, 4))
    outs = dict(zip([l.name for l in net.layers], net.trace_int(net.quantize_input(x))))
    b, s, add = outs["b"], outs["s"], outs["add"]
    frac = max(b.type.frac, s.type.frac)
    want = b.values.astype(object) * 2 ** (frac - b.type.frac) + s.values.astype(object) * 2 ** (frac - s.type.frac)
    assert add.type.frac == frac
    assert np.array_equal(add.values.astype(object), want)
    assert add.type.min_int <= min(want.ravel()) and max(want.ravel()) <= add.type.max_int


def test_add_casts_to_its_result_type():
    t = FixedType.parse("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
    exact, cast = residual_net(), residual_net(result_type=t)
    q = exact.quantize_input(np.random.default_rng(1).normal(size=(50, 4)) * 3)
    e = exact.trace_int(q)[4]
    c = cast.trace_int(q)[4]
    assert c.type == t
    assert np.array_equal(c.values, fixed.cast(e.values, e.type, t))


def test_concatenate_holds_each_input_exactly_on_the_channel_axis():
    net = residual_net()
    outs = net.trace_int(net.quantize_input(np.random.default_rng(2).normal(size=(20, 4))))
    add, r, cat = outs[4], outs[1], outs[5]
    assert cat.values.shape == (20, 12)
    assert np.array_equal(fixed.to_float(cat.values, cat.type), np.concatenate(
        [fixed.to_float(add.values, add.type), fixed.to_float(r.values, r.type)], axis=-1))


def test_float_graph_matches_numpy():
    net = residual_net()
    fl = Network("f", (4,), [_float(l) for l in net.layers], None)
    x = np.random.default_rng(3).normal(size=(10, 4))
    wa, wb, ws = (fl.layer(n) for n in "abs")
    h = np.maximum(x @ wa.weight + wa.bias, 0)
    want = np.concatenate([h @ wb.weight + wb.bias + x @ ws.weight + ws.bias, h], axis=-1)
    np.testing.assert_allclose(fl.forward(x), want, rtol=1e-12)


def _float(layer):
    if isinstance(layer, Dense):
        return Dense(layer.name, layer.float_weight(), layer.float_bias(), inputs=layer.inputs)
    return layer


def test_graph_round_trips_through_save_and_load(tmp_path):
    net = residual_net()
    net.save(tmp_path)
    doc = json.loads((tmp_path / "network.json").read_text())
    assert doc["version"] == 2
    assert [l.get("inputs") for l in doc["layers"]] == [None, None, None, ["input"], ["b", "s"], ["add", "r"], None]
    back = Network.load(tmp_path)
    q = net.quantize_input(np.random.default_rng(4).normal(size=(30, 4)))
    assert np.array_equal(back.forward_int(q).values, net.forward_int(q).values)


def test_a_version_1_file_still_loads(digits_q, tmp_path):
    digits_q.save(tmp_path)
    doc = json.loads((tmp_path / "network.json").read_text())
    doc["version"] = 1
    assert all("inputs" not in l for l in doc["layers"])  # a chain is written as version 1 wrote it
    (tmp_path / "network.json").write_text(json.dumps(doc))
    assert Network.load(tmp_path).is_chain


def test_a_chain_written_with_explicit_inputs_is_a_chain():
    net = Network("c", (4,), [_dense("a", 4, 3, 0, inputs=(INPUT,)), ReLU("r", inputs=("a",))], "ap_fixed<8,2>")
    assert net.is_chain and all(l.inputs == () for l in net.layers)


@pytest.mark.parametrize("layers, message", [
    ([_dense("a", 4, 4, 0), ReLU("r", inputs=("nope",))], r"layer 'r' reads 'nope', which is not a layer before it"),
    ([_dense("a", 4, 4, 0), Add("add", inputs=("a",))], r"layer 'add': Add needs two or more inputs"),
    ([_dense("a", 4, 4, 0), ReLU("r", inputs=("a", INPUT))], r"layer 'r': ReLU reads one input"),
    ([_dense("a", 4, 4, 0), _dense("b", 4, 4, 1, inputs=(INPUT,))], r"layer 'a': its output is never read"),
    ([_dense("input", 4, 4, 0)], r"layer name 'input' is reserved"),
    ([_dense("a", 4, 4, 0), _dense("b", 4, 3, 1, inputs=(INPUT,)), Add("add", inputs=("a", "b"))],
     r"layer 'add': Add needs inputs of one shape, got \(4,\), \(3,\)"),
])
def test_malformed_graphs_are_refused_naming_the_layer(layers, message):
    with pytest.raises(LayerError, match=message):
        Network("bad", (4,), layers, "ap_fixed<8,2>")


def test_a_stage_that_builds_chains_refuses_a_graph_naming_the_layer():
    with pytest.raises(LayerError, match=r"layer 's' \(Dense\) reads 'input': the RTL emitter builds sequential"):
        residual_net().check_chain("the RTL emitter")


def test_the_report_draws_the_graph_with_units_kept():
    from codesign.app.report import plot_graph

    png = plot_graph(residual_net())
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
