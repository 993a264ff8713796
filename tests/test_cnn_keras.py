"""CNN import from Keras and QKeras (read as data): float models match Keras, quantized ones are
bit-exact against QKeras evaluated in float64, as the Dense path is (tests/test_keras_import.py)."""

import numpy as np
import pytest

import codesign
from codesign.core import fixed
from codesign.core.fixed import FixedType
from codesign.errors import UnsupportedLayerError
from tests.conftest import MODELS

tf = pytest.importorskip("tensorflow", reason="the keras extra is not installed")
from codesign.importers.keras_live import import_tf, network_from_keras  # noqa: E402
from tests.keras_reference import keras_outputs  # noqa: E402

CONV2D = MODELS / "KERAS_conv2d_model.json"


def _in_floatx(floatx: str, fn):
    """Build or run a (Q)Keras model with ``floatx`` as Keras' float type (QKeras quantizers cast to it)."""
    tf.keras.backend.set_floatx(floatx)
    try:
        return fn()
    finally:
        tf.keras.backend.set_floatx("float32")


def test_hls4ml_conv2d_example_matches_keras_on_digits_images(digits):
    net = codesign.load(CONV2D)
    assert [l.kind for l in net.layers] == ["Conv2D", "ReLU", "Flatten", "Dense", "Output"]
    assert net.input_shape == (8, 8, 1) and net.layers[0].padding == "same"
    x = digits.X_test.reshape(-1, 8, 8, 1)
    got = net.predict(x)
    err64 = np.abs(got - keras_outputs(CONV2D, x, floatx="float64", before_softmax=False)).max()
    err32 = np.abs(got - keras_outputs(CONV2D, x, floatx="float32", before_softmax=False)).max()
    print(f"KERAS_conv2d_model: {len(x)} digits images, max |ref - keras64| = {err64:.1e}, |ref - keras32| = {err32:.1e}")
    assert err64 < 1e-12 and err32 < 2e-6


def _float_cnn(kind: str):
    L = tf.keras.layers
    if kind == "2d":
        return tf.keras.Sequential([
            L.InputLayer(input_shape=(8, 8, 1)), L.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
            L.AveragePooling2D(2, name="avg"), L.Conv2D(6, 2, strides=2, padding="same", name="c2"),
            L.MaxPooling2D(2, strides=1, name="mp"), L.GlobalAveragePooling2D(name="gap"), L.Dense(10, name="fc")])
    return tf.keras.Sequential([
        L.InputLayer(input_shape=(8, 8)), L.Conv1D(5, 3, padding="same", activation="relu", name="c1"),
        L.AveragePooling1D(2, strides=1, name="avg"), L.MaxPooling1D(2, name="mp"),
        L.Conv1D(4, 2, padding="valid", name="c2"), L.GlobalAveragePooling1D(name="gap"), L.Dense(10, name="fc")])


@pytest.mark.parametrize("kind,kinds", [
    ("2d", ["Conv2D", "ReLU", "AvgPool2D", "Conv2D", "MaxPool2D", "GlobalAvgPool2D", "Dense", "Output"]),
    ("1d", ["Conv1D", "ReLU", "AvgPool1D", "MaxPool1D", "Conv1D", "GlobalAvgPool1D", "Dense", "Output"]),
])
def test_float_keras_cnn_with_pooling_matches_keras(kind, kinds, digits, tmp_path):
    import_tf()
    tf.keras.utils.set_random_seed(3)
    m32 = _float_cnn(kind)
    m32.save(tmp_path / "m.h5")
    net = codesign.load(tmp_path / "m.h5")  # read as data
    assert [l.kind for l in net.layers] == kinds
    m64 = _in_floatx("float64", lambda: _float_cnn(kind))
    m64.set_weights([w.astype("float64") for w in m32.get_weights()])
    x = digits.X_test.reshape(-1, 8, 8, 1) if kind == "2d" else digits.X_test.reshape(-1, 8, 8)
    got = net.forward(x)
    err64 = np.abs(got - _in_floatx("float64", lambda: m64(x).numpy())).max()
    err32 = np.abs(got - m32(x.astype("float32")).numpy()).max()
    print(f"keras {kind} CNN: {len(x)} digits images, max |ref - keras64| = {err64:.1e}, |ref - keras32| = {err32:.1e}")
    assert err64 < 1e-12 and err32 < 1e-5


def _qkeras_cnn():
    """QConv2D + QActivation + average and max pooling + QConv2D + QDense, 6-bit weights."""
    from qkeras import QActivation, QAveragePooling2D, QConv2D, QDense
    from qkeras.quantizers import quantized_bits, quantized_relu

    L, q = tf.keras.layers, quantized_bits
    return tf.keras.Sequential([
        L.InputLayer(input_shape=(8, 8, 1)),
        QConv2D(4, 3, padding="same", kernel_quantizer=q(6, 0, alpha=1), bias_quantizer=q(6, 0, alpha=1), name="c1"),
        QActivation(quantized_relu(6, 2), name="r1"),
        L.AveragePooling2D(2, name="avg"),  # exact 8-bit means, no quantizer
        QConv2D(6, 3, padding="same", kernel_quantizer=q(5, 1, alpha=1), bias_quantizer=q(6, 1, alpha=1), name="c2"),
        QActivation(q(8, 3, alpha=1), name="q2"),
        L.MaxPooling2D(2, strides=1, name="mp"),
        QActivation(quantized_relu(7, 3), name="r2"),
        QAveragePooling2D(2, average_quantizer=q(8, 0, alpha=1), activation=quantized_relu(8, 3), name="qavg"),
        L.Flatten(name="flat"),
        QDense(10, kernel_quantizer=q(6, 0, alpha=1), bias_quantizer=q(6, 0, alpha=1), name="fc"),
    ])


@pytest.fixture(scope="module")
def qkeras_cnn(tmp_path_factory):
    """The QKeras CNN in float32 saved to a file, and a float64 twin with the same weights."""
    import_tf()
    tf.keras.utils.set_random_seed(7)
    m32 = _qkeras_cnn()
    r = np.random.default_rng(7)
    for w in m32.weights:
        w.assign(r.normal(0, 0.5, size=w.shape).astype("float32"))
    path = tmp_path_factory.mktemp("qkeras_cnn") / "qcnn.h5"
    m32.save(path)
    m64 = _in_floatx("float64", _qkeras_cnn)
    m64.set_weights([w.astype("float64") for w in m32.get_weights()])
    return path, m64


def _qinputs(net, digits, n_random: int, seed: int) -> np.ndarray:
    """Every digits image, then random images over the input type's range and its corner values."""
    r = np.random.default_rng(seed)
    t = net.input_type
    rand = r.normal(0, 2, size=(n_random, 8, 8, 1)) * r.choice([0.25, 1, 8], size=(n_random, 1, 1, 1))
    corners = r.choice(fixed.to_float(fixed.corner_values(t), t), size=(64, 8, 8, 1))
    imgs = np.concatenate([digits.X_train, digits.X_val, digits.X_test]).reshape(-1, 8, 8, 1)
    x = np.concatenate([imgs, rand, corners])
    return fixed.to_float(net.quantize_input(x), t)


def test_qkeras_cnn_file_maps_onto_exact_types(qkeras_cnn):
    net = codesign.load(qkeras_cnn[0])
    assert [l.kind for l in net.layers] == ["Conv2D", "ReLU", "AvgPool2D", "Conv2D", "Quant", "MaxPool2D", "ReLU",
                                            "AvgPool2D", "ReLU", "Flatten", "Dense", "Output"]
    assert net.input_type == FixedType(16, 6, True, "RND_CONV", "SAT")
    types = dict(zip([l.name for l in net.layers], net.tensor_types()))
    assert types["avg"] == FixedType(8, 2, False)  # quantized_relu(6, 2) averaged over 4: two more fraction bits
    assert types["qavg_act"] == FixedType(8, 3, False, "RND_CONV", "SAT")


def test_qkeras_cnn_file_is_bit_exact_against_qkeras_float64(qkeras_cnn, digits):
    path, m64 = qkeras_cnn
    net = codesign.load(path)
    x = _qinputs(net, digits, 400, seed=11)
    got = net.forward(x)
    want = _in_floatx("float64", lambda: m64(x).numpy())
    print(f"QKeras CNN: {int(np.all(got == want, axis=1).sum())} of {len(x)} outputs bit-exact")
    assert len(x) >= 2000 and np.array_equal(got, want)
    assert len(np.unique(want)) > 100


_BAD = {
    "depthwise": (lambda L: L.DepthwiseConv2D(3, name="dw"), r"layer 'dw': unsupported layer type DepthwiseConv2D; "
                                                            r"supported: InputLayer, Dense"),
    "separable": (lambda L: L.SeparableConv2D(2, 3, name="sep"), r"layer 'sep': unsupported layer type SeparableConv2D"),
    "dilation": (lambda L: L.Conv2D(2, 3, dilation_rate=2, name="dil"),
                 r"layer 'dil' \(Conv2D\): dilation and groups other than 1 \(dilated, grouped or depthwise "
                 r"convolution\) are not supported; supported: InputLayer, Dense"),
    "upsampling": (lambda L: L.UpSampling2D(name="up"), r"layer 'up': unsupported layer type UpSampling2D; supported:"),
    "avg_3x3": (lambda L: L.AveragePooling2D(3, name="a3"),
                r"layer 'a3' \(AveragePooling2D\): AvgPool2D averages a 3x3 window \(9 values\); only a power-of-two"),
    "avg_same": (lambda L: L.AveragePooling2D(2, padding="same", name="as"),
                 r"layer 'as' \(AveragePooling2D\): only padding='valid' is supported"),
    "global_36": (lambda L: L.GlobalAveragePooling2D(name="g"),
                  r"layer 'g' \(GlobalAveragePooling2D\): GlobalAvgPool2D averages 6x6 = 36 positions; only a power"),
    "keepdims": (lambda L: L.GlobalAveragePooling2D(keepdims=True, name="gk"),
                 r"layer 'gk' \(GlobalAveragePooling2D\): keepdims=True is not supported"),
}


@pytest.mark.parametrize("case", sorted(_BAD))
def test_unsupported_cnn_layers_are_refused_naming_the_layer(case):
    import_tf()
    make, pattern = _BAD[case]
    size = 6 if case == "global_36" else 8
    m = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(size, size, 2)), make(tf.keras.layers),
                             tf.keras.layers.Flatten()])
    with pytest.raises(UnsupportedLayerError, match="^" + pattern):
        network_from_keras(m)


def test_an_average_quantizer_that_rounds_one_over_n_is_refused():
    import_tf()
    from qkeras import QAveragePooling2D
    from qkeras.quantizers import quantized_bits

    m = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(8, 8, 1)),
                             QAveragePooling2D(2, average_quantizer=quantized_bits(2, 0, alpha=1), name="qa")])
    with pytest.raises(UnsupportedLayerError, match=r"^layer 'qa' \(QAveragePooling2D\): the average quantizer rounds "
                                                    r"1/4, so QKeras' result is not the mean"):
        network_from_keras(m)


def test_qconv1d_with_global_average_pooling_is_bit_exact(digits):
    """QConv1D -> QActivation -> GlobalAveragePooling1D (8 positions: exact) -> QDense, live, in float64."""
    import_tf()
    from qkeras import QActivation, QConv1D, QDense
    from qkeras.quantizers import quantized_bits, quantized_relu

    def build():
        tf.keras.utils.set_random_seed(9)
        L, q = tf.keras.layers, quantized_bits
        return tf.keras.Sequential([
            L.InputLayer(input_shape=(8, 8)),
            QConv1D(6, 3, padding="same", kernel_quantizer=q(6, 1, alpha=1), bias_quantizer=q(6, 1, alpha=1), name="c"),
            QActivation(quantized_relu(6, 3), name="r"), L.GlobalAveragePooling1D(name="gap"),
            QDense(10, kernel_quantizer=q(5, 0, alpha=1), bias_quantizer=q(5, 0, alpha=1), name="fc")])

    m64 = _in_floatx("float64", build)
    net = network_from_keras(m64, input_type="ap_fixed<8,2,AP_RND_CONV,AP_SAT>")
    assert [l.kind for l in net.layers] == ["Conv1D", "ReLU", "GlobalAvgPool1D", "Dense", "Output"]
    assert net.tensor_types()[2] == FixedType(9, 3, False)
    x = fixed.to_float(net.quantize_input(digits.X_train.reshape(-1, 8, 8) * 3.9), net.input_type)
    assert np.array_equal(net.forward(x), _in_floatx("float64", lambda: m64(x).numpy()))


@pytest.mark.slow
def test_qkeras_cnn_file_is_bit_exact_on_20000_inputs(qkeras_cnn, digits):
    path, m64 = qkeras_cnn
    net = codesign.load(path)
    x = _qinputs(net, digits, 18200, seed=12)
    assert np.array_equal(net.forward(x), _in_floatx("float64", lambda: m64(x).numpy()))
