"""Networks with branches (``Add``, ``Concatenate``, a tensor read by several layers) through hls4ml's PyTorch
converter.

The project is built from a torch module whose ``forward`` follows the graph: each IR layer is the modules a
chain would give it (``hls.cnn.layer_modules``), an ``Add`` is ``a + b`` and a ``Concatenate`` is
``torch.cat([a, b], dim=1)`` (torch's channel axis; hls4ml's converter reads ``dim`` from the keyword, and its
channels-last pass moves axis 1 of a channels-first tensor to the last axis, the IR's channel axis). hls4ml's
converter makes its ``Merge`` (op ``add``) and ``Concatenate`` layers of them, named as torch.fx names the calls
(``add``, ``add_1``, ``cat``, ...; ``torch_graph_module`` returns the map from the IR names). In ``io_stream``,
hls4ml's ``clone_output`` pass copies a stream that several layers read.

Exactness (``nnet_merge.h``, ``nnet_merge_stream.h``, Vivado/Vitis and Quartus alike): ``res = data1 + data2``
adds two ``ap_fixed``/``ac_fixed`` values in the operators' exact result type and assigns the sum to ``res_T``,
which rounds and saturates with ``res_T``'s modes; concatenation assigns each input value to ``res_T``. So a
merge's result precision is the IR's output type of the layer (``result_type``, else
``reference.merge_exact_type``), and the C simulation computes the reference's exact sum and then its cast, in
one step. hls4ml's merge layers take two inputs: a merge of three or more is refused, naming the layer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from codesign.core.fixed import FixedType
from codesign.core.kinds import handler
from codesign.core.layers import Add, AvgPool, Concatenate, Dense, GlobalAvgPool, Layer, Quant, ReLU
from codesign.core.network import INPUT, Network
from codesign.errors import BackendError
from hls import cnn, hgq

MERGE_OPS: dict[type[Layer], str] = {Add: "add", Concatenate: "cat"}  # the HLS stage's merges: each kind's torch op
MERGES = tuple(MERGE_OPS)


def is_graph(layers: list[Layer]) -> bool:
    """True when some hardware layer reads other than the layer before it (a branch or a merge)."""
    return any(layer.inputs for layer in layers)


def check_merges(hw: Network) -> None:
    """Refuse what hls4ml 1.3's merge layers cannot take, naming the layer."""
    for layer, srcs in hw.sources().items():
        if len(srcs) > 2:
            raise BackendError(f"layer {layer!r}: hls4ml 1.3's merge layers take two inputs, not {len(srcs)} "
                               f"({', '.join(srcs)}); write it as a chain of two-input merges")


MAX_STREAM_READERS = 7  # hls4ml 1.3's clone_output pass copies a stream at most 7 times


def check_fan_out(hw: Network, io_type: str) -> None:
    """In ``io_stream``, refuse a tensor read by more layers than hls4ml's clone layer copies, naming it."""
    if io_type != "io_stream":
        return
    for name, readers in hw.consumers().items():
        if len(readers) > MAX_STREAM_READERS:
            raise BackendError(f"layer {name!r}: read by {len(readers)} layers; hls4ml 1.3 copies a stream to at most "
                               f"{MAX_STREAM_READERS} readers (its clone layer)")


def mlp_modules(layer: Layer, float_exact: Any) -> list[tuple[str, Any]]:
    """The torch module of one layer of an MLP converted with ``ChannelsLastConversion: off``: a Linear whose
    ``weight`` is already in the (in, out) layout hls4ml's Dense keeps (the converter reads it and never runs it),
    or a ReLU."""
    return handler(MLP_MODULES, layer, "hls4ml's MLP layers here", BackendError)(layer, float_exact)


def _mlp_dense(layer: Dense, float_exact: Any) -> list[tuple[str, Any]]:
    import torch
    from torch import nn

    n_in, n_out = layer.weight.shape
    lin = nn.Linear(n_in, n_out)
    with torch.no_grad():
        lin.weight = nn.Parameter(torch.from_numpy(float_exact(layer.weight, layer.weight_type, layer.name)))
        lin.bias.copy_(torch.from_numpy(float_exact(layer.bias, layer.bias_type, layer.name)))
    return [(layer.name, lin)]


def _mlp_relu(layer: ReLU, float_exact: Any) -> list[tuple[str, Any]]:
    from torch import nn

    return [(layer.name, nn.ReLU())]


# The HLS stage's table for a branched MLP (io_parallel): each kind's torch modules.
MLP_MODULES: dict[type[Layer], Callable[..., list[tuple[str, Any]]]] = {Dense: _mlp_dense, ReLU: _mlp_relu,
                                                                         Quant: hgq.element_quant_modules}


def torch_graph_module(hw: Network, conv: bool, float_exact: Any) -> tuple[Any, dict[str, str]]:
    """The module hls4ml converts for the hardware network ``hw`` (a CNN's modules in torch's layout for the
    channels-last conversion, an MLP's as ``mlp_modules``), and the hls4ml names of the merge layers by IR name."""
    import torch
    from hls4ml.utils.torch import CustomFXTracer
    from torch import nn

    check_merges(hw)
    sources = hw.sources()
    steps: list[tuple[str, tuple[str, ...], str, tuple[str, ...]]] = []
    mods: list[tuple[str, Any]] = []
    for layer, shapes in zip(hw.layers, hw.input_shapes()):
        if isinstance(layer, MERGES):
            steps.append((layer.name, sources[layer.name], MERGE_OPS[type(layer)], ()))
            continue
        made = cnn.layer_modules(layer, shapes[0], float_exact) if conv else mlp_modules(layer, float_exact)
        mods += made
        steps.append((layer.name, sources[layer.name], "modules", tuple(n for n, _ in made)))

    class Graph(nn.Module):
        """The IR graph, step by step (hls4ml's tracer follows ``forward``; it is never run)."""

        def __init__(self) -> None:
            super().__init__()
            for name, mod in mods:
                try:
                    self.add_module(name, mod)
                except (KeyError, TypeError) as e:
                    raise BackendError(f"layer {name!r}: not usable as a torch module name for hls4ml ({e}); "
                                       "rename the layer") from None

        def forward(self, input: Any) -> Any:  # noqa: A002 - the IR's name for the network's input
            vals = {INPUT: input}
            y = input
            for name, srcs, op, names in steps:
                if op == "add":
                    y = vals[srcs[0]] + vals[srcs[1]]
                elif op == "cat":
                    y = torch.cat([vals[s] for s in srcs], dim=1)
                else:
                    y = vals[srcs[0]]
                    for n in names:
                        y = getattr(self, n)(y)
                vals[name] = y
            return y

    module = Graph().eval()
    traced = CustomFXTracer().trace(module)
    for node in traced.nodes:
        if node.op == "call_module" and node.name != node.target:
            raise BackendError(f"layer {node.target!r}: torch.fx names it {node.name!r}, so hls4ml would too; rename "
                               "the layer (a Python identifier that no torch function shares)")
    calls = [node.name for node in traced.nodes if node.op == "call_function"]
    merges = [layer.name for layer in hw.layers if isinstance(layer, MERGES)]
    if len(calls) != len(merges):
        raise BackendError(f"network {hw.name!r}: torch.fx traced {len(calls)} function calls for {len(merges)} merge "
                           "layers")
    return module, dict(zip(merges, calls))


def lower_for_backend(hw: Network, backend: str) -> list[Layer]:
    """``cnn.lower_for_backend`` over a graph: on Quartus/oneAPI each average pool becomes the convolution it equals
    (a global one then a Flatten, ``<pool>_flat``, which its readers then read)."""
    if backend not in ("quartus", "oneapi"):
        return list(hw.layers)
    sources = hw.sources()
    types = {INPUT: hw.input_type, **{l.name: t for l, t in zip(hw.layers, hw.tensor_types())}}
    alias: dict[str, str] = {}
    out: list[Layer] = []
    for layer, shapes in zip(hw.layers, hw.input_shapes()):
        srcs = tuple(alias.get(s, s) for s in sources[layer.name])
        if isinstance(layer, (AvgPool, GlobalAvgPool)):
            made = cnn.average_as_conv(layer, shapes[0], types[srcs[0]])
            made[0].inputs = srcs
            alias[layer.name] = made[-1].name
            out += made
        else:
            out.append(copy.copy(layer))
            out[-1].inputs = srcs
    return Network(hw.name, hw.input_shape, out, hw.input_type).layers


def graph_precisions(hw: Network, weighted: Any) -> dict[str, dict[str, str]]:
    """hls4ml precision strings for every module of ``torch_graph_module`` and every merge (by IR name): the IR's
    types, each layer's rule as in a chain (``cnn.module_precisions``), a merge's result its output type."""
    sources = hw.sources()
    types: dict[str, FixedType] = {INPUT: hw.input_type,
                                   **{l.name: t for l, t in zip(hw.layers, hw.tensor_types())}}
    out: dict[str, dict[str, str]] = {}
    for layer, shapes in zip(hw.layers, hw.input_shapes()):
        if isinstance(layer, MERGES):
            out[layer.name] = {"result": types[layer.name].to_hls()}
            continue
        res = cnn.module_precisions(layer, types[sources[layer.name][0]], shapes[0], weighted, out)
        if res != types[layer.name]:
            raise BackendError(f"layer {layer.name!r}: its hls4ml result type {res} is not the IR's {types[layer.name]}")
    return out
