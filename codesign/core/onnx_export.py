"""A Network as QONNX: ONNX with qonnx ``Quant`` nodes, for FINN, hls4ml and qonnx's executor.

Each fixed-point type becomes a ``Quant`` node with a power-of-two scale, zero zero-point, the
type's width and signedness, and the rounding mode that equals the type's: ``AP_RND_CONV`` is
``ROUND`` (half to even), ``AP_TRN`` is ``FLOOR``, ``AP_RND`` on values that cannot be negative
is ``HALF_UP``. ``Quant`` always saturates, so a wrapping type is exported only where it cannot
overflow; the input's own overflow mode does not matter for inputs within its range, which are
what the reference is verified on. Weights and biases are stored as their exact values (pruned
weights as zeros) behind a ``Quant`` that carries their type, so the file says the bit widths.

Executing the file in float32 (qonnx's executor runs the standard nodes in onnxruntime and
holds every ``Quant`` output in float32) is exact while every sum fits 24 bits of mantissa. A
dense layer whose exact accumulator is wider is computed in float64 instead, behind ``Cast``
nodes (``float64=False`` leaves them out, for tools that do not take ``Cast``); onnxruntime has
no float64 ``Conv``, so a convolution with a wider accumulator executes in float32, which may
round (the file's meaning, and our re-import, stay exact). A branch is a tensor read by two or more
nodes; ``Add`` and ``Concat`` (on the last, channel axis: the file keeps the IR's channels-last layout
between convolutions) merge them, an ``Add`` in float64 where its exact sum is wider than 24 bits, and
the merge's ``result_type`` is a ``Quant`` after it. What QONNX cannot
state (accumulator types, the input's overflow mode, reuse) is written to the model's metadata
under ``fpga-codesign``; our importer uses it only where it gives the same results.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codesign.core import fixed, reference
from codesign.errors import UnsupportedLayerError
from codesign.core.fixed import FixedType
from codesign.core.layers import (Add, AvgPool, BatchNorm, Conv, Flatten, GlobalAvgPool, MaxPool, Merge, Output, Quant, ReLU,
                                  Weighted)
from codesign.core.network import INPUT

if TYPE_CHECKING:
    from codesign.core.network import Network

HINTS_KEY = "fpga-codesign"
QONNX_DOMAIN = "qonnx.custom_op.general"
QONNX_VERSION = 2
ONNX_OPSET = 13
IR_VERSION = 8
FLOAT32_EXACT_BITS = 24  # float32 holds every integer of up to 24 bits exactly
INPUT_NAME, OUTPUT_NAME = "global_in", "global_out"
_MODES = {"RND_CONV": "ROUND", "TRN": "FLOOR"}


def same_cast(src: FixedType | None, a: FixedType, b: FixedType) -> bool:
    """True when casting any value of ``src`` (None: any value in ``a``'s range) to ``a`` and to ``b`` agrees."""
    if (a.width, a.integer, a.signed) != (b.width, b.integer, b.signed):
        return False
    if a.quant != b.quant and (src is None or src.frac > a.frac):
        return False
    if a.overflow != b.overflow:
        return src is None or _cannot_overflow(src, a)
    return True


def _cannot_overflow(src: FixedType, t: FixedType) -> bool:
    ends = fixed.round_shift(np.array([src.min_int, src.max_int], dtype=object), src.frac - t.frac, t.quant)
    return t.min_int <= ends[0] and ends[1] <= t.max_int


def network_to_onnx(net: "Network", path: str | os.PathLike | None = None, float64: bool = True) -> Any:
    """The network as an ``onnx.ModelProto`` (QONNX when it is fixed point), written to ``path`` when given.

    The batch size is 1, as FINN and hls4ml expect (qonnx's ``cleanup_model(override_batchsize=N)``
    or ``ModelWrapper.set_tensor_shape`` changes it).
    """
    import onnx
    from onnx import TensorProto, helper

    g = _Builder(net, float64)
    g.build()
    elem = {"double": TensorProto.DOUBLE, "float": TensorProto.FLOAT, "int64": TensorProto.INT64}
    graph = helper.make_graph(
        g.nodes, net.name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, *net.input_shape])],
        [helper.make_tensor_value_info(OUTPUT_NAME, elem[g.dtype], [1, *g.out_shape])],
        g.inits,
    )
    opsets = [helper.make_opsetid("", ONNX_OPSET)]
    if net.quantized:
        opsets.append(helper.make_opsetid(QONNX_DOMAIN, QONNX_VERSION))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="fpga-codesign")
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {HINTS_KEY: json.dumps(g.hints)})
    if path is not None:
        _atomic_save(model, Path(path))
    return model


def _atomic_save(model: Any, path: Path) -> None:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Builder:
    """Walks the layers once, appending nodes; tracks each tensor's type, sign and float width."""

    def __init__(self, net: "Network", float64: bool) -> None:
        self.net, self.float64 = net, float64
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.hints: dict[str, Any] = {"format": "fpga-codesign-onnx-hints", "version": 1, "name": net.name,
                                      "input_type": net.input_type.to_hls() if net.input_type else None, "layers": {}}
        self.dtype = "float"
        self.out_shape: tuple[int, ...] = net.input_shape

    # ---- graph pieces -----------------------------------------------------------------
    def node(self, op: str, inputs: list[str], name: str, domain: str = "", **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [name], name=name, domain=domain or None, **attrs))
        return name

    def const(self, name: str, values: np.ndarray, double: bool = False) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.float64 if double else np.float32), name))
        return name

    def quant(self, x: str, t: FixedType, name: str, src: FixedType | None, nonneg: bool, where: str) -> str:
        """A Quant node equal to casting values of ``src`` (None: float inputs) to ``t``."""
        if t.signed and t.width == 1:
            raise UnsupportedLayerError(f"{where}: a signed 1-bit type is a sign function in QONNX; widen it to 2 bits")
        rounds = src is None or src.frac > t.frac
        if not rounds:
            mode = "ROUND"
        elif t.quant in _MODES:
            mode = _MODES[t.quant]
        elif nonneg or not t.signed:
            mode = "HALF_UP"  # AP_RND on values that cannot be negative after the clip
        else:
            raise UnsupportedLayerError(
                f"{where}: {t} rounds half up on values that can be negative, which no QONNX rounding mode does; "
                "use AP_RND_CONV or AP_TRN"
            )
        if t.overflow == "WRAP" and src is not None and not _cannot_overflow(src, t):
            raise UnsupportedLayerError(f"{where}: {t} wraps on overflow, and QONNX's Quant saturates; use AP_SAT")
        scale = self.const(f"{name}.scale", np.ldexp(1.0, -t.frac))
        zp = self.const(f"{name}.zero_point", 0.0)
        bits = self.const(f"{name}.bit_width", float(t.width))
        return self.node("Quant", [x, scale, zp, bits], name, QONNX_DOMAIN, signed=int(t.signed), narrow=0,
                         rounding_mode=mode)

    def cast(self, x: str, name: str) -> str:
        from onnx import TensorProto

        return self.node("Cast", [x], name, to=TensorProto.DOUBLE)

    def param(self, layer: Weighted, attr: str, values: np.ndarray, t: FixedType | None, double: bool) -> str:
        name = f"{layer.name}.{attr}"
        if t is None:
            return self.const(name, values, double)
        if t.width > FLOAT32_EXACT_BITS:
            raise UnsupportedLayerError(f"layer {layer.name!r}: {attr} type {t} is wider than the {FLOAT32_EXACT_BITS} "
                                        "bits a QONNX Quant output holds exactly")
        self.const(name, values)
        q = self.quant(name, t if not (t.signed and t.width == 1) else FixedType(2, t.integer + 1), f"{name}_quant",
                       t, False, f"layer {layer.name!r}")
        return self.cast(q, f"{name}_double") if double else q

    # ---- layers -----------------------------------------------------------------------
    def build(self) -> None:
        net = self.net
        x, t, nonneg = INPUT_NAME, net.input_type, False
        if t is not None:
            x = self.quant(x, t, "global_in_quant", None, False, f"network {net.name!r} input type")
            nonneg = not t.signed
        # each tensor's ONNX name, type, sign, shape and float width, by the IR name of its layer
        state: dict[str, tuple[str, FixedType | None, bool, tuple[int, ...], str]] = {
            INPUT: (x, t, nonneg, net.input_shape, "float")}
        sources = net.sources()
        for layer in net.layers:
            where = f"layer {layer.name!r}"
            lh: dict[str, Any] = {}
            ins = [state[s] for s in sources[layer.name]]
            x, t, nonneg, shape, self.dtype = ins[0]
            if isinstance(layer, Merge):
                x, t, nonneg = self.merge(layer, ins, lh)
            elif isinstance(layer, Weighted):
                x, t = self.weighted(layer, x, t, shape, lh)
                nonneg = False
            elif isinstance(layer, ReLU):
                x = self.node("Relu", [x], layer.name)
                if layer.result_type is not None and t is not None:
                    x = self.quant(x, layer.result_type, f"{layer.name}.result_quant", t, True, where)
                    self.dtype, t = "float", layer.result_type
                    lh["result_type"] = t.to_hls()
                nonneg = True
            elif isinstance(layer, MaxPool):
                r = len(shape)
                x = self.node("Transpose", [x], f"{layer.name}.to_channels_first", perm=[0, r, *range(1, r)])
                x = self.node("MaxPool", [x], layer.name, kernel_shape=list(layer.pool), strides=list(layer.strides))
                x = self.node("Transpose", [x], f"{layer.name}.to_channels_last", perm=[0, *range(2, r + 1), 1])
            elif isinstance(layer, (AvgPool, GlobalAvgPool)):
                x, t = self.average(layer, x, t, shape, nonneg, lh)
            elif isinstance(layer, Quant) and layer.per_element:
                raise UnsupportedLayerError(f"{where}: per-element formats (HGQ) have no QONNX equivalent: a Quant node "
                                            "has one bit width and one signedness (qonnx 1.0 reads bit_width as a "
                                            "scalar); export a network with one type per tensor")
            elif isinstance(layer, Quant):
                if t is not None:
                    x = self.quant(x, layer.result_type, layer.name, t, nonneg, where)
                    self.dtype, t = "float", layer.result_type
                    nonneg = nonneg or not t.signed
                    lh["result_type"] = t.to_hls()
                else:
                    raise UnsupportedLayerError(f"{where}: a Quant layer in a float network; quantize the network first")
            elif isinstance(layer, Flatten):
                if len(shape) > 1:
                    x = self.node("Flatten", [x], layer.name, axis=1)
            elif isinstance(layer, Output):
                x = self.head(layer, x)
            elif isinstance(layer, BatchNorm):
                raise UnsupportedLayerError(f"{where}: BatchNorm is not exported; fold it into the layer before it")
            else:
                raise UnsupportedLayerError(f"{where}: {layer.kind} layers cannot be exported to ONNX yet")
            shape = layer.merged_shape([s[3] for s in ins]) if layer.merge else layer.output_shape(shape)
            state[layer.name] = (x, t, nonneg, shape, self.dtype)
            if lh:
                self.hints["layers"][layer.name] = lh
        self.out_shape = shape
        if x == INPUT_NAME:
            raise UnsupportedLayerError(f"network {net.name!r} has no layers to export")
        for n in self.nodes:
            if n.output[0] == x:
                n.output[0] = OUTPUT_NAME

    def merge(self, layer: Merge, ins: list[tuple[str, FixedType | None, bool, tuple[int, ...], str]],
              lh: dict[str, Any]) -> tuple[str, FixedType | None, bool]:
        """Add (exact in float32 while its exact sum fits 24 bits, else in float64) or Concat on the last axis,
        then the result type's Quant."""
        where = f"layer {layer.name!r}"
        ts = [s[1] for s in ins]
        exact = reference.merge_exact_type(layer, ts) if all(t is not None for t in ts) else None
        wide = isinstance(layer, Add) and exact is not None and exact.width > FLOAT32_EXACT_BITS
        double = any(s[4] == "double" for s in ins) or (self.float64 and wide)
        xs = [s[0] if s[4] == "double" or not double else self.cast(s[0], f"{layer.name}.input{i}_double")
              for i, s in enumerate(ins)]
        if isinstance(layer, Add):
            x = self.node("Add", xs, layer.name)
        else:
            x = self.node("Concat", xs, layer.name, axis=-1)
        self.dtype = "double" if double else "float"
        nonneg = all(s[2] for s in ins)
        if exact is None or layer.result_type is None:
            return x, exact, nonneg
        x = self.quant(x, layer.result_type, f"{layer.name}.result_quant", exact, nonneg, where)
        self.dtype = "float"
        lh["result_type"] = layer.result_type.to_hls()
        return x, layer.result_type, nonneg or not layer.result_type.signed

    def average(self, layer: AvgPool | GlobalAvgPool, x: str, t: FixedType | None, shape: tuple[int, ...],
                nonneg: bool, lh: dict[str, Any]) -> tuple[str, FixedType | None]:
        """AveragePool / GlobalAveragePool (channels-first), then the result type's Quant; exact in float32
        while the mean's type fits 24 bits (onnxruntime sums in the tensor's float type)."""
        where = f"layer {layer.name!r}"
        shift = layer.shift(shape) if isinstance(layer, GlobalAvgPool) else layer.shift
        exact = reference.avg_exact_type(t, shift) if t is not None else None
        if self.dtype == "double" or (exact is not None and exact.width > FLOAT32_EXACT_BITS):
            raise UnsupportedLayerError(f"{where}: an average of {exact.width if exact else 'float64'}-bit values is not "
                                        f"exact in onnxruntime's float32 pooling; narrow the input to "
                                        f"{FLOAT32_EXACT_BITS - shift} bits")
        r = len(shape)
        x = self.node("Transpose", [x], f"{layer.name}.to_channels_first", perm=[0, r, *range(1, r)])
        if isinstance(layer, GlobalAvgPool):
            x = self.node("GlobalAveragePool", [x], layer.name)
            x = self.node("Flatten", [x], f"{layer.name}.flatten", axis=1)
        else:
            x = self.node("AveragePool", [x], layer.name, kernel_shape=list(layer.pool), strides=list(layer.strides))
            x = self.node("Transpose", [x], f"{layer.name}.to_channels_last", perm=[0, *range(2, r + 1), 1])
        if t is None or layer.result_type is None:
            return x, exact
        x = self.quant(x, layer.result_type, f"{layer.name}.result_quant", exact, nonneg, where)
        self.dtype = "float"
        lh["result_type"] = layer.result_type.to_hls()
        return x, layer.result_type

    def weighted(self, layer: Weighted, x: str, t: FixedType | None, shape: tuple[int, ...],
                 lh: dict[str, Any]) -> tuple[str, FixedType | None]:
        where = f"layer {layer.name!r}"
        exact = reference.exact_accum_type(layer, t) if t is not None else None
        conv = isinstance(layer, Conv)
        wide = self.dtype == "double" or (exact is not None and exact.width > FLOAT32_EXACT_BITS)
        double = self.float64 and wide and not conv  # onnxruntime has no float64 Conv
        if conv and self.dtype == "double":
            raise UnsupportedLayerError(f"{where}: a convolution after a float64 layer; onnxruntime has no float64 Conv")
        if double and self.dtype != "double":
            x = self.cast(x, f"{layer.name}.input_double")
        w = layer.float_weight()
        if conv:  # (k..., cin, cout) -> (cout, cin, k...)
            w = np.moveaxis(w, (-1, -2), (0, 1))
        wq = self.param(layer, "weight", w, layer.weight_type, double)
        bq = self.param(layer, "bias", layer.float_bias(), layer.bias_type, double)
        if conv:
            pads = layer.pads(shape[:-1])
            r = len(shape)
            x = self.node("Transpose", [x], f"{layer.name}.to_channels_first", perm=[0, r, *range(1, r)])
            x = self.node("Conv", [x, wq, bq], layer.name, kernel_shape=list(layer.kernel), strides=list(layer.strides),
                          pads=[p[0] for p in pads] + [p[1] for p in pads])
            x = self.node("Transpose", [x], f"{layer.name}.to_channels_last", perm=[0, *range(2, r + 1), 1])
        else:
            x = self.node("MatMul", [x, wq], layer.name)
            x = self.node("Add", [x, bq], f"{layer.name}.bias_add")
        self.dtype = "double" if double else "float"
        if layer.quantized:
            lh.update(weight_type=layer.weight_type.to_hls(), bias_type=layer.bias_type.to_hls())
            if layer.accum_type is not None:
                lh["accum_type"] = layer.accum_type.to_hls()
            if layer.reuse != 1 or layer.mult != "auto":
                lh.update(reuse=layer.reuse, mult=layer.mult)
        if t is None:
            return x, None
        if layer.result_type is not None:
            x = self.quant(x, layer.result_type, f"{layer.name}.result_quant", exact, False, where)
            self.dtype = "float"
            lh["result_type"] = layer.result_type.to_hls()
            return x, layer.result_type
        return x, layer.accum_type or exact

    def head(self, layer: Output, x: str) -> str:
        if layer.head == "softmax":
            return self.node("Softmax", [x], layer.name, axis=-1)
        if layer.head == "sigmoid":
            return self.node("Sigmoid", [x], layer.name)
        if layer.head == "argmax":
            self.dtype = "int64"
            return self.node("ArgMax", [x], layer.name, axis=-1, keepdims=0)
        return x
