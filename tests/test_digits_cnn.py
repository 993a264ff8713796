"""The built-in ``digits-cnn``: trained at first use in seconds with a fixed seed, cached, >= 97 % on the
digits test split; and the ``digits`` data set reshaped to an image model's input."""

import os
import time

import numpy as np
import pytest

import codesign
from codesign.errors import DataError
from codesign.importers.builtin import DIGITS_CNN_CHANNELS, builtin_model
from codesign.importers.data import check_fits, load_digits_dataset, shaped_for


@pytest.fixture(scope="module")
def first_use(tmp_path_factory):
    """digits-cnn trained in a cache of its own (so the first use is timed), then loaded again from it."""
    old = os.environ.get("CODESIGN_CACHE")
    os.environ["CODESIGN_CACHE"] = str(tmp_path_factory.mktemp("cnn_cache"))
    try:
        t0 = time.perf_counter()
        net = builtin_model("digits-cnn")
        seconds = time.perf_counter() - t0
        return net, seconds, codesign.load("digits-cnn")
    finally:
        os.environ["CODESIGN_CACHE"] = old


def test_digits_cnn_is_the_documented_small_cnn(first_use):
    net = first_use[0]
    assert [(l.name, l.kind) for l in net.layers] == [
        ("conv1", "Conv2D"), ("relu1", "ReLU"), ("pool1", "MaxPool2D"), ("conv2", "Conv2D"), ("relu2", "ReLU"),
        ("flatten", "Flatten"), ("fc", "Dense"), ("output", "Output")]
    assert net.input_shape == (8, 8, 1) and net.head == "softmax"
    assert net.layer("conv1").weight.shape == (3, 3, 1, DIGITS_CNN_CHANNELS[0]) and net.layer("conv1").padding == "same"
    assert net.layer("conv2").weight.shape == (3, 3, *DIGITS_CNN_CHANNELS) and net.shapes()[4] == (2, 2, 12)
    assert net.n_params < 1300


def test_digits_cnn_trains_in_seconds_and_is_cached(first_use):
    net, seconds, again = first_use
    print(f"digits-cnn trained at first use in {seconds:.1f} s")
    assert seconds < 60
    for a, b in zip(net.weighted_layers(), again.weighted_layers()):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)


def test_digits_cnn_reaches_97_percent_on_the_test_split(first_use, digits):
    net = first_use[0]
    data = shaped_for(digits, net.input_shape)
    check_fits(data, net.input_shape, net.output_shape[-1], net.name)
    acc = float(np.mean(np.argmax(net.predict(data.X_test), axis=1) == data.y_test))
    print(f"digits-cnn float test accuracy: {acc:.4f} on {len(data.y_test)} images")
    assert acc >= 0.97


@pytest.mark.parametrize("shape", [(8, 8, 1), (8, 8), (64,)])
def test_digits_samples_are_reshaped_for_the_model(shape, digits):
    data = shaped_for(digits, shape)
    assert data.input_shape == shape and data.X_test.shape == (360, *shape)
    assert np.array_equal(data.X_val.reshape(len(data.X_val), -1), digits.X_val)  # pixels row by row, unchanged
    assert shaped_for(data, (64,)).input_shape == (64,)


def test_flat_digits_for_a_cnn_are_refused_with_the_way_to_reshape(digits):
    with pytest.raises(DataError, match=r"^data 'digits' has samples of shape \(64,\) but model 'm' takes \(8, 8, 1\); "
                                        r"reshape it first with codesign.importers.data.shaped_for"):
        check_fits(digits, (8, 8, 1), 10, "m")


def test_a_shape_that_is_not_the_image_is_left_to_check_fits(digits):
    assert shaped_for(digits, (4, 16, 1)) is digits
    with pytest.raises(DataError, match=r"takes \(4, 16, 1\)$"):
        check_fits(digits, (4, 16, 1), 10, "m")
