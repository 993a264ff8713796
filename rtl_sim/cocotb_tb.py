"""cocotb test bench: streams samples back to back and records every output and stage register.

Run through cocotb's Python runner by ``rtl_sim.cosim``; it reads its job from the JSON
file named by ``CODESIGN_COSIM_JOB`` and writes what it saw to ``CODESIGN_COSIM_RESULT``.
The comparison with the reference happens in ``rtl_sim.cosim``, not here.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge


async def _reset(dut) -> None:
    """Start the clock, hold reset for two cycles with no input, release it between edges."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.in_valid.value = 0
    dut.in_data.value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test()
async def stream_samples(dut) -> None:
    """Drive one sample per clock; record out_data per valid output and each stage's registers."""
    job = json.load(open(os.environ["CODESIGN_COSIM_JOB"]))
    words = [int(v) for v in job["inputs"]]
    stages = job["stages"]  # [{"latency": k, "signals": [...]}] to record per sample
    watch = [(st["latency"], [getattr(dut, s) if s else None for s in st["signals"]]) for st in stages]
    await _reset(dut)
    n = len(words)
    outputs, out_cycles = [], []
    stage_values: list[list] = [[None] * n for _ in stages]
    cycle, sent = 0, 0
    latency_max = max(job["latency"], 1)
    while len(outputs) < n and cycle < n + latency_max + 64:
        if sent < n:
            dut.in_data.value = words[sent]
            dut.in_valid.value = 1
        else:
            dut.in_valid.value = 0
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        if sent < n:
            sent += 1
        if int(dut.out_valid.value):
            outputs.append(str(dut.out_data.value.to_unsigned()))
            out_cycles.append(cycle)
        for k, (lat, handles) in enumerate(watch):
            s = cycle - lat + 1  # the sample whose result this stage holds now
            if 0 <= s < n:
                stage_values[k][s] = [None if h is None else int(h.value.to_signed()) for h in handles]
        cycle += 1
    with open(os.environ["CODESIGN_COSIM_RESULT"], "w") as f:
        json.dump({"outputs": outputs, "out_cycles": out_cycles, "cycles": cycle, "stage_values": stage_values}, f)


@cocotb.test()
async def stream_images(dut) -> None:
    """A streaming CNN: drive pixel beats (after ``gaps[i]`` idle cycles each, when given; a folded design's
    ``pace`` > 1: a beat is taken when ``in_ready`` is high, in_valid held until then); record every result and,
    per watched stage, every value it presents while its valid is high."""
    job = json.load(open(os.environ["CODESIGN_COSIM_JOB"]))
    words = [int(v) for v in job["inputs"]]
    gaps = job.get("gaps") or [0] * len(words)
    n_out = len(words) // int(job["per_out"])
    watch = [(getattr(dut, st["valid"].split("[")[0]), _bit(st["valid"]),
              [getattr(dut, s) if s else None for s in st["signals"]]) for st in job["watch"]]
    await _reset(dut)
    outputs, out_cycles, in_cycles = [], [], []
    records: list[list] = [[] for _ in watch]
    cycle, sent, idle = 0, 0, gaps[0] if gaps else 0
    pace = int(job.get("pace") or 1)
    limit = len(words) * pace + sum(gaps) + int(job["latency"]) + 64
    while len(outputs) < n_out and cycle < limit:
        beat = sent < len(words) and idle == 0
        dut.in_valid.value = int(beat)
        if beat:
            dut.in_data.value = words[sent]
        take = beat and (pace == 1 or bool(int(dut.in_ready.value)))  # in_ready: a register, settled here
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        if take:
            in_cycles.append(cycle)
            sent += 1
            idle = gaps[sent] if sent < len(words) else 0
        elif sent < len(words) and not beat:
            idle -= 1
        if int(dut.out_valid.value):
            outputs.append(str(dut.out_data.value.to_unsigned()))
            out_cycles.append(cycle)
        for k, (handle, bit, sigs) in enumerate(watch):
            v = handle.value
            if (int(v) >> bit) & 1 if bit is not None else int(v):
                records[k].append([None if h is None else int(h.value.to_signed()) for h in sigs])
        cycle += 1
    with open(os.environ["CODESIGN_COSIM_RESULT"], "w") as f:
        json.dump({"outputs": outputs, "out_cycles": out_cycles, "in_cycles": in_cycles, "cycles": cycle,
                   "records": records}, f)


def _bit(signal: str) -> int | None:
    """The bit index of ``name[k]``, or None for a 1-bit signal."""
    return int(signal.split("[")[1].rstrip("]")) if "[" in signal else None
