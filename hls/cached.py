"""A written hls4ml project reused when nothing that shapes it has changed.

Writing a project runs hls4ml's conversion, and at reuse 1 da4ml's constant-matrix solver for
every layer: about 50 s for hls4ml's 16-100^5-5 MLP. A second ``codesign hls DIR`` on the same
network, board and options would write the same files again, so the written project is kept in
the cache folder under a key of everything that goes into it (the layers' values and types, the
board, the backend, the form, the versions of hls4ml, da4ml and torch, and this package's HLS
code), and copied from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import fields
from importlib import metadata
from pathlib import Path

import numpy as np

from codesign.board import Board
from codesign.core.layers import Layer
from codesign.core.network import Network
from hls.project import HlsProject, check_backend, hls_layers, is_cnn, layer_plans, layer_precisions, write_project

PACKAGES = ("hls4ml", "da4ml", "torch")
CACHE_ENTRIES = 20


def project_key(net: Network, board: Board, backend: str, io_type: str | None, form: str) -> str:
    """sha256 over every input of ``write_project``."""
    backend = check_backend(board, backend)
    layers = hls_layers(net)
    conv = is_cnn(net, layers)
    h = hashlib.sha256()
    for src in sorted(Path(__file__).parent.rglob("*")):  # our HLS code and templates
        if src.is_file() and src.suffix in (".py", ".h", ".cpp") and "__pycache__" not in src.parts:
            h.update(src.name.encode() + b"\0" + src.read_bytes())
    recipe = {
        "net": net.name, "input_shape": list(net.input_shape), "input_type": str(net.input_type),
        "precisions": layer_precisions(net, layers),
        "layers": [[l.name, l.kind, _attributes(l)] for l in layers],
        "plans": layer_plans(layers, backend, form, conv),
        "board": [board.name, board.title, board.part, board.clock_mhz, board.clock_period_ns],
        "backend": backend, "io_type": io_type, "form": form,
        "versions": {p: _version(p) for p in PACKAGES},
    }
    h.update(json.dumps(recipe, sort_keys=True, default=str).encode())
    for l in layers:
        for name, values in sorted(l.arrays().items()):
            h.update(name.encode() + b"\0" + np.ascontiguousarray(values).astype("<i8").tobytes())
    return h.hexdigest()


def _attributes(layer: Layer) -> dict[str, str]:
    """A layer's settings other than its arrays (strides, padding, pools, types, reuse), as text."""
    return {f.name: str(getattr(layer, f.name)) for f in fields(layer)
            if not isinstance(getattr(layer, f.name), np.ndarray)}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def write_project_cached(net: Network, board: Board, backend: str, out_dir: str | Path, cache: str | Path,
                         io_type: str | None = None, form: str = "auto") -> tuple[HlsProject, bool]:
    """``write_project``, or a copy of the same project written before; returns (project, from the cache).
    A project from the cache has no hls4ml model object (``model`` is None)."""
    out = Path(out_dir)
    key = project_key(net, board, backend, io_type, form)
    entry = Path(cache) / key[:24]
    if (entry / "project.json").is_file():
        meta = json.loads((entry / "project.json").read_text())
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(entry / "project", out, symlinks=True)
        _point_config_at(out)
        os.utime(entry)
        return HlsProject(meta["backend"], out, None, meta["strategies"], meta["input_name"],
                          meta.get("io_type", "io_parallel")), True
    project = write_project(net, board, backend, out, io_type=io_type, form=form)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{key[:24]}."))
    try:
        shutil.copytree(out, tmp / "project", symlinks=True)
        (tmp / "project.json").write_text(json.dumps({"backend": project.backend, "strategies": project.strategies,
                                                      "input_name": project.input_name,
                                                      "io_type": project.io_type}, indent=1))
        os.rename(tmp, entry)
    except OSError:  # written by another process meanwhile, or the cache is not writable: no harm
        shutil.rmtree(tmp, ignore_errors=True)
    _evict(entry.parent)
    return project, False


def _point_config_at(out: Path) -> None:
    """hls4ml records the folder it wrote to in ``hls4ml_config.yml``; say where this copy is."""
    cfg = out / "hls4ml_config.yml"
    if cfg.is_file():
        text = re.sub(r"(?m)^OutputDir: .*$", lambda _: f"OutputDir: {out.resolve()}", cfg.read_text())
        cfg.write_text(text)


def _evict(root: Path) -> None:
    entries = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[CACHE_ENTRIES:]:
        shutil.rmtree(old, ignore_errors=True)
