"""C simulation of an hls4ml project (g++ through hls4ml's ``compile``) against the reference."""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from typing import Any

import numpy as np

from codesign.core import fixed
from codesign.core.network import Network
from codesign.core.verify import compare_with_reference
from codesign.errors import ToolFailedError, ToolNotFoundError
from hls.project import HlsProject

NO_CSIM = {"oneapi": "oneAPI C simulation needs Intel's icpx compiler (oneAPI DPC++), which is not installed here"}


def csim_check(project: HlsProject, net: Network, q: np.ndarray) -> dict[str, Any]:
    """Compile the project, run it on integer inputs ``q``, compare with the reference bit for bit."""
    if project.backend in NO_CSIM:
        return {"backend": project.backend, "csim_bit_exact": None, "csim_skipped": NO_CSIM[project.backend],
                "samples": 0, "mismatches": None}
    if not shutil.which("g++"):
        raise ToolNotFoundError("C simulation needs g++, which is not on PATH: install g++ (e.g. apt-get install g++)")
    t0 = time.perf_counter()
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            project.model.compile()
    except Exception as e:  # hls4ml raises bare Exceptions for a failed g++ build
        first = next((l for l in buf.getvalue().splitlines() if "error" in l.lower()), str(e))
        raise ToolFailedError(f"C simulation build of {project.directory} failed: {first.strip()}") from None
    t1 = time.perf_counter()
    x = np.ascontiguousarray(fixed.to_float(q, net.input_type).reshape(len(q), -1))
    with contextlib.redirect_stdout(io.StringIO()):
        y = np.asarray(project.model.predict(x), dtype=np.float64).reshape(len(q), -1)
    t2 = time.perf_counter()
    out_t = net.forward_int(q[:1]).type  # the output type (static; one sample computes it)
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
            "compile_s": round(t1 - t0, 2), "samples_per_s": round(len(q) / max(t2 - t1, 1e-9), 1),
            "strategies": project.strategies}
