"""hls4ml projects from the IR, with every precision taken from the Network.

hls4ml 1.3 with Keras 3 installed sends Keras models down its Keras-3 path, so the
project is built from an equivalent PyTorch module (float32 weights that hold the fixed-
point values exactly) through hls4ml's public PyTorch converter, with an explicit
per-layer precision for weights, biases, accumulators and results. A chain is an ``nn.Sequential``;
a graph (``Add``, ``Concatenate``, a tensor read by several layers) a module whose forward follows it
(``hls.graph``), so hls4ml makes its merge layers, and in ``io_stream`` its clone layers.

Sparse datapaths per layer (the plan is the layer's ``reuse`` in the IR), see ``dense_plan``:
reuse 1 -> distributed arithmetic (an adder graph of the nonzero weights) on Vitis/Vivado;
reuse > 1 -> hls4ml's compressed dense (``Compression: True``, only the nonzero weights stored,
ceil(nonzeros / reuse) multipliers; made to build by ``hls.compressed``).

This module depends only on the IR: it never imports ``rtl_sim``.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codesign.board import Board
from codesign.core.fixed import FixedType
from codesign.core.layers import Dense, Flatten, Layer, Output, Quant, ReLU, Weighted
from codesign.core.network import INPUT, Network
from codesign.errors import BackendError, LayerError
from codesign.tools import quiet_import
from hls import cnn, compressed, graph, hgq

BACKENDS = {"xilinx": ("vitis", "vivado"), "intel": ("quartus", "oneapi")}
_HLS4ML_NAMES = {"vitis": "Vitis", "vivado": "Vivado", "quartus": "Quartus", "oneapi": "oneAPI"}
MAX_EXACT_FLOAT32_BITS = 24
log = logging.getLogger(__name__)


@dataclass
class HlsProject:
    """A written hls4ml project and the hls4ml model object that can compile and predict."""

    backend: str
    directory: Path
    model: Any
    strategies: dict[str, str]
    input_name: str
    io_type: str = "io_parallel"

    @property
    def stateful(self) -> bool:
        """io_stream layers keep their line buffers and counters in static variables: one image at a time."""
        return self.io_type == "io_stream"


def check_backend(board: Board, backend: str) -> str:
    """The backend name, or an error saying which backends fit the board's vendor."""
    b = backend.lower()
    allowed = BACKENDS[board.vendor]
    if b not in allowed:
        every = sorted(x for v in BACKENDS.values() for x in v)
        if b not in every:
            raise BackendError(f"unknown backend {backend!r}; backends: {', '.join(every)}")
        raise BackendError(
            f"backend {backend!r} does not fit board {board.name!r} ({board.vendor} {board.part}); "
            f"use one of: {', '.join(allowed)}"
        )
    return b


def _float_exact(values: np.ndarray, t: FixedType, what: str) -> np.ndarray:
    if t.width > MAX_EXACT_FLOAT32_BITS:
        raise LayerError(f"{what}: {t} is wider than {MAX_EXACT_FLOAT32_BITS} bits and cannot pass through float32 exactly")
    return np.ldexp(values.astype(np.float64), -t.frac).astype(np.float32)


def hls_layers(net: Network) -> list[Layer]:
    """The hardware layers, each Quant folded into the exact result of the Dense/Conv (or the ReLU) before it.

    A Flatten is kept where it flattens a spatial tensor (a CNN's), dropped where the tensor is flat already
    (the C simulation and the RTL take the input as one flat vector in channels-last order). In a graph, a
    layer names its inputs after these are dropped or folded (a Quant is folded only into a layer it alone
    reads); a chain stays a chain (empty ``inputs``)."""
    if not net.quantized:
        raise BackendError(f"network {net.name!r} is float; quantize or compress it before generating HLS")
    sources, consumers = net.sources(), net.consumers()
    shapes = {INPUT: net.input_shape, **{l.name: s for l, s in zip(net.layers, net.shapes())}}
    by_name = {l.name: l for l in net.layers}

    def dropped(layer: Layer) -> bool:  # its readers read its input
        src = sources[layer.name][0]
        return isinstance(layer, Output) or (isinstance(layer, Flatten) and (
            len(shapes[src]) == 1 or (src == INPUT and len(consumers[INPUT]) == 1)))

    def readers(name: str) -> int:
        return sum(readers(c) if dropped(by_name[c]) else 1 for c in consumers[name])

    alias = {INPUT: INPUT}
    out: dict[str, Layer] = {}
    for layer in net.layers:
        srcs = tuple(alias[s] for s in sources[layer.name])
        if dropped(layer):
            alias[layer.name] = srcs[0]
            continue
        if isinstance(layer, Quant) and not layer.per_element:  # per element: a layer of its own (hls.hgq)
            prev = out.get(srcs[0])
            if isinstance(prev, (Weighted, ReLU)) and prev.result_type is None and readers(srcs[0]) == 1:
                out[srcs[0]] = _copy_with(prev, result_type=layer.result_type)
                alias[layer.name] = srcs[0]
                continue
            raise BackendError(
                f"layer {layer.name!r}: a quantizer that does not directly follow a Dense, Conv or ReLU without a "
                "result type of its own (and read by nothing else) has no hls4ml layer; fold it into the previous "
                "layer's result type"
            )
        if not isinstance(layer, (*cnn.CNN_LAYERS, *graph.MERGES)):
            raise BackendError(
                f"layer {layer.name!r} ({layer.kind}): HLS generation supports {', '.join(SUPPORTED)} "
                f"(Quant folded into the layer before it); {layer.kind} is not wired up"
            )
        out[layer.name] = _copy_with(layer, inputs=srcs)
        alias[layer.name] = layer.name
    return hw_network(net, list(out.values())).layers  # a chain reads as a chain again


def hw_network(net: Network, layers: list[Layer]) -> Network:
    """The hardware layers (``hls_layers``) as a network over the input the project takes."""
    return Network(net.name, hw_input_shape(net, layers), layers, net.input_type)


SUPPORTED = ("Conv1D", "Conv2D", "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool1D",
             "GlobalAvgPool2D", "ReLU", "Flatten", "Dense", "Add", "Concatenate")


def is_cnn(net: Network, layers: list[Layer]) -> bool:
    """A network whose hardware input is spatial: generated with io_stream and line buffers."""
    return len(net.input_shape) > 1 and bool(layers) and not isinstance(layers[0], Dense)


def hw_input_shape(net: Network, layers: list[Layer]) -> tuple[int, ...]:
    """The input shape the project takes: the IR's for a CNN, flat for an MLP."""
    return tuple(net.input_shape) if is_cnn(net, layers) else (int(np.prod(net.input_shape)),)


def _copy_with(layer: Layer, **changes: Any) -> Layer:
    import copy

    c = copy.copy(layer)
    for k, v in changes.items():
        setattr(c, k, v)
    return c


def torch_module(layers: list[Layer]) -> Any:
    """An nn.Sequential for hls4ml's PyTorch converter, named like the IR layers, each Linear's
    ``weight`` already in the (in, out) layout hls4ml's Dense keeps.

    hls4ml transposes a Linear's (out, in) weight in its channels-last pass, which crashes on a
    compressed layer (its weights are a list of triples by then), so we convert with that pass
    off (``ChannelsLastConversion: off``) and hand over the layout it would have produced. The
    module exists for the converter, which reads it symbolically and never runs it."""
    from torch import nn

    mods = [m for layer in layers for m in graph.mlp_modules(layer, _float_exact)]
    return nn.Sequential(collections.OrderedDict(mods)).eval()


def weighted_precisions(layer: Weighted, t: FixedType) -> tuple[dict[str, str], FixedType]:
    """A Dense/Conv layer's hls4ml precisions for inputs of ``t`` (accumulator checked exact), and its result type."""
    from codesign.core.reference import exact_accum_type

    exact = exact_accum_type(layer, t)
    acc = layer.accum_type or exact
    if not acc.contains(exact):
        raise LayerError(f"layer {layer.name!r}: accumulator {acc} cannot hold the exact sums ({exact})")
    res = layer.result_type or acc
    return {"weight": layer.weight_type.to_hls(), "bias": layer.bias_type.to_hls(), "accum": acc.to_hls(),
            "result": res.to_hls()}, res


def layer_precisions(net: Network, layers: list[Layer]) -> dict[str, dict[str, str]]:
    """hls4ml precision strings for every layer (and every module hls4ml converts), exactly the IR's types."""
    if graph.is_graph(layers):
        return graph.graph_precisions(hw_network(net, layers), weighted_precisions)
    if is_cnn(net, layers):
        return cnn.cnn_precisions(layers, tuple(net.input_shape), net.input_type, weighted_precisions)
    t = net.input_type
    out: dict[str, dict[str, str]] = {}
    for layer in layers:
        if isinstance(layer, Dense):
            out[layer.name], t = weighted_precisions(layer, t)
        else:
            res = layer.result_type or t
            out[layer.name] = {"result": res.to_hls()}
            t = res
    return out


SPARSE_FORMS = ("auto", "da", "latency", "unrolled", "compressed")


def dense_plan(layer: Dense, backend: str, form: str = "auto") -> dict[str, Any]:
    """Strategy and reuse factor for one Dense layer.

    ``auto``: reuse > 1 -> ``compressed``, hls4ml's compressed dense: only the nonzero weights
    stored, ceil(nonzeros / reuse) multipliers (every backend but oneAPI, whose hls4ml 1.3
    templates have no compressed dense). Reuse 1 on Vitis/Vivado -> ``da``, distributed
    arithmetic when da4ml is installed (an adder graph of the nonzero weights), else Latency;
    reuse 1 on Quartus/oneAPI -> Resource (the Intel compiler folds the zero products).
    ``unrolled`` is ResourceUnrolled (one product statement per nonzero weight); hls4ml 1.3
    turns it into Resource at reuse 1, so it takes reuse >= 2.
    """
    if form not in SPARSE_FORMS:
        raise BackendError(f"sparse form must be one of {', '.join(SPARSE_FORMS)}, not {form!r}")
    n_in, n_out = layer.weight.shape
    reuse = _valid_reuse(n_in, n_out, int(layer.reuse))
    if form == "auto" and reuse > 1 and backend != "oneapi":
        form = "compressed"
    if form == "compressed":
        if backend == "oneapi":
            raise BackendError("hls4ml 1.3 has no compressed dense for oneAPI; use 'auto' (Resource)")
        return compressed.layer_config(backend, max(reuse, _valid_reuse(n_in, n_out, 2)))
    if backend not in ("vitis", "vivado"):
        if form != "auto":
            raise BackendError(f"sparse form {form!r} is a Vitis/Vivado strategy; {backend} takes 'auto' or 'compressed'")
        return {"Strategy": "Resource", "ReuseFactor": reuse}
    if form == "auto":
        form = "da" if _has_da4ml() else "latency"
    if form == "da":
        return {"Strategy": "distributed_arithmetic", "ReuseFactor": 1}
    if form == "latency":
        return {"Strategy": "Latency", "ReuseFactor": reuse}
    return {"Strategy": "Resource_Unrolled", "ReuseFactor": max(reuse, _valid_reuse(n_in, n_out, 2))}


def _has_da4ml() -> bool:
    import importlib.util

    return importlib.util.find_spec("da4ml") is not None


def _valid_reuse(n_in: int, n_out: int, reuse: int) -> int:
    """The nearest reuse factor hls4ml accepts (it divides n_in*n_out and fits its rules)."""
    if reuse <= 1:
        return 1
    total = n_in * n_out
    cands = [r for r in range(1, total + 1) if total % r == 0 and (r <= n_in or r % n_in == 0)]
    return min(cands, key=lambda r: (abs(r - reuse), r))


def write_project(net: Network, board: Board, backend: str, out_dir: str | Path, io_type: str | None = None,
                  form: str = "auto") -> HlsProject:
    """Write the hls4ml project for ``board`` into ``out_dir`` (replaced if it exists). ``io_type`` defaults to
    ``io_parallel`` for an MLP and ``io_stream`` (line buffers; the only form for a CNN here) for a CNN."""
    hls4ml = quiet_import("hls4ml", also=("keras",))  # hls4ml imports keras lazily during conversion

    backend = check_backend(board, backend)
    layers = hls_layers(net)
    conv = is_cnn(net, layers)
    io_type = io_type or ("io_stream" if conv else "io_parallel")
    if conv and io_type != "io_stream":
        raise BackendError(f"network {net.name!r} is convolutional: its HLS project is io_stream (line buffers), "
                           f"not {io_type}")
    branched = graph.is_graph(layers)
    if conv:
        cnn.check_backend_layers(layers, backend)
        layers = graph.lower_for_backend(hw_network(net, layers), backend) if branched else cnn.lower_for_backend(
            layers, tuple(net.input_shape), net.input_type, backend)
    plans = layer_plans(layers, backend, form, conv)
    per_element = [l for l in layers if isinstance(l, Quant) and l.per_element]
    for layer in per_element:
        hgq.check_backend(layer, backend)
    if any(p.get("Compression") for p in plans.values()):
        compressed.register_fixes()
    names: dict[str, str] = {}  # hls4ml's names of the merge layers (torch.fx's), by IR name
    if branched:
        hw = hw_network(net, layers)
        graph.check_fan_out(hw, io_type)
        model, names = graph.torch_graph_module(hw, conv, _float_exact)
    elif conv:
        model = cnn.torch_cnn_module(layers, tuple(net.input_shape), _float_exact)
    else:
        model = torch_module(layers)
    if conv:
        cnn.register_flatten_pass()
        shape = tuple(net.input_shape[-1:]) + tuple(net.input_shape[:-1])  # torch's (C, spatial...)
    else:
        shape = hw_input_shape(net, layers)
    precisions = {names.get(k, k): v for k, v in layer_precisions(net, layers).items()}
    name = _HLS4ML_NAMES[backend]
    with _quiet():
        cfg = hls4ml.utils.config_from_pytorch_model(model, input_shape=shape, granularity="name", backend=name,
                                                     default_precision="ap_fixed<16,6>")
    if per_element:  # hls4ml's bit-exact pass would re-derive every precision around them: keep the IR's
        cfg["Model"]["BitExact"] = False
    if conv:  # the stream is channels-last already; the converter moves torch's kernels to hls4ml's layout
        cfg["Model"]["ChannelsLastConversion"] = "internal"
        cfg["Model"][cnn.MODEL_FLAG] = cnn.flatten_names(layers)
    else:
        cfg["Model"]["ChannelsLastConversion"] = "off"  # the weights are in hls4ml's layout already (torch_module)
    input_name = next(k for k in cfg["LayerName"] if k not in precisions)
    cfg["LayerName"][input_name]["Precision"] = {"result": net.input_type.to_hls()}
    for module, prec in precisions.items():
        cfg["LayerName"][module]["Precision"] = dict(prec)
    strategies = {}
    for layer_name, plan in plans.items():
        cfg["LayerName"][layer_name].update(plan)
        strategies[layer_name] = plan["Strategy"] + (" + Compression" if plan.get("Compression") else "")
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    kwargs: dict[str, Any] = {"hls_config": cfg, "output_dir": str(out), "backend": name, "io_type": io_type,
                              "project_name": "myproject"}
    kwargs["part"] = board.part
    kwargs["clock_period"] = round(board.clock_period_ns, 3)
    with _quiet():
        hmodel = hls4ml.converters.convert_from_pytorch_model(model, **kwargs)
        hmodel.write()
    _check_applied(hmodel, layers, plans, names)
    (out / "README.md").write_text(_readme(net, board, backend, strategies, io_type))
    return HlsProject(backend, out, hmodel, strategies, input_name, io_type)


def layer_plans(layers: list[Layer], backend: str, form: str = "auto", conv: bool = False) -> dict[str, dict[str, Any]]:
    """Strategy and reuse of every Dense and Conv layer (``dense_plan``, ``cnn.conv_plan``).

    In a CNN, hls4ml's channels-last conversion transposes every Dense weight, which it cannot do to a
    compressed layer's stored triples, so a Dense there never takes the compressed form: at reuse > 1 it is
    Resource at that reuse (Vitis/Vivado Latency folds it the same way)."""
    plans: dict[str, dict[str, Any]] = {}
    for layer in layers:
        if isinstance(layer, Dense):
            if conv and form == "compressed":
                raise BackendError(f"layer {layer.name!r}: the compressed form is not wired for a Dense in a CNN "
                                   "(hls4ml's channels-last pass would transpose its stored triples); use 'auto'")
            plan = dense_plan(layer, backend, form)
            if conv and plan.get("Compression"):
                plan = {"Strategy": "Resource", "ReuseFactor": plan["ReuseFactor"]}
            plans[layer.name] = plan
        elif isinstance(layer, Weighted):  # the Dense-only forms (unrolled, compressed) leave a conv at auto
            plans[layer.name] = cnn.conv_plan(layer, backend, form if form in cnn.CONV_FORMS else "auto")
    return plans


def _check_applied(hmodel: Any, layers: list[Layer], plans: dict[str, dict[str, Any]],
                   names: dict[str, str] | None = None) -> None:
    """hls4ml silently falls back in places (e.g. strategy names): verify what it actually built."""
    for layer in layers:
        node = hmodel.graph.get((names or {}).get(layer.name, layer.name))
        if node is None and isinstance(layer, Quant) and layer.per_element:
            continue  # hls4ml fuses a per-element quantizer into the distributed-arithmetic kernel that reads it
        if node is None:
            raise BackendError(f"hls4ml dropped layer {layer.name!r} from the project")
        if layer.name in plans:
            plan = plans[layer.name]
            want = "compressed" if plan.get("Compression") else plan["Strategy"].lower()
            got = str(node.get_attr("strategy", "")).lower()
            if got != want:
                raise BackendError(f"layer {layer.name!r}: hls4ml chose strategy {got!r}, not {want!r}")


@contextlib.contextmanager
def _quiet():
    """hls4ml prints its progress; keep it out of our output."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _readme(net: Network, board: Board, backend: str, strategies: dict[str, str], io_type: str) -> str:
    lines = "\n".join(f"| {k} | {v} |" for k, v in strategies.items())
    if backend in ("vitis", "vivado"):
        tool = "vitis_hls" if backend == "vitis" else "vivado_hls"
        flow = f"""```
cd {'<this directory>'}
{tool} -f build_prj.tcl "reset=1 csim=1 synth=1 cosim=1 validation=0 export=1 vsynth=0"
```
`csim` runs the C simulation, `synth` the HLS synthesis (reports in `myproject_prj/solution1/syn/report/`),
`cosim` the RTL co-simulation, `export` packages the IP for a block design, and `vsynth=1` adds
Vivado logic synthesis for post-synthesis resource numbers."""
    elif backend == "quartus":
        flow = """```
make myproject-fpga        # Intel HLS compiler (i++), then Quartus synthesis of the generated IP
make myproject-emulator    # C simulation with the Intel HLS emulator
```
Reports are written under `myproject-fpga.prj/reports/`."""
    else:
        flow = """```
mkdir build && cd build && cmake ..
make fpga_emu      # C simulation with the oneAPI emulator (needs Intel's icpx)
make report        # optimization report
make fpga          # full compile through Quartus
```"""
    return f"""# hls4ml project for {net.name} on {board.title}

Generated by fpga-codesign through hls4ml ({backend}, `{io_type}`), part `{board.part}`, clock {board.clock_mhz} MHz.
Every precision (weights, biases, accumulators, results) is the one in the fpga-codesign network,
so the C simulation computes exactly what its integer reference computes.

| layer | datapath |
| --- | --- |
{lines}

## Vendor flow

{flow}
"""


def unrolled_products(project_dir: str | Path) -> list[tuple[int, int]]:
    """``(products, multiplier limit)`` of each ResourceUnrolled dense kernel, in layer order,
    counted in the C++ hls4ml generated (``firmware/nnet_utils/nnet_code_gen.h``)."""
    import re

    text = (Path(project_dir) / "firmware" / "nnet_utils" / "nnet_code_gen.h").read_text()
    starts = [m.start() for m in re.finditer(r"class dense_resource_unrolled_\d+ ", text)] + [len(text)]
    out = []
    for a, b in zip(starts, starts[1:]):
        block = text[a:b]
        limit = re.search(r"instances=mul limit=(\d+)", block)
        out.append((len(re.findall(r"::product\(", block)), int(limit.group(1)) if limit else -1))
    return out
