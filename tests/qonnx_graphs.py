"""Small hand-written QONNX graphs for the importer's tests, and running graphs in qonnx and onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

QDOMAIN = "qonnx.custom_op.general"


class Graph:
    """A chain of nodes on one data tensor, built with onnx.helper."""

    def __init__(self, n_in: int | tuple[int, ...], qonnx_version: int = 2) -> None:
        self.shape = (n_in,) if isinstance(n_in, int) else tuple(n_in)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.x = "x"
        self.k = 0
        self.qonnx_version = qonnx_version

    def const(self, values: Any, name: str | None = None) -> str:
        from onnx import numpy_helper

        self.k += 1
        name = name or f"c{self.k}"
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.float32), name))
        return name

    def op(self, op: str, inputs: list[str], name: str, domain: str = "", **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [name], name=name, domain=domain or None, **attrs))
        return name

    def quant(self, x: str, scale: Any, bits: int, name: str, signed: int = 1, narrow: int = 0,
              mode: str = "ROUND", zp: Any = 0.0, op: str = "Quant") -> str:
        return self.op(op, [x, self.const(scale), self.const(zp), self.const(float(bits))], name, QDOMAIN,
                       signed=signed, narrow=narrow, rounding_mode=mode)

    def data(self, op: str, name: str, *extra: str, **attrs: Any) -> "Graph":
        """Apply ``op`` to the data tensor."""
        self.x = self.op(op, [self.x, *extra], name, QDOMAIN if op in ("Quant", "Trunc", "BipolarQuant") else "",
                         **attrs)
        return self

    def dense(self, w: np.ndarray, name: str, w_scale: Any = None, w_bits: int = 8, bias: Any = None,
              b_scale: Any = None, b_bits: int = 16, narrow: int = 0, bipolar: bool = False) -> "Graph":
        wn = self.const(w, f"{name}.weight")
        if bipolar:
            wn = self.op("BipolarQuant", [wn, self.const(w_scale)], f"{name}.wq", QDOMAIN)
        elif w_scale is not None:
            wn = self.quant(wn, w_scale, w_bits, f"{name}.wq", narrow=narrow)
        self.x = self.op("MatMul", [self.x, wn], name)
        if bias is not None:
            bn = self.const(bias, f"{name}.bias")
            if b_scale is not None:
                bn = self.quant(bn, b_scale, b_bits, f"{name}.bq")
            self.x = self.op("Add", [self.x, bn], f"{name}.add")
        return self

    def conv(self, w: np.ndarray, name: str, w_scale: float, w_bits: int, bias: Any, b_scale: float,
             b_bits: int = 16, **attrs: Any) -> "Graph":
        """A Conv with quantized weights (c_out, c_in, k...) and bias."""
        wn = self.quant(self.const(w, f"{name}.weight"), w_scale, w_bits, f"{name}.wq")
        bn = self.quant(self.const(bias, f"{name}.bias"), b_scale, b_bits, f"{name}.bq")
        self.x = self.op("Conv", [self.x, wn, bn], name, kernel_shape=list(w.shape[2:]), **attrs)
        return self

    def act_quant(self, name: str, scale: float, bits: int, **kw: Any) -> "Graph":
        self.x = self.quant(self.x, scale, bits, name, **kw)
        return self

    def model(self) -> Any:
        from onnx import TensorProto, helper

        g = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *self.shape])],
                              [helper.make_tensor_value_info(self.x, TensorProto.FLOAT, None)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13),
                                                helper.make_opsetid(QDOMAIN, self.qonnx_version)])
        m.ir_version = 8
        return m

    def save(self, path: Path) -> Path:
        import onnx

        onnx.save(self.model(), str(path))
        return path


def run_qonnx(model_or_path: Any, x: np.ndarray, before_head: bool = False) -> np.ndarray:
    """qonnx's executor on a batch (the graph's batch size is set to ``len(x)``); ``before_head``: the
    tensor before a last Softmax, Sigmoid or ArgMax."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
        from qonnx.transformation.infer_shapes import InferShapes

        mw = ModelWrapper(str(model_or_path) if isinstance(model_or_path, Path) else model_or_path)
        inp, out = mw.graph.input[0].name, mw.graph.output[0].name
        mw.set_tensor_shape(inp, [len(x), *x.shape[1:]])
        del mw.graph.value_info[:]
        mw.graph.output[0].type.tensor_type.ClearField("shape")
        mw = mw.transform(InferShapes())
        ctx = execute_onnx(mw, {inp: np.asarray(x, dtype=np.float32)}, return_full_exec_context=before_head)
        last = mw.graph.node[-1]
        head = before_head and last.op_type in ("Softmax", "LogSoftmax", "Sigmoid", "ArgMax")
        return ctx[last.input[0]] if head else ctx[out]


def run_onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime, one sample at a time (some files fix the batch size, or flatten it with Flatten(axis=0))."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(path))
    for v in (m.graph.input[0], *m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = m.graph.input[0].name
    x = np.asarray(x, dtype=np.float32)
    return np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
