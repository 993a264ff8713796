"""Graphs in and out: Keras/QKeras functional models and ONNX/QONNX with Add and Concat(enate) import and match
their frameworks; the QONNX export of a graph re-imports bit for bit."""

import warnings

import numpy as np
import pytest
import torch

import codesign
from codesign.core import fixed
from codesign.errors import UnsupportedLayerError

tf = pytest.importorskip("tensorflow", reason="the keras extra is not installed")
from codesign.importers.keras_live import import_tf, network_from_keras  # noqa: E402


def _residual(L, kind: str):
    """input -> a (relu) -> b, a shortcut s on the input, add(b, s), concatenate(add, a), a Dense head."""
    if kind == "dense":
        x = L.Input((6,), name="x")
        a = L.Dense(8, activation="relu", name="a")(x)
        b, s = L.Dense(8, name="b")(a), L.Dense(8, name="s")(x)
    else:
        x = L.Input((4, 4, 2), name="x")
        a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(x)
        b, s = L.Conv2D(4, 3, padding="same", name="b")(a), L.Conv2D(4, 1, name="s")(x)
    cat = L.Concatenate(name="cat")([L.Add(name="add")([b, s]), a])
    if kind != "dense":
        cat = L.Flatten(name="flat")(cat)
    return x, L.Dense(3, name="head")(cat)


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("fmt", ["tf-keras.h5", "tf-keras.keras", "keras3.keras"])
def test_functional_keras_add_and_concatenate_match_keras(kind, fmt, tmp_path, rng):
    import_tf()
    if fmt.startswith("keras3"):  # Keras 3 writes its inbound nodes as keras tensors
        import keras
        model = keras.Model(*_residual(keras.layers, kind))
    else:
        tf.keras.utils.set_random_seed(0)
        model = tf.keras.Model(*_residual(tf.keras.layers, kind))
    path = tmp_path / f"m.{fmt.split('.')[1]}"
    model.save(path)
    net = codesign.load(path)
    assert [(l.kind, l.inputs) for l in net.layers if l.inputs] == [
        ("Dense" if kind == "dense" else "Conv2D", ("input",)), ("Add", ("b", "s")), ("Concatenate", ("add", "a_act"))]
    x = rng.normal(size=(64, *net.input_shape)).astype("float32")
    assert np.allclose(net.forward(x), np.asarray(model.predict(x, verbose=0)), atol=1e-6)


def _in_float64(fn):
    tf.keras.backend.set_floatx("float64")  # QKeras quantizers cast to floatx when called
    try:
        return fn()
    finally:
        tf.keras.backend.set_floatx("float32")


def test_qkeras_functional_add_is_exact_and_bit_exact_against_qkeras(tmp_path, rng):
    """QKeras has no quantized Add: Keras sums the two quantized branches, which the IR's exact Add reproduces."""
    import_tf()
    from qkeras import QActivation, QDense
    from qkeras.quantizers import quantized_bits, quantized_relu

    def build():
        tf.keras.utils.set_random_seed(3)
        L, q = tf.keras.layers, quantized_bits
        x = L.Input((6,), name="x")
        a = QDense(8, kernel_quantizer=q(6, 0, alpha=1), bias_quantizer=q(6, 0, alpha=1), name="a")(x)
        a = QActivation(quantized_relu(6, 2), name="ra")(a)
        b = QDense(8, kernel_quantizer=q(5, 0, alpha=1), bias_quantizer=q(5, 0, alpha=1), name="b")(a)
        s = QDense(8, kernel_quantizer=q(4, 0, alpha=1), bias_quantizer=q(4, 0, alpha=1), name="s")(x)
        y = QActivation(quantized_bits(8, 3), name="qy")(L.Add(name="add")([b, s]))
        return tf.keras.Model(x, QDense(3, kernel_quantizer=q(6, 0, alpha=1), bias_quantizer=q(6, 0, alpha=1),
                                        name="head")(y))

    m64 = _in_float64(build)
    m64.save(tmp_path / "q.h5")
    net = codesign.load(tmp_path / "q.h5", input_type="ap_fixed<10,3,AP_RND_CONV,AP_SAT>")
    add = net.layer("add")
    assert add.inputs == ("b", "s") and add.result_type is None
    t = net.input_type
    x = fixed.to_float(net.quantize_input(np.concatenate([rng.normal(0, 2, size=(3000, 6)),
                                                          rng.choice(fixed.to_float(fixed.corner_values(t), t),
                                                                     size=(64, 6))])), t)
    want = _in_float64(lambda: m64(x).numpy())
    assert len(np.unique(want)) > 100
    assert np.array_equal(net.forward(x), want)


def _shared_model(L):
    x = L.Input((4,), name="x")
    d = L.Dense(4, name="shared")
    return x, L.Add(name="add")([d(x), d(L.Dense(4, name="pre")(x))])


def _axis_model(L):
    x = L.Input((4, 3), name="x")
    return x, L.Flatten(name="f")(L.Concatenate(axis=1, name="cat1")([L.Conv1D(3, 1, name="c")(x), x]))


def _two_outputs(L):
    x = L.Input((4,), name="x")
    return x, [L.Dense(2, name="y1")(x), L.Dense(2, name="y2")(x)]


@pytest.mark.parametrize("build, message", [
    (_shared_model, r"layer 'shared' \(Dense\) is called 2 times \(a shared layer\)"),
    (_two_outputs, r"the model has 2 outputs \('y1', 'y2'\); only a model with one output"),
    (_axis_model, r"layer 'cat1' \(Concatenate\): axis 1 is not supported; only the last \(channel\) axis"),
])
def test_unsupported_functional_graphs_are_refused_naming_the_layer(build, message):
    import_tf()
    with pytest.raises(UnsupportedLayerError, match=message):
        network_from_keras(tf.keras.Model(*build(tf.keras.layers)))


class _ResidualMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.a, self.b, self.s, self.head = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(6, 8), nn.Linear(16, 3)

    def forward(self, x):
        a = torch.relu(self.a(x))
        return self.head(torch.cat([self.b(a) + self.s(x), a], dim=1))


class _ResidualCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.a, self.b = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.s, self.head = nn.Conv2d(2, 4, 1), nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        a = torch.relu(self.a(x))
        y = torch.relu(self.b(a) + self.s(x))
        return self.head(torch.flatten(torch.cat([y, a], dim=1), 1))


def _export(module, shape: tuple[int, ...], path, dynamo: bool):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; the dynamo exporter's notes
        torch.onnx.export(module().eval(), (torch.zeros(1, *shape),), str(path), input_names=["x"], output_names=["y"],
                          dynamo=dynamo, verbose=False)
    return path


_TORCH_MODELS = [(_ResidualMLP, (6,)), (_ResidualCNN, (2, 4, 4))]


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("module, shape", _TORCH_MODELS, ids=["mlp", "cnn"])
def test_onnx_add_and_concat_from_torch_match_onnxruntime(module, shape, dynamo, tmp_path, rng):
    """torch.onnx.export, both exporters (the default, dynamo, writes the weights to a .data file beside the graph:
    about 30 s on first use, so behind slow)."""
    from tests.qonnx_graphs import run_onnxruntime

    path = _export(module, shape, tmp_path / "res.onnx", dynamo)
    net = codesign.load(path)
    merges = [(l.kind, len(l.inputs)) for l in net.layers if l.merge]
    assert merges == [("Add", 2), ("Concatenate", 2)]
    x = rng.normal(size=(64, *shape)).astype(np.float32)
    want = run_onnxruntime(path, x)
    got = net.forward(x if len(shape) == 1 else x.transpose(0, 2, 3, 1))  # the IR is channels-last
    assert np.allclose(got, want, atol=1e-6)


def test_qonnx_add_of_two_branches_is_bit_exact_against_qonnx(tmp_path, rng):
    """input Quant -> a (relu, 6-bit) -> b; shortcut s on the input; Add; an 8-bit Quant after it; a head."""
    from tests.qonnx_graphs import Graph, run_qonnx

    g = Graph(6)
    xq = g.act_quant("xq", 2.0**-4, 8).x
    g.dense(rng.integers(-8, 8, (6, 8)) / 8, "a", 2.0**-3, 4, rng.integers(-32, 32, 8) / 32, 2.0**-5, 8)
    g.data("Relu", "ra").act_quant("qa", 2.0**-3, 6, signed=0)
    b = g.dense(rng.integers(-8, 8, (8, 8)) / 8, "b", 2.0**-3, 4, rng.integers(-32, 32, 8) / 32, 2.0**-5, 8).x
    g.x = xq
    s = g.dense(rng.integers(-8, 8, (6, 8)) / 8, "s", 2.0**-3, 4, rng.integers(-32, 32, 8) / 32, 2.0**-5, 8).x
    g.x = g.op("Add", [b, s], "res")
    g.act_quant("qres", 2.0**-3, 8, mode="FLOOR")
    g.dense(rng.integers(-8, 8, (8, 3)) / 8, "head", 2.0**-3, 4, rng.integers(-32, 32, 3) / 32, 2.0**-5, 8)
    path = g.save(tmp_path / "res.onnx")
    net = codesign.load(path)
    add = net.layer("res")
    assert add.inputs == ("b", "s") and str(add.result_type).startswith("ap_fixed<8,5")
    t = net.input_type
    x = fixed.to_float(net.quantize_input(np.concatenate([rng.normal(0, 3, size=(2000, 6)), rng.choice(
        fixed.to_float(fixed.corner_values(t), t), size=(64, 6))])), t)
    want = run_qonnx(path, x)
    assert len(np.unique(want)) > 100
    assert np.array_equal(net.forward(x), want)


def _quantized_residual(conv: bool, add_type: str | None):
    """x -> a (relu, 6-bit unsigned) -> b; shortcut s on the input; Add (cast to ``add_type`` when given);
    Concatenate with the relu; (Flatten,) a Dense head. Integer weights of 4 bits, biases of 8."""
    from codesign.core.layers import Add, Concatenate, Conv2D, Dense, Flatten, Output, ReLU
    from codesign.core.network import INPUT, Network

    r = np.random.default_rng(7)
    wt, bt = "ap_fixed<4,1>", "ap_fixed<8,3>"

    def layer(name, n_in, n_out, k=3, **kw):
        if conv:
            return Conv2D(name, r.integers(-8, 8, (k, k, n_in, n_out)), r.integers(-64, 64, n_out), weight_type=wt,
                          bias_type=bt, padding="same", **kw)
        return Dense(name, r.integers(-8, 8, (n_in, n_out)), r.integers(-64, 64, n_out), weight_type=wt, bias_type=bt,
                     **kw)

    c = 2 if conv else 6
    layers = [layer("a", c, 4, result_type="ap_fixed<12,5,AP_RND_CONV,AP_SAT>"),
              ReLU("r", result_type="ap_ufixed<6,3,AP_RND_CONV,AP_SAT>"), layer("b", 4, 4),
              layer("s", c, 4, k=1, inputs=(INPUT,)), Add("add", inputs=("b", "s"), result_type=add_type),
              Concatenate("cat", inputs=("add", "r"))]
    n = 8 * (16 if conv else 1)
    layers += [Flatten("flat")] * conv + [layer("head", n, 3) if not conv else Dense(
        "head", r.integers(-8, 8, (n, 3)), r.integers(-64, 64, 3), weight_type=wt, bias_type=bt), Output("output")]
    return Network("res", (4, 4, 2) if conv else (6,), layers, "ap_fixed<8,3,AP_RND_CONV,AP_SAT>")


@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
@pytest.mark.parametrize("add_type", [None, "ap_fixed<10,6,AP_RND_CONV,AP_SAT>"], ids=["exact", "cast"])
def test_qonnx_export_of_a_graph_reimports_bit_for_bit_and_runs_in_qonnx(conv, add_type, tmp_path, rng):
    from tests.qonnx_graphs import run_qonnx

    net = _quantized_residual(conv, add_type)
    path = tmp_path / "res.onnx"
    net.to_onnx(path)
    back = codesign.load(path)

    def described(n):
        return [(l.name, l.kind, n.sources()[l.name], getattr(l, "result_type", None), getattr(l, "weight_type", None),
                 getattr(l, "bias_type", None)) for l in n.layers]

    assert described(back) == described(net) and back.tensor_types() == net.tensor_types()
    assert back.input_type == net.input_type
    for a, b in zip(net.weighted_layers(), back.weighted_layers()):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    t = net.input_type
    x = fixed.to_float(net.quantize_input(np.concatenate([rng.normal(0, 3, size=(500, *net.input_shape)), rng.choice(
        fixed.to_float(fixed.corner_values(t), t), size=(64, *net.input_shape))])), t)
    q = net.quantize_input(x)
    assert np.array_equal(back.forward_int(q).values, net.forward_int(q).values)
    assert np.array_equal(run_qonnx(path, x), net.forward(x))


def test_report_layer_table_shows_what_each_graph_layer_reads():
    from codesign.app.flow import network_summary
    from codesign.app.report import LAYER_HEAD, layer_rows

    summary = network_summary(_quantized_residual(False, None))
    assert {l["name"]: l["inputs"] for l in summary["layers"] if "inputs" in l} == {
        "s": ["input"], "add": ["b", "s"], "cat": ["add", "r"]}
    rows = {r[0]: dict(zip(LAYER_HEAD, r)) for r in layer_rows({"network": summary})}
    assert rows["a"]["inputs"] == "–" and rows["s"]["inputs"] == "input" and rows["add"]["inputs"] == "b, s"
    assert list(rows) == ["a", "b", "s", "add", "cat", "head"]


@pytest.mark.slow
def test_qonnx_export_of_digits_resnet_reimports_bit_for_bit(digits, tmp_path):
    """The built-in ResNet (trained at first use), quantized after training: 8-bit weights, 16-bit results."""
    from codesign.compress.quantize import quantize_network
    from tests.qonnx_graphs import run_qonnx

    fnet = codesign.load("digits-resnet")
    x = np.concatenate([digits.X_train, digits.X_val, digits.X_test]).reshape(-1, *fnet.input_shape)
    net = quantize_network(fnet, "ap_fixed<8,4,AP_RND_CONV,AP_SAT>", calib=digits.X_train)
    path = tmp_path / "resnet.onnx"
    net.to_onnx(path)
    back = codesign.load(path)
    assert [(l.name, l.kind, back.sources()[l.name]) for l in back.layers] == [
        (l.name, l.kind, net.sources()[l.name]) for l in net.layers]
    assert back.tensor_types() == net.tensor_types() and sum(l.merge for l in net.layers) == 2
    for a, b in zip(net.weighted_layers(), back.weighted_layers()):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias) and a.weight_type == b.weight_type
    q = net.quantize_input(x)
    assert np.array_equal(back.forward_int(q).values, net.forward_int(q).values)
    assert np.array_equal(run_qonnx(path, x, before_head=True), net.forward(x))
