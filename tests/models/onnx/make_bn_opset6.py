"""Writes ``bn_mlp_opset6.onnx``: a PyTorch MLP with BatchNorm1d as torch 0.4.1 / 1.0 exported it to ONNX opset 6.

We cannot install a torch that old, so this writes the file its exporter wrote, node for node, from
what ``torch/onnx/symbolic.py`` (0.4.1, 1.0) emits for ``nn.Sequential(Linear(64, 32), BatchNorm1d(32),
ReLU(), Linear(32, 16), BatchNorm1d(16), ReLU(), Linear(16, 10))`` in eval mode:

- ``Linear`` is ``addmm(bias, x, weight.t())``; ``symbolic.addmm`` gives ``Gemm(x, W^T, b, alpha=1.0,
  beta=1.0, broadcast=1)`` (opset 6 Gemm still has ``broadcast``) and the peephole pass
  ``fuseTransposeIntoGemm`` turns the ``Transpose`` of the weight into ``transB=1``.
- ``symbolic.batch_norm`` on a 2-D input: "batchnorm1d accepts 2d and 3d array, but ONNX only accepts
  3d", so ``Unsqueeze(axes=[2])`` (axes an attribute before opset 13), then ``BatchNormalization`` with
  ``is_test=1``, ``epsilon`` and ``momentum = 1 - 0.1`` (no ``spatial``: its default 1 applies), then
  ``Squeeze(axes=[2])``.
- Nodes have no names (the exporter set none), values are numbered, parameters keep their
  ``state_dict`` names (here ``nn.Sequential``'s ``0.weight``, ``1.running_mean``, ...), and every
  initializer is also a graph input (IR version 3). ``num_batches_tracked`` is not used by the graph.

The weights are a real training run: torch (any version) trains that model on scikit-learn's digits
for 40 epochs from seed 0, so the BatchNorm statistics are real running statistics. The file is
committed; this script documents it and rebuilds it (``python tests/models/onnx/make_bn_opset6.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("bn_mlp_opset6.onnx")


def train() -> dict[str, np.ndarray]:
    """The state_dict of the MLP trained on the digits (float32, deterministic on CPU)."""
    import torch
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def build(sd: dict[str, np.ndarray]) -> "object":
    """The opset-6 graph the old exporter wrote for that state_dict."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, counter = [], iter(range(15, 100))

    def value() -> str:
        return str(next(counter))

    def gemm(x: str, i: int) -> str:
        y = value()
        nodes.append(helper.make_node("Gemm", [x, f"{i}.weight", f"{i}.bias"], [y], alpha=1.0, beta=1.0,
                                      broadcast=1, transB=1))
        return y

    def batch_norm(x: str, i: int) -> str:
        u, b, s = value(), value(), value()
        nodes.append(helper.make_node("Unsqueeze", [x], [u], axes=[2]))
        nodes.append(helper.make_node("BatchNormalization", [u] + [f"{i}.{p}" for p in
                                      ("weight", "bias", "running_mean", "running_var")], [b],
                                      epsilon=1e-5, is_test=1, momentum=0.9))
        nodes.append(helper.make_node("Squeeze", [b], [s], axes=[2]))
        return s

    def relu(x: str) -> str:
        y = value()
        nodes.append(helper.make_node("Relu", [x], [y]))
        return y

    h = relu(batch_norm(gemm("0", 0), 1))
    h = relu(batch_norm(gemm(h, 3), 4))
    out = gemm(h, 6)
    inits = [numpy_helper.from_array(v, k) for k, v in sd.items()]
    inputs = [helper.make_tensor_value_info("0", TensorProto.FLOAT, [1, 64])]
    inputs += [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in sd.items()]
    graph = helper.make_graph(nodes, "torch-jit-export", inputs,
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, producer_name="pytorch", producer_version="0.4",
                              opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 3
    return model


if __name__ == "__main__":
    import onnx

    m = build(train())
    onnx.checker.check_model(m)
    onnx.save(m, str(OUT))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
