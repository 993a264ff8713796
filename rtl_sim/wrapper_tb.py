"""cocotb test benches for the board-facing tops: the AXI4-Stream wrapper and the UART top.

Run through cocotb's Python runner by ``rtl_sim.wrapper_sim``; like ``rtl_sim.cocotb_tb`` they read
their job from the JSON file named by ``CODESIGN_COSIM_JOB`` and write what they saw to
``CODESIGN_COSIM_RESULT``. They only drive pins and record; the comparison with the reference
happens in the caller.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer, with_timeout

PERIOD_NS = 10


def _job() -> dict:
    with open(os.environ["CODESIGN_COSIM_JOB"]) as f:
        return json.load(f)


def _result(res: dict) -> None:
    with open(os.environ["CODESIGN_COSIM_RESULT"], "w") as f:
        json.dump(res, f)


class _Bursty:
    """A random on/off signal whose probability of 'on' changes every ``phase`` cycles (from long stalls
    to full rate), so FIFOs fill up and drain as well as see single-cycle gaps."""

    def __init__(self, rng: random.Random, probs: list[float], phase: int) -> None:
        self.rng, self.probs, self.phase, self.n, self.p = rng, probs, phase, 0, probs[0]

    def __call__(self) -> bool:
        if self.n % self.phase == 0:
            self.p = self.rng.choice(self.probs)
        self.n += 1
        return self.rng.random() < self.p


@cocotb.test()
async def axis_stream(dut) -> None:
    """Drive ``s_axis`` beats with random ``tvalid`` gaps and ``m_axis_tready`` with random stalls (AXI rules:
    a presented beat holds its data until taken); record every accepted input and every result beat."""
    job = _job()
    words, lasts = [int(v) for v in job["inputs"]], [int(v) for v in job["tlast"]]
    rng = random.Random(job["seed"])
    valid_gen = _Bursty(rng, job["p_valid"], job["phase"])
    ready_gen = _Bursty(rng, job["p_ready"], job["phase"])
    cocotb.start_soon(Clock(dut.aclk, PERIOD_NS, unit="ns").start())
    dut.aresetn.value = 0
    dut.s_axis_tvalid.value = 0
    dut.s_axis_tdata.value = 0
    dut.s_axis_tlast.value = 0
    dut.m_axis_tready.value = 0
    await ClockCycles(dut.aclk, 2)
    await FallingEdge(dut.aclk)
    dut.aresetn.value = 1
    n, sent, presenting = len(words), 0, False
    outputs, out_last, out_cycles, in_cycles = [], [], [], []
    cycle, quiet, quiet_limit = 0, 0, int(job["quiet_limit"])
    # A beat presented and refused while no result is offered: a correct wrapper refuses only while its credits
    # are in the core (their results come within its latency) or the core's in_ready is low (a few cycles), so a
    # wait of quiet_limit cycles is a wrapper that leaked credits (a mutant): the bench stops and says so.
    refused, stuck = 0, False
    while sent < n or quiet < quiet_limit:
        # between edges: the wrapper's outputs come from registers, so they hold for the coming edge
        if not presenting and sent < n and valid_gen():
            dut.s_axis_tdata.value = words[sent]
            dut.s_axis_tlast.value = lasts[sent]
            presenting = True
        dut.s_axis_tvalid.value = int(presenting)
        ready = ready_gen()
        dut.m_axis_tready.value = int(ready)
        s_ready, m_valid = int(dut.s_axis_tready.value), int(dut.m_axis_tvalid.value)
        if presenting and s_ready:  # taken at the coming edge
            in_cycles.append(cycle)
            sent += 1
            presenting = False
        if m_valid and ready:
            outputs.append(str(dut.m_axis_tdata.value.to_unsigned()))
            out_last.append(int(dut.m_axis_tlast.value))
            out_cycles.append(cycle)
            quiet = 0
        else:
            quiet += 1
        refused = refused + 1 if presenting and not m_valid else 0
        if refused >= quiet_limit:
            stuck = True
            break
        await FallingEdge(dut.aclk)
        cycle += 1
    _result({"outputs": outputs, "out_last": out_last, "out_cycles": out_cycles, "in_cycles": in_cycles,
             "cycles": cycle, "tlast_error": int(dut.s_axis_tlast_error.value), "stuck": stuck})


# ---- UART --------------------------------------------------------------------------------------
async def _send_byte(dut, b: int, bit_ns: int) -> None:
    """One 8N1 frame on ``uart_rx``: start bit, eight data bits LSB first, stop bit."""
    for bit in [0] + [(b >> k) & 1 for k in range(8)] + [1]:
        dut.uart_rx.value = bit
        await Timer(bit_ns, unit="ns")


async def _receive_byte(dut, bit_ns: int) -> int | None:
    """The next 8N1 frame on ``uart_tx``, sampled at the middle of each bit (None: a bad stop bit)."""
    await FallingEdge(dut.uart_tx)
    await Timer(bit_ns // 2, unit="ns")
    if int(dut.uart_tx.value) != 0:
        return None
    v = 0
    for k in range(8):
        await Timer(bit_ns, unit="ns")
        v |= int(dut.uart_tx.value) << k
    await Timer(bit_ns, unit="ns")
    return v if int(dut.uart_tx.value) == 1 else None


@cocotb.test()
async def uart_classify(dut) -> None:
    """Send each request's bytes through ``uart_rx`` (after ``idle_bits[i]`` idle bit times), read the reply of
    ``reply_bytes`` bytes from ``uart_tx`` (none for a request marked as not answered), and the LEDs after it."""
    job = _job()
    bit_ns = int(job["clks_per_bit"]) * PERIOD_NS
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    dut.uart_rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await Timer(4 * bit_ns, unit="ns")
    replies, leds = [], []
    for req, idle, answered in zip(job["requests"], job["idle_bits"], job["answered"]):
        if idle:
            await Timer(idle * bit_ns, unit="ns")
        for b in req:
            await _send_byte(dut, int(b), bit_ns)
        if not answered:
            continue
        got = []
        for _ in range(int(job["reply_bytes"])):  # a byte that never starts ends the bench: the caller reports it
            try:
                got.append(await with_timeout(_receive_byte(dut, bit_ns), int(job["reply_timeout_bits"]) * bit_ns, "ns"))
            except cocotb.triggers.SimTimeoutError:
                replies.append(got)
                _result({"replies": replies, "leds": leds, "timed_out": True})
                return
        await Timer(bit_ns, unit="ns")
        replies.append(got)
        leds.append(int(dut.led.value.to_unsigned()))
    await RisingEdge(dut.clk)
    _result({"replies": replies, "leds": leds, "timed_out": False})
