"""PyTorch import: a live ``nn.Module``, a pickled ``.pt`` module (trusted only) or a ``.pt2`` export.

All three go through ``torch.export`` so one walk over ATen operators handles them; a
plain feed-forward ``forward`` works as well as ``nn.Sequential``. Torch is channels-first,
the IR channels-last: convolution kernels are transposed, and the Linear after a Flatten
of a feature map gets its input rows permuted so the result is the same. Pooling maps only
where the IR's windows are torch's (no padding, no partial window, power-of-two averages);
``AdaptiveAvgPool(1)`` and a mean over the spatial axes are global average pooling. A
BatchNorm stays a layer of the float network (the float reference evaluates it) and is folded
into the convolution or Linear before it when the network is quantized, as for MLPs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from codesign.core.layers import (
    Add,
    AvgPool1D,
    AvgPool2D,
    BatchNorm,
    Concatenate,
    Conv1D,
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool1D,
    GlobalAvgPool2D,
    Layer,
    MaxPool1D,
    MaxPool2D,
    Output,
    ReLU,
)
from codesign.core.network import INPUT, Network
from codesign.errors import LayerError, ModelFileError, UnsupportedLayerError

SUPPORTED = ("Linear, Conv1d, Conv2d (padding 0 or TensorFlow's 'same'), MaxPool1d/2d, AvgPool1d/2d (power-of-two "
             "windows), AdaptiveAvgPool1d/2d(1) or mean over the spatial axes, BatchNorm1d/2d, ReLU, Flatten, Dropout, "
             "Identity, Softmax (last), a + b of two computed tensors (residual connections), torch.cat on channels")
_POOL_OPS = ("max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
             "mean")
_PASS_THROUGH = {"dropout", "alpha_dropout", "feature_dropout", "clone", "contiguous", "detach", "alias", "lift_fresh_copy"}


def load_torch_file(path: Path, trust: bool = False, input_shape: tuple[int, ...] | None = None) -> Network:
    """Load ``.pt2`` (safe) or a pickled ``.pt`` module (only with ``trust=True``)."""
    import torch

    if path.suffix == ".pt2":
        try:
            with _quiet_logger("torch.export"):  # it logs a traceback of a bad archive before raising
                ep = torch.export.load(str(path))
        except Exception as e:  # torch raises many kinds for a bad archive
            raise ModelFileError(f"{path}: not a readable torch.export archive ({_first_line(e)})") from None
        return network_from_exported(ep, path.stem)
    if not trust:
        raise ModelFileError(
            f"{path}: a pickled PyTorch module runs arbitrary code when loaded; pass trust=True (CLI: --trust-pickle) "
            "if you trust its source, or save it with torch.export.save(...) as a .pt2 file"
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:
        raise ModelFileError(f"{path}: not a readable PyTorch file ({_first_line(e)})") from None
    if not isinstance(obj, torch.nn.Module):
        raise ModelFileError(
            f"{path}: holds a {type(obj).__name__}, not an nn.Module (a state_dict has no architecture); "
            "save the whole module or a torch.export .pt2"
        )
    return network_from_module(obj, name=path.stem, input_shape=input_shape)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_line(e: BaseException) -> str:
    """An exception as one short line (torch's messages run to many lines)."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0].strip()[:200]}" if lines else type(e).__name__


def _infer_input_shape(module: Any) -> tuple[int, ...]:
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            return (m.in_features,)
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)):
            raise ModelFileError(
                f"the first weighted layer is a {type(m).__name__}: its input size cannot be inferred; "
                "pass input_shape=(C, H, W) (torch order)"
            )
    raise ModelFileError("cannot infer the input shape (no Linear or Conv layer); pass input_shape")


def network_from_module(module: Any, name: str = "torch_model", input_shape: tuple[int, ...] | None = None) -> Network:
    """Import a live ``nn.Module`` (``input_shape`` in torch order, without the batch axis)."""
    import torch

    module = module.eval()
    shape = tuple(input_shape) if input_shape else _infer_input_shape(module)
    try:
        ep = torch.export.export(module, (torch.zeros(2, *shape),))
    except Exception as e:
        raise UnsupportedLayerError(
            f"torch.export could not trace {type(module).__name__} ({type(e).__name__}: {str(e).splitlines()[0]}); "
            f"supported: a feed-forward network of {SUPPORTED}"
        ) from None
    return network_from_exported(ep, name)


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def network_from_exported(ep: Any, name: str) -> Network:
    """Walk an ``ExportedProgram``'s ATen graph into IR layers."""
    sig = ep.graph_signature
    params = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    state = {**ep.state_dict, **getattr(ep, "constants", {})}
    user_inputs = list(sig.user_inputs)
    if len(user_inputs) != 1:
        raise UnsupportedLayerError(f"the model has {len(user_inputs)} inputs; only single-input networks are supported")

    values: dict[str, Any] = {}  # node name -> np array of a parameter (None: an unused input)
    tensors: dict[str, dict[str, Any]] = {}  # node name -> the IR tensor it is: {"layer", "shape" (torch), "perm"}
    layers: list[Layer] = []
    torch_shape: tuple[int, ...] = ()
    counts: dict[str, int] = {}

    def new_name(kind: str, node: Any) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path = list(stack.values())[-1][0]
            ident = path.replace(".", "_")
            ident = ident if ident[:1].isalpha() else f"{kind}_{ident}"
            if path and all(layer.name != ident for layer in layers) and ident != INPUT:
                return ident
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind}{counts[kind]}"

    def where(node: Any) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, cls = list(stack.values())[-1]
            return f"module {path!r} ({str(getattr(cls, '__name__', cls)).split('.')[-1]})"
        return f"operation {node.target}"

    def param(node: Any) -> np.ndarray | None:
        if node is None:
            return None
        if node.name not in values:
            raise UnsupportedLayerError(f"{node.name} is computed, not a parameter; only constant weights are supported")
        return values[node.name]

    for node in ep.graph.nodes:
        if node.op == "placeholder":
            if node.name in params:
                values[node.name] = _np(state[params[node.name]])
            elif node.name in user_inputs:
                torch_shape = tuple(int(d) for d in node.meta["val"].shape[1:])
                tensors[node.name] = {"layer": INPUT, "shape": torch_shape, "perm": None}
            else:
                values[node.name] = None
            continue
        if node.op == "output":
            outs = [a for a in _flat(node.args) if getattr(a, "name", None) in tensors]
            if len(outs) != 1:
                raise UnsupportedLayerError(f"the model returns {len(outs)} tensors; only single-output networks are "
                                            "supported")
            out = tensors[outs[0].name]
            break
        if node.op != "call_function":
            raise UnsupportedLayerError(f"{where(node)}: unsupported graph node {node.op}; supported: {SUPPORTED}")
        op = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        data = [tensors[a.name] for a in _flat(node.args) if getattr(a, "name", None) in tensors]
        if op == "getitem":
            if data:
                tensors[node.name] = data[0]
            continue
        if not data:
            # a computation on parameters only (e.g. a transposed weight): evaluate it in torch
            raise UnsupportedLayerError(f"{where(node)}: operation {op} on parameters is not supported")
        if op in _PASS_THROUGH:
            tensors[node.name] = data[0]
            continue
        out_shape = tuple(int(d) for d in node.meta["val"].shape[1:]) if hasattr(node.meta.get("val"), "shape") else None
        layer, perm = _layer_for(op, node, data, param, new_name, where, out_shape)
        if layer is None:  # a no-op view (a flatten of a vector, a flatten after global pooling)
            tensors[node.name] = dict(data[0], shape=out_shape or data[0]["shape"])
            continue
        layer.inputs = tuple(d["layer"] for d in data)
        layers.append(layer)
        if isinstance(layer, (GlobalAvgPool1D, GlobalAvgPool2D)):
            out_shape = (out_shape[0],)  # (C, 1, 1) in torch is (C,) in the IR: a flatten after it is a no-op
        tensors[node.name] = {"layer": layer.name, "shape": out_shape if out_shape is not None else data[0]["shape"],
                              "perm": perm}
    else:
        raise UnsupportedLayerError("the exported graph has no output node")

    if out["layer"] == INPUT:
        raise UnsupportedLayerError("the model returns its input unchanged; there is nothing to build")
    if out["layer"] != layers[-1].name:  # the output is not the last layer made: move nothing, but refuse clearly
        raise UnsupportedLayerError(f"the model's output is layer {out['layer']!r}, not the last operation; "
                                    "return the last computed tensor")
    if not isinstance(layers[-1], Output):
        layers.append(Output("output", "linear"))
    ir_shape = torch_shape if len(torch_shape) == 1 else (*torch_shape[1:], torch_shape[0])
    meta = {"source": "pytorch", "input_layout": "channels_first" if len(torch_shape) > 1 else "flat"}
    return Network(name, ir_shape, layers, metadata=meta)


def _flat(args: Any) -> list[Any]:
    """The node arguments, with lists and tuples (``cat``'s operands) opened."""
    out = []
    for a in args:
        out.extend(_flat(a) if isinstance(a, (list, tuple)) else [a])
    return out


@dataclass
class _Op:
    """One ATen operation being read: its name and node, the tensors it reads (``data``), and the importer's
    helpers (``param``: a parameter's array, ``new_name``, ``where``: the node for messages)."""

    op: str
    node: Any
    data: list[dict[str, Any]]
    param: Any
    new_name: Any
    where: Any
    out_shape: tuple[int, ...] | None


def _layer_for(op: str, node: Any, data: list[dict[str, Any]], param: Any, new_name: Any, where: Any,
               out_shape: tuple[int, ...] | None) -> tuple[Layer | None, np.ndarray | None]:
    """The IR layer for one ATen operation on the tensors ``data``, and the row permutation its output carries."""
    if op in _MERGE_OPS:
        return _merge_layer(op, node, data, new_name, where), None
    if len(data) > 1:
        raise UnsupportedLayerError(f"{where(node)}: operation {op!r} on {len(data)} computed tensors; supported: "
                                    f"{SUPPORTED}")
    if op not in ATEN_LAYERS:
        raise UnsupportedLayerError(f"{where(node)}: unsupported operation {op!r}; supported: {SUPPORTED}")
    return ATEN_LAYERS[op](_Op(op, node, data, param, new_name, where, out_shape))


def _linear(o: _Op) -> tuple[Layer | None, np.ndarray | None]:
    x, node = o.data[0], o.node
    w, b = o.param(node.args[1]), o.param(node.args[2] if len(node.args) > 2 else None)
    w = w.T
    if x["perm"] is not None:
        w = w[x["perm"]]
    return Dense(o.new_name("dense", node), w, b), None


def _conv(o: _Op) -> tuple[Layer | None, np.ndarray | None]:
    return _conv_layer(o.node, o.op, o.param, o.new_name("conv", o.node), o.where(o.node), o.data[0]["shape"],
                       o.out_shape), None


def _pooling(o: _Op) -> tuple[Layer | None, np.ndarray | None]:
    return _pool_layer(o.node, o.op, o.new_name("pool", o.node), o.where(o.node), o.data[0]["shape"], o.out_shape), None


def _batch_norm(o: _Op) -> tuple[Layer | None, np.ndarray | None]:
    a = o.node.args
    eps = a[7] if o.op == "batch_norm" else a[-1]
    w, b, mean, var = o.param(a[1]), o.param(a[2]), o.param(a[3]), o.param(a[4])
    n = mean.shape[0]
    if o.data[0]["perm"] is not None:
        raise UnsupportedLayerError(f"{o.where(o.node)}: BatchNorm1d directly after flattening a feature map")
    return BatchNorm(o.new_name("bn", o.node), np.ones(n) if w is None else w, np.zeros(n) if b is None else b,
                     mean, var, float(eps)), None


def _relu(o: _Op) -> tuple[Layer | None, np.ndarray | None]:
    return ReLU(o.new_name("relu", o.node)), o.data[0]["perm"]


def _flatten(o: _Op) -> tuple[Layer | None, np.ndarray | None]:
    x = o.data[0]
    if o.out_shape is None or len(o.out_shape) != 1:
        raise UnsupportedLayerError(f"{o.where(o.node)}: only a flatten to (N, features) is supported, "
                                    f"got {o.out_shape}")
    if len(x["shape"]) <= 1:
        return None, None
    chw = x["shape"]
    perm = np.arange(int(np.prod(chw))).reshape(chw).transpose(*range(1, len(chw)), 0).ravel()
    return Flatten(o.new_name("flatten", o.node)), perm


def _softmax(o: _Op) -> tuple[Layer | None, np.ndarray | None]:
    return Output(o.new_name("softmax", o.node), "softmax"), None


# The PyTorch importer's table: each ATen operation of one tensor and the builder of its IR layer (the merges,
# ``_MERGE_OPS``, read two or more).
_MERGE_OPS = ("add", "add_", "cat", "concat")
ATEN_LAYERS: dict[str, Callable[[_Op], tuple[Layer | None, np.ndarray | None]]] = {
    "linear": _linear,
    **dict.fromkeys(("conv1d", "conv2d", "convolution"), _conv),
    **dict.fromkeys(_POOL_OPS, _pooling),
    **dict.fromkeys(("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm"), _batch_norm),
    **dict.fromkeys(("relu", "relu_"), _relu),
    **dict.fromkeys(("flatten", "view", "reshape", "_unsafe_view"), _flatten),
    **dict.fromkeys(("softmax", "_softmax", "log_softmax", "_log_softmax"), _softmax),
}


def _merge_layer(op: str, node: Any, data: list[dict[str, Any]], new_name: Any, where: Any) -> Layer:
    """``a + b`` (of two computed tensors) as Add, ``torch.cat`` on the channel axis as Concatenate."""
    if any(d["perm"] is not None for d in data):
        raise UnsupportedLayerError(f"{where(node)}: {op} of flattened feature maps; merge before flattening")
    if op in ("add", "add_"):
        if len(data) != 2 or len([a for a in node.args if not hasattr(a, "name")]) or node.kwargs.get("alpha", 1) != 1:
            raise UnsupportedLayerError(f"{where(node)}: only the sum of two computed tensors (a + b) is supported, "
                                        "not a constant or scaled operand")
        return Add(new_name("add", node))
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    rank = len(data[0]["shape"]) + 1
    if int(dim) % rank != 1:
        raise UnsupportedLayerError(f"{where(node)}: torch.cat on dim {dim}; only the channel axis (dim 1) is "
                                    "supported")
    return Concatenate(new_name("cat", node))


def _tf_same(spatial: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
             padding: tuple[int, ...], torch_out: tuple[int, ...]) -> bool:
    """True when torch's symmetric zero padding gives the windows TensorFlow's 'same' gives: the same padding
    before each axis and the same number of outputs (padding after the last window is never read)."""
    for n, k, s, p, m in zip(spatial, kernel, stride, padding, torch_out):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        if total // 2 != p or -(-n // s) != m:
            return False
    return True


def _conv_layer(node: Any, op: str, param: Any, name: str, where: str, in_shape: tuple[int, ...],
                out_shape: tuple[int, ...] | None) -> Layer:
    a = list(node.args) + [None] * 9
    w, b = param(a[1]), param(a[2])
    stride, padding, dilation = a[3] or 1, a[4] if a[4] is not None else 0, a[5] or 1
    groups = a[8] if op == "convolution" else (a[6] or 1)
    if op == "convolution" and a[6]:
        raise UnsupportedLayerError(f"{where}: transposed convolution is not supported; supported: {SUPPORTED}")
    nd = w.ndim - 2
    as_tuple = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,) * nd  # noqa: E731
    stride, dilation = as_tuple(stride), as_tuple(dilation)
    if any(d != 1 for d in dilation) or groups != 1:
        raise UnsupportedLayerError(f"{where}: dilation {dilation}, groups {groups}: only dilation 1 and groups 1 "
                                    f"(no depthwise or grouped convolution) are supported; supported: {SUPPORTED}")
    kernel = tuple(w.shape[2:])
    if padding == "valid" or (padding != "same" and all(p == 0 for p in as_tuple(padding))):
        pad = "valid"
    elif padding == "same" or (out_shape is not None and
                               _tf_same(in_shape[1:], kernel, stride, as_tuple(padding), out_shape[1:])):
        pad = "same"  # torch's 'same' (stride 1) pads (k-1)//2 before, the rest after: TensorFlow's rule
    else:
        raise UnsupportedLayerError(
            f"{where}: padding {padding!r} with kernel {kernel} and stride {stride} on a {in_shape[1:]} input is not "
            "TensorFlow's 'same'; use 0 ('valid'), padding='same', or the k//2 that equals 'same' here"
        )
    wk = np.moveaxis(w, (0, 1), (-1, -2))  # (cout, cin, k...) -> (k..., cin, cout)
    cls = Conv1D if nd == 1 else Conv2D
    return cls(name, wk, b, strides=stride, padding=pad)


def _pool_layer(node: Any, op: str, name: str, where: str, in_shape: tuple[int, ...],
                out_shape: tuple[int, ...] | None) -> Layer:
    """torch pooling (channels-first ``in_shape``) as an IR pooling layer whose output shape torch agrees with."""
    try:
        layer = _pool(node, op, name, where, in_shape)
        ir_out = layer.output_shape((*in_shape[1:], in_shape[0]))
    except LayerError as e:  # e.g. an average over a count that is not a power of two
        raise UnsupportedLayerError(f"{where}: {str(e).split(': ', 1)[1]}") from None
    if out_shape is not None and len(ir_out) > 1 and tuple(ir_out[:-1]) != tuple(out_shape[1:]):
        raise UnsupportedLayerError(f"{where}: ceil_mode gives a partial window ({tuple(out_shape[1:])} outputs, "
                                    f"{tuple(ir_out[:-1])} full windows); use ceil_mode=False")
    return layer


def _pool(node: Any, op: str, name: str, where: str, in_shape: tuple[int, ...]) -> Layer:
    spatial = tuple(in_shape[1:])
    nd = len(spatial)
    if nd not in (1, 2):
        raise UnsupportedLayerError(f"{where}: {op} on a {len(in_shape)}-D tensor; only 1-D and 2-D feature maps")
    a = list(node.args) + [None] * 8
    if op == "mean":
        # torch's dims count the batch axis: the spatial ones are 2 .. nd + 1 (or -nd .. -1)
        dims = sorted(int(d) % (nd + 2) for d in (a[1] if isinstance(a[1], (list, tuple)) else [a[1]]))
        if dims != list(range(2, nd + 2)):
            raise UnsupportedLayerError(f"{where}: a mean over dimensions {a[1]!r}; only the mean over every spatial "
                                        f"axis (global average pooling) is supported")
        return (GlobalAvgPool1D if nd == 1 else GlobalAvgPool2D)(name)
    if op.startswith("adaptive"):
        size = tuple(a[1]) if isinstance(a[1], (list, tuple)) else (a[1],) * nd
        if all(s == 1 for s in size):
            return (GlobalAvgPool1D if nd == 1 else GlobalAvgPool2D)(name)
        if any(s is None or n % s for n, s in zip(spatial, size)):
            raise UnsupportedLayerError(f"{where}: adaptive pooling to {size} on {spatial} has uneven windows; use "
                                        "output size 1 or one that divides the input")
        pool = tuple(n // s for n, s in zip(spatial, size))
        return (AvgPool1D if nd == 1 else AvgPool2D)(name, pool, pool)
    as_tuple = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,) * nd  # noqa: E731
    pool = as_tuple(a[1])
    stride = as_tuple(a[2]) if a[2] else pool
    padding = as_tuple(a[3] if a[3] is not None else 0)
    if any(p != 0 for p in padding):
        raise UnsupportedLayerError(f"{where}: pooling with padding {padding} is not supported (only 0, 'valid')")
    if op.startswith("max"):
        if any(d != 1 for d in as_tuple(a[4] or 1)):
            raise UnsupportedLayerError(f"{where}: dilated max pooling is not supported; supported: {SUPPORTED}")
        return (MaxPool1D if nd == 1 else MaxPool2D)(name, pool, stride)
    if a[6] is not None:
        raise UnsupportedLayerError(f"{where}: divisor_override={a[6]!r} is not supported (the divisor is the "
                                    "window size)")
    return (AvgPool1D if nd == 1 else AvgPool2D)(name, pool, stride)
