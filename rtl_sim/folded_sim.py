"""Co-simulation of a folded design (``rtl_sim.folded``) in Verilator against the integer reference.

The bulk harness of ``rtl_sim.cosim`` streams one sample a clock; a folded design takes one every II
cycles through ``in_ready``, so it has its own harness (``templates/folded_harness.cpp``: every sample
offered at once, taken when ready). The result checks every output bit with zero tolerance and the
measured latency and II against the design's.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

from codesign.core.network import Network
from codesign.core.verify import compare_with_reference
from codesign.errors import ToolFailedError
from codesign.tools import Tool, find_verilator, first_error_line
from rtl_sim.cosim import CosimResult, _n_words, _port_code, build_harness, pack_words, unpack_words
from rtl_sim.folded import FoldedDesign


def harness_source(design: FoldedDesign) -> str:
    tmpl = resources.files("rtl_sim").joinpath("templates/folded_harness.cpp").read_text()
    return (tmpl.replace("@TOP@", design.top).replace("@IN_WORDS@", str(_n_words(design.in_width)))
            .replace("@OUT_WORDS@", str(_n_words(design.out_width))).replace("@LATENCY@", str(design.latency))
            .replace("@SET_INPUT@", _port_code("top->in_data", design.in_width, "s", write=True))
            .replace("@GET_OUTPUT@", _port_code("top->out_data", design.out_width, "o", write=False)))


def build(design: FoldedDesign, tool: Tool | None = None) -> Path:
    """The harness compiled with Verilator, in this machine's cache (keyed by the RTL, harness and Verilator)."""
    return build_harness(design, harness_source(design), tool, prefix="folded-")


def cosimulate_folded(net: Network, design: FoldedDesign, q: np.ndarray, tool: Tool | None = None) -> CosimResult:
    """Run ``q`` (integer inputs) through the folded design; every output compared with the reference, and the
    latency and II measured (``bit_exact`` also needs them equal to the design's)."""
    tool = tool or find_verilator()
    exe = build(design, tool)
    q = np.asarray(q).reshape(len(q), *net.input_shape)
    with tempfile.TemporaryDirectory(prefix="codesign-folded-") as tmp:
        inp, outp = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        pack_words(q.reshape(len(q), -1), design.in_type, _n_words(design.in_width)).tofile(inp)
        t0 = time.perf_counter()
        proc = subprocess.run([str(exe), str(inp), str(outp)], capture_output=True, text=True, timeout=3600)
        sim_s = time.perf_counter() - t0
        if proc.returncode != 0:
            raise ToolFailedError(f"folded co-simulation of {design.top} failed: "
                                  f"{first_error_line(proc.stdout + proc.stderr)}")
        stats = {k: int(v) for k, v in (kv.split("=") for kv in proc.stdout.split())}
        words = np.fromfile(outp, dtype=np.uint32).reshape(len(q), _n_words(design.out_width))
    got = unpack_words(words, design.out_type, design.n_out)
    n = stats["outputs"]
    ii = stats["span"] / (n - 1) if n > 1 else float(design.ii)
    cmp = compare_with_reference(net, q, got)
    return CosimResult(
        simulator=f"verilator {tool.version}", mode="folded", samples=int(len(q)), mismatches=cmp.mismatches,
        bit_exact=cmp.mismatches == 0 and stats["latency"] == design.latency and ii == design.ii,
        latency_cycles=stats["latency"], designed_latency=design.latency, ii=float(ii),
        samples_per_s=float(len(q) / max(sim_s, 1e-9)), first_mismatch=cmp.first_mismatch,
        extra={"designed_ii": design.ii, "longest_output_gap": stats["max_gap"], "longest_input_gap": stats["in_gap"],
               "reuse": design.reuse})
