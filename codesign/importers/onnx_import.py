"""ONNX and QONNX import: the graph is read as data with the ``onnx`` package (no runtime).

Float graphs map node by node (``Gemm``, ``MatMul`` + ``Add``, ``Conv``, ``Relu``, ``MaxPool``,
``AveragePool`` and ``GlobalAveragePool`` (exact means over power-of-two counts),
``BatchNormalization``, ``Flatten``/``Reshape``, ``Transpose``, ``Add`` of two computed tensors and
``Concat`` on the channel axis (merges: the graph's branches become the layers' ``inputs``), and
``Unsqueeze``/``Squeeze``/``Reshape`` that only add or remove size-1 axes (old torch exports wrap a 2-D
BatchNorm in them): views of the same data, not layers; only element-wise and per-channel nodes may act on
a view. A trailing ``Softmax``,
``Sigmoid`` or ``ArgMax`` becomes the output head). QONNX graphs (Brevitas, qonnx, hls4ml,
FINN) add ``Quant``/``IntQuant``, ``BipolarQuant`` and ``Trunc`` nodes, which become exact
fixed-point types (``qonnx_quant.py`` says how): on a constant they quantize the weights or
biases, on the graph input they set the network's input type, after a layer they set its
result type (or become a ``Quant`` layer).

ONNX convolutions are channels-first, the IR channels-last. Every data tensor carries the
permutation between its ONNX axes and the IR's, so ``Transpose`` nodes cost nothing,
convolutions need the channels-first view, and the ``Gemm`` after a ``Flatten`` of a
channels-first map gets its weight rows permuted so the result is the same.

What ``codesign.core.onnx_export`` cannot say in QONNX (accumulator types, the input's overflow
mode, reuse) it writes to the model's ``fpga-codesign`` metadata; such hints are used only
where they are verified to give the same results as the graph.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from codesign.core import reference
from codesign.core.onnx_export import HINTS_KEY, same_cast
from codesign.errors import LayerError, ModelFileError, UnsupportedLayerError
from codesign.core.fixed import FixedType
from codesign.importers import qonnx_quant as qq
from codesign.core.layers import (Add, AvgPool, AvgPool1D, AvgPool2D, BatchNorm, Concatenate, Conv1D, Conv2D, Dense,
                                  Flatten, GlobalAvgPool, GlobalAvgPool1D, GlobalAvgPool2D, Layer, MaxPool1D, MaxPool2D,
                                  Merge, Output, Quant, ReLU, Weighted)
from codesign.core.network import INPUT, Network

DEFAULT_INPUT_TYPE = FixedType(16, 6, True, "RND_CONV", "SAT")  # hls4ml's default precision, as for QKeras
SUPPORTED = ("Gemm, MatMul (+Add), Conv, MaxPool, AveragePool (unpadded, power-of-two windows), GlobalAveragePool "
             "(power-of-two positions), Relu, BatchNormalization (float graphs), Flatten, Reshape (to flatten), "
             "Transpose, Identity, Dropout, Cast (to float), Unsqueeze/Squeeze (size-1 axes), Add (of two computed tensors), "
             "Concat (channel axis), Quant/IntQuant, BipolarQuant "
             "(weights), Trunc, and a last Softmax, "
             "LogSoftmax, Sigmoid or ArgMax")
_PASS = ("Identity", "Dropout")
# nodes that may act on a tensor re-viewed with extra or fewer size-1 axes (torch's Unsqueeze/BatchNorm/Squeeze)
_ON_VIEWS = ("Identity", "Dropout", "Cast", "Relu", "BatchNormalization", "Unsqueeze", "Squeeze", "Reshape", "Flatten",
             "Quant", "IntQuant", "Trunc")
_HEADS = {"Softmax": "softmax", "LogSoftmax": "softmax", "Sigmoid": "sigmoid", "ArgMax": "argmax"}
_POOLS = ("GlobalMaxPool", "QuantAvgPool2d", "LpPool", "GlobalLpPool", "MaxRoiPool", "MaxUnpool")
_MODULE_MARKERS = (".weight", ".bias", ".act_quant", ".input_quant", ".output_quant")


def load_onnx_file(path: Path, input_type: FixedType | str | None = None) -> Network:
    """An ``.onnx`` file (float or QONNX) as a Network; ``input_type`` is used when the graph has no input Quant."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and others for a file that is not ONNX
        raise ModelFileError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from None
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        # torch.onnx.export's default (dynamo) exporter writes the weights to <file>.data beside it; onnx checks
        # that each location is a regular file inside the model's directory
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(Path(path).parent))
        except Exception as e:
            raise ModelFileError(f"{path}: its external weights file cannot be read ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}); keep the .data file beside it") from None
    return network_from_onnx(model, name=path.stem, input_type=input_type)


def network_from_onnx(model: Any, name: str = "onnx_model", input_type: FixedType | str | None = None) -> Network:
    """Import an ``onnx.ModelProto``."""
    return _Importer(model, name, FixedType.parse(input_type) if input_type is not None else None).run()


def _nonunit(shape: Any) -> list[int]:
    return [int(d) for d in shape if d != 1]


def _where(node: Any) -> str:
    return f"node {node.name or '(unnamed)'!r} ({node.op_type})"


def _clean(text: str, lower: bool = True) -> str:
    """A layer name from an ONNX name: an identifier, without exporters' prefixes (torch's ``node_``,
    keras2onnx's ``class__keras_layers_core_``), lower case unless ``lower`` is False (hls4ml's
    PyTorch converter, which the HLS backend drives, names layers in snake case)."""
    s = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", text)).strip("_")
    s = re.sub(r"^(node_|class_keras_layers_[a-z0-9]+_)(?=[A-Za-z])", "", s)
    return s.lower() if lower else s


@dataclass
class _Const:
    values: np.ndarray  # float64
    type: FixedType | None = None  # set when a quantizer made these values
    names: tuple[str, ...] = ()  # the initializers they came from (layer names come from them)


@dataclass
class _Act:
    shape: tuple[int, ...]  # IR shape (channels-last), without the batch axis
    perm: tuple[int, ...]  # IR axis i is ONNX axis perm[i]
    type: FixedType | None
    nonneg: bool = False
    layer: int | None = None  # the layer whose output this is, while nothing else touched it
    rows: np.ndarray | None = None  # a Flatten's row order, owed to the next Dense
    real: tuple[int, ...] | None = None  # the IR shape the layers see, while size-1 axes re-view it as ``shape``
    src: str = INPUT  # the IR layer whose output holds these values (INPUT: the network's input)

    @property
    def onnx_shape(self) -> tuple[int, ...]:
        out = [0] * len(self.shape)
        for i, p in enumerate(self.perm):
            out[p] = self.shape[i]
        return tuple(out)

    @property
    def channels_first(self) -> bool:
        r = len(self.shape)
        return r == 1 or self.perm == (*range(1, r), 0)


@dataclass
class _Importer:
    model: Any
    name: str
    user_input_type: FixedType | None
    consts: dict[str, _Const] = field(default_factory=dict)
    acts: dict[str, _Act] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)
    open_bias: set[int] = field(default_factory=set)  # weighted layers whose bias an Add may still set
    names: set[str] = field(default_factory=set)
    meta: dict[str, Any] = field(default_factory=dict)
    types: dict[str, FixedType | None] = field(default_factory=dict)  # each IR layer's output type, by name

    # ---- the walk ---------------------------------------------------------------------
    def run(self) -> Network:
        from onnx import numpy_helper

        g = self.model.graph
        for init in g.initializer:
            self.consts[init.name] = _Const(numpy_helper.to_array(init).astype(np.float64), None, (init.name,))
        data_inputs = [i for i in g.input if i.name not in self.consts]
        if len(data_inputs) != 1 or len(g.output) != 1:
            raise UnsupportedLayerError(
                f"the graph has {len(data_inputs)} inputs and {len(g.output)} outputs; only single-input, "
                "single-output networks are supported"
            )
        self.quantized = any(n.op_type in qq.QUANT_OPS for n in g.node)
        self.trunc_version = self._qonnx_version()
        self.consumers: dict[str, int] = {}
        for n in g.node:
            for i in n.input:
                self.consumers[i] = self.consumers.get(i, 0) + 1
        self.hints = self._read_hints()
        x = data_inputs[0]
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in x.type.tensor_type.shape.dim][1:]
        if any(d <= 0 for d in dims) or not dims:
            raise UnsupportedLayerError(f"graph input {x.name!r} has shape {dims} without the batch axis; need fixed sizes")
        first_cf = len(dims) > 1 and self._input_is_channels_first(x.name)
        shape = (*dims[1:], dims[0]) if first_cf else tuple(dims)
        perm = (*range(1, len(dims)), 0) if first_cf else tuple(range(len(dims)))
        self.meta = {"source": "qonnx" if self.quantized else "onnx",
                     "input_layout": "flat" if len(dims) == 1 else ("channels_first" if first_cf else "channels_last")}
        self.input_shape, self.input_type = shape, None
        self.acts[x.name] = _Act(shape, perm, None)
        self.out_name = g.output[0].name
        nodes = list(g.node)
        for k, node in enumerate(nodes):
            if self.layers and isinstance(self.layers[-1], Output):
                raise UnsupportedLayerError(f"{_where(node)} follows the output head {self.layers[-1].name!r}; the "
                                            "head must be the last node")
            self._node(node, k == len(nodes) - 1)
        if self.input_type is None and self.quantized:
            self._default_input_type()
        if not (self.layers and isinstance(self.layers[-1], Output)):
            if self.out_name not in self.acts:
                raise UnsupportedLayerError(f"graph output {self.out_name!r} is not computed from the input by the nodes "
                                            "read; is it a constant?")
            self._add_layer(Output(self._unique("output"), "linear"), self.acts[self.out_name])
        self._apply_hints()
        name = self.hints.get("name")
        name = name if isinstance(name, str) and name else self.name
        return Network(name, self.input_shape, self.layers, self.input_type, self.meta)

    def _node(self, node: Any, last: bool) -> None:
        op = node.op_type
        ins = [i for i in node.input]
        acts = [i for i in ins if i in self.acts]
        if op == "Constant":
            self._constant(node)
            return
        if op == "Shape" and acts:
            self._shape_node(node, self.acts[acts[0]])
            return
        if not acts:
            self._fold(node)
            return
        if op in ("Add", "Concat") and (len(acts) > 1 or op == "Concat"):
            self.acts[node.output[0]] = self._merge(node, [self.acts[i] for i in ins] if len(acts) == len(ins) else [])
            return
        if len(acts) > 1:
            raise UnsupportedLayerError(f"{_where(node)} combines two data tensors; only Add and Concat merge them")
        x = self.acts[acts[0]]
        if ins[0] != acts[0] and op not in ("Add", "Mul"):
            raise UnsupportedLayerError(f"{_where(node)}: the data tensor must be the first input")
        out = node.output[0]
        if x.real is not None and op not in _ON_VIEWS:
            raise UnsupportedLayerError(
                f"{_where(node)}: {op} on the ONNX shape {list(x.onnx_shape)}, a view with size-1 axes (Unsqueeze, "
                "Reshape or GlobalAveragePool) the IR does not have; Squeeze or Flatten it first")
        if op == "Cast" and self._attrs(node).get("to") not in (1, 11):  # to float or double: exact here
            raise UnsupportedLayerError(f"{_where(node)}: a Cast to a non-float type is not supported")
        if op in _PASS or op == "Cast":
            self.acts[out] = replace(x, layer=None if self.consumers.get(acts[0], 0) > 1 else x.layer)
        elif op in ("Quant", "IntQuant", "Trunc"):
            self.acts[out] = self._act_quant(node, x)
        elif op == "BipolarQuant":
            raise UnsupportedLayerError(
                f"{_where(node)}: BipolarQuant on activations is a sign function (+-scale), which no ap_fixed cast "
                "is; it works on weights, or use a 2-bit Quant for activations"
            )
        elif op in ("Gemm", "MatMul"):
            self.acts[out] = self._dense(node, x)
        elif op == "Conv":
            self.acts[out] = self._conv(node, x)
        elif op == "Add":
            self.acts[out] = self._bias(node, x, acts[0])
        elif op == "Relu":
            t = self._in_type(x)
            self.acts[out] = self._add_layer(ReLU(self._unique(self._node_name(node, "relu"))), x, nonneg=True, t=t)
        elif op == "BatchNormalization":
            self.acts[out] = self._batchnorm(node, x)
        elif op in ("Unsqueeze", "Squeeze"):
            self.acts[out] = self._squeeze(node, x)
        elif op in ("Flatten", "Reshape"):
            self.acts[out] = self._flatten(node, x)
        elif op == "Transpose":
            self.acts[out] = self._transpose(node, x)
        elif op in _HEADS:
            if not last and out != self.out_name:
                raise UnsupportedLayerError(f"{_where(node)}: {op} is supported only as the last node (the output head)")
            self._add_layer(Output(self._unique(self._node_name(node, "output")), _HEADS[op]), x)
        elif op == "MaxPool":
            self.acts[out] = self._maxpool(node, x)
        elif op in ("AveragePool", "GlobalAveragePool"):
            self.acts[out] = self._avgpool(node, x)
        elif op in _POOLS:
            raise UnsupportedLayerError(
                f"{_where(node)}: {op} has no equivalent in the IR; use MaxPool, AveragePool or GlobalAveragePool "
                "(power-of-two counts), or a strided Conv"
            )
        else:
            raise UnsupportedLayerError(f"{_where(node)}: unsupported operation; supported: {SUPPORTED}")

    # ---- constants ----------------------------------------------------------------------
    def _constant(self, node: Any) -> None:
        from onnx import helper, numpy_helper

        attrs = {a.name: a for a in node.attribute}
        if "value" not in attrs:
            raise UnsupportedLayerError(f"{_where(node)}: only tensor constants ('value') are supported")
        t = helper.get_attribute_value(attrs["value"])
        self.consts[node.output[0]] = _Const(numpy_helper.to_array(t).astype(np.float64), None, (node.output[0],))

    def _c(self, name: str, node: Any, what: str) -> _Const:
        if name not in self.consts:
            raise UnsupportedLayerError(f"{_where(node)}: {what} {name!r} is computed, not a constant; only constant "
                                        "weights, scales and shapes are supported")
        return self.consts[name]

    def _fold(self, node: Any) -> None:
        """A node on constants only: quantizers on weights, and the shape arithmetic exporters emit."""
        op, ins = node.op_type, list(node.input)
        c = [self._c(i, node, "input") if i else None for i in ins]
        names = tuple(n for x in c if x is not None for n in x.names)
        a = self._attrs(node)
        if op in ("Quant", "IntQuant"):
            q = self._quant_spec(node, c[1].values, c[2].values, c[3].values)
            v = qq.quantize_const(c[0].values, q)
            out = _Const(v, qq.const_type(q), names)
        elif op == "BipolarQuant":
            f = qq.pow2_exponents(c[1].values, _where(node))
            q = qq.QuantSpec(f, 1, True, False, "ROUND")
            v = qq.quantize_const(c[0].values, q)
            out = _Const(v, qq.const_type(q), names)
        elif op == "Trunc":
            raise UnsupportedLayerError(f"{_where(node)}: Trunc on a constant is not supported; apply it to activations")
        elif op in ("Identity", "Cast"):
            out = replace(c[0], names=names)
        elif op == "Transpose":
            out = _Const(np.transpose(c[0].values, a.get("perm")), c[0].type, names)
        elif op == "Reshape":
            out = _Const(c[0].values.reshape([int(d) for d in c[1].values]), c[0].type, names)
        elif op in ("Unsqueeze", "Squeeze"):
            axes = a.get("axes") if "axes" in a else ([int(v) for v in c[1].values] if len(c) > 1 and c[1] else None)
            v = c[0].values
            v = np.expand_dims(v, tuple(axes)) if op == "Unsqueeze" else np.squeeze(v, tuple(axes) if axes else None)
            out = _Const(v, c[0].type, names)
        elif op == "Concat":
            out = _Const(np.concatenate([x.values for x in c], axis=a.get("axis", 0)), None, names)
        elif op == "Gather":
            out = _Const(np.take(c[0].values, c[1].values.astype(np.int64), axis=a.get("axis", 0)), None, names)
        else:
            raise UnsupportedLayerError(f"{_where(node)}: cannot evaluate {node.op_type} on constants; supported: "
                                        "Quant, BipolarQuant, Identity, Cast, Transpose, Reshape, (Un)squeeze, Concat, Gather")
        self.consts[node.output[0]] = out

    def _shape_node(self, node: Any, x: _Act) -> None:
        self.consts[node.output[0]] = _Const(np.array([1, *x.onnx_shape], dtype=np.float64))

    @staticmethod
    def _attrs(node: Any) -> dict[str, Any]:
        from onnx import helper

        out = {}
        for a in node.attribute:
            v = helper.get_attribute_value(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
        return out

    def _quant_spec(self, node: Any, scale: np.ndarray, zp: np.ndarray, bits: np.ndarray) -> qq.QuantSpec:
        w = _where(node)
        qq.check_zero_point(zp, w)
        a = self._attrs(node)
        return qq.QuantSpec(qq.pow2_exponents(scale, w), qq.bit_width(bits, w), bool(a.get("signed", 1)),
                            bool(a.get("narrow", 0)), qq.rounding_mode(a.get("rounding_mode", "ROUND"), w))

    # ---- layers -----------------------------------------------------------------------
    def _unique(self, base: str) -> str:
        base = base or "layer"
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def _node_name(self, node: Any, kind: str, consts: tuple[_Const, ...] = ()) -> str:
        for c in consts:
            for n in c.names:
                for marker in _MODULE_MARKERS:
                    if marker in n:
                        s = _clean(n.split(marker)[0], lower=not self.hints)
                        if s and s[0].isalpha():
                            return s
        s = _clean(node.name, lower=not self.hints)  # our own exports keep their names
        if s and s[0].isalpha():
            return s
        return f"{kind}{sum(1 for l in self.layers if l.kind.lower().startswith(kind[:4])) + 1}" if not s else f"{kind}_{s}"

    def _add_layer(self, layer: Layer, x: _Act | None, nonneg: bool = False, t: FixedType | None = None,
                   shape: tuple[int, ...] | None = None) -> _Act:
        self.layers.append(layer)
        i = len(self.layers) - 1
        self.types[layer.name] = t
        if x is None:
            return _Act((), (), None, layer=i, src=layer.name)
        layer.inputs = (x.src,)
        new_shape = shape if shape is not None else layer.output_shape(x.shape)
        act = _Act(new_shape, x.perm if len(new_shape) == len(x.shape) else tuple(range(len(new_shape))), t,
                   nonneg, i, src=layer.name)
        if x.real is not None:  # only element-wise and per-channel layers get here (_ON_VIEWS)
            act.real = layer.output_shape(x.real)
        return act

    def _merge(self, node: Any, xs: list[_Act]) -> _Act:
        """Add of two computed tensors, or Concat on the channel axis: a merge layer reading both branches."""
        w = _where(node)
        if len(xs) < 2:
            raise UnsupportedLayerError(f"{w}: only a merge of two or more computed tensors is supported (not of a "
                                        "constant)")
        if any(x.real is not None or x.perm != xs[0].perm or x.rows is not None for x in xs):
            raise UnsupportedLayerError(f"{w}: its inputs are laid out differently ({', '.join(str(list(x.onnx_shape)) for x in xs)}); "
                                        "only inputs of one layout (channels-first or channels-last) are supported")
        if node.op_type == "Concat":
            rank = len(xs[0].shape) + 1
            axis = int(self._attrs(node).get("axis", 1))
            if (axis + rank if axis < 0 else axis) - 1 != xs[0].perm[-1]:
                raise UnsupportedLayerError(f"{w}: axis {axis} of {[0, *xs[0].onnx_shape]} is not the channel axis; "
                                            "only a Concat of channels is supported")
        cls = Add if node.op_type == "Add" else Concatenate
        layer = cls(self._unique(self._node_name(node, node.op_type.lower())), inputs=tuple(x.src for x in xs))
        ts = [self._in_type(x) for x in xs]
        try:
            shape = layer.merged_shape([x.shape for x in xs])
        except LayerError as e:
            raise UnsupportedLayerError(f"{w}: {str(e).split(': ', 1)[1]}") from None
        t = reference.output_type(layer, ts, shape) if all(t is not None for t in ts) else None
        self.layers.append(layer)
        self.types[layer.name] = t
        return _Act(shape, xs[0].perm, t, all(x.nonneg for x in xs), len(self.layers) - 1, src=layer.name)

    def _in_type(self, x: _Act) -> FixedType | None:
        if self.quantized and x.type is None:
            # the graph's input was not quantized: the network's input type applies from here
            if self.input_type is None:
                self._default_input_type()
            x.type = self.input_type
        return x.type

    def _default_input_type(self) -> None:
        self.input_type = self.user_input_type or DEFAULT_INPUT_TYPE
        if self.user_input_type is None:
            self.meta["input_type_note"] = (f"the graph does not quantize its input: input type {self.input_type} is "
                                            "the default; set input_type to change it")

    def _weights(self, node: Any, c: _Const, what: str) -> tuple[np.ndarray, FixedType | None]:
        if not self.quantized:
            return c.values, None
        t = c.type
        if t is None:
            if what == "weight":
                raise UnsupportedLayerError(
                    f"{_where(node)}: the weights have no Quant node, so they have no fixed-point type; quantize them "
                    "(Brevitas: weight_quant=...FixedPoint)"
                )
            t = qq.exact_type(c.values)
            if t is None:
                raise UnsupportedLayerError(
                    f"{_where(node)}: the float bias needs more than {qq.MAX_CONST_FRAC} fractional bits to be exact; "
                    "quantize it (Brevitas: bias_quant=Int16Bias)"
                )
        return np.round(np.ldexp(c.values, t.frac)).astype(np.int64), t

    def _weighted(self, node: Any, x: _Act, cls: type, w: np.ndarray, wc: _Const, b: _Const | None,
                  **kw: Any) -> _Act:
        t_in = self._in_type(x)
        wi, wt = self._weights(node, replace(wc, values=w), "weight")
        n_out = w.shape[-1]
        if b is not None:
            bv = np.broadcast_to(b.values.reshape(-1), (n_out,)) if b.values.size in (1, n_out) else None
            if bv is None:
                raise UnsupportedLayerError(f"{_where(node)}: bias of shape {b.values.shape} for {n_out} outputs")
            bi, bt = self._weights(node, replace(b, values=np.array(bv)), "bias")
        else:
            bi, bt = np.zeros(n_out, dtype=np.int64 if wt else np.float64), (FixedType(1, 1) if wt else None)
        name = self._unique(self._node_name(node, "dense" if cls is Dense else "conv", (wc,) + ((b,) if b else ())))
        layer = cls(name, wi, bi, mask=wi != 0, weight_type=wt, bias_type=bt, **kw)
        t = reference.exact_accum_type(layer, t_in) if wt is not None else None
        act = self._add_layer(layer, x, t=t)
        if b is None:
            self.open_bias.add(act.layer)
        return act

    def _dense(self, node: Any, x: _Act) -> _Act:
        a = self._attrs(node)
        wc = self._c(node.input[1], node, "weight")
        w = wc.values
        if node.op_type == "Gemm":
            if a.get("transA", 0):
                raise UnsupportedLayerError(f"{_where(node)}: transA=1 is not supported")
            if a.get("transB", 0):
                w = w.T
            alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
            if (alpha != 1.0 or beta != 1.0) and self.quantized:
                raise UnsupportedLayerError(f"{_where(node)}: alpha/beta other than 1 in a quantized graph")
            w = w * alpha
        if w.ndim != 2 or len(x.shape) != 1 or w.shape[0] != x.shape[0]:
            raise UnsupportedLayerError(f"{_where(node)}: weight of shape {w.shape} does not fit an input of {x.onnx_shape}; "
                                        "only (N, features) @ (features, outputs) is supported")
        if x.rows is not None:
            w = w[x.rows]
        b = None
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            b = self._c(node.input[2], node, "bias")
            if not self.quantized:
                b = replace(b, values=b.values * beta)
        return self._weighted(node, x, Dense, w, wc, b)

    def _conv(self, node: Any, x: _Act) -> _Act:
        a = self._attrs(node)
        wc = self._c(node.input[1], node, "weight")
        nd = wc.values.ndim - 2
        if nd not in (1, 2) or not x.channels_first or len(x.shape) != nd + 1:
            raise UnsupportedLayerError(f"{_where(node)}: only 1-D and 2-D convolutions of channels-first (N, C, ...) "
                                        f"tensors are supported, got weight {wc.values.shape} on {x.onnx_shape}")
        if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1] * nd)):
            raise UnsupportedLayerError(f"{_where(node)}: groups and dilations other than 1 are not supported")
        kernel = wc.values.shape[2:]
        strides = tuple(a.get("strides", [1] * nd))
        spatial = x.shape[:-1]
        pads = list(a.get("pads", [0] * 2 * nd))
        auto = a.get("auto_pad", "NOTSET")
        if auto == "VALID":
            pads = [0] * 2 * nd
        probe = Conv1D if nd == 1 else Conv2D
        same = probe("probe", np.zeros((*kernel, 1, 1)), strides=strides, padding="same").pads(spatial)
        same_pads = [p[0] for p in same] + [p[1] for p in same]
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            if auto == "SAME_LOWER" and any(p[0] != p[1] for p in same):
                raise UnsupportedLayerError(f"{_where(node)}: auto_pad SAME_LOWER pads more before than after; only "
                                            "SAME_UPPER (TensorFlow's 'same') is supported")
            padding = "same"
        elif all(p == 0 for p in pads):
            padding = "valid"
        elif pads == same_pads:
            padding = "same"
        else:
            raise UnsupportedLayerError(f"{_where(node)}: pads {pads} are neither 0 ('valid') nor TensorFlow's 'same' "
                                        f"{same_pads} for this input")
        w = np.moveaxis(wc.values, (0, 1), (-1, -2))  # (cout, cin, k...) -> (k..., cin, cout)
        b = self._c(node.input[2], node, "bias") if len(node.input) > 2 and node.input[2] else None
        return self._weighted(node, x, probe, w, wc, b, strides=strides, padding=padding)

    def _maxpool(self, node: Any, x: _Act) -> _Act:
        a = self._attrs(node)
        k = tuple(a.get("kernel_shape", ()))
        nd = len(k)
        if nd not in (1, 2) or not x.channels_first or len(x.shape) != nd + 1:
            raise UnsupportedLayerError(f"{_where(node)}: only 1-D and 2-D max pooling of channels-first (N, C, ...) "
                                        f"tensors is supported, got kernel {list(k)} on {x.onnx_shape}")
        pads, dil = a.get("pads", [0] * 2 * nd), a.get("dilations", [1] * nd)
        if any(pads) or any(d != 1 for d in dil) or a.get("ceil_mode", 0) or a.get("auto_pad", "NOTSET") not in (
                "NOTSET", "VALID") or len(node.output) > 1:
            raise UnsupportedLayerError(f"{_where(node)}: only unpadded max pooling (no dilation, ceil_mode 0, no "
                                        "indices output) is supported")
        cls = MaxPool1D if nd == 1 else MaxPool2D
        layer = cls(self._unique(self._node_name(node, "pool")), pool=k, strides=tuple(a.get("strides", [1] * nd)))
        return self._add_layer(layer, x, nonneg=x.nonneg, t=x.type)

    def _avgpool(self, node: Any, x: _Act) -> _Act:
        """AveragePool (unpadded) or GlobalAveragePool: the exact mean, in ``avg_exact_type`` of the input's type."""
        a = self._attrs(node)
        nd = len(x.shape) - 1
        if nd not in (1, 2) or not x.channels_first:
            raise UnsupportedLayerError(f"{_where(node)}: only 1-D and 2-D average pooling of channels-first (N, C, ...) "
                                        f"tensors is supported, got {x.onnx_shape}")
        name = self._unique(self._node_name(node, "pool"))
        try:
            if node.op_type == "GlobalAveragePool":
                layer: AvgPool | GlobalAvgPool = (GlobalAvgPool1D if nd == 1 else GlobalAvgPool2D)(name)
                shift = layer.shift(x.shape)
            else:
                k = tuple(a.get("kernel_shape", ()))
                if len(k) != nd or any(a.get("pads", [0])) or a.get("ceil_mode", 0) or any(
                        d != 1 for d in a.get("dilations", [1])) or a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
                    raise UnsupportedLayerError(f"{_where(node)}: only unpadded average pooling (no dilation, "
                                                "ceil_mode 0) is supported")
                layer = (AvgPool1D if nd == 1 else AvgPool2D)(name, pool=k, strides=tuple(a.get("strides", [1] * nd)))
                shift = layer.shift
        except LayerError as e:  # an average over a count that is not a power of two
            raise UnsupportedLayerError(f"{_where(node)}: {str(e).split(': ', 1)[1]}") from None
        t = self._in_type(x)
        act = self._add_layer(layer, x, nonneg=x.nonneg, t=None if t is None else reference.avg_exact_type(t, shift))
        if node.op_type == "GlobalAveragePool":  # ONNX keeps the positions, (N, C, 1, ...): a view of the IR's (C,)
            act = replace(act, shape=(1,) * nd + act.shape, perm=(*range(1, nd + 1), 0), real=act.shape)
        return act

    def _bias(self, node: Any, x: _Act, act_name: str) -> _Act:
        other = [i for i in node.input if i != act_name]
        i = x.layer
        if (len(other) != 1 or i is None or i not in self.open_bias or self.consumers.get(act_name, 0) != 1):
            raise UnsupportedLayerError(f"{_where(node)}: Add is supported only as the bias of the MatMul, Gemm or Conv "
                                        "right before it")
        layer = self.layers[i]
        c = self._c(other[0], node, "bias")
        n_out = layer.weight.shape[-1]
        v = c.values
        if v.size not in (1, n_out) or (v.size == n_out and v.ndim > 1 and max(v.shape) != n_out):
            raise UnsupportedLayerError(f"{_where(node)}: bias of shape {v.shape} does not match {n_out} outputs")
        v = np.broadcast_to(v.reshape(-1), (n_out,))
        bi, bt = self._weights(node, replace(c, values=np.array(v)), "bias")
        self.layers[i] = replace(layer, bias=bi, bias_type=bt)
        self.open_bias.discard(i)
        t = reference.exact_accum_type(self.layers[i], self._layer_input_type(i)) if bt is not None else None
        self.types[layer.name] = t
        return replace(x, type=t)

    def _layer_input_type(self, i: int) -> FixedType | None:
        src = self.layers[i].inputs[0]
        return self.input_type if src == INPUT else self.types.get(src)

    def _batchnorm(self, node: Any, x: _Act) -> _Act:
        if self.quantized:
            raise UnsupportedLayerError(f"{_where(node)}: BatchNormalization in a quantized graph is computed in float; "
                                        "fold it into the layer before it before exporting")
        if not x.channels_first:
            raise UnsupportedLayerError(f"{_where(node)}: BatchNormalization needs a channels-first tensor")
        a = self._attrs(node)
        if a.get("is_test", 1) == 0 or a.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
            raise UnsupportedLayerError(f"{_where(node)}: BatchNormalization in training mode normalizes by the batch's "
                                        "statistics; export the model in eval mode")
        if a.get("spatial", 1) == 0 and any(d != 1 for d in x.onnx_shape[1:]):  # opset < 9: statistics per element
            raise UnsupportedLayerError(f"{_where(node)}: BatchNormalization with spatial=0 on {list(x.onnx_shape)} "
                                        "normalizes each position apart; only per-channel statistics are supported")
        g, b, m, v = (self._c(i, node, "parameter").values.reshape(-1) for i in node.input[1:5])
        eps = float(a.get("epsilon", 1e-5))
        return self._add_layer(BatchNorm(self._unique(self._node_name(node, "batchnorm")), g, b, m, v, eps), x, t=x.type)

    def _flatten(self, node: Any, x: _Act) -> _Act:
        a = self._attrs(node)
        view = self._reshape_target(node, x)
        if view is not None and _nonunit(view) == _nonunit(x.onnx_shape) and (x.real is not None or len(view) > len(
                x.shape)):  # it undoes or adds size-1 axes (a Flatten of a real map stays a layer, below)
            return self._review(node, x, view)
        if x.real is not None:
            raise UnsupportedLayerError(f"{_where(node)}: a {node.op_type} of the re-viewed ONNX shape "
                                        f"{list(x.onnx_shape)} to {view} is not supported; Squeeze it first")
        if node.op_type == "Flatten":
            if a.get("axis", 1) not in (0, 1):
                raise UnsupportedLayerError(f"{_where(node)}: only Flatten(axis=1) is supported")
        else:
            target = [int(d) for d in self._c(node.input[1], node, "shape").values]
            if len(target) == len(x.shape) + 1 and list(target[1:]) == list(x.onnx_shape):
                return replace(x)
            if len(target) != 2 or target[1] not in (-1, int(np.prod(x.shape))):
                raise UnsupportedLayerError(f"{_where(node)}: only a reshape to (N, features) is supported, got {target}")
        if len(x.shape) == 1:
            return replace(x)
        n = int(np.prod(x.shape))
        rows = np.arange(n).reshape(x.onnx_shape).transpose(x.perm).ravel()
        act = self._add_layer(Flatten(self._unique(self._node_name(node, "flatten"))), x, nonneg=x.nonneg, t=x.type)
        if not np.array_equal(rows, np.arange(n)):
            act.rows = rows  # the next Dense reads ONNX's flattening order
        return act

    def _reshape_target(self, node: Any, x: _Act) -> list[int] | None:
        """The ONNX shape (without the batch axis) a Flatten(axis=1) or Reshape gives ``x``, or None if unknown."""
        old = list(x.onnx_shape)
        if node.op_type == "Flatten":
            return [int(np.prod(old))] if self._attrs(node).get("axis", 1) == 1 else None
        target = [int(d) for d in self._c(node.input[1], node, "shape").values]
        if not target or target.count(-1) > 1 or self._attrs(node).get("allowzero", 0):
            return None
        full = [0, *old]  # the batch size is unknown: a target that keeps it says 0 or -1 there
        dims = [full[i] if d == 0 and i < len(full) else d for i, d in enumerate(target)][1:]
        if target[0] not in (0, -1) or -1 in dims:
            return None
        return dims if int(np.prod(dims)) == int(np.prod(old)) else None

    def _squeeze(self, node: Any, x: _Act) -> _Act:
        """Unsqueeze/Squeeze (axes an attribute before opset 13, an input after): a re-view, not a layer."""
        a, old = self._attrs(node), list(x.onnx_shape)
        if "axes" in a:
            axes = [int(v) for v in a["axes"]]
        elif len(node.input) > 1 and node.input[1]:
            axes = [int(v) for v in self._c(node.input[1], node, "axes").values.reshape(-1)]
        else:
            axes = None
        rank = len(old) + 1 + (len(axes or ()) if node.op_type == "Unsqueeze" else 0)  # with the batch axis
        if axes is None:
            if node.op_type == "Unsqueeze":
                raise UnsupportedLayerError(f"{_where(node)}: Unsqueeze without axes")
            axes = [i + 1 for i, d in enumerate(old) if d == 1]  # the batch axis, its size unknown, stays
        axes = sorted(v + rank if v < 0 else v for v in axes)
        if 0 in axes or any(v >= rank for v in axes) or len(set(axes)) != len(axes):
            raise UnsupportedLayerError(f"{_where(node)}: axes {axes} of a rank-{rank} tensor must not include the "
                                        "batch axis 0 or repeat")
        if node.op_type == "Unsqueeze":
            rest = iter(old)
            new = [1 if i in axes else next(rest) for i in range(1, rank)]
        else:
            if any(old[v - 1] != 1 for v in axes):
                raise UnsupportedLayerError(f"{_where(node)}: Squeeze of axes {axes} of shape {[0, *old]}: only "
                                            "size-1 axes can be squeezed")
            new = [d for i, d in enumerate(old) if i + 1 not in axes]
        return self._review(node, x, new)

    def _review(self, node: Any, x: _Act, new: list[int]) -> _Act:
        """``x`` under the ONNX shape ``new``, which only adds or removes size-1 axes: the same data in the same
        order, unless the channels-first convention would move a non-unit axis in the IR (then refused)."""
        r = len(new)
        cf, ident = ((*range(1, r), 0) if r > 1 else (0,)), tuple(range(r))
        rank = {ax: k for k, ax in enumerate(i for i, d in enumerate(x.onnx_shape) if d != 1)}
        order = [rank[x.perm[i]] for i, d in enumerate(x.shape) if d != 1]  # the data's order of non-unit axes
        new_rank = {ax: k for k, ax in enumerate(i for i, d in enumerate(new) if d != 1)}
        for perm in ((cf, ident) if x.channels_first else (ident, cf)):
            shape = tuple(new[p] for p in perm)
            if [new_rank[perm[i]] for i, d in enumerate(shape) if d != 1] == order:
                real = x.real if x.real is not None else x.shape
                if r == 1 and len(real) > 1:  # a map of size-1 positions squeezed to features: the IR flattens it
                    return self._add_layer(Flatten(self._unique(self._node_name(node, "flatten"))),
                                           replace(x, shape=real, real=None), nonneg=x.nonneg, t=x.type)
                keep = x.layer if self.consumers.get(node.input[0], 0) == 1 else None
                return replace(x, shape=shape, perm=perm, real=None if shape == real else real, layer=keep)
        raise UnsupportedLayerError(f"{_where(node)}: the shape {list(x.onnx_shape)} -> {new} moves the data between "
                                    "channels-first and channels-last order; only re-views that keep it are supported")

    def _transpose(self, node: Any, x: _Act) -> _Act:
        p = list(self._attrs(node).get("perm", []))
        r = len(x.shape)
        if not p:
            p = list(range(r, -1, -1))
        if len(p) != r + 1 or p[0] != 0:
            raise UnsupportedLayerError(f"{_where(node)}: a Transpose that moves the batch axis is not supported")
        pp = [d - 1 for d in p[1:]]
        inv = [0] * r
        for j, k in enumerate(pp):
            inv[k] = j
        return replace(x, perm=tuple(inv[q] for q in x.perm))

    # ---- quantizers on the data path ------------------------------------------------------
    def _act_quant(self, node: Any, x: _Act) -> _Act:
        w = _where(node)
        if node.op_type == "Trunc":
            return self._trunc(node, x)
        c = [self._c(i, node, "quantizer parameter") for i in node.input[1:4]]
        q = self._quant_spec(node, c[0].values, c[1].values, c[2].values)
        if x.type is None and not self.layers and self.input_type is None:
            t = qq.activation_type(q, None, False, w)
            self.input_type = t
            return replace(x, type=t, nonneg=not t.signed)
        src = self._in_type(x)
        t = qq.activation_type(q, src, x.nonneg, w)
        return self._cast(node, x, t, q.signed, "quant")

    def _cast(self, node: Any, x: _Act, t: FixedType, signed: bool, kind: str) -> _Act:
        i = x.layer
        single = i is not None and self.consumers.get(node.input[0], 0) == 1
        if single and isinstance(self.layers[i], (Weighted, ReLU, BatchNorm, AvgPool, GlobalAvgPool, Merge)) and \
                self.layers[i].result_type is None:
            self.layers[i] = replace(self.layers[i], result_type=t)
            self.types[self.layers[i].name] = t
            self.open_bias.discard(i)
            return replace(x, type=t, nonneg=x.nonneg or not signed)
        layer = Quant(self._unique(self._node_name(node, kind, tuple(self.consts[n] for n in node.input[1:2]))), t)
        return self._add_layer(layer, x, nonneg=x.nonneg or not signed, t=t)

    def _trunc(self, node: Any, x: _Act) -> _Act:
        w = _where(node)
        if self.trunc_version < 2:
            raise UnsupportedLayerError(f"{w}: Trunc version 1 rescales its output by the input scale, which no cast "
                                        "does; export with the qonnx.custom_op.general opset 2 (Brevitas >= 0.11)")
        c = [self._c(i, node, "quantizer parameter").values for i in node.input[1:6]]
        scale, zp, _in_bits, out_scale, out_bits = c
        qq.check_zero_point(zp, w)
        f_in = int(np.unique(qq.pow2_exponents(scale, w))[0])
        a = self._attrs(node)
        q = qq.QuantSpec(qq.pow2_exponents(out_scale, w), qq.bit_width(out_bits, w), bool(a.get("signed", 1)),
                         bool(a.get("narrow", 0)), qq.rounding_mode(a.get("rounding_mode", "FLOOR"), w))
        src = self._in_type(x)
        if src.frac > f_in:  # Trunc first rounds its input to the input scale, half to even, without clipping
            lo = -(1 << (src.width - src.frac + f_in)) - 1
            hi = 1 << (src.width - src.frac + f_in)
            from codesign.core import fixed

            t1 = fixed.type_for_range(lo, hi, f_in, "RND_CONV", "WRAP")
            x = self._cast(node, x, t1, src.signed, "trunc")
            src = t1
        return self._cast(node, x, qq.activation_type(q, src, x.nonneg, w), q.signed, "trunc")

    # ---- the graph ------------------------------------------------------------------------
    def _qonnx_version(self) -> int:
        for o in self.model.opset_import:
            if o.domain in ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general"):
                return int(o.version)
        return 1

    def _input_is_channels_first(self, name: str) -> bool:
        """Follow the input through element-wise nodes: a Transpose first means the file is channels-last."""
        cur = name
        for n in self.model.graph.node:
            if n.input and n.input[0] == cur:
                if n.op_type in ("Quant", "IntQuant", "Relu", "Identity", "Dropout"):
                    cur = n.output[0]
                    continue
                if n.op_type == "Transpose":
                    p = list(self._attrs(n).get("perm", []))
                    return not (len(p) > 2 and p[1] == len(p) - 1)
                return True
        return True

    def _read_hints(self) -> dict[str, Any]:
        for p in self.model.metadata_props:
            if p.key == HINTS_KEY:
                try:
                    h = json.loads(p.value)
                except json.JSONDecodeError:
                    return {}
                return h if isinstance(h, dict) else {}
        return {}

    def _apply_hints(self) -> None:
        """Types QONNX cannot state, written by our exporter: used where they give the same results."""
        h = self.hints
        if not h:
            return
        try:
            if h.get("input_type") and self.input_type is not None:
                t = FixedType.parse(h["input_type"])
                if t.quant == self.input_type.quant and same_cast(None, self.input_type, t):
                    self.input_type = t
            layer_hints = h.get("layers", {})
            by_name: dict[str, FixedType | None] = {INPUT: self.input_type}
            for i, layer in enumerate(self.layers):  # every layer names its inputs here (set when added)
                ts = [by_name.get(s) for s in (layer.inputs or (self.layers[i - 1].name if i else INPUT,))]
                t_in = ts[0]
                lh = layer_hints.get(layer.name, {})
                self.layers[i] = layer = self._hinted(layer, lh, ts if layer.merge else t_in)
                if layer.merge:
                    t_in = reference.output_type(layer, ts, ())
                elif isinstance(layer, (Weighted, BatchNorm)) and t_in is not None:
                    t_in = layer.result_type or layer.accum_type or reference.exact_accum_type(layer, t_in)
                elif getattr(layer, "result_type", None) is not None:
                    t_in = layer.result_type
                by_name[layer.name] = t_in
        except (ValueError, TypeError, AttributeError):
            return  # malformed hints are ignored: the graph alone defines the network

    @staticmethod
    def _hinted(layer: Layer, lh: dict[str, Any], t_in: FixedType | None | list) -> Layer:
        from codesign.core import fixed

        upd: dict[str, Any] = {}
        if isinstance(layer, Weighted) and layer.quantized:
            for attr, ints in (("weight_type", layer.weight), ("bias_type", layer.bias)):
                if lh.get(attr):
                    t = FixedType.parse(lh[attr])
                    cur = getattr(layer, attr)
                    shifted = ints.astype(object) * (1 << max(t.frac - cur.frac, 0))
                    if t.frac >= cur.frac and (not shifted.size or (shifted.min() >= t.min_int and shifted.max() <= t.max_int)):
                        upd[attr] = t
                        upd["weight" if attr == "weight_type" else "bias"] = fixed.as_int_array(shifted, False)
            if lh.get("accum_type") and t_in is not None:
                t = FixedType.parse(lh["accum_type"])
                probe = replace(layer, **upd)
                if t.contains(reference.exact_accum_type(probe, t_in)):
                    upd["accum_type"] = t
            if lh.get("reuse") is not None:
                upd["reuse"] = int(lh["reuse"])
            if lh.get("mult"):
                upd["mult"] = str(lh["mult"])
        rt = getattr(layer, "result_type", None)
        if lh.get("result_type") and rt is not None and t_in is not None:
            t = FixedType.parse(lh["result_type"])
            probe = replace(layer, **upd) if upd else layer
            if isinstance(layer, Merge):
                src = reference.merge_exact_type(layer, t_in) if all(s is not None for s in t_in) else None
            else:
                src = reference.exact_accum_type(probe, t_in) if isinstance(layer, (Weighted, BatchNorm)) else t_in
            if src is not None and same_cast(src, rt, t):
                upd["result_type"] = t
        return replace(layer, **upd) if upd else layer
