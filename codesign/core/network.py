"""``Network``: the IR every stage reads and writes, with save/load and the reference forward."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from codesign.core import fixed, reference
from codesign.core.fixed import FixedType
from codesign.core.layers import LAYER_CLASSES, BatchNorm, Layer, Output, Weighted
from codesign.core.reference import Tensor
from codesign.errors import ArtifactError, DataError, LayerError

FORMAT = "fpga-codesign-network"
FORMAT_VERSION = 2  # 2: each layer may name its inputs (a graph); version 1 files (chains) still load
INPUT = "input"  # the name by which a layer's ``inputs`` refers to the network's input
NETWORK_JSON = "network.json"
WEIGHTS_NPZ = "weights.npz"


@dataclass
class Network:
    """A feed-forward network: an input shape and type, and its layers in an order where each layer comes after
    the layers it reads (a DAG with one input and one output, the last layer). A layer with empty ``inputs``
    reads the layer before it; a chain of such layers is a sequential network."""

    name: str
    input_shape: tuple[int, ...]
    layers: list[Layer]
    input_type: FixedType | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(d) for d in self.input_shape)
        if isinstance(self.input_type, str):
            self.input_type = FixedType.parse(self.input_type)
        self._canonical_inputs()
        self.validate()

    def _canonical_inputs(self) -> None:
        """Write a layer that reads just the layer before it with empty ``inputs``, so chains look alike."""
        prev = INPUT
        for layer in self.layers:
            if isinstance(layer.inputs, str):
                layer.inputs = (layer.inputs,)
            layer.inputs = tuple(str(i) for i in layer.inputs)
            if layer.inputs == (prev,) and not layer.merge:
                layer.inputs = ()
            prev = layer.name

    # ---- structure -------------------------------------------------------------------
    def validate(self) -> None:
        """Check names, shapes and that the network is either all float or all fixed point."""
        seen = {INPUT}
        for i, layer in enumerate(self.layers):
            if layer.name in seen:
                raise LayerError(f"layer name {layer.name!r} appears twice" if layer.name != INPUT else
                                 f"layer name {INPUT!r} is reserved for the network's input; rename the layer")
            for src in layer.inputs:
                if src not in seen:
                    raise LayerError(f"layer {layer.name!r} reads {src!r}, which is not a layer before it (or "
                                     f"{INPUT!r}); list layers so that each comes after its inputs")
            if layer.merge and len(layer.inputs) < 2:
                raise LayerError(f"layer {layer.name!r}: {layer.kind} needs two or more inputs, got {list(layer.inputs)}")
            if not layer.merge and len(layer.inputs) > 1:
                raise LayerError(f"layer {layer.name!r}: {layer.kind} reads one input, got {list(layer.inputs)}")
            seen.add(layer.name)
            if isinstance(layer, Output) and i != len(self.layers) - 1:
                raise LayerError(f"layer {layer.name!r}: the Output head must be the last layer")
        used = {src for srcs in self.sources().values() for src in srcs}
        for layer in self.layers[:-1]:
            if layer.name not in used:
                raise LayerError(f"layer {layer.name!r}: its output is never read; the network must have one output "
                                 "(the last layer)")
        self.shapes()
        if self.quantized:
            for layer in self.layers:
                if (isinstance(layer, Weighted) and not layer.quantized) or (
                    isinstance(layer, BatchNorm) and not layer.quantized
                ):
                    raise LayerError(
                        f"layer {layer.name!r} is float in a network with a fixed-point input; quantize every "
                        "weighted layer (or fold BatchNorm) first"
                    )

    def sources(self) -> dict[str, tuple[str, ...]]:
        """Each layer's inputs by name, resolved (``INPUT`` for the network's input)."""
        out, prev = {}, INPUT
        for layer in self.layers:
            out[layer.name] = layer.inputs or (prev,)
            prev = layer.name
        return out

    def consumers(self) -> dict[str, list[str]]:
        """The layers that read each tensor (``INPUT`` and every layer), in order."""
        out: dict[str, list[str]] = {INPUT: [], **{layer.name: [] for layer in self.layers}}
        for name, srcs in self.sources().items():
            for src in srcs:
                out[src].append(name)
        return out

    @property
    def is_chain(self) -> bool:
        """True for a sequential network: every layer reads the one before it."""
        return all(not layer.inputs for layer in self.layers)

    def check_chain(self, who: str) -> None:
        """Refuse a network with branches, naming the first layer off the chain, for a stage that builds chains."""
        for layer in self.layers:
            if layer.inputs:
                raise LayerError(
                    f"layer {layer.name!r} ({layer.kind}) reads {', '.join(map(repr, layer.inputs))}: {who} builds "
                    "sequential networks only (no branches or merges) so far"
                )

    def shapes(self) -> list[tuple[int, ...]]:
        """Output shape of every layer."""
        by_name: dict[str, tuple[int, ...]] = {INPUT: self.input_shape}
        sources = self.sources()
        for layer in self.layers:
            ins = [by_name[s] for s in sources[layer.name]]
            by_name[layer.name] = layer.merged_shape(ins) if layer.merge else layer.output_shape(ins[0])
        return [by_name[layer.name] for layer in self.layers]

    def input_shapes(self) -> list[list[tuple[int, ...]]]:
        """The shapes each layer reads, in the order of its inputs."""
        by_name = {INPUT: self.input_shape, **{l.name: s for l, s in zip(self.layers, self.shapes())}}
        sources = self.sources()
        return [[by_name[s] for s in sources[layer.name]] for layer in self.layers]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes()[-1] if self.layers else self.input_shape

    @property
    def quantized(self) -> bool:
        return self.input_type is not None

    @property
    def head(self) -> str:
        return self.layers[-1].head if self.layers and isinstance(self.layers[-1], Output) else "linear"

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {', '.join(l.name for l in self.layers)}")

    def weighted_layers(self) -> list[Weighted]:
        return [layer for layer in self.layers if isinstance(layer, Weighted)]

    @property
    def n_params(self) -> int:
        return sum(layer.n_params for layer in self.weighted_layers())

    @property
    def n_nonzero(self) -> int:
        return sum(layer.n_nonzero for layer in self.weighted_layers())

    @property
    def sparsity(self) -> float:
        w = sum(layer.weight.size for layer in self.weighted_layers())
        nz = sum(int(np.count_nonzero(layer.weight)) for layer in self.weighted_layers())
        return 1.0 - nz / max(w, 1)

    def tensor_types(self) -> list[FixedType | None]:
        """The fixed-point type of every layer's output (None throughout for a float network)."""
        by_name: dict[str, FixedType | None] = {INPUT: self.input_type}
        sources = self.sources()
        for layer, shapes in zip(self.layers, self.input_shapes()):
            ts = [by_name[s] for s in sources[layer.name]]
            by_name[layer.name] = reference.output_type(layer, ts if layer.merge else ts[0], shapes[0])
        return [by_name[layer.name] for layer in self.layers]

    def summary(self) -> str:
        lines = [f"Network {self.name!r}: input {self.input_shape} {self.input_type or 'float'}"]
        for layer, shape, t in zip(self.layers, self.shapes(), self.tensor_types()):
            extra = ""
            if isinstance(layer, Weighted):
                extra = f" w={layer.weight_type or 'float'} sparsity={layer.sparsity:.1%}"
            if layer.inputs:
                extra += f" <- {', '.join(layer.inputs)}"
            lines.append(f"  {layer.name:<16} {layer.kind:<15} -> {str(shape):<14} {t or 'float'}{extra}")
        return "\n".join(lines)

    # ---- the reference ---------------------------------------------------------------
    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape:
            if x.shape == self.input_shape:
                x = x[None]
            else:
                raise DataError(
                    f"input shape {x.shape[1:]} does not match the network's input {self.input_shape} "
                    f"(network {self.name!r}); reshape the data to (N, {', '.join(map(str, self.input_shape))})"
                )
        return x

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float inputs to integers of the input type (ap_fixed conversion semantics)."""
        if self.input_type is None:
            raise DataError(f"network {self.name!r} is float: it has no input fixed-point type")
        x = self._check_input(x)
        if not np.all(np.isfinite(np.asarray(x, dtype=np.float64))):
            raise DataError("inputs contain NaN or infinite values; clean the data first")
        return fixed.quantize(x, self.input_type)

    def forward_int(self, q: np.ndarray) -> Tensor:
        """The hardware output for integer inputs of the input type: integers and their type."""
        return self.trace_int(q)[-1]

    def trace_int(self, q: np.ndarray) -> list[Tensor]:
        """Every layer's output for integer inputs of the input type."""
        if self.input_type is None:
            raise DataError(f"network {self.name!r} is float: use forward()")
        q = self._check_input(q)
        if q.dtype.kind == "f" and not np.all(q == np.round(q)):
            raise DataError("forward_int takes integers of the input type; use forward() for float inputs")
        return reference.trace(self.layers, Tensor(fixed.as_int_array(q, False), self.input_type), self.sources())

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The hardware output (before the head) as floats: exact for a fixed-point network."""
        x = self._check_input(x)
        if self.input_type is None:
            if not np.all(np.isfinite(np.asarray(x, dtype=np.float64))):
                raise DataError("inputs contain NaN or infinite values; clean the data first")
            return reference.trace(self.layers, Tensor(np.asarray(x, dtype=np.float64), None), self.sources())[-1].values
        return self.forward_int(self.quantize_input(x)).as_float()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The forward pass followed by the output head (softmax, argmax or linear)."""
        return reference.apply_head(self.head, self.forward(x))

    # ---- save / load -----------------------------------------------------------------
    def to_onnx(self, path: str | os.PathLike | None = None, float64: bool = True) -> Any:
        """The network as QONNX (float ONNX when it is float), written to ``path`` when given.

        Re-importing the file gives this network; qonnx's executor gives this reference's outputs
        on inputs of the input type (see ``codesign.core.onnx_export``).
        """
        from codesign.core.onnx_export import network_to_onnx

        return network_to_onnx(self, path, float64=float64)

    def to_json(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The network as a JSON-able dict plus its arrays."""
        arrays: dict[str, np.ndarray] = {}
        layers = []
        for layer in self.layers:
            d: dict[str, Any] = {"class": layer.kind}
            for f in fields(layer):
                v = getattr(layer, f.name)
                if isinstance(v, np.ndarray):
                    key = f"{layer.name}/{f.name}"
                    arrays[key] = v
                    d[f.name] = {"array": key}
                elif isinstance(v, FixedType):
                    d[f.name] = v.to_hls()
                elif isinstance(v, tuple):
                    if f.name == "inputs" and not v:
                        continue  # a chain reads as before
                    d[f.name] = list(v)
                else:
                    d[f.name] = v
            layers.append(d)
        doc = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "input_type": self.input_type.to_hls() if self.input_type else None,
            "layers": layers,
            "metadata": self.metadata,
        }
        return doc, arrays

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``network.json`` and ``weights.npz`` into ``directory`` (atomically, file by file)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        doc, arrays = self.to_json()
        _atomic_write(d / WEIGHTS_NPZ, lambda f: np.savez(f, **arrays), binary=True)
        _atomic_write(d / NETWORK_JSON, lambda f: json.dump(doc, f, indent=1, default=_json_default))
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Network":
        """Read a network saved by ``save``; exact to the bit."""
        d = Path(directory)
        jpath, wpath = d / NETWORK_JSON, d / WEIGHTS_NPZ
        if not jpath.is_file():
            raise ArtifactError(f"{jpath}: no saved network here; run 'codesign compress' or Network.save first")
        try:
            doc = json.loads(jpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{jpath}: corrupt network file ({e}); re-create it") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ArtifactError(f"{jpath}: not an fpga-codesign network file (no format {FORMAT!r})")
        version = doc.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ArtifactError(
                f"{jpath}: written by a newer fpga-codesign (format version {version!r} > {FORMAT_VERSION}); "
                "upgrade fpga-codesign to read it"
            )
        try:
            with open(wpath, "rb") as f, np.load(f, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except FileNotFoundError:
            raise ArtifactError(f"{wpath}: missing; the artifact directory is incomplete") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise ArtifactError(f"{wpath}: corrupt weights file ({e}); re-create it") from None
        try:
            layers = [_layer_from_json(ld, arrays) for ld in doc["layers"]]
            return cls(doc["name"], tuple(doc["input_shape"]), layers, doc.get("input_type"), doc.get("metadata", {}))
        except (KeyError, TypeError) as e:
            raise ArtifactError(f"{jpath}: corrupt network file (missing or wrong entry {e}); re-create it") from None


def _layer_from_json(d: dict[str, Any], arrays: dict[str, np.ndarray]) -> Layer:
    d = dict(d)
    kind = d.pop("class")
    if kind not in LAYER_CLASSES:
        raise ArtifactError(f"unknown layer class {kind!r}; known: {', '.join(LAYER_CLASSES)}")
    for k, v in list(d.items()):
        if isinstance(v, dict) and "array" in v:
            if v["array"] not in arrays:
                raise ArtifactError(f"weights.npz has no array {v['array']!r}; the artifact is corrupt")
            d[k] = arrays[v["array"]]
        elif isinstance(v, list):
            d[k] = tuple(v)
    return LAYER_CLASSES[kind](**d)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, FixedType):
        return o.to_hls()
    raise TypeError(f"cannot save {type(o).__name__} in JSON")


def _atomic_write(path: Path, write, binary: bool = False) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
