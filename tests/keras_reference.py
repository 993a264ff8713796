"""Keras itself, for the tests that compare the importer with it: tf-keras models built from the
repository's own (trusted) example files, run in float32 or float64. Not on any import path of the
product, which never deserializes a model through Keras."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from codesign.importers.keras_live import import_tf


def custom_objects() -> dict[str, Any]:
    import_tf()
    from qkeras.utils import _add_supported_quantized_objects

    co: dict[str, Any] = {}
    _add_supported_quantized_objects(co)
    return co


def retyped(config_text: str, floatx: str) -> str:
    """The architecture JSON with every float dtype set to ``floatx``."""
    def retype(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: (floatx if k == "dtype" and isinstance(v, str) and v.startswith("float") else retype(v))
                    for k, v in o.items()}
        if isinstance(o, list):
            return [retype(v) for v in o]
        return o

    return json.dumps(retype(json.loads(config_text)))


def keras_model(json_path: Path, weights: Path | None = None, floatx: str = "float32",
                extra_objects: dict[str, Any] | None = None) -> Any:
    """A tf-keras model from an architecture JSON (or a full .h5's model_config) and its weights, in ``floatx``."""
    tf = import_tf()
    json_path = Path(json_path)
    if json_path.suffix == ".json":
        text = json_path.read_text()
        wpath = Path(weights) if weights else json_path.with_name(f"{json_path.stem}_weights.h5")
    else:
        import h5py

        with h5py.File(json_path, "r") as f:
            text = f.attrs["model_config"]
            text = text.decode() if isinstance(text, bytes) else text
        wpath = json_path
    tf.keras.backend.set_floatx(floatx)
    try:
        model = tf.keras.models.model_from_json(retyped(text, floatx),
                                                custom_objects={**custom_objects(), **(extra_objects or {})})
        model.load_weights(str(wpath))
    finally:
        tf.keras.backend.set_floatx("float32")
    return model


def keras_outputs(json_path: Path, x: np.ndarray, weights: Path | None = None, floatx: str = "float64",
                  before_softmax: bool = True, extra_objects: dict[str, Any] | None = None) -> np.ndarray:
    """The Keras model's own outputs on ``x`` (pre-softmax by default), evaluated in ``floatx``."""
    tf = import_tf()
    model = keras_model(json_path, weights, floatx, extra_objects)
    out = model.layers[-1]
    if before_softmax and type(out).__name__ == "Activation" and out.get_config()["activation"] == "softmax":
        model = tf.keras.Model(model.inputs, model.layers[-2].output)
    tf.keras.backend.set_floatx(floatx)  # QKeras quantizers cast to floatx when called
    try:
        return np.asarray(model(tf.constant(x, dtype=floatx), training=False).numpy(), dtype=np.float64)
    finally:
        tf.keras.backend.set_floatx("float32")


def hgq_proxy_outputs(h5_path: Path, x: np.ndarray) -> np.ndarray:
    """An HGQ proxy model run in tf-keras in float64, its FixedPointQuantizer layers evaluated by the
    ``quantizers`` package (the fixed-point quantizer of HGQ's author, which hls4ml ships with) as HGQ's
    ``gfixed_quantizer`` documents them: ``q = SAT(RND(x * 2**f)) / 2**f``, zero where ``bits == 0``.
    (The ``hgq`` package itself pins TensorFlow 2.13-2.15 and numpy 1.x, so it cannot run here.)"""
    tf = import_tf()
    from quantizers import get_fixed_quantizer_np

    class FixedPointQuantizer(tf.keras.layers.Layer):
        def __init__(self, RND: str = "TRN", SAT: str = "WRAP", shape: Any = (1,), overrides: Any = None,
                     fusible: Any = None, **kw: Any) -> None:
            super().__init__(**kw)
            self.rnd, self.sat, self.qshape = RND, SAT, tuple(shape)

        def build(self, input_shape: Any) -> None:
            for n in ("keep_negative", "bits", "integers"):
                setattr(self, n, self.add_weight(name=n, shape=self.qshape, dtype="int8", trainable=False))

        def call(self, x: Any) -> Any:
            quantize = get_fixed_quantizer_np(self.rnd, self.sat)

            def run(x: np.ndarray, k: np.ndarray, b: np.ndarray, i: np.ndarray) -> np.ndarray:
                k, b, i = (a.astype(np.float64) for a in (k, b, i))
                return np.where(b > 0, quantize(x, k, i - k, b - i), 0.0).astype(x.dtype)

            y = tf.numpy_function(run, [x, self.keep_negative, self.bits, self.integers], x.dtype)
            y.set_shape(x.shape)
            return y

    model = keras_model(h5_path, floatx="float64", extra_objects={"FixedPointQuantizer": FixedPointQuantizer})
    return np.asarray(model(tf.constant(x, dtype="float64"), training=False).numpy(), dtype=np.float64)
