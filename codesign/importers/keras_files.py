"""Keras model files read as data: the architecture from its JSON, the weights with h5py.

Nothing from the file is ever handed to Keras, QKeras or TensorFlow, so nothing in it runs (a
``Lambda``'s marshalled function stays bytes) and no TensorFlow is needed. Formats:

- ``.json`` (``model.to_json()``; hls4ml's example files) with a weights file: a legacy ``.h5``
  (``save_weights``: ``layer_names`` + one group per layer), a full-model ``.h5``, or a Keras 3
  ``.weights.h5``;
- ``.h5`` / ``.hdf5`` full model (``model.save``): the ``model_config`` attribute and ``model_weights``;
- ``.keras`` (Keras 3 and tf-keras): a zip with ``config.json`` and ``model.weights.h5``, whose
  weights sit under ``layers/<snake_case class name>[_n]/vars/<index>`` in the model's layer order.

Every size the file declares is checked before anything is read, so a corrupt or hostile file
costs an error line, not the machine's memory.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import h5py  # imported here, not in the reading child, so each read does not pay for it
import numpy as np

from codesign.errors import CodesignError, ModelFileError, UnsupportedLayerError

MAX_JSON_BYTES = 64 << 20
MAX_WEIGHT_BYTES = 256 << 20  # every array of a model together, as declared, before one is read
_H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError, UnicodeDecodeError)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, KeyError, ValueError,
               RuntimeError)

Weights = dict[str, dict[str, np.ndarray]]  # layer name -> weight name (or "0", "1", ... in the v3 format) -> array


@dataclass
class KerasFile:
    """A model's architecture (the JSON object Keras writes) and its weights per layer."""

    config: dict[str, Any]
    weights: Weights
    source: str  # the file the architecture came from, for messages
    plan: Any = None  # what ``check`` returned for the config, before any weight was read


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


Check = Callable[[dict[str, Any], str], Any]


def _no_check(config: dict[str, Any], source: str) -> None:
    return None


def read_keras_file(path: Path, weights: str | Path | None = None, check: Check = _no_check) -> KerasFile:
    """Read a ``.json`` (+ weights), ``.h5``/``.hdf5`` or ``.keras`` model without running anything from it;
    ``check(config, source)`` runs on the architecture before any weight is read.

    The HDF5 library can loop forever or crash on a corrupt file (seen in fuzzing: a bit flip in a
    global-heap object size), so the reading runs in a forked child with a time and memory limit."""
    return isolated(_read_keras_file, str(path), Path(path), weights, check)


def _read_keras_file(path: Path, weights: str | Path | None, check: Check) -> KerasFile:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        wpath = Path(weights) if weights else path.with_name(f"{path.stem}_weights.h5")
        if not wpath.is_file():
            raise ModelFileError(f"{path}: no weights file {wpath.name} beside it; pass weights=... (CLI: --weights)")
        config = parse_config(_read_capped(path), str(path))
        checked = check(config, str(path))
        return KerasFile(config, _read_weights_h5(wpath, model_layers(config, str(path))[1]), str(path), checked)
    if suffix == ".keras":
        return _read_keras_zip(path, check)
    return _read_full_h5(path, check)


READ_TIME_LIMIT_S = 60.0
READ_MEMORY_LIMIT = 4 << 30  # address space the reading child may add to what the parent already maps


def isolated(fn: Callable[..., Any], source: str, *args: Any) -> Any:
    """``fn(*args)`` in a forked child with a time and memory limit; its result, or its error, comes back
    (pickled by our own child, never read from the file). Where fork is unavailable, runs in-process."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return fn(*args)
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    sys.stderr.flush()
    child = ctx.Process(target=_child, args=(send, fn, args), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(READ_TIME_LIMIT_S):
            raise ModelFileError(f"{source}: reading it did not finish in {READ_TIME_LIMIT_S:g} s; the file is corrupt")
        try:
            status, value = receive.recv()
        except (EOFError, OSError):
            child.join(5)
            raise ModelFileError(f"{source}: reading it crashed the HDF5 library (exit {child.exitcode}); the file is "
                                 "corrupt") from None
    finally:
        if child.is_alive():
            child.kill()
        child.join(5)
        receive.close()
    if status == "ok":
        return value
    raise value


def _child(send: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    import faulthandler

    faulthandler.disable()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # whatever a library says while it fails, the parent's one line is the message
    try:
        import resource

        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (mapped + READ_MEMORY_LIMIT, resource.RLIM_INFINITY))
    except (OSError, ValueError, ImportError):
        pass  # no /proc or no rlimits: the time limit still holds
    try:
        result: tuple[str, Any] = ("ok", fn(*args))
    except CodesignError as e:
        result = ("error", e)
    except MemoryError:
        result = ("error", ModelFileError(f"{args[0]}: reading it needed more than {READ_MEMORY_LIMIT >> 30} GiB; "
                                          "the file is corrupt"))
    except BaseException as e:  # anything else from a corrupt file: one line, never a traceback
        result = ("error", ModelFileError(f"{args[0]}: not a readable Keras model ({_first_line(e)})"))
    try:
        send.send(result)
    finally:
        send.close()
        os._exit(0)  # skip the parent's atexit handlers and buffers inherited by the fork


def parse_config(text: bytes | str, source: str) -> dict[str, Any]:
    """The model's JSON object, or a one-line refusal."""
    try:
        config = json.loads(text)
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{source}: not a Keras model JSON ({_first_line(e)})") from None
    if not isinstance(config, dict) or not isinstance(config.get("config"), (dict, list)):
        raise ModelFileError(f"{source}: not a Keras model JSON (no top-level 'class_name' and 'config')")
    return config


def _read_capped(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ModelFileError(f"{path}: {size:,} bytes is too large for a model architecture (limit {MAX_JSON_BYTES:,})")
    return path.read_bytes()


def _read_full_h5(path: Path, check: Check) -> KerasFile:
    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs:
                raise ModelFileError(
                    f"{path}: holds weights only (no model_config); load the architecture .json with weights={path.name}"
                )
            attr = f.attrs.get_id("model_config")
            if attr.get_storage_size() > MAX_JSON_BYTES:
                raise ModelFileError(f"{path}: its model_config is too large for a model architecture")
            text = f.attrs["model_config"]
            config = parse_config(text.decode() if isinstance(text, bytes) else str(text), str(path))
            checked = check(config, str(path))
            group = f["model_weights"] if "model_weights" in f else f
            return KerasFile(config, _h5_weights(group, model_layers(config, str(path))[1], str(path)), str(path),
                             checked)
    except CodesignError:
        raise
    except _H5_ERRORS as e:
        raise ModelFileError(f"{path}: not a readable Keras model ({_first_line(e)})") from None


def _read_weights_h5(path: Path, layers: list[dict[str, Any]]) -> Weights:
    try:
        with h5py.File(path, "r") as f:
            return _h5_weights(f["model_weights"] if "model_weights" in f else f, layers, str(path))
    except CodesignError:
        raise
    except _H5_ERRORS as e:
        raise ModelFileError(f"{path}: not a readable Keras weights file ({_first_line(e)})") from None


def _read_keras_zip(path: Path, check: Check) -> KerasFile:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "config.json" not in names or "model.weights.h5" not in names:
                raise ModelFileError(f"{path}: not a Keras archive (no config.json and model.weights.h5 inside)")
            config = parse_config(_zip_member(z, "config.json", MAX_JSON_BYTES, path), str(path))
            checked = check(config, str(path))
            layers = model_layers(config, str(path))[1]
            data = _zip_member(z, "model.weights.h5", MAX_WEIGHT_BYTES, path)
    except CodesignError:
        raise
    except _ZIP_ERRORS as e:
        raise ModelFileError(f"{path}: not a readable Keras archive ({_first_line(e)})") from None
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            return KerasFile(config, _h5_weights(f, layers, f"{path}:model.weights.h5"), str(path), checked)
    except CodesignError:
        raise
    except _H5_ERRORS as e:
        raise ModelFileError(f"{path}: its model.weights.h5 is not readable ({_first_line(e)})") from None


def _zip_member(z: zipfile.ZipFile, name: str, limit: int, path: Path) -> bytes:
    info = z.getinfo(name)
    if info.file_size > limit:
        raise ModelFileError(f"{path}: {name} declares {info.file_size:,} bytes (limit {limit:,})")
    with z.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ModelFileError(f"{path}: {name} is larger than it declares (limit {limit:,} bytes)")
    return data


# ---- weights ---------------------------------------------------------------------------------
def _h5_weights(group: Any, layers: list[dict[str, Any]], source: str) -> Weights:
    """Weights of the layers in ``layers`` from a legacy (per-layer-name) or a Keras 3 (``layers/``) group."""
    if "layer_names" not in group.attrs and "layers" in group:
        arrays = _v3_datasets(group["layers"], layers)
    else:
        arrays = {}
        for entry in layers:
            name = entry["name"]
            if name not in group:
                continue
            g = group[name]
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get("weight_names", [])]
            arrays[name] = {short_weight_name(n): g[n] for n in names}
    declared = sum(int(np.prod(d.shape, dtype=np.float64)) * d.dtype.itemsize for w in arrays.values() for d in w.values())
    if declared > MAX_WEIGHT_BYTES:
        raise ModelFileError(f"{source}: the weights declare {declared:,} bytes (limit {MAX_WEIGHT_BYTES:,}); "
                             "a model this size is not for an FPGA, or the file is corrupt")
    out: Weights = {}
    for lname, w in arrays.items():
        out[lname] = {}
        for wname, d in w.items():
            if d.dtype.kind not in "fiub":
                raise ModelFileError(f"{source}: layer {lname!r}: weight {wname!r} has dtype {d.dtype}, not a number")
            out[lname][wname] = np.asarray(d[()])
    return out


def _v3_datasets(group: Any, layers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Keras 3's layout: ``<snake_case class>[_n]/vars/<i>``, named in the model's layer order (the
    ``vars`` group carries the layer's name as an attribute in newer Keras; use it where present)."""
    by_attr = {}
    for key in group:
        v = group[key].get("vars")
        if v is not None and "name" in v.attrs:
            by_attr[str(v.attrs["name"])] = v
    used: dict[str, int] = {}
    out: dict[str, dict[str, Any]] = {}
    for entry in layers:
        snake = snake_case(entry["class_name"])
        key = snake if snake not in used else f"{snake}_{used[snake] + 1}"
        used[snake] = used.get(snake, -1) + 1
        v = by_attr.get(entry["name"])
        if v is None and key in group:
            v = group[key].get("vars")
        if v is not None and len(v):
            out[entry["name"]] = {k: v[k] for k in sorted(v, key=lambda s: int(s) if s.isdigit() else 1 << 30)}
    return out


def short_weight_name(name: str) -> str:
    """``'fc1/kernel:0'`` -> ``'kernel'``."""
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


def snake_case(name: str) -> str:
    """Keras's own ``to_snake_case`` (the names of the Keras 3 weight groups)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# ---- the architecture -------------------------------------------------------------------------
MODEL_CLASSES = ("Sequential", "Functional", "Model")


def model_layers(config: dict[str, Any], source: str) -> tuple[str, list[dict[str, Any]]]:
    """The model's name and its layer entries in an order where each comes after the layers it reads (each entry
    with ``class_name``, ``name``, ``config`` and ``inbound``: the names of the layers it reads, empty for the
    input). A Sequential model is a chain; a Functional model's ``inbound_nodes`` give its graph."""
    cls, inner = config.get("class_name"), config.get("config")
    if cls not in MODEL_CLASSES:
        raise ModelFileError(f"{source}: the top-level object is a {cls!r}, not a Keras Sequential or Functional model")
    raw = inner if isinstance(inner, list) else inner.get("layers")
    if not isinstance(raw, list) or not raw:
        raise ModelFileError(f"{source}: the model config has no layers")
    entries = []
    for i, e in enumerate(raw):
        if not isinstance(e, dict) or not isinstance(e.get("class_name"), str) or not isinstance(e.get("config"), dict):
            raise ModelFileError(f"{source}: layer {i} of the model config is malformed (no class_name and config)")
        name = e.get("name") or e["config"].get("name")
        if not isinstance(name, str) or not name:
            raise ModelFileError(f"{source}: layer {i} ({e['class_name']}) has no name")
        entries.append({**e, "name": name})
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ModelFileError(f"{source}: layer name {dup!r} appears twice")
    if cls == "Sequential":
        for prev, e in zip([None, *entries[:-1]], entries):
            e["inbound"] = [] if prev is None else [prev["name"]]
    else:
        entries = _graph(entries, source)
    model_name = inner.get("name") if isinstance(inner, dict) else None
    return str(model_name or Path(source).stem), entries


def _inbound(entry: dict[str, Any]) -> list[str]:
    """Names of the layers feeding ``entry``: Keras 2 ``[[[name, node, tensor, kwargs]]]`` or Keras 3
    ``[{"args": [keras tensors], "kwargs": {...}}]`` (a tensor's ``keras_history`` names its layer)."""
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise UnsupportedLayerError(f"layer {entry['name']!r} ({entry['class_name']}) is called {len(nodes)} times "
                                    "(a shared layer); only layers used once are supported: give each use its own layer")
    found: list[str] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            hist = o.get("config", {}).get("keras_history") if o.get("class_name") == "__keras_tensor__" else None
            if isinstance(hist, list) and hist:
                found.append(str(hist[0]))
                return
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            if len(o) >= 3 and isinstance(o[0], str) and isinstance(o[1], int):
                found.append(o[0])
                return
            for v in o:
                walk(v)

    walk(nodes)
    return found


def _graph(entries: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """A Functional model's entries with ``inbound`` set, in an order where each comes after its inputs (Kahn's
    order, stable in the file's order); one InputLayer, and every layer read from a layer of the model."""
    names = {e["name"] for e in entries}
    inputs = [e["name"] for e in entries if e["class_name"] == "InputLayer"]
    if len(inputs) > 1:
        raise UnsupportedLayerError(f"{source}: the model has {len(inputs)} inputs ({', '.join(map(repr, inputs))}); "
                                    "only a model with one input is supported")
    for e in entries:
        e["inbound"] = _inbound(e)
        for src in e["inbound"]:
            if src not in names:
                raise ModelFileError(f"layer {e['name']!r} ({e['class_name']}) reads {src!r}, which is not a layer "
                                     "of the model; the file is corrupt")
        if not e["inbound"] and e["class_name"] != "InputLayer" and (inputs or e is not entries[0]):
            raise ModelFileError(f"layer {e['name']!r} ({e['class_name']}) has no inbound layer; the file is corrupt")
    read = {src for e in entries for src in e["inbound"]}
    outputs = [e["name"] for e in entries if e["name"] not in read]
    if len(outputs) > 1:
        raise UnsupportedLayerError(f"{source}: the model has {len(outputs)} outputs ({', '.join(map(repr, outputs))}); "
                                    "only a model with one output is supported")
    ordered: list[dict[str, Any]] = []
    done: set[str] = set()
    pending = list(entries)
    while pending:
        ready = next((e for e in pending if all(src in done for src in e["inbound"])), None)
        if ready is None:
            raise ModelFileError(f"layer {pending[0]['name']!r}: the model's layers read each other in a cycle; the "
                                 "file is corrupt")
        pending.remove(ready)
        ordered.append(ready)
        done.add(ready["name"])
    return ordered


def input_shape(entries: list[dict[str, Any]], source: str) -> tuple[int, ...]:
    """The model's input shape without the batch axis, from the InputLayer or the first layer's config."""
    first = entries[0]
    cfg = first["config"]
    shape = cfg.get("batch_input_shape") or cfg.get("batch_shape") or (first.get("build_config") or {}).get("input_shape")
    if not isinstance(shape, list) or len(shape) < 2:
        raise ModelFileError(f"{source}: the model config does not give an input shape (no InputLayer or "
                             "batch_input_shape on its first layer)")
    dims = shape[1:]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise UnsupportedLayerError(f"layer {first['name']!r}: input shape {shape!r} has unknown or invalid sizes; "
                                    "give every dimension but the batch a fixed size")
    return tuple(dims)
