"""Keras/QKeras import: the reference computes exactly what QKeras computes."""

import numpy as np
import pytest

import codesign
from codesign.core import fixed
from codesign.errors import ModelFileError, UnsupportedLayerError
from codesign.core.fixed import FixedType
from codesign.core.layers import Dense, Output, ReLU
from tests.conftest import MODELS, jet_inputs

tf = pytest.importorskip("tensorflow", reason="the keras extra is not installed")
from codesign.importers.keras_live import import_tf, network_from_keras  # noqa: E402
from tests.keras_reference import keras_outputs  # noqa: E402

QK = MODELS / "qkeras_3layer.json"


def test_qkeras_jet_tagger_maps_onto_exact_types(qkeras_net):
    kinds = [l.kind for l in qkeras_net.layers]
    assert kinds == ["Dense", "ReLU"] * 3 + ["Dense", "Output"]
    fc1 = qkeras_net.layers[0]
    assert fc1.weight_type == FixedType(6, 1) and fc1.bias_type == FixedType(6, 1)  # quantized_bits(6,0,alpha=1)
    assert qkeras_net.layers[1].result_type == FixedType(6, 0, False, "RND_CONV", "SAT")  # quantized_relu(6,0)
    assert qkeras_net.input_type == FixedType(16, 6, True, "RND_CONV", "SAT")
    assert "default" in qkeras_net.metadata["input_type_note"]


def test_qkeras_outputs_equal_the_reference_on_10000_inputs_in_float64(qkeras_net):
    x = jet_inputs(qkeras_net, 10000, seed=1)
    corners = fixed.to_float(np.repeat(fixed.corner_values(qkeras_net.input_type)[:, None], 16, axis=1),
                             qkeras_net.input_type)
    x = np.concatenate([x, corners])
    ref = qkeras_net.forward(x)
    k64 = keras_outputs(QK, x, floatx="float64")
    assert np.array_equal(ref, k64)


def test_qkeras_float32_outputs_differ_only_where_a_sum_exceeds_float32(qkeras_net):
    x = jet_inputs(qkeras_net, 10000, seed=2)
    ref = qkeras_net.forward(x)
    k32 = keras_outputs(QK, x, floatx="float32")
    differing = np.any(ref != k32, axis=1)
    # float32 sums every product exactly while the sum of their magnitudes stays below 2**24 LSBs
    q = qkeras_net.quantize_input(x)
    fits = np.ones(len(x), dtype=bool)
    for layer, t_in in zip(qkeras_net.layers, [qkeras_net.input_type, *qkeras_net.tensor_types()]):
        if isinstance(layer, Dense):
            pf = t_in.frac + layer.weight_type.frac
            bound = np.abs(q) @ np.abs(layer.weight) + np.ldexp(np.abs(layer.bias), pf - layer.bias_type.frac).max()
            fits &= np.max(bound, axis=1) < 2**24
        q = qkeras_net.trace_int(qkeras_net.quantize_input(x))[qkeras_net.layers.index(layer)].values
    print(f"QKeras float32 outputs differing from the exact reference: {differing.sum()} of {len(x)}; "
          f"{fits.sum()} inputs keep every sum within float32")
    assert fits.sum() > len(x) // 2
    assert not np.any(differing & fits)


@pytest.mark.parametrize("weights", ["KERAS_3layer_weights.h5", "KERAS_3layer_70pruned_retrained_weights.h5"])
def test_float_jet_taggers_match_keras_and_keep_their_sparsity(weights, rng):
    net = codesign.load(MODELS / "KERAS_3layer.json", weights=MODELS / weights)
    assert not net.quantized and net.head == "softmax"
    x = rng.normal(0, 1.5, size=(2000, 16))
    want = keras_outputs(MODELS / "KERAS_3layer.json", x, weights=MODELS / weights, floatx="float32",
                         before_softmax=False)
    assert np.allclose(net.predict(x), want, atol=2e-5)
    if "pruned" in weights:
        assert net.sparsity > 0.65
        d = net.layers[0]
        assert np.array_equal(d.mask, d.weight != 0)


def test_weights_found_beside_the_json_by_convention():
    net = codesign.load(MODELS / "KERAS_3layer.json")
    assert net.sparsity < 0.1


def test_missing_weights_file_says_how_to_give_one(tmp_path):
    (tmp_path / "m.json").write_text((MODELS / "KERAS_3layer.json").read_text())
    with pytest.raises(ModelFileError, match=r"no weights file m_weights.h5 beside it; pass weights="):
        codesign.load(tmp_path / "m.json")


def _qmodel(*layers):
    from qkeras import QActivation, QDense  # noqa: F401

    import_tf()
    m = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(4,)), *layers])
    return m


def test_input_type_from_the_user_is_used():
    from qkeras import QDense
    from qkeras.quantizers import quantized_bits

    m = _qmodel(QDense(3, kernel_quantizer=quantized_bits(4, 0, alpha=1), bias_quantizer=quantized_bits(4, 0, alpha=1)))
    net = network_from_keras(m, input_type="ap_fixed<10,3>")
    assert net.input_type == FixedType(10, 3)


def test_power_of_two_alpha_maps_to_a_shifted_type(rng):
    from qkeras import QDense
    from qkeras.quantizers import quantized_bits

    m = _qmodel(QDense(3, kernel_quantizer=quantized_bits(4, 0, alpha=4), bias_quantizer=quantized_bits(4, 0, alpha=1)))
    net = network_from_keras(m, input_type="ap_fixed<8,3>")
    x = fixed.to_float(net.quantize_input(rng.normal(size=(200, 4))), net.input_type)
    want = m(x.astype("float32")).numpy()  # 8-bit inputs x 4-bit weights: float32 holds every sum exactly
    assert net.layers[0].weight_type.integer == 3  # alpha=4 shifts quantized_bits(4,0) by two bits
    assert np.array_equal(net.forward(x), want)


def test_non_power_of_two_scale_is_refused_naming_layer_and_quantizer():
    from qkeras import QDense
    from qkeras.quantizers import quantized_bits

    m = _qmodel(QDense(3, name="fcx", kernel_quantizer=quantized_bits(4, 0, alpha="auto"),
                       bias_quantizer=quantized_bits(4, 0, alpha=1)))
    with pytest.raises(UnsupportedLayerError, match=r"layer 'fcx': kernel quantizer quantized_bits\(alpha='auto'\)"):
        network_from_keras(m)


def test_unsupported_activation_quantizer_is_refused():
    from qkeras import QActivation, QDense
    from qkeras.quantizers import quantized_bits, quantized_tanh

    m = _qmodel(QDense(3, kernel_quantizer=quantized_bits(4, 0, alpha=1), bias_quantizer=quantized_bits(4, 0, alpha=1)),
                QActivation(quantized_tanh(4), name="act"))
    with pytest.raises(UnsupportedLayerError, match=r"layer 'act': activation quantizer quantized_tanh has no exact"):
        network_from_keras(m)


@pytest.mark.parametrize("layer, pattern", [
    (lambda: tf.keras.layers.UpSampling2D(name="up"), r"layer 'up': unsupported layer type UpSampling2D; supported:"),
    (lambda: tf.keras.layers.GlobalMaxPooling2D(name="gmp"),
     r"layer 'gmp': unsupported layer type GlobalMaxPooling2D; supported:"),
    (lambda: tf.keras.layers.MaxPooling2D(name="mp", padding="same"), r"layer 'mp' \(MaxPooling2D\): only padding='valid'"),
])
def test_unsupported_layer_is_named(layer, pattern):
    import_tf()
    m = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(4, 4, 1)), layer(), tf.keras.layers.Flatten()])
    with pytest.raises(UnsupportedLayerError, match=pattern):
        network_from_keras(m)


def test_missing_bias_quantizer_is_refused():
    from qkeras import QDense
    from qkeras.quantizers import quantized_bits

    m = _qmodel(QDense(3, name="nobq", kernel_quantizer=quantized_bits(4, 0, alpha=1)))
    with pytest.raises(UnsupportedLayerError, match=r"layer 'nobq': bias has no quantizer"):
        network_from_keras(m)


def test_float_conv_and_batchnorm_import(rng):
    import_tf()
    m = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(8, 8, 2)),
                             tf.keras.layers.Conv2D(3, 3, padding="same", activation="relu"),
                             tf.keras.layers.BatchNormalization(),
                             tf.keras.layers.Flatten(),
                             tf.keras.layers.Dropout(0.2), tf.keras.layers.Dense(4, activation="softmax")])
    for w in m.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.3 + (1.0 if "variance" in w.name else 0.0))
    net = network_from_keras(m)
    x = rng.normal(size=(16, 8, 8, 2)).astype("float32")
    assert np.allclose(net.predict(x), m(x).numpy(), atol=1e-5)
    assert [l.kind for l in net.layers][:3] == ["Conv2D", "ReLU", "BatchNorm"]


def test_layer_kinds_are_dense_relu_output(qkeras_net):
    assert isinstance(qkeras_net.layers[0], Dense) and isinstance(qkeras_net.layers[1], ReLU)
    assert isinstance(qkeras_net.layers[-1], Output) and qkeras_net.head == "softmax"
