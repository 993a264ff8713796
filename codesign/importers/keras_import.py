"""Keras and QKeras import (tf-keras 2, Keras-2 API): exact mapping of QKeras quantizers.

TensorFlow is imported lazily, with ``TF_USE_LEGACY_KERAS=1`` set first (QKeras is Keras-2
only), so PyTorch-only users never need it.

Mapping (QKeras 0.9 source, ``quantizers.py``): ``quantized_bits(bits, integer,
keep_negative=1, alpha=1)`` rounds half to even (``tf.round``) and clips to
``[-2**(bits-1), 2**(bits-1)-1]`` steps of ``2**(integer-bits+1)``: that is
``ap_fixed<bits, integer+1, AP_RND_CONV, AP_SAT>``. ``quantized_relu(bits, integer)`` is
``ap_ufixed<bits, integer, AP_RND_CONV, AP_SAT>`` applied to ``max(x, 0)``. Weight
quantizers are evaluated on the weights themselves, so a power-of-two ``alpha`` (including
``auto_po2``) maps exactly onto a wider type; a scale that is not a power of two is refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from codesign.core import fixed
from codesign.core.fixed import FixedType
from codesign.core.layers import (
    BatchNorm,
    Conv1D,
    Conv2D,
    Dense,
    Flatten,
    Layer,
    Output,
    Quant,
    ReLU,
)
from codesign.core.network import Network
from codesign.errors import ModelFileError, UnsupportedLayerError

DEFAULT_INPUT_TYPE = FixedType(16, 6, True, "RND_CONV", "SAT")  # hls4ml's default precision, ap_fixed<16,6>
SUPPORTED = ("InputLayer, Dense, QDense, Conv1D, Conv2D, QConv1D, QConv2D, BatchNormalization (float models), "
             "Activation (relu, linear, softmax), QActivation (quantized_relu, quantized_bits), Flatten, Dropout")
MAX_WEIGHT_FRAC = 40


def import_tf() -> Any:
    """TensorFlow with legacy (Keras 2) Keras, or a clear error saying how to install it."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ["TF_USE_LEGACY_KERAS"] != "1":
        raise ModelFileError("TF_USE_LEGACY_KERAS must be 1 for QKeras (Keras-2 only); unset it or set it to 1")
    try:
        import tensorflow as tf
        import tf_keras  # noqa: F401
    except ImportError:
        raise ModelFileError(
            "Keras/QKeras import needs TensorFlow: pip install 'fpga-codesign[keras]' "
            "(tensorflow, tf-keras, qkeras)"
        ) from None
    return tf


def custom_objects() -> dict[str, Any]:
    import_tf()
    try:
        from qkeras.utils import _add_supported_quantized_objects
    except ImportError:
        return {}
    co: dict[str, Any] = {}
    _add_supported_quantized_objects(co)
    return co


def load_keras_file(path: Path, weights: str | Path | None = None, input_type: FixedType | str | None = None,
                    floatx: str = "float32") -> Network:
    """``.json`` (+ ``<stem>_weights.h5`` beside it unless ``weights``), a full-model ``.h5`` or ``.keras``."""
    return network_from_keras(load_keras_model(path, weights, floatx), input_type=input_type, name=path.stem)


def load_keras_model(path: Path, weights: str | Path | None = None, floatx: str = "float32") -> Any:
    """The live tf-keras model (QKeras layers included), computing in ``floatx``."""
    path = Path(path)
    model = _load_keras_model(path, weights)
    if floatx == "float32":
        return model
    return with_floatx(model, floatx, _config_text(path))


def _config_text(path: Path) -> str | None:
    """The architecture JSON as saved (tf-keras 2.21 re-serializes QActivation badly)."""
    if path.suffix == ".json":
        return path.read_text()
    if path.suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as f:
            cfg = f.attrs.get("model_config")
            return cfg.decode() if isinstance(cfg, bytes) else cfg
    return None


def with_floatx(model: Any, floatx: str, config_text: str | None = None) -> Any:
    """The same model and weights, rebuilt to compute in ``floatx`` (e.g. float64)."""
    import json

    tf = import_tf()

    def retype(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: (floatx if k == "dtype" and isinstance(v, str) and v.startswith("float") else retype(v))
                    for k, v in o.items()}
        if isinstance(o, list):
            return [retype(v) for v in o]
        return o

    cfg = retype(json.loads(config_text or model.to_json()))
    tf.keras.backend.set_floatx(floatx)
    try:
        clone = tf.keras.models.model_from_json(json.dumps(cfg), custom_objects=custom_objects())
        clone.set_weights([np.asarray(w, dtype=floatx) for w in model.get_weights()])
    finally:
        tf.keras.backend.set_floatx("float32")
    return clone


def _load_keras_model(path: Path, weights: str | Path | None) -> Any:
    tf = import_tf()
    co = custom_objects()
    if path.suffix == ".json":
        wpath = Path(weights) if weights else path.with_name(f"{path.stem}_weights.h5")
        if not wpath.is_file():
            raise ModelFileError(f"{path}: no weights file {wpath.name} beside it; pass weights=... (CLI: --weights)")
        try:
            model = tf.keras.models.model_from_json(path.read_text(), custom_objects=co)
        except (ValueError, TypeError, KeyError) as e:
            raise ModelFileError(f"{path}: not a Keras model JSON ({str(e).splitlines()[0][:200]})") from None
        try:
            model.load_weights(str(wpath))
        except (ValueError, OSError) as e:
            raise ModelFileError(f"{wpath}: cannot load weights ({str(e).splitlines()[0][:200]})") from None
        return model
    try:
        return tf.keras.models.load_model(str(path), custom_objects=co, compile=False)
    except (ValueError, OSError, TypeError, KeyError) as e:
        raise ModelFileError(f"{path}: not a readable Keras model ({str(e).splitlines()[0][:200]})") from None


def _quantizer_name(q: Any) -> str:
    return type(q).__name__ if q is not None else "None"


def _pow2(v: Any) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f > 0 and math.log2(f) == round(math.log2(f))


def activation_type(q: Any, layer: str) -> tuple[str, FixedType]:
    """``("relu"|"quant", type)`` for a QKeras activation quantizer, or a refusal naming the layer."""
    name = _quantizer_name(q)
    cfg = q.get_config() if hasattr(q, "get_config") else {}
    if getattr(q, "use_stochastic_rounding", False):
        raise UnsupportedLayerError(f"layer {layer!r}: {name} with stochastic rounding has no fixed-point equivalent")
    if name == "quantized_relu":
        if cfg.get("negative_slope", 0.0) != 0.0 or cfg.get("use_sigmoid", 0) or cfg.get("relu_upper_bound") is not None:
            raise UnsupportedLayerError(
                f"layer {layer!r}: quantized_relu with negative_slope, use_sigmoid or relu_upper_bound is not supported"
            )
        return "relu", FixedType(int(cfg["bits"]), int(cfg["integer"]), False, "RND_CONV", "SAT")
    if name == "quantized_bits":
        alpha = cfg.get("alpha")
        if cfg.get("symmetric", 0):
            raise UnsupportedLayerError(
                f"layer {layer!r}: quantized_bits(symmetric=1) as an activation clips to a symmetric range that "
                "ap_fixed saturation does not have"
            )
        if alpha not in (None, 1, 1.0):
            if isinstance(alpha, str) or not _pow2(alpha):
                raise UnsupportedLayerError(
                    f"layer {layer!r}: quantized_bits(alpha={alpha!r}) as an activation has a data-dependent or "
                    "non-power-of-two scale; use alpha=1"
                )
        keep = int(bool(cfg.get("keep_negative", True)))
        shift = int(round(math.log2(float(alpha)))) if alpha not in (None,) else 0
        return "quant", FixedType(int(cfg["bits"]), int(cfg["integer"]) + keep + shift, bool(keep), "RND_CONV", "SAT")
    raise UnsupportedLayerError(
        f"layer {layer!r}: activation quantizer {name} has no exact fixed-point equivalent; "
        "supported: quantized_relu, quantized_bits"
    )


def weight_ints(values: np.ndarray, q: Any, layer: str, what: str) -> tuple[np.ndarray, FixedType]:
    """Apply a QKeras weight quantizer and return the integers and a type that holds them exactly."""
    tf = import_tf()
    name = _quantizer_name(q)
    if q is None:
        raise UnsupportedLayerError(
            f"layer {layer!r}: {what} has no quantizer, so its values have no fixed-point type; give the layer a "
            f"{what}_quantizer (e.g. quantized_bits(8,0,alpha=1))"
        )
    if name not in ("quantized_bits", "quantized_po2"):
        raise UnsupportedLayerError(
            f"layer {layer!r}: {what} quantizer {name} is not supported; supported: quantized_bits (power-of-two alpha)"
        )
    cfg = q.get_config()
    alpha = cfg.get("alpha")
    if isinstance(alpha, str) and "po2" not in alpha:
        raise UnsupportedLayerError(
            f"layer {layer!r}: {what} quantizer {name}(alpha={alpha!r}) scales by a float that is not a power of two; "
            "use alpha=1 or 'auto_po2'"
        )
    if alpha is not None and not isinstance(alpha, str) and not _pow2(alpha):
        raise UnsupportedLayerError(
            f"layer {layer!r}: {what} quantizer {name}(alpha={alpha!r}): alpha is not a power of two"
        )
    qv = np.asarray(q(tf.constant(values, dtype=tf.float32)).numpy(), dtype=np.float64)
    if name == "quantized_bits" and alpha in (None, 1, 1.0):
        keep = int(bool(cfg.get("keep_negative", True)))
        t = FixedType(int(cfg["bits"]), int(cfg["integer"]) + keep, bool(keep))
    else:
        frac = 0
        while frac < MAX_WEIGHT_FRAC and not np.all(np.ldexp(qv, frac) == np.round(np.ldexp(qv, frac))):
            frac += 1
        ints = np.round(np.ldexp(qv, frac)).astype(np.int64)
        t = fixed.type_for_range(min(int(ints.min(initial=0)), 0), max(int(ints.max(initial=0)), 0), frac)
    if not fixed.representable(qv, t):
        raise UnsupportedLayerError(f"layer {layer!r}: {what} quantizer {name} produced values outside {t}")
    return np.round(np.ldexp(qv, t.frac)).astype(np.int64), t


def network_from_keras(model: Any, input_type: FixedType | str | None = None, name: str | None = None) -> Network:
    """Import a live tf-keras / QKeras model."""
    layers: list[Layer] = []
    quantized = any(type(l).__name__.startswith("Q") for l in model.layers)
    in_shape = tuple(int(d) for d in model.input_shape[1:])
    for kl in model.layers:
        cls = type(kl).__name__
        lname = kl.name
        cfg = kl.get_config()
        if cfg.get("data_format") == "channels_first":
            raise UnsupportedLayerError(f"layer {lname!r} ({cls}): data_format='channels_first' is not supported")
        if cls in ("InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D"):
            continue
        if cls in ("Dense", "QDense", "Conv1D", "Conv2D", "QConv1D", "QConv2D"):
            layers.append(_weighted(kl, cls, quantized))
            act = cfg.get("activation", "linear")
            _append_activation(layers, act, kl, lname, quantized, suffix="_act")
        elif cls == "Activation":
            _append_activation(layers, cfg["activation"], kl, lname, quantized)
        elif cls == "QActivation":
            kind, t = activation_type(kl.activation if not isinstance(kl.activation, str) else kl.quantizer, lname)
            layers.append(ReLU(lname, t) if kind == "relu" else Quant(lname, t))
        elif cls == "ReLU":
            layers.append(ReLU(lname))
        elif cls == "Flatten":
            layers.append(Flatten(lname))
        elif cls in ("BatchNormalization", "QBatchNormalization"):
            if quantized:
                raise UnsupportedLayerError(
                    f"layer {lname!r} ({cls}): BatchNorm in a quantized model is computed in float by QKeras and has "
                    "no exact fixed-point equivalent; use QDenseBatchnorm/QConv2DBatchnorm or fold it before training"
                )
            layers.append(_batchnorm(kl, cfg))
        else:
            raise UnsupportedLayerError(f"layer {lname!r}: unsupported layer type {cls}; supported: {SUPPORTED}")
    if not layers or not isinstance(layers[-1], Output):
        layers.append(Output("output", "linear"))
    meta: dict[str, Any] = {"source": "qkeras" if quantized else "keras"}
    t = None
    if quantized:
        t = FixedType.parse(input_type) if isinstance(input_type, str) else (input_type or DEFAULT_INPUT_TYPE)
        meta["input_type_default"] = input_type is None
        if input_type is None:
            meta["input_type_note"] = f"input type {t} is the default (hls4ml's ap_fixed<16,6>); set input_type to change it"
    return Network(name or model.name, in_shape, layers, t, meta)


def _append_activation(layers: list[Layer], act: Any, kl: Any, lname: str, quantized: bool, suffix: str = "") -> None:
    if isinstance(act, dict):
        act = act.get("class_name", act)
    if act in ("linear", None):
        return
    if act == "relu":
        layers.append(ReLU(lname + suffix))
    elif act == "softmax":
        layers.append(Output(lname + suffix, "softmax"))
    elif isinstance(act, str) and act.startswith(("quantized_", "binary", "ternary")) or not isinstance(act, str):
        q = kl.activation
        kind, t = activation_type(q, lname)
        layers.append(ReLU(lname + suffix, t) if kind == "relu" else Quant(lname + suffix, t))
    else:
        raise UnsupportedLayerError(
            f"layer {lname!r}: activation {act!r} is not supported; supported: relu, linear, softmax (last layer), "
            "quantized_relu, quantized_bits"
        )


def _weighted(kl: Any, cls: str, quantized: bool) -> Layer:
    cfg = kl.get_config()
    kernel = np.asarray(kl.kernel.numpy(), dtype=np.float64)
    bias = np.asarray(kl.bias.numpy(), dtype=np.float64) if getattr(kl, "bias", None) is not None else np.zeros(kernel.shape[-1])
    kw: dict[str, Any] = {}
    if cls.startswith("Conv") or cls.startswith("QConv"):
        if any(d != 1 for d in np.atleast_1d(cfg.get("dilation_rate", 1))) or cfg.get("groups", 1) != 1:
            raise UnsupportedLayerError(f"layer {kl.name!r} ({cls}): dilation and groups other than 1 are not supported")
        kw = {"strides": tuple(np.atleast_1d(cfg["strides"])), "padding": cfg["padding"]}
        if kw["padding"] not in ("valid", "same"):
            raise UnsupportedLayerError(f"layer {kl.name!r}: padding {kw['padding']!r} is not supported")
    layer_cls = Dense if "Dense" in cls else (Conv1D if "1D" in cls else Conv2D)
    mask = kernel != 0  # a pruned model's zeros are its mask
    if quantized:
        if not cls.startswith("Q"):
            raise UnsupportedLayerError(
                f"layer {kl.name!r}: a float {cls} inside a QKeras model has no fixed-point weights; use Q{cls}"
            )
        w, wt = weight_ints(kernel, kl.kernel_quantizer_internal, kl.name, "kernel")
        if getattr(kl, "bias", None) is None:
            b, bt = np.zeros(kernel.shape[-1], dtype=np.int64), FixedType(1, 1)
        else:
            b, bt = weight_ints(bias, kl.bias_quantizer_internal, kl.name, "bias")
        return layer_cls(kl.name, w, b, mask=mask & (w != 0), weight_type=wt, bias_type=bt, **kw)
    return layer_cls(kl.name, kernel, bias, mask=mask, **kw)


def _batchnorm(kl: Any, cfg: dict[str, Any]) -> BatchNorm:
    n = int(kl.moving_mean.shape[0])
    gamma = kl.gamma.numpy() if cfg.get("scale", True) else np.ones(n)
    beta = kl.beta.numpy() if cfg.get("center", True) else np.zeros(n)
    return BatchNorm(kl.name, gamma, beta, kl.moving_mean.numpy(), kl.moving_variance.numpy(), float(cfg["epsilon"]))


def keras_outputs(model_path: Path, x: np.ndarray, weights: str | Path | None = None, floatx: str = "float64",
                  before_softmax: bool = True) -> np.ndarray:
    """The Keras model's own outputs on ``x`` (pre-softmax by default), evaluated in ``floatx``."""
    tf = import_tf()
    model = load_keras_model(Path(model_path), weights, floatx)
    out = model.layers[-1]
    if before_softmax and type(out).__name__ == "Activation" and out.get_config()["activation"] == "softmax":
        model = tf.keras.Model(model.inputs, model.layers[-2].output)
    tf.keras.backend.set_floatx(floatx)  # QKeras quantizers cast to floatx when called
    try:
        return np.asarray(model(tf.constant(x, dtype=floatx), training=False).numpy(), dtype=np.float64)
    finally:
        tf.keras.backend.set_floatx("float32")
