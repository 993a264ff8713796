"""C simulation of an hls4ml project (g++ through hls4ml's ``compile``) against the reference."""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from typing import Any

import numpy as np

from codesign import fixed
from codesign.errors import ToolFailedError, ToolNotFoundError
from codesign.network import Network
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
    ref = net.forward_int(q)
    expected = ref.values.reshape(len(q), -1)
    # the C simulation returns doubles; each must be exactly a value of the output type
    exact_values = fixed.representable(y, ref.type)
    got = fixed.quantize(y, ref.type.with_modes("TRN", "SAT"))
    bad = np.argwhere(got != expected) if exact_values else np.argwhere(np.ones_like(expected, dtype=bool))
    first = None
    if len(bad):
        s, j = (int(v) for v in bad[0])
        first = {"sample": s, "output": j, "expected": float(fixed.to_float(expected[s, j], ref.type)),
                 "received": float(y[s, j])}
    return {"backend": project.backend, "csim_bit_exact": not len(bad), "samples": int(len(q)),
            "mismatches": int(len(np.unique(bad[:, 0]))) if len(bad) else 0, "first_mismatch": first,
            "compile_s": round(t1 - t0, 2), "samples_per_s": round(len(q) / max(t2 - t1, 1e-9), 1),
            "strategies": project.strategies}
