"""Run the board-facing tops (the AXI4-Stream wrapper, the UART top) in Verilator through cocotb's runner.

The benches are in ``rtl_sim.wrapper_tb``; these functions build the top beside its core, hand the
bench its job, and return what the bench saw as data. The caller compares with the reference.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from codesign.errors import ToolFailedError
from codesign.tools import Tool, find_verilator, first_error_line
from rtl_sim.axis import sample_period
from rtl_sim.cosim import _tool_environ
from rtl_sim.verilog import Design

# A bench's Verilator build compiles the model and Verilator's runtime; unoptimized, that takes a third of the
# -Os compile time, and these benches simulate tens of thousands of cycles, not millions.
BUILD_MAKEFLAGS = "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"


def run_bench(sources: list[Path], toplevel: str, testcase: str, job: dict[str, Any], work: Path,
              parameters: dict[str, int] | None = None, tool: Tool | None = None) -> dict[str, Any]:
    """Build ``sources`` with ``toplevel`` in ``work`` (reused when nothing changed) and run ``testcase`` of
    ``rtl_sim.wrapper_tb`` on ``job``; the bench's result, with ``build_s`` and ``sim_s``."""
    from cocotb_tools.runner import get_results, get_runner

    tool = tool or find_verilator()
    work = Path(work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    job_path, res_path = work / "bench_job.json", work / "bench_result.json"
    job_path.write_text(json.dumps(job))
    res_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with _tool_environ(tool, BUILD_MAKEFLAGS):
        runner = get_runner("verilator")
        try:
            with open(work / "bench_stdout.log", "w") as out, contextlib.redirect_stdout(out):
                runner.build(sources=[Path(s).absolute() for s in sources], hdl_toplevel=toplevel,
                             build_dir=work / "sim_build", build_args=["-Wno-fatal"], parameters=parameters or {},
                             always=False, log_file=work / "bench_build.log")
        except (RuntimeError, OSError) as e:  # cocotb raises RuntimeError for a failed build command
            log = (work / "bench_build.log").read_text() if (work / "bench_build.log").is_file() else str(e)
            raise ToolFailedError(f"Verilator build of {toplevel} failed: {first_error_line(log)}") from None
        t1 = time.perf_counter()
        xml = runner.test(test_module="rtl_sim.wrapper_tb", hdl_toplevel=toplevel, build_dir=work / "sim_build",
                          testcase=testcase, test_dir=work, results_xml=str(work / "results.xml"),
                          log_file=work / "bench_test.log",
                          extra_env={"CODESIGN_COSIM_JOB": str(job_path), "CODESIGN_COSIM_RESULT": str(res_path),
                                     "COCOTB_RESOLVE_X": "ZEROS"})
    _, failed = get_results(xml)
    if failed or not res_path.is_file():
        log = (work / "bench_test.log").read_text() if (work / "bench_test.log").is_file() else ""
        raise ToolFailedError(f"cocotb bench {testcase} failed: {first_error_line(log)} (log: {work / 'bench_test.log'})")
    res = json.loads(res_path.read_text())
    res["build_s"], res["sim_s"] = t1 - t0, time.perf_counter() - t1
    return res


def run_axis(d: Design, rtl_dir: Path, work: Path, words: list[int], tlast: list[int], seed: int,
             p_valid: list[float], p_ready: list[float], phase: int = 64, axis_file: Path | None = None
             ) -> dict[str, Any]:
    """Stream bus words (``words[i]`` with ``tlast[i]``) through ``<top>_axis`` with bursty random ``tvalid`` and
    ``m_axis_tready`` (probabilities drawn from ``p_valid``/``p_ready`` every ``phase`` cycles); every accepted
    beat's cycle and every result beat (data, tlast, cycle); ``stuck``: the bench stopped at a beat refused for
    longer than any correct wrapper refuses one (``quiet_limit`` cycles). ``axis_file`` replaces the written wrapper."""
    rtl_dir = Path(rtl_dir)
    job = {"inputs": [str(v) for v in words], "tlast": tlast, "seed": seed, "p_valid": p_valid, "p_ready": p_ready,
           "phase": phase, "quiet_limit": 4 * (d.latency + sample_period(d)) + 8 * phase + 64}
    sources = [rtl_dir / f"{d.top}.v", Path(axis_file or rtl_dir / f"{d.top}_axis.v")]
    return run_bench(sources, f"{d.top}_axis", "axis_stream", job, work)


def run_uart(d: Design, rtl_dir: Path, work: Path, requests: list[bytes], reply_bytes: int, clks_per_bit: int = 4,
             idle_bits: list[int] | None = None, answered: list[bool] | None = None, timeout_bits: int = 200
             ) -> dict[str, Any]:
    """Send each request through ``<top>_uart``'s ``uart_rx`` at ``clks_per_bit`` and read its reply from ``uart_tx``
    (``answered[i]`` False: none is expected, e.g. a truncated request); the replies and the LEDs after each."""
    rtl_dir = Path(rtl_dir)
    job = {"requests": [list(r) for r in requests], "reply_bytes": reply_bytes, "clks_per_bit": clks_per_bit,
           "idle_bits": idle_bits or [0] * len(requests), "answered": answered or [True] * len(requests),
           "reply_timeout_bits": (d.latency + sample_period(d) + 3 * d.n_out + 64) // clks_per_bit + 64}
    sources = [rtl_dir / f"{d.top}.v", rtl_dir / f"{d.top}_uart.v"]
    return run_bench(sources, f"{d.top}_uart", "uart_classify", job, work,
                     parameters={"CLKS_PER_BIT": clks_per_bit, "TIMEOUT_BITS": timeout_bits})
