"""The cost of a folded Dense layer (``rtl_sim.folded``): its weight memory, MAC units, partials and control.

A folded layer is priced from the same plan the RTL is built from (``codesign.core.fold.plan_layer``), so
the units, their product/accumulator widths, the input multiplexers, the memory's depth and width and the
partial registers are the emitter's, not guesses. Flip-flops are counted from that structure; LUTs are
priced per bit of each part with coefficients fitted against Yosys (``bench/folding.py``, xc7; other
families use xc7's LUT prices and their own memory geometry, marked ``calibrated: False``).

Memories: the weight ROM is ``C`` words (the cycles per vector) of ``word_bits``. In logic a live bit costs
``ROM_LUTS`` (measured per depth) and its read register one FF; as block RAM it costs no LUT. Where the ROM goes
with ``memory="auto"`` is Yosys's choice, which the model makes the same way: on AMD parts ``memory_libmap``'s
costs (``xilinx_rom_blocks``: block RAM when the ROM's bits / 64 cost more than its cheapest RAMB18 or RAMB36
layout); elsewhere (not measured) block RAM past ``AUTO_BLOCK_DEPTH`` words of ``AUTO_BLOCK_WIDTH`` bits or more.
``memory="block"`` cuts the word into the family's widest port (xc7 RAMB18E1: 36 bits x 512; ECP5 DP16KD and
Gowin's BSRAM: 36 x 512; Cyclone V M10K: 40 x 256; iCE40 SB_RAM40_4K: 16 x 256). ``bram`` is counted as the
synthesis counts do: in RAMB36 (two RAMB18, rounded up) on AMD parts, in blocks elsewhere. An input group's N:1
select costs ``SELECT_LUTS`` per bit (measured per N).

A multiplier is a DSP when the family's DSP rule (``codesign.families``: Yosys's minimum operand and
product widths) holds and DSPs are allowed; else a LUT multiplier, priced per partial-product bit.
The budget search prices a candidate it folds with ``network_folded_cost`` (``fold_choice.folded_price``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import Any

import numpy as np

from codesign.core.arith import signed_width
from codesign.core.fixed import FixedType
from codesign.core.fold import LayerPlan, live_columns, memory_words, plan_layer
from codesign.core.layers import Dense
from codesign.core.network import Network
from codesign.core.reference import exact_accum_type
from codesign.errors import LayerError
from codesign.families import FAMILIES

# LUTs per bit of the two parts whose size, not their bit count, sets their logic, each synthesized alone in the
# emitter's form (``bench/calibrate_fold.py --micro``, synth_xilinx; xc7 and xcup give the same counts,
# bench/results/calibrate_fold.json): an N:1 input select (a case over registered inputs), by N, and one bit of a
# ROM of D random words with a registered read, by D. Between the points: linear; past the last: in proportion.
SELECT_LUTS = ((1, 0.0), (2, 1.0), (3, 2.0), (4, 2.0), (5, 2.0), (6, 3.0), (8, 3.0), (9, 4.0), (12, 5.0), (16, 6.0),
               (17, 10.0), (24, 11.0), (32, 14.0), (33, 14.0), (48, 22.0), (64, 28.0), (65, 30.0), (100, 44.0),
               (128, 54.0), (192, 83.0), (256, 102.0))
ROM_LUTS = ((1, 0.0), (2, 0.0), (4, 0.0625), (8, 0.8125), (16, 1.0), (64, 1.0), (65, 1.0), (96, 3.0), (128, 3.0),
            (160, 5.0), (192, 5.0), (256, 6.0))
# LUTs of one LUT-multiplier unit measured alone in the emitter's form (``bench/calibrate_fold.py --units``, xc7;
# four units of random weights sharing a counter and ROM, per unit): a registered input times a weight read from the
# ROM at the counter, the product registered, and an accumulator of (input + weight + 4) bits; by the counter's
# address bits (C = 2, 4, 8 words), input bits (rows, UNIT_INPUT_BITS)
# and weight bits (columns, UNIT_WEIGHT_BITS). Synthesis sees the weight through the ROM, a function of the address:
# with one address bit the product is a choice between two constant multiples, with two it is still cheaper, and
# from three the weight's full width is live (the multiplier a full array). Between the points: linear in each
# width; past the last: in proportion; C > 8 words: the 3-bit row.
UNIT_INPUT_BITS = (2, 4, 6, 8, 12, 16)
UNIT_WEIGHT_BITS = (2, 3, 4, 6, 8)
UNIT_LUTS = {
    1: ((9, 11.8, 13.8, 18.8, 23.2), (12.8, 18.2, 22.8, 26.2, 32), (15.8, 23.8, 28, 48, 64.2),
        (19.2, 29.2, 34.5, 61.8, 89.5), (25.2, 40.2, 46.8, 90.5, 129.5), (31.2, 51.2, 58.8, 120.2, 167.8)),
    2: ((11.5, 17, 19.8, 26.5, 30.5), (19.5, 28.2, 39.8, 56.2, 68.2), (25.5, 39, 53, 87.2, 111.5),
        (32.5, 48.5, 68, 108.5, 143.5), (44.5, 71.2, 97.8, 156.2, 200.8), (56.5, 93.2, 125.5, 204, 257.2)),
    3: ((12.8, 19.2, 24.2, 32.2, 42), (21.2, 32.2, 49.2, 69.2, 91), (27.2, 44.2, 67.2, 99.2, 128),
        (34.8, 53.2, 87.2, 126.2, 162), (46.8, 78.2, 123.2, 176.2, 235), (58.8, 102.2, 157.2, 225.2, 294)),
}
# deeper and at least as wide, a ROM is taken to be block RAM on the families whose choice is not modelled
AUTO_BLOCK_DEPTH, AUTO_BLOCK_WIDTH = 256, 32
# Yosys's memory_libmap on AMD parts (synth_xilinx, share/xilinx/brams_xc4v.txt, the same for xc7 and xcup): a ROM
# left to soft logic costs its bits / 64 (synth_xilinx's -logic-cost-rom); a block layout costs 129 per RAMB18 and
# 257 per RAMB36, + 2, + half the word's bits when its depth is split over blocks (the read mux); the cheapest wins.
# Per block kind: its cost and the depth at each port width. Checked against Yosys 0.70's own costs (``debug
# memory_libmap``) and mappings: 257 x 32 and 300 x 8 and 600 x 20 words x bits in logic, 288 x 32 in one RAMB18,
# 1,024 x 9 in one, 3,280 x 13 in three (4,096 x 4 beside 2 x 2,048 x 9: cost 395.5, logic 666.25).
XILINX_BLOCKS = {"RAMB18": (129, {1: 16384, 2: 8192, 4: 4096, 9: 2048, 18: 1024, 36: 512}),
                 "RAMB36": (257, {1: 32768, 2: 16384, 4: 8192, 9: 4096, 18: 2048, 36: 1024, 72: 512})}
XILINX_LOGIC_COST_ROM = 1 / 64
XILINX_FAMILIES = ("xc7", "xcup")
LUT4_FAMILIES = ("ecp5", "gowin", "ice40")  # not measured: a LUT4 holds a quarter of a LUT6's ROM and half its select

# LUT per unit of each feature, fitted by ``bench/calibrate_fold.py`` (non-negative least squares on the relative
# error over single folded layers on xcup, bench/folding.py's random networks on xc7, with and without DSPs, and
# bench/folding.py --cnn's folded digits CNN on xc7, per stage, the rest of its stream priced apart by the streaming
# model; bench/results/calibrate_fold.json). "unit", "select" and "rom" are the measured LUTs of those parts alone
# (UNIT_LUTS, SELECT_LUTS, ROM_LUTS), priced by what they cost in a layer; a DSP unit's accumulator stays in LUTs
# beside it. A zero price: the fit gives that part no LUTs beyond what the other prices already cover; the FFs are
# the structure's.
LUT_PER = {
    "unit": 1.071,  # per LUT of a LUT-multiplier unit measured alone (UNIT_LUTS)
    "acc_bit": 0.215,  # per accumulator bit of a LUT-multiplier unit past the measured unit's
    "dsp_acc_bit": 1.39,  # per accumulator bit of a DSP unit
    "select": 0.826,  # per LUT of the input selects measured alone
    "rom": 1.118,  # per LUT of the live ROM bits measured alone
    "partial_add_bit": 0.674,  # adding an output's partials and its bias, per operand bit
    "out_bit": 0.048,  # rounding and saturation per output bit, when the result type is not the exact sum's
    "relu_bit": 0.0,  # a ReLU after the layer, per output bit
    "control": 0.0,  # counter, busy/valid and the partials' write enables
}
CALIBRATED = ("xc7", "xcup")
# where a DSP unit's product register stays in flip-flops: Yosys packs it into the DSP48E1 on xc7 but not into the
# DSP48E2 on xcup (bench/results/calibrate_fold.json: on xcup the layers have the same FFs with and without DSPs)
DSP_PRODUCT_IN_FABRIC = ("xcup",)
# per family: (LUT inputs, block RAM port width, depth at that width, blocks counted per block used)
MEMORY = {"xc7": (6, 36, 512, 0.5), "xcup": (6, 36, 512, 0.5), "ecp5": (4, 36, 512, 1.0),
          "gowin": (4, 36, 512, 1.0), "cyclonev": (6, 40, 256, 1.0), "ice40": (4, 16, 256, 1.0)}


def _measured(table: tuple[tuple[int, float], ...], n: float) -> float:
    last_n, last = table[-1]
    if n >= last_n:
        return last * n / last_n
    for (n0, v0), (n1, v1) in zip(table, table[1:]):
        if n <= n1:
            return v0 + (v1 - v0) * (n - n0) / (n1 - n0)
    return 0.0


def _axis(points: tuple[int, ...], v: float) -> tuple[int, int, float, float]:
    """The two grid points around ``v`` (index, index, weight of the second) and the scale past the last."""
    if v >= points[-1]:
        return len(points) - 1, len(points) - 1, 0.0, v / points[-1]
    if v <= points[0]:
        return 0, 0, 0.0, 1.0
    j = next(i for i, p in enumerate(points) if p >= v)
    return j - 1, j, (v - points[j - 1]) / (points[j] - points[j - 1]), 1.0


def unit_luts(input_bits: int, weight_bits: int, cycles: int) -> float:
    """LUTs of one LUT-multiplier unit measured alone (``UNIT_LUTS``), without its ROM's bits (priced apart)."""
    a = min(max((cycles - 1).bit_length(), 1), 3)
    t = UNIT_LUTS[a]
    i0, i1, fi, si = _axis(UNIT_INPUT_BITS, input_bits)
    j0, j1, fj, sj = _axis(UNIT_WEIGHT_BITS, weight_bits)
    row0 = t[i0][j0] + (t[i0][j1] - t[i0][j0]) * fj
    row1 = t[i1][j0] + (t[i1][j1] - t[i1][j0]) * fj
    rom = _measured(ROM_LUTS, 1 << a) * weight_bits  # the measured unit's own ROM of 2, 4 or 8 words
    return max((row0 + (row1 - row0) * fi) * si * sj - rom, 0.0)


def select_luts(n: int, family: str) -> float:
    """LUTs per bit of an N:1 input select (``SELECT_LUTS``)."""
    return _measured(SELECT_LUTS, n) * (2 if family in LUT4_FAMILIES else 1)


@functools.lru_cache(maxsize=4096)  # a pure function of two ints, asked again for the same ROM by every price of a fold
def xilinx_rom_blocks(depth: int, width: int) -> tuple[float, float]:
    """The cheapest block RAM layout of a ``depth`` x ``width`` ROM by ``memory_libmap``'s costs (``XILINX_BLOCKS``):
    its cost and its blocks in RAMB36 (a RAMB18 is half). Columns of different port widths may sit side by side, each
    as deep as it needs (3,280 x 13: a 4,096 x 4 RAMB18 beside two 2,048 x 9)."""
    best = (math.inf, 0.0)
    for kind, (cost, depth_at) in XILINX_BLOCKS.items():
        # with every column as deep as the ROM in one block, or (a read mux: half a unit per bit) some cut in depth
        for ports, mux in (({w: d for w, d in depth_at.items() if d >= depth}, 0.0), (depth_at, width / 2)):
            cells = [0.0] + [math.inf] * width  # cells[x]: the fewest blocks holding x bits (or more) at this depth
            for x in range(1, width + 1):
                cells[x] = min((cells[max(x - w, 0)] + math.ceil(depth / d) for w, d in ports.items()),
                               default=math.inf)
            total = cells[width] * cost + 2 + mux
            if total < best[0]:
                best = (total, cells[width] * (0.5 if kind == "RAMB18" else 1.0))
    return best


def auto_in_block(depth: int, width: int, family: str) -> bool:
    """Whether Yosys's ``memory="auto"`` puts a ``depth`` x ``width`` ROM in block RAM (module docstring)."""
    if depth <= 1 or width <= 0:
        return False
    if family in XILINX_FAMILIES:
        return depth * width * XILINX_LOGIC_COST_ROM > xilinx_rom_blocks(depth, width)[0]
    return depth > AUTO_BLOCK_DEPTH and width >= AUTO_BLOCK_WIDTH


def memory_cost(depth: int, width: int, family: str, memory: str = "auto") -> dict[str, float]:
    """A ROM of ``depth`` words of ``width`` bits with a registered read: as LUTs ("auto"/"logic") or block RAM;
    ``lut`` is the LUTs of its bits measured alone (``ROM_LUTS``), before ``LUT_PER["rom"]``."""
    k, port, deep, per_block = MEMORY[family]
    if depth <= 1:  # a constant word: wires
        return {"lut": 0.0, "ff": 0.0, "bram": 0.0}
    if memory == "auto":
        memory = "block" if auto_in_block(depth, width, family) else "logic"
    if memory == "block":
        if family in XILINX_FAMILIES:
            return {"lut": 0.0, "ff": 0.0, "bram": xilinx_rom_blocks(depth, width)[1]}
        blocks = math.ceil(width / port) * math.ceil(depth / deep)
        return {"lut": 0.0, "ff": 0.0, "bram": blocks * per_block}
    per_bit = _measured(ROM_LUTS, depth * (4 if family in LUT4_FAMILIES else 1))
    return {"lut": per_bit * width, "ff": float(width), "bram": 0.0}


def _is_dsp(a_bits: int, w_bits: int, p_bits: int, family: str, dsp: bool) -> bool:
    """The family's DSP rule (Yosys's mul2dsp minimum widths) for one MAC unit's multiply."""
    ma, mw, mp = FAMILIES[family].dsp_min_widths
    return dsp and min(a_bits, w_bits) >= min(ma, mw) and max(a_bits, w_bits) >= max(ma, mw) and p_bits >= mp


def varying_columns(plan: LayerPlan) -> int:
    """Memory bits that are not constant over the words (a repeated bit counted each time)."""
    words = memory_words(plan)
    return sum(1 for b in range(plan.word_bits) if len({(w >> b) & 1 for w in words}) > 1)


def plan_features(plan: LayerPlan, layer: Dense, x_lo: list[int], x_hi: list[int], out_type: FixedType,
                  family: str, dsp: bool = True, memory: str = "auto", cast: bool = True, relu: bool = False
                  ) -> dict[str, float]:
    """What one folded layer is made of: the bits each LUT price (``LUT_PER``) applies to, its flip-flops
    (counted from the structure), DSPs and memory (``x_lo``/``x_hi``: the inputs' integer ranges; ``cast``:
    the result is rounded or saturated; ``relu``: a ReLU follows)."""
    if family not in MEMORY:
        raise LayerError(f"layer {layer.name!r}: no folded-layer prices for family {family!r}; "
                         f"families: {', '.join(MEMORY)}")
    f = dict.fromkeys(LUT_PER, 0.0)
    f["control"] = 1.0
    ff = n_dsp = 0.0
    for sel in plan.selects:  # one multiplexer per input group
        f["select"] += max(signed_width(x_lo[i], x_hi[i]) for i in sel) * select_luts(len(sel), family)
    for u in range(plan.units):
        aw = max(signed_width(x_lo[i], x_hi[i]) for i in plan.selects[plan.group[u]])
        pw = signed_width(*plan.prod_range[u])
        accw = max(signed_width(*plan.acc_range[u]), pw)
        if _is_dsp(aw, plan.weight_bits, pw, family, dsp):
            n_dsp += 1
            f["dsp_acc_bit"] += accw
            ff += pw if family in DSP_PRODUCT_IN_FABRIC else 0
        else:  # the weight is one of C words read at the counter: synthesis sees it through the ROM (UNIT_LUTS), as
            # wide as the unit's own weights (the measured units' random weights span their type); an input that is
            # never negative has a constant sign bit, a row of partial products fewer than the signed inputs measured
            ws = plan.items[u, :, 1]
            wu = min(plan.weight_bits, signed_width(min(0, int(ws.min())), max(0, int(ws.max()))))
            unsigned = all(x_lo[i] >= 0 for i in plan.selects[plan.group[u]])
            f["unit"] += unit_luts(aw - 1 if unsigned and aw > 1 else aw, wu, plan.cycles)
            f["acc_bit"] += accw - (aw + plan.weight_bits + 4)  # past the measured unit's accumulator
            ff += pw
        ff += accw + 1  # the accumulator and the first-item bit
    parts: dict[int, list[int]] = {}
    for s in plan.segments:
        if s.lo != s.hi:
            parts.setdefault(s.col, []).append(signed_width(s.lo, s.hi))
    ff += sum(sum(ws) for ws in parts.values())
    for j in range(layer.weight.shape[1]):
        ws = parts.get(j, [])
        f["partial_add_bit"] += max(len(ws) - 1 + (1 if int(layer.bias[j]) else 0), 0) * (max(ws, default=0) + 1)
    n_out = layer.weight.shape[1]
    f["out_bit"] = float(out_type.width * n_out) if cast else 0.0
    f["relu_bit"] = float(out_type.width * n_out) if relu else 0.0
    cw = max((plan.cycles - 1).bit_length(), 1)
    out_bits = out_type.width - (1 if relu and out_type.signed else 0)  # after a ReLU the sign bit is constant
    ff += out_bits * n_out + 2 * cw + 4  # the output register, the counter and its copy, valid/busy/done
    # built in logic, a ROM keeps only its live bits (a constant or repeated bit is no LUT and no FF); Yosys
    # (opt_mem) drops its constant bits before it chooses block RAM, so a block RAM stores every other bit, repeats
    # too (the digits MLP at R = 4: 1,416 word bits, 1,122 not constant, 18 RAMB36 on Yosys)
    stored = varying_columns(plan)
    in_block = memory == "block" or (memory == "auto" and auto_in_block(plan.cycles, stored, family))
    mem = memory_cost(plan.cycles, stored if in_block else live_columns(plan), family, memory)
    f["rom"] = mem["lut"]
    return {**f, "ff": ff + mem["ff"], "dsp": n_dsp, "bram": mem["bram"]}


def plan_cost(plan: LayerPlan, layer: Dense, x_lo: list[int], x_hi: list[int], out_type: FixedType,
              family: str, dsp: bool = True, memory: str = "auto", cast: bool = True, relu: bool = False
              ) -> dict[str, Any]:
    """LUT/FF/DSP/BRAM of one folded layer's plan (``plan_features`` priced)."""
    f = plan_features(plan, layer, x_lo, x_hi, out_type, family, dsp, memory, cast, relu)
    lut = sum(LUT_PER[k] * f[k] for k in LUT_PER)
    return {"lut": round(lut), "ff": round(f["ff"]), "dsp": int(f["dsp"]), "bram": f["bram"],
            "units": plan.units, "cycles": plan.cycles, "memory_bits": plan.cycles * plan.word_bits,
            "features": f, "calibrated": family in CALIBRATED}


def folded_cost(layer: Dense, in_type: FixedType, reuse: int, family: str, out_type: FixedType | None = None,
                relu_input: bool = False, dsp: bool = True, memory: str = "auto", relu: bool = False
                ) -> dict[str, Any]:
    """LUT/FF/DSP/BRAM of ``layer`` folded at ``reuse`` for inputs of ``in_type`` (``relu_input``: they come out
    of a ReLU, so none is negative) with its result in ``out_type`` (default: its result type; ``relu``: a ReLU
    follows), plus the fold's ``cycles`` (the layer's II) and ``units``."""
    n_in = layer.weight.shape[0]
    lo = 0 if relu_input or not in_type.signed else in_type.min_int
    x_lo, x_hi = [lo] * n_in, [in_type.max_int] * n_in
    plan = plan_layer(layer, reuse, x_lo, x_hi)
    out_type = out_type or layer.result_type or layer.accum_type
    if out_type is None:
        raise LayerError(f"layer {layer.name!r}: no result type to price its output register; quantize it first")
    exact = exact_accum_type(layer, in_type)
    cast = out_type.frac < exact.frac or out_type.integer < exact.integer  # rounding or saturation logic
    return plan_cost(plan, layer, x_lo, x_hi, out_type, family, dsp, memory, cast, relu)


def network_folded_cost(net: Network, reuse: int | dict[str, int], family: str, dsp: bool = True,
                        memory: str = "auto") -> dict[str, Any]:
    """Per Dense layer and in total: each layer folded at its reuse (R = 1 layers priced by ``cost.dense_cost``),
    the II (the slowest layer's cycles) and the sum of LUT/FF/DSP/BRAM."""
    from codesign.compress.cost import dense_cost, dense_stages

    layers: dict[str, dict[str, Any]] = {}
    relu_in = False
    for layer, t_in, out_t, relu in dense_stages(net):
        r = reuse if isinstance(reuse, int) else int(reuse.get(layer.name, 1))
        if r == 1:
            # the layer's own reuse (a folded run's, saved with it) would price dense_cost's time-multiplexed form
            c = dense_cost(replace(layer, reuse=1), t_in, family, None if dsp else "lut", out_t, relu, clock_mhz=0)
            layers[layer.name] = {**c.as_dict(), "cycles": 1, "units": 0}  # its output register included
        else:
            layers[layer.name] = folded_cost(layer, t_in, r, family, out_t, relu_in, dsp, memory, relu)
        relu_in = relu
    tot = {k: sum(v[k] for v in layers.values()) for k in ("lut", "ff", "dsp", "bram")}
    tot["bram"] = math.ceil(tot["bram"])  # as the synthesis counts do: two RAMB18 to a block, rounded up
    ii = max(v["cycles"] for v in layers.values())
    if ii > 1:  # the input register (the inputs some weight reads) and the in_ready counter of a folded design
        first = dense_stages(net)[0][0]
        read = int(np.count_nonzero(np.any(first.weight != 0, axis=1)))
        tot["ff"] += read * net.input_type.width + max((ii - 1).bit_length(), 1)
    return {**tot, "ii": ii, "layers": layers}
