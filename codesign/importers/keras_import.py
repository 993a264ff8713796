"""Keras, QKeras and HGQ models to the IR, mapped layer by layer from the config as data.

The files are read by ``keras_files`` (JSON + h5py; no Keras, no TensorFlow, nothing from the file
runs); quantizers are mapped by ``qkeras_quant`` and HGQ's ``FixedPointQuantizer`` by ``hgq``. A first
pass over the config (``plan``) refuses every unsupported layer, quantizer and absurd size, naming
the layer, before any weight is read; the second (``network_from_config``) builds the layers and
checks each weight array against the shape its config implies. A live tf-keras/Keras model goes
through the same two passes (``keras_live``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import LayerError, ModelFileError, UnsupportedLayerError
from codesign.core import fixed
from codesign.core.fixed import FixedType
from codesign.importers import hgq
from codesign.importers.keras_files import KerasFile, input_shape, model_layers, read_keras_file
from codesign.importers.qkeras_quant import activation_type, parse_quantizer, weight_ints
from codesign.core.layers import (Add, AvgPool1D, AvgPool2D, BatchNorm, Concatenate, Conv1D, Conv2D, Dense, Flatten,
                                  GlobalAvgPool1D, GlobalAvgPool2D, Layer, MaxPool1D, MaxPool2D, Output, Quant, ReLU)
from codesign.core.network import INPUT, Network

DEFAULT_INPUT_TYPE = FixedType(16, 6, True, "RND_CONV", "SAT")  # hls4ml's default precision, ap_fixed<16,6>
SUPPORTED = ("InputLayer, Dense, QDense, Conv1D, Conv2D, QConv1D, QConv2D, BatchNormalization (float models), "
             "Activation (relu, linear, softmax last), QActivation (quantized_relu, quantized_bits), ReLU, "
             "Softmax (last), Flatten, Reshape (at the input or after a per-element input quantizer, or to 1-D), "
             "Dropout, MaxPooling1D/2D (valid), "
             "AveragePooling1D/2D and QAveragePooling2D (valid, power-of-two windows), GlobalAveragePooling1D/2D and "
             "QGlobalAveragePooling2D (power-of-two positions), FixedPointQuantizer (HGQ), Add, Concatenate (last axis)")
SKIPPED = {"InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "AlphaDropout", "GaussianDropout",
           "GaussianNoise", "ActivityRegularization"}
WEIGHTED = {"Dense": 0, "QDense": 0, "Conv1D": 1, "QConv1D": 1, "Conv2D": 2, "QConv2D": 2}
BATCHNORMS = {"BatchNormalization", "QBatchNormalization"}
MAX_POOLS = {"MaxPooling1D": 1, "MaxPool1D": 1, "MaxPooling2D": 2, "MaxPool2D": 2}
AVG_POOLS = {"AveragePooling1D": 1, "AvgPool1D": 1, "AveragePooling2D": 2, "AvgPool2D": 2, "QAveragePooling2D": 2}
GLOBAL_AVG_POOLS = {"GlobalAveragePooling1D": 1, "GlobalAvgPool1D": 1, "GlobalAveragePooling2D": 2,
                    "GlobalAvgPool2D": 2, "QGlobalAveragePooling2D": 2}
MERGES = {"Add": Add, "Concatenate": Concatenate}  # exact in the IR (QKeras has no quantized merge: its sum is exact)
MAX_PARAMS = 1 << 24  # weights of one model; an FPGA network is thousands to a few million
MAX_TENSOR = 1 << 24  # elements of one activation tensor


def load_keras_file(path: Path, weights: str | Path | None = None, input_type: FixedType | str | None = None) -> Network:
    """``.json`` (+ ``<stem>_weights.h5`` beside it unless ``weights``), a full-model ``.h5`` or ``.keras``."""
    path = Path(path)
    kf = read_keras_file(path, weights, check=plan)
    return network_from_config(kf, input_type=input_type, name=path.stem)


@dataclass
class Plan:
    """The checked architecture: layer entries in order (each after the layers it reads, named in its
    ``inbound``) with the shape each one receives (a merge's first input's)."""

    name: str
    input_shape: tuple[int, ...]
    entries: list[dict[str, Any]]
    shapes: list[tuple[int, ...]]
    quantized: bool  # QKeras layers present
    hgq: bool  # HGQ FixedPointQuantizer layers present


def plan(config: dict[str, Any], source: str) -> Plan:
    """Check every layer's config (class, options, quantizers, sizes) and propagate shapes; read no weight."""
    name, entries = model_layers(config, source)
    shape = input_shape(entries, source)
    _check_tensor(entries[0]["name"], shape)
    classes = [e["class_name"] for e in entries]
    quantized = any(c.startswith("Q") for c in classes)
    is_hgq = any(c in hgq.HGQ_QUANTIZERS for c in classes)
    shapes, params, out_shapes = [], 0, {}
    last = max(i for i, c in enumerate(classes) if c not in SKIPPED)
    for i, e in enumerate(entries):
        ins = [out_shapes[src] for src in e["inbound"]] or [shape]
        shapes.append(ins[0])
        if e["class_name"] in MERGES:
            shape, n = _check_merge(e, ins), 0
        elif len(ins) > 1:
            raise UnsupportedLayerError(f"layer {e['name']!r} ({e['class_name']}) reads {len(ins)} tensors; only Add "
                                        "and Concatenate merge tensors")
        else:
            shape, n = _check_entry(e, ins[0], i == last, quantized, is_hgq)
        out_shapes[e["name"]] = shape
        params += n
        if params > MAX_PARAMS:
            raise ModelFileError(f"layer {e['name']!r} ({e['class_name']}): the model has {params:,} weights by this "
                                 f"layer, more than this tool handles ({MAX_PARAMS:,}); the file is corrupt or the "
                                 "model is not for an FPGA")
        _check_tensor(e["name"], shape)
    return Plan(name, input_shape(entries, source), entries, shapes, quantized, is_hgq)


def _check_merge(e: dict[str, Any], shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The output shape of an Add or Concatenate (last axis only), or a refusal naming it."""
    cls, lname, cfg = e["class_name"], e["name"], e["config"]
    if len(shapes) < 2:
        raise UnsupportedLayerError(f"layer {lname!r} ({cls}): reads {len(shapes)} tensor; a merge needs two or more")
    if cls == "Concatenate" and cfg.get("axis", -1) not in (-1, len(shapes[0])):
        raise UnsupportedLayerError(f"layer {lname!r} (Concatenate): axis {cfg.get('axis')!r} is not supported; only "
                                    "the last (channel) axis, -1")
    try:
        return MERGES[cls](lname, inputs=tuple(e["inbound"])).merged_shape(shapes)
    except LayerError as err:
        raise UnsupportedLayerError(str(err)) from None


def _check_tensor(lname: str, shape: tuple[int, ...]) -> None:
    if int(np.prod(shape, dtype=np.float64)) > MAX_TENSOR:
        raise ModelFileError(f"layer {lname!r}: a tensor of shape {shape} has more than {MAX_TENSOR:,} elements; "
                             "the file is corrupt or the model is not for an FPGA")


def _int(cfg: dict[str, Any], key: str, lname: str, lo: int = 1) -> int:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ModelFileError(f"layer {lname!r}: {key} must be an integer >= {lo}, not {v!r}")
    return v


def _tuple(v: Any, n: int, key: str, lname: str) -> tuple[int, ...]:
    t = tuple(v) if isinstance(v, (list, tuple)) else (v,) * n
    if len(t) != n or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 16 for d in t):
        raise ModelFileError(f"layer {lname!r}: {key} must be {n} positive integers, not {v!r}")
    return t


def _check_entry(e: dict[str, Any], shape: tuple[int, ...], is_last: bool, quantized: bool,
                 is_hgq: bool) -> tuple[tuple[int, ...], int]:
    """The output shape and weight count of one layer, or a refusal naming it."""
    cls, lname, cfg = e["class_name"], e["name"], e["config"]
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise UnsupportedLayerError(f"layer {lname!r} ({cls}): data_format={cfg['data_format']!r} is not supported")
    if cls in SKIPPED:
        return shape, 0
    if cls in WEIGHTED:
        nd = WEIGHTED[cls]
        if quantized and not cls.startswith("Q") and not is_hgq:
            raise UnsupportedLayerError(
                f"layer {lname!r}: a float {cls} inside a QKeras model has no fixed-point weights; use Q{cls}")
        if cls.startswith("Q"):
            parse_quantizer(cfg.get("kernel_quantizer"), lname, "kernel quantizer")
            parse_quantizer(cfg.get("bias_quantizer"), lname, "bias quantizer")
        activation_layers(cfg.get("activation"), lname, "_act", is_last)
        if nd == 0:
            if len(shape) != 1:
                raise UnsupportedLayerError(f"layer {lname!r} ({cls}): a Dense on a {len(shape)}-D tensor (applied per "
                                            "position) is not supported; put a Flatten before it")
            units = _int(cfg, "units", lname)
            return (units,), shape[0] * units + units
        if len(shape) != nd + 1:
            raise UnsupportedLayerError(f"layer {lname!r} ({cls}): expects a {nd + 1}-D input, gets {shape}")
        filters = _int(cfg, "filters", lname)
        ks = _tuple(cfg.get("kernel_size"), nd, "kernel_size", lname)
        strides = _tuple(cfg.get("strides", 1), nd, "strides", lname)
        if _tuple(cfg.get("dilation_rate", 1), nd, "dilation_rate", lname) != (1,) * nd or cfg.get("groups", 1) != 1:
            raise UnsupportedLayerError(f"layer {lname!r} ({cls}): dilation and groups other than 1 (dilated, grouped "
                                        f"or depthwise convolution) are not supported; supported: {SUPPORTED}")
        pad = cfg.get("padding", "valid")
        if pad not in ("valid", "same"):
            raise UnsupportedLayerError(f"layer {lname!r} ({cls}): padding {pad!r} is not supported (only 'valid' "
                                        "and 'same')")
        out = [(-(-n // s)) if pad == "same" else (n - k) // s + 1 for n, k, s in zip(shape[:-1], ks, strides)]
        if min(out) < 1:
            raise ModelFileError(f"layer {lname!r}: kernel {ks} is larger than its input {shape}")
        return (*out, filters), int(np.prod(ks)) * shape[-1] * filters + filters
    if cls in BATCHNORMS:
        if quantized or is_hgq:
            raise UnsupportedLayerError(
                f"layer {lname!r} ({cls}): BatchNorm in a quantized model is computed in float by QKeras and has "
                "no exact fixed-point equivalent; use QDenseBatchnorm/QConv2DBatchnorm or fold it before training")
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
        if axis not in (-1, len(shape)):
            raise UnsupportedLayerError(f"layer {lname!r} ({cls}): normalizing axis {axis!r} is not supported; "
                                        "only the last (channel) axis")
        return shape, 4 * shape[-1]
    if cls in ("Activation", "QActivation"):
        activation_layers(cfg.get("activation"), lname, "", is_last)
        return shape, 0
    if cls == "ReLU":
        if cfg.get("max_value") is not None or cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
            raise UnsupportedLayerError(f"layer {lname!r} (ReLU): max_value, negative_slope and threshold are not "
                                        "supported")
        return shape, 0
    if cls == "Softmax":
        if not is_last:
            raise UnsupportedLayerError(f"layer {lname!r} (Softmax): softmax is supported as the last layer only")
        return shape, 0
    if cls == "Flatten":
        return (int(np.prod(shape)),), 0
    if cls == "Reshape":
        target = cfg.get("target_shape")
        if not isinstance(target, list) or not all(isinstance(d, int) and d > 0 for d in target) or \
                int(np.prod(target)) != int(np.prod(shape)):
            raise UnsupportedLayerError(f"layer {lname!r} (Reshape): target shape {target!r} does not fit {shape}")
        return tuple(target), 0
    if cls in MAX_POOLS or cls in AVG_POOLS or cls in GLOBAL_AVG_POOLS:
        if cfg.get("padding", "valid") != "valid":
            raise UnsupportedLayerError(f"layer {lname!r} ({cls}): only padding='valid' is supported (a 'same' "
                                        "border window has fewer values)")
        nd = {**MAX_POOLS, **AVG_POOLS, **GLOBAL_AVG_POOLS}[cls]
        if len(shape) != nd + 1:
            raise UnsupportedLayerError(f"layer {lname!r} ({cls}): expects a {nd + 1}-D input, gets {shape}")
        if cls.startswith("Q"):
            activation_layers(cfg.get("activation"), lname, "_act", is_last)
        layers = _pool_layers(lname, cls, cfg)
        try:
            return layers[0].output_shape(shape), 0
        except LayerError as e:  # an average over a count that is not a power of two
            raise UnsupportedLayerError(f"layer {lname!r} ({cls}): {str(e).split(': ', 1)[1]}") from None
    if cls in hgq.HGQ_QUANTIZERS:
        hgq.check_modes(lname, cfg)
        return shape, 0
    if cls == "Lambda":
        raise UnsupportedLayerError(
            f"layer {lname!r} (Lambda): a Lambda layer holds Python code, which is never run from a model file; "
            "replace it with built-in layers")
    raise UnsupportedLayerError(f"layer {lname!r}: unsupported layer type {cls}; supported: {SUPPORTED}")


def _pool_layers(lname: str, cls: str, cfg: dict[str, Any]) -> list[Layer]:
    """A pooling layer of the IR (valid padding checked by the caller), and a QKeras pooling's activation."""
    if cls in GLOBAL_AVG_POOLS:
        if cfg.get("keepdims", False):
            raise UnsupportedLayerError(f"layer {lname!r} ({cls}): keepdims=True is not supported; the IR's global "
                                        "pooling gives (channels,), as keepdims=False does")
        pool: list[Layer] = [(GlobalAvgPool1D if GLOBAL_AVG_POOLS[cls] == 1 else GlobalAvgPool2D)(lname)]
    else:
        nd = {**MAX_POOLS, **AVG_POOLS}[cls]
        size = _tuple(cfg.get("pool_size", 2), nd, "pool_size", lname)
        strides = _tuple(cfg.get("strides") or size, nd, "strides", lname)
        kind = {(1, True): MaxPool1D, (2, True): MaxPool2D, (1, False): AvgPool1D, (2, False): AvgPool2D}
        try:
            pool = [kind[nd, cls in MAX_POOLS](lname, size, strides)]
        except LayerError as e:  # a window whose size is not a power of two
            raise UnsupportedLayerError(f"layer {lname!r} ({cls}): {str(e).split(': ', 1)[1]}") from None
    if not cls.startswith("Q"):
        return pool
    if cfg.get("average_quantizer") is not None:
        # QKeras multiplies the mean by N and then by the quantized 1/N: the same mean only when 1/N is exact
        q = parse_quantizer(cfg.get("average_quantizer"), lname, "average quantizer")
        n = 1 << (pool[0].shift if isinstance(pool[0], (AvgPool1D, AvgPool2D)) else 0)
        if isinstance(pool[0], (GlobalAvgPool1D, GlobalAvgPool2D)):
            raise UnsupportedLayerError(f"layer {lname!r} ({cls}): an average_quantizer on global pooling is not "
                                        "supported; leave it unset (the mean is exact) and quantize with activation")
        ints, t = weight_ints(np.array([1.0 / n]), q, lname, "average quantizer")
        if fixed.to_float(ints, t)[0] != 1.0 / n:
            raise UnsupportedLayerError(f"layer {lname!r} ({cls}): the average quantizer rounds 1/{n}, so QKeras' "
                                        "result is not the mean; use a quantizer that holds 1/N or none")
    return pool + activation_layers(cfg.get("activation"), lname, "_act", True)


def activation_layers(act: Any, lname: str, suffix: str, is_last: bool) -> list[Layer]:
    """The IR layers of a Keras activation (name) or QKeras activation quantizer (string or dict)."""
    if isinstance(act, dict) and not _is_quantizer(act.get("class_name")) and "qkeras" not in str(act.get("module")):
        act = act.get("class_name") if isinstance(act.get("class_name"), str) else act
    if act in (None, "linear"):
        return []
    if act == "relu":
        return [ReLU(lname + suffix)]
    if act == "softmax":
        if not is_last:
            raise UnsupportedLayerError(f"layer {lname!r}: softmax is supported on the last layer only")
        return [Output(lname + suffix, "softmax")]
    if isinstance(act, str) and not _is_quantizer(act):
        raise UnsupportedLayerError(
            f"layer {lname!r}: activation {act!r} is not supported; supported: relu, linear, softmax (last layer), "
            "quantized_relu, quantized_bits")
    kind, t = activation_type(parse_quantizer(act, lname, "activation quantizer"), lname)
    return [ReLU(lname + suffix, t) if kind == "relu" else Quant(lname + suffix, t)]


def _is_quantizer(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(("quantized_", "binary", "ternary", "stochastic_", "bernoulli"))


# ---- building ----------------------------------------------------------------------------------
def network_from_config(kf: KerasFile, input_type: FixedType | str | None = None, name: str | None = None) -> Network:
    """The Network of a model read as data (``kf.plan`` from ``plan`` when the reader ran it)."""
    p: Plan = kf.plan if isinstance(kf.plan, Plan) else plan(kf.config, kf.source)
    layers: list[Layer] = []
    in_shape = p.input_shape
    hgq_input: FixedType | None = None
    notes: list[str] = []
    tensor: dict[str, str] = {}  # a Keras layer's name -> the IR layer (or INPUT) that holds its output
    for e, shape in zip(p.entries, p.shapes):
        cls, lname, cfg = e["class_name"], e["name"], e["config"]
        w = kf.weights.get(lname, {})
        srcs = tuple(tensor[src] for src in e["inbound"]) or (INPUT,)
        before = len(layers)
        if cls in SKIPPED:
            pass
        elif cls in MERGES:
            layers.append(MERGES[cls](lname))
        elif cls in WEIGHTED:
            layers.append(_weighted(lname, cls, cfg, w, shape, p, notes))
            layers.extend(activation_layers(cfg.get("activation"), lname, "_act", True))
        elif cls in ("Activation", "QActivation"):
            layers.extend(activation_layers(cfg.get("activation"), lname, "", True))
        elif cls in BATCHNORMS:
            layers.append(_batchnorm(lname, cfg, w, shape[-1]))
        elif cls == "ReLU":
            layers.append(ReLU(lname))
        elif cls == "Softmax":
            layers.append(Output(lname, "softmax"))
        elif cls == "Flatten":
            layers.append(Flatten(lname))
        elif cls == "Reshape":
            target = tuple(cfg["target_shape"])
            if srcs == (INPUT,) and not layers:
                notes.append(f"the input is taken as {target}, not {in_shape}: the model's Reshape {lname!r} of its "
                             "input is only a new view of the same values")
                in_shape = target
            elif _input_quantizer(layers, srcs):  # a per-element input quantizer is reshaped with the input
                notes.append(f"the input is taken as {target}, not {in_shape}: the model's Reshape {lname!r} after its "
                             f"per-element input quantizer {layers[0].name!r} is only a new view of the same values")
                in_shape = target
                layers[0] = hgq.reshaped(layers[0], target)
            elif len(target) == 1:
                layers.append(Flatten(lname))
            else:
                raise UnsupportedLayerError(f"layer {lname!r} (Reshape): a reshape inside the network to {target} is "
                                            "not supported (only at the input, or to 1-D)")
        elif cls in MAX_POOLS or cls in AVG_POOLS or cls in GLOBAL_AVG_POOLS:
            layers.extend(_pool_layers(lname, cls, cfg))
        elif cls in hgq.HGQ_QUANTIZERS:
            q = hgq.quantizer_layer(lname, cfg, w, shape)
            if not layers and srcs == (INPUT,) and hgq_input is None and input_type is None and not q.per_element:
                hgq_input = q.result_type  # the proxy's input quantizer is the network's input type
            else:
                if not layers and srcs == (INPUT,) and hgq_input is None and input_type is None:
                    hgq_input = hgq.carrier_type(q)  # per element: the input arrives finer, the layer rounds it
                layers.append(q)
        for i, layer in enumerate(layers[before:]):  # the first reads the Keras layer's inputs, the rest a chain
            layer.inputs = srcs if i == 0 else (layers[before + i - 1].name,)
        tensor[lname] = layers[-1].name if len(layers) > before else srcs[0]
    if not layers or not isinstance(layers[-1], Output):
        layers.append(Output("output", "linear", inputs=(tensor[p.entries[-1]["name"]],)))
    meta: dict[str, Any] = {"source": "hgq" if p.hgq else "qkeras" if p.quantized else "keras"}
    if notes:
        meta["import_notes"] = notes
    t = None
    if p.quantized or p.hgq:
        t = hgq_input or (FixedType.parse(input_type) if isinstance(input_type, str) else input_type)
        meta["input_type_default"] = t is None
        if t is None:
            t = DEFAULT_INPUT_TYPE
            meta["input_type_note"] = f"input type {t} is the default (hls4ml's ap_fixed<16,6>); set input_type to change it"
        elif hgq_input is not None and layers and layers[0].inputs == (INPUT,) and getattr(layers[0], "per_element", 0):
            meta["input_type_note"] = (f"input type {t} carries the values to the HGQ proxy's per-element input "
                                       f"quantizer {layers[0].name!r}, which rounds each element to its own format")
        elif hgq_input is not None:
            meta["input_type_note"] = f"input type {t} is the HGQ proxy's input quantizer"
    return Network(name or p.name, in_shape, layers, t, meta)


def _input_quantizer(layers: list[Layer], srcs: tuple[str, ...]) -> bool:
    """True when the network so far is one per-element quantizer of its input and ``srcs`` reads it."""
    return (len(layers) == 1 and isinstance(layers[0], Quant) and layers[0].per_element
            and layers[0].inputs == (INPUT,) and srcs == (layers[0].name,))


def _array(w: dict[str, np.ndarray], key: str, index: int, lname: str, want: tuple[int, ...]) -> np.ndarray:
    """One weight array by name (or by position, in the Keras 3 format), checked against the config's shape."""
    a = w.get(key, w.get(str(index)))
    if a is None:
        raise ModelFileError(f"layer {lname!r}: no {key} in the weights file")
    if tuple(a.shape) != want:
        raise ModelFileError(f"layer {lname!r}: {key} has shape {tuple(a.shape)} but the config implies {want}; "
                             "the weights do not belong to this architecture")
    if a.dtype.kind != "f":
        raise ModelFileError(f"layer {lname!r}: {key} has dtype {a.dtype}, not floating point")
    return a


def _weighted(lname: str, cls: str, cfg: dict[str, Any], w: dict[str, np.ndarray], shape: tuple[int, ...],
              p: Plan, notes: list[str] | None = None) -> Layer:
    nd = WEIGHTED[cls]
    if nd == 0:
        kshape = (shape[0], cfg["units"])
    else:
        kshape = (*_tuple(cfg["kernel_size"], nd, "kernel_size", lname), shape[-1], cfg["filters"])
    kernel = _array(w, "kernel", 0, lname, kshape)
    use_bias = cfg.get("use_bias", True)
    bias = _array(w, "bias", 1, lname, (kshape[-1],)) if use_bias else None
    kw: dict[str, Any] = {}
    if nd:
        kw = {"strides": _tuple(cfg.get("strides", 1), nd, "strides", lname), "padding": cfg.get("padding", "valid")}
    layer_cls = Dense if nd == 0 else Conv1D if nd == 1 else Conv2D
    mask = kernel != 0  # a pruned model's zeros are its mask
    if cls.startswith("Q"):
        wi, wt = weight_ints(kernel, parse_quantizer(cfg.get("kernel_quantizer"), lname, "kernel quantizer"), lname,
                             "kernel", notes)
        if bias is None:
            b, bt = np.zeros(kshape[-1], dtype=np.int64), FixedType(1, 1)
        else:
            b, bt = weight_ints(bias, parse_quantizer(cfg.get("bias_quantizer"), lname, "bias quantizer"), lname, "bias",
                                notes)
        return layer_cls(lname, wi, b, mask=mask & (wi != 0), weight_type=wt, bias_type=bt, **kw)
    if p.hgq:
        wi, wt = hgq.grid_type(kernel, lname, "kernel")
        b, bt = hgq.grid_type(bias if bias is not None else np.zeros(kshape[-1]), lname, "bias")
        return layer_cls(lname, wi, b, mask=wi != 0, weight_type=wt, bias_type=bt, **kw)
    for what, a in (("kernel", kernel), ("bias", bias)):
        if a is not None and not np.all(np.isfinite(a)):
            raise ModelFileError(f"layer {lname!r}: {what} holds NaN or infinite values")
    return layer_cls(lname, kernel, bias if bias is not None else np.zeros(kshape[-1]), mask=mask, **kw)


def _batchnorm(lname: str, cfg: dict[str, Any], w: dict[str, np.ndarray], n: int) -> BatchNorm:
    names = [k for k, on in (("gamma", cfg.get("scale", True)), ("beta", cfg.get("center", True)),
                             ("moving_mean", True), ("moving_variance", True)) if on]
    arrays = {k: np.asarray(_array(w, k, i, lname, (n,)), dtype=np.float64) for i, k in enumerate(names)}
    for k, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise ModelFileError(f"layer {lname!r}: {k} holds NaN or infinite values")
    eps = cfg.get("epsilon", 1e-3)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ModelFileError(f"layer {lname!r}: epsilon {eps!r} is not a non-negative number")
    return BatchNorm(lname, arrays.get("gamma", np.ones(n)), arrays.get("beta", np.zeros(n)), arrays["moving_mean"],
                     arrays["moving_variance"], float(eps))
