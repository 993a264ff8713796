"""C simulation of an hls4ml project against the reference, bit for bit.

The library is built by ``hls.build`` (split, parallel, cached; the project itself untouched) and
called through the entry point hls4ml's ``predict`` uses, several samples at a time on every core
(an ``io_stream`` project, a CNN's, keeps its line buffers in static variables: each thread runs its own
copy of the library).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from codesign.core import fixed
from codesign.core.network import Network
from codesign.core.verify import compare_with_reference
from codesign.tools import cache_dir, find_gpp
from hls.build import LAYER_FLAGS, CsimLibrary, Unit, build_library, run_library
from hls.project import HlsProject

NO_CSIM = {"oneapi": "oneAPI C simulation needs Intel's icpx compiler (oneAPI DPC++), which is not installed here"}


def csim_check(project: HlsProject, net: Network, q: np.ndarray, cache: str | Path | None = None,
               jobs: int | None = None, on_build_start: Callable[[list[Unit]], None] | None = None,
               on_unit: Callable[[Unit], None] | None = None,
               on_samples: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Build (or take from the cache under ``cache``, default ``$CODESIGN_CACHE/csim``) the project's C
    simulation, run it on integer inputs ``q`` and compare with the reference bit for bit. The callbacks
    report progress: the units to compile, each compiled unit, each batch of simulated samples."""
    if project.backend in NO_CSIM:
        return {"backend": project.backend, "csim_bit_exact": None, "csim_skipped": NO_CSIM[project.backend],
                "samples": 0, "mismatches": None}
    gpp = find_gpp()
    jobs = jobs or os.cpu_count() or 1
    lib = build_library(project.directory, project.backend, cache if cache is not None else cache_dir("csim"),
                        jobs=jobs, gpp=gpp, on_start=on_build_start, on_unit=on_unit)
    t1 = time.perf_counter()
    x = np.ascontiguousarray(fixed.to_float(q, net.input_type).reshape(len(q), -1))
    out_t = net.forward_int(q[:1]).type  # the output type (static; one sample computes it)
    y = simulate(lib, x, int(np.prod(net.output_shape)), jobs, on_samples, private=project.stateful)
    t2 = time.perf_counter()
    got = fixed.quantize(y, out_t.with_modes("TRN", "SAT"))
    # the C simulation returns doubles: each must be exactly a value of the output type
    exact = fixed.to_float(got, out_t) == y
    cmp = compare_with_reference(net, q, got, exact=exact)
    first = cmp.first_mismatch
    if first is not None:
        first = {**first, "expected": float(fixed.to_float(first["expected"], out_t)),
                 "received": float(y[first["sample"], first["output"]])}
    return {"backend": project.backend, "csim_bit_exact": cmp.bit_exact, "samples": cmp.samples,
            "mismatches": cmp.mismatches, "first_mismatch": first,
            "compiler": f"g++ {gpp.version}", "flags": " ".join(f for f in lib.flags if not f.startswith("-I")),
            "layer_unit_flags": " ".join(LAYER_FLAGS) if lib.split else None,
            "cached": lib.cached, "units": lib.units, "split": lib.split,
            "compile_s": lib.compile_s, "simulate_s": round(t2 - t1, 2),
            "samples_per_s": round(len(q) / max(t2 - t1, 1e-9), 1), "strategies": project.strategies}


def simulate(lib: CsimLibrary, x: np.ndarray, n_out: int, jobs: int = 1,
             on_samples: Callable[[int], None] | None = None, private: bool = False) -> np.ndarray:
    """The library's outputs for the rows of ``x``, computed by ``jobs`` threads (ctypes lets go of the
    GIL during the call). io_parallel functions keep their state on the stack, so the threads share the
    library. io_stream layers keep their line buffers and counters in static variables (``private``): each
    thread then runs its own copy of the library file (loaded apart, so with statics of its own) on a
    contiguous run of images, one image after another, as the hardware takes them."""
    if private and "-fno-gnu-unique" not in lib.flags:
        jobs = 1  # GNU-unique symbols would make the copies share the template functions' statics
    chunks = np.array_split(np.arange(len(x)), max(1, min(jobs, len(x))))
    y = np.zeros((len(x), n_out), dtype=np.float64)
    with tempfile.TemporaryDirectory(prefix="codesign-csim-") as tmp:
        paths = [lib.path] + [Path(tmp) / f"worker{i}" / lib.path.name for i in range(1, len(chunks))]
        if private:
            for p in paths[1:]:
                p.parent.mkdir()
                shutil.copyfile(lib.path, p)

        def part(k: int, idx: np.ndarray) -> None:
            if len(idx):
                path = paths[k] if private else lib.path
                y[idx[0]:idx[-1] + 1] = run_library(path, x[idx[0]:idx[-1] + 1], n_out, on_chunk=on_samples)

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(chunks)) as pool:
            for f in [pool.submit(part, k, c) for k, c in enumerate(chunks)]:
                f.result()
    return y
