"""Keras, QKeras and HGQ files are read as data: nothing in them runs, no TensorFlow is needed, and
every format users save imports bit-exact against the framework that made it."""

import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import codesign
from codesign.app.cli import main
from codesign.errors import CodesignError, UnsupportedLayerError
from codesign.core.fixed import FixedType
from codesign.importers.qkeras_quant import parse_quantizer, weight_ints
from tests.conftest import MODELS

tf = pytest.importorskip("tensorflow", reason="the keras extra is not installed")
from codesign.importers.keras_live import import_tf  # noqa: E402
from tests.keras_reference import hgq_proxy_outputs  # noqa: E402

HGQ = MODELS / "hgq_mnist_homogeneous.h5"
HGQ_HETERO = MODELS / "hgq_mnist_heterogeneous.h5"


def cli_error(args, capfd):
    """Run the CLI; return (exit code, the non-empty lines it wrote to file descriptor 2)."""
    code = main(args)
    err = capfd.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    """Models built with the pinned stack and saved in every format, once per session."""
    import_tf()
    from qkeras import QActivation, QDense
    from qkeras.quantizers import quantized_bits, quantized_relu

    d = tmp_path_factory.mktemp("keras_saved")
    out = {"dir": d, "marker": d / "marker"}
    fn = eval(f"lambda x: (open({str(out['marker'])!r}, 'a').close(), x)[1]")  # code the file will carry
    lam = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(4,)), tf.keras.layers.Dense(3, name="fc"),
                               tf.keras.layers.Lambda(fn, name="lam")])
    lam.save(d / "lambda.h5")
    lam.save(d / "lambda.keras")
    (d / "lambda.json").write_text(lam.to_json())
    lam.save_weights(d / "lambda_weights.h5")
    out["marker"].unlink()  # building the model ran the lambda once; loading must not run it again

    tf.keras.utils.set_random_seed(5)
    q = tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(16,)),
        QDense(24, kernel_quantizer=quantized_bits(6, 0, alpha=1), bias_quantizer=quantized_bits(6, 0, alpha=1),
               name="fc1"),
        QActivation(quantized_relu(6, 2), name="relu1"),
        QDense(5, kernel_quantizer=quantized_bits(5, 1, alpha=1), bias_quantizer=quantized_bits(6, 2, alpha=1),
               activation=quantized_relu(8, 3), name="fc2"),
    ])
    for w in q.weights:
        w.assign(np.random.default_rng(5).normal(0, 0.6, size=w.shape).astype("float32"))
    (d / "qk.json").write_text(q.to_json())
    q.save_weights(d / "qk_weights.h5")
    q.save(d / "qk.keras")
    out["qkeras"] = q
    return out


@pytest.mark.parametrize("fmt", ["h5", "keras", "json"])
def test_a_lambda_in_a_model_file_is_refused_by_name_and_never_runs(saved, fmt, tmp_path, capfd):
    code, lines = cli_error(["flow", str(saved["dir"] / f"lambda.{fmt}"), "--out", str(tmp_path / "o"), "--quiet"],
                            capfd)
    assert code == 2 and len(lines) == 1, lines
    assert "layer 'lam' (Lambda): a Lambda layer holds Python code, which is never run" in lines[0]
    assert not saved["marker"].exists()
    assert not (tmp_path / "o").exists()


def test_loading_the_lambda_file_through_keras_would_run_its_code(saved):
    """The threat the importer avoids: Keras's own loader runs the function stored in the file."""
    tf.keras.models.load_model(saved["dir"] / "lambda.h5", compile=False)
    assert saved["marker"].exists()
    saved["marker"].unlink()


def _grid_inputs(net, n, seed):
    r = np.random.default_rng(seed)
    x = r.normal(0, 2, size=(n, *net.input_shape)) * r.choice([0.25, 1, 4], size=(n, 1))
    return np.ldexp(net.quantize_input(x).astype(np.float64), -net.input_type.frac)


def test_qkeras_model_saved_by_the_pinned_stack_imports_bit_exact_on_2000_inputs(saved):
    text = (saved["dir"] / "qk.json").read_text()
    assert '"module": "qkeras.quantizers"' in text  # the nested form QKeras's own model_from_json cannot read back
    net = codesign.load(saved["dir"] / "qk.json", input_type="ap_fixed<10,4>")
    assert [l.kind for l in net.layers] == ["Dense", "ReLU", "Dense", "ReLU", "Output"]
    assert net.layers[1].result_type == FixedType(6, 2, False, "RND_CONV", "SAT")
    x = _grid_inputs(net, 2000, seed=3)
    want = saved["qkeras"](x.astype("float32")).numpy()  # 10-bit inputs x 6-bit weights: float32 sums are exact
    assert np.array_equal(net.forward(x), want)
    assert len(np.unique(want)) > 20


def test_keras_archive_of_the_same_model_imports_identically(saved):
    a = codesign.load(saved["dir"] / "qk.keras", input_type="ap_fixed<10,4>")
    b = codesign.load(saved["dir"] / "qk.json", input_type="ap_fixed<10,4>")
    for la, lb in zip(a.layers, b.layers):
        assert la.kind == lb.kind
        for k, v in la.arrays().items():
            assert np.array_equal(v, lb.arrays()[k])


def test_keras3_archive_with_conv_pool_and_batchnorm_matches_keras(tmp_path, rng):
    import keras  # Keras 3, beside tf-keras

    m = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(3, 3, activation="relu"),
                          keras.layers.MaxPooling2D(), keras.layers.BatchNormalization(), keras.layers.Flatten(),
                          keras.layers.Dense(6, activation="relu"), keras.layers.Dense(4),
                          keras.layers.Activation("softmax")])
    for w in m.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.4 + (1.0 if "variance" in w.path else 0.0))
    m.save(tmp_path / "k3.keras")
    net = codesign.load(tmp_path / "k3.keras")
    assert [l.kind for l in net.layers] == ["Conv2D", "ReLU", "MaxPool2D", "BatchNorm", "Flatten", "Dense", "ReLU",
                                            "Dense", "Output"]
    x = rng.normal(size=(64, 8, 8, 2)).astype("float32")
    assert np.allclose(net.predict(x), m.predict(x, verbose=0), atol=2e-5)


def test_hgq_proxy_example_imports_bit_exact_with_its_formats():
    net = codesign.load(HGQ)
    assert net.input_type == FixedType(5, 1, False, "RND", "WRAP")  # the proxy's input quantizer
    quants = [l for l in net.layers if l.kind == "Quant"]
    assert quants[0].result_type == FixedType(7, 3, True, "TRN", "WRAP")
    r = np.random.default_rng(11)
    x = r.uniform(0, 2.2, size=(1000, 28, 28)) * r.choice([0.3, 1], size=(1000, 1, 1))  # > 2 wraps the input
    assert np.array_equal(net.forward(x[..., None]), hgq_proxy_outputs(HGQ, x))


def test_hgq_per_element_formats_import_bit_exact(tmp_path):
    """The example with two quantizers made heterogeneous: every element keeps its own format."""
    path = tmp_path / "hgq_hetero.h5"
    path.write_bytes(HGQ.read_bytes())
    r = np.random.default_rng(12)
    formats = {"h_dense_2_quantizer": (r.integers(0, 2, 32), r.integers(0, 9, 32), r.integers(2, 8, 32)),
               "h_dense_2_relu_quantizer": (np.zeros(32), r.integers(0, 7, 32), r.integers(-1, 6, 32))}
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        for layer in cfg["config"]["layers"]:
            if layer["name"] in formats:
                layer["config"]["shape"] = [1, 32]
        f.attrs["model_config"] = json.dumps(cfg)
        for name, (k, b, i) in formats.items():
            g = f["model_weights"][name]
            for key, v in (("keep_negative:0", k), ("bits:0", b), ("integers:0", np.where(b > 0, i, 0))):
                del g[key]
                g.create_dataset(key, data=np.asarray(v, dtype=np.int8).reshape(1, 32))
    net = codesign.load(path)
    per = [l for l in net.layers if l.kind == "Quant" and l.per_element]
    assert [l.name for l in per] == list(formats) and np.any(per[1].element_width == 0)
    x = r.uniform(0, 2, size=(500, 28, 28))
    assert np.array_equal(net.forward(x[..., None]), hgq_proxy_outputs(path, x))


def test_hgq_heterogeneous_example_imports_bit_exact_through_its_input_reshape():
    """hls4ml's heterogeneous HGQ example: a per-column input quantizer, then a Reshape that only re-views it."""
    net = codesign.load(HGQ_HETERO)
    assert net.input_shape == (28, 28, 1) and net.layers[0].per_element
    assert net.layers[0].element_width.shape == (28, 28, 1)
    r = np.random.default_rng(13)
    x = r.uniform(0, 4.5, size=(200, 28, 28)) * r.choice([0.3, 1], size=(200, 1, 1))  # > 4 wraps the input
    x[:20] = (np.round(x[:20] * 4) + r.choice([0, 0.5], size=(20, 28, 28))) / 4  # grid points and rounding ties
    assert np.array_equal(net.forward(x[..., None]), hgq_proxy_outputs(HGQ_HETERO, x))


def test_import_needs_no_tensorflow(saved):
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("tensorflow", "tf_keras", "keras", "qkeras"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import codesign
        for f in [{str(HGQ)!r}, {str(MODELS / 'qkeras_3layer.json')!r}, {str(saved['dir'] / 'qk.keras')!r}]:
            print(len(codesign.load(f).layers))
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "qkeras")))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["18", "8", "5", "[]"]


# ---- quantizers, as QKeras computes them ---------------------------------------------------------
QUANTIZERS = [
    "quantized_bits(6,0,alpha=1)", "quantized_bits(4,2,keep_negative=False)", "quantized_bits(5,1,symmetric=1)",
    "quantized_bits(4,0,alpha=4)", "quantized_bits(6,0,alpha='auto_po2')", "quantized_bits(8,3,alpha='auto_po2')",
    "quantized_bits(1,0)", "quantized_po2(4)", "quantized_po2(5,max_value=2)", "quantized_relu_po2(4)",
    "quantized_relu(4,1)", "binary()", "binary(use_01=True)", "binary(alpha=2)", "ternary()", "ternary(threshold=0.5)",
    "ternary(alpha=0.5)",
]


@pytest.mark.parametrize("spec", QUANTIZERS)
@pytest.mark.parametrize("shape", [(12, 8), (8,)])
def test_weight_quantizers_equal_qkeras_applied_to_the_same_weights(spec, shape, rng):
    import_tf()
    import qkeras.quantizers as qq

    x = (rng.normal(0, 0.7, size=shape) * rng.choice([0.1, 1, 3], size=shape)).astype("float32")
    ints, t = weight_ints(x, parse_quantizer(spec, "fc", "kernel quantizer"), "fc", "kernel")
    want = np.asarray(qq.get_quantizer(spec)(tf.constant(x)).numpy(), dtype=np.float64)
    assert np.array_equal(np.ldexp(ints.astype(np.float64), -t.frac), want)


@pytest.mark.parametrize("spec, pattern", [
    ("quantized_po2(4)", r"layer 'a': activation quantizer quantized_po2 is not a fixed-point cast"),
    ("binary()", r"layer 'a': activation quantizer binary is not a fixed-point cast"),
    ("quantized_bits(4,0,alpha=2)", r"layer 'a': quantized_bits\(alpha=2\) as an activation multiplies"),
    ("quantized_tanh(4)", r"layer 'a': activation quantizer quantized_tanh has no exact fixed-point equivalent"),
    ("__import__('os').system('touch pwned')", r"layer 'a': activation \"__import__.* is not supported"),
])
def test_activation_quantizers_that_are_not_casts_are_refused(spec, pattern, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from codesign.importers.keras_import import activation_layers

    with pytest.raises(UnsupportedLayerError, match=pattern):
        activation_layers(spec, "a", "", True)
    assert not (tmp_path / "pwned").exists()


def test_a_weight_far_outside_the_quantizer_range_is_refused():
    x = np.array([[0.5, 3e8]], dtype="float32")  # QKeras's x + (q - x) in float32 loses q
    with pytest.raises(CodesignError, match=r"layer 'fc': kernel value 300000000.0 lies so far outside"):
        weight_ints(x, parse_quantizer("quantized_bits(6,0,alpha=1)", "fc", "q"), "fc", "kernel")


def _hetero_dense_net():
    from codesign.core.layers import Dense, Output, Quant
    from codesign.core.network import Network

    q = Quant("q", FixedType(8, 4), element_width=np.array([4, 0, 8]), element_integer=np.array([2, 0, 4]),
              element_signed=np.array([True, False, True]))
    d = Dense("fc", np.array([[3, -2, 1], [1, 1, -1]]), np.zeros(3, dtype=np.int64), weight_type=FixedType(4, 2),
              bias_type=FixedType(4, 2))
    return Network("hetero", (2,), [d, q, Output("out")], FixedType(6, 3))


def test_per_element_formats_survive_save_and_load(tmp_path):
    net = _hetero_dense_net()
    x = np.random.default_rng(1).uniform(-4, 4, size=(300, 2))
    again = codesign.Network.load(net.save(tmp_path))
    assert np.array_equal(again.forward(x), net.forward(x))
    assert np.all(net.forward(x)[:, 1] == 0)  # width 0: the constant 0


def test_conv1d_and_max_pooling1d_match_keras(rng):
    import_tf()
    m = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(12, 2)), tf.keras.layers.Conv1D(3, 3),
                             tf.keras.layers.MaxPooling1D(3, strides=2), tf.keras.layers.Flatten(),
                             tf.keras.layers.Dense(2)])
    for w in m.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))
    net = codesign.load(m)
    assert [l.kind for l in net.layers] == ["Conv1D", "MaxPool1D", "Flatten", "Dense", "Output"]
    x = rng.normal(size=(32, 12, 2)).astype("float32")
    assert np.allclose(net.forward(x), m(x).numpy(), atol=1e-5)
