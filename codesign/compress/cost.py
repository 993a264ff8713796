"""The analytic cost model: LUT, FF and DSP of the fully parallel datapath, per layer.

It prices the structure ``rtl_sim`` emits: one constant multiplication per nonzero weight
(canonical-signed-digit shift-and-add in LUTs, or a DSP multiply), an adder tree per
output, rounding, saturation and ReLU logic, and the pipeline registers; Yosys merges much of
each output's shift-and-adds and adder tree into multi-operand sums, so LUTs are priced per
term of the output's sum (see ``FEATURES``). A pruned weight costs nothing. Coefficients per
synthesis family are calibrated against Yosys (``bench/calibrate_cost.py`` refits
``cost_coeffs.json``). Everything is numpy over the weight matrix, so one evaluation takes
well under a millisecond for jet-tagger-sized layers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from codesign.board import Board
from codesign.compress.elements import constant_rows, without_rows
from codesign.core.activity_model import layer_graph
from codesign.core.arith import CSD_MAX_DIGITS, csd_count, signed_widths
from codesign.core.cmvm import DEFAULT_DEPTH_SLACK, optimize
from codesign.core.fixed import FixedType
from codesign.core.layers import MULT_MAPPINGS, BatchNorm, Dense, Quant, ReLU, Weighted
from codesign.core.network import Network
from codesign.core.timing import MODELS, delay_model, schedule_graph, tail_cuts, tail_delay
from codesign.errors import LayerError
from codesign.families import FAMILIES

# Yosys maps a multiply to a DSP only when its operands (and, on AMD, its product) are wide
# enough (mul2dsp's DSP_A/B/Y_MINWIDTH in synth_xilinx and synth_intel_alm); a narrower one
# becomes LUT logic. Operands as wreduce leaves them: the input, the constant's own width.
DSP_MIN_WIDTHS = {name: f.dsp_min_widths for name, f in FAMILIES.items()}  # input, constant, product


@lru_cache(maxsize=None)
def coefficients() -> dict[str, dict[str, float]]:
    """Per synthesis family: LUT per adder bit, per rounding/saturation bit, etc."""
    return json.loads(resources.files("codesign.compress").joinpath("cost_coeffs.json").read_text())


@dataclass
class LayerCost:
    name: str
    lut: float = 0.0
    ff: float = 0.0
    dsp: float = 0.0
    bram: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"lut": round(self.lut), "ff": round(self.ff), "dsp": round(self.dsp), "bram": round(self.bram)}


# LUTs are linear in these. Yosys merges much of each output's shifted inputs (one per CSD digit
# of each weight: a "term") into multi-operand additions, so the datapath is priced per term;
# what a term costs grows with the input's width, its signedness, the weight's width, how many
# terms share the output (log2 of their count) and the accumulator's width. The output logic
# (rounding, saturation, ReLU) is priced per bit. Outputs with one or two operands (where the
# per-term pricing is least accurate: no multi-operand sum to share) and a nonzero bias (a
# constant operand) get their own per-output and per-accumulator-bit prices. A DSP-mapped
# weight's product joins its output's sum as one operand, priced by its width and the
# accumulator's; Yosys shares one DSP among the outputs that multiply the same input by the
# same constant. Fitted per family by bench/calibrate_cost.py: the LUT-only features on
# LUT-mapped layers, then DSP_FEATURES on DSP-mapped ones with the LUT-only coefficients fixed.
TERM_FEATURES = ("terms", "term_input_bits", "term_log_terms", "term_signed", "term_weight_bits", "term_acc_bits")
DSP_FEATURES = ("dsp_products", "dsp_product_bits", "dsp_first_uses", "dsp_product_acc_bits", "dsp_outputs",
                "dsp_output_acc_bits")
LUT_FEATURES = TERM_FEATURES + ("acc_bits", "round_bits", "sat_bits", "sat_cmp_bits", "relu_bits", "outputs",
                                "bias_outputs", "bias_bits", "one_term_outputs", "one_term_bits", "two_term_outputs",
                                "two_term_bits")
FEATURES = LUT_FEATURES + DSP_FEATURES


def _odd_part(w: np.ndarray) -> np.ndarray:
    """Each integer with its trailing zero bits removed (0 stays 0)."""
    w = w.astype(np.int64)
    tz = np.where(w != 0, np.bitwise_and(w, -w), 1)  # lowest set bit
    return w // tz


def term_values(in_type: FixedType, weight_bits: int, terms: np.ndarray, acc_bits: np.ndarray) -> np.ndarray:
    """Per output (rows): the TERM_FEATURES of one of its terms, given its output's term count and
    accumulator width. A layer's term features are these times the term counts, summed."""
    t = np.asarray(terms, dtype=np.float64)
    xb, sg = float(in_type.width), float(in_type.signed)
    ones = np.ones_like(t)
    return np.stack([ones, xb * ones, np.log2(np.maximum(t, 1.0)), sg * ones, float(weight_bits) * ones,
                     np.asarray(acc_bits, dtype=np.float64)], axis=-1)


def term_lut(family: str, in_type: FixedType, weight_bits: int, terms: np.ndarray, acc_bits: np.ndarray) -> np.ndarray:
    """LUTs of one term of an output with ``terms`` terms and an ``acc_bits``-wide accumulator."""
    c = coefficients()[family]
    return np.maximum(term_values(in_type, weight_bits, terms, acc_bits) @ np.array([c[k] for k in TERM_FEATURES]), 0.0)


def output_features(layer: Dense, in_type: FixedType, mapping: str | None = None, out_type: FixedType | None = None,
                    relu: bool = False, family: str = "xc7") -> tuple[np.ndarray, int, float]:
    """Per output (rows, in FEATURES order): its terms, with the exact accumulator intervals the
    Verilog emitter uses, and its output logic's bits; the DSP count; the output FFs."""
    if not layer.quantized:
        raise LayerError(f"layer {layer.name!r} is float: the cost model prices fixed-point layers")
    mapping = mapping or layer.mult
    w = layer.weight.astype(np.int64)
    nz = w != 0
    digits = csd_count(w)
    if mapping == "dsp":
        dsp_mask = nz & (digits > 1)
    elif mapping == "lut":
        dsp_mask = np.zeros_like(nz)
    elif mapping == "auto":
        dsp_mask = nz & (digits > CSD_MAX_DIGITS)
    else:
        raise LayerError(f"layer {layer.name!r}: unknown multiplier mapping {mapping!r}; mappings: {', '.join(MULT_MAPPINGS)}")
    xlo, xhi = in_type.min_int, in_type.max_int
    pf = in_type.frac + layer.weight_type.frac
    frac = max(pf, layer.bias_type.frac)
    sh, bsh = frac - pf, frac - layer.bias_type.frac
    plo = np.minimum(w * xlo, w * xhi) << sh
    phi = np.maximum(w * xlo, w * xhi) << sh
    min_x, min_c, min_p = DSP_MIN_WIDTHS[family]
    odd = _odd_part(w)  # wreduce moves a constant's trailing zeros out of the multiply
    olo, ohi = np.minimum(odd * xlo, odd * xhi), np.maximum(odd * xlo, odd * xhi)
    # an unsigned input times a positive constant becomes an unsigned multiply: no sign bits
    unsigned = (not in_type.signed) & (odd > 0)
    x_bits = np.where(unsigned, in_type.width, in_type.width + (0 if in_type.signed else 1))
    c_bits = np.where(unsigned, signed_widths(odd, odd) - 1, signed_widths(odd, odd))
    p_bits = np.where(unsigned, signed_widths(olo, ohi) - 1, signed_widths(olo, ohi))
    dsp_mask = dsp_mask & (x_bits >= min_x) & (c_bits >= min_c) & (p_bits >= min_p)
    bias = layer.bias.astype(np.int64) << bsh
    alo = np.where(nz, plo, 0).sum(axis=0) + bias
    ahi = np.where(nz, phi, 0).sum(axis=0) + bias
    lut_terms = np.where(nz & ~dsp_mask, digits, 0).sum(axis=0)
    products = dsp_mask.sum(axis=0)
    terms = lut_terms + products  # a DSP's product is one more operand of the output's sum
    acc_bits = signed_widths(alo, ahi)
    live = terms > 0
    term_feats = term_values(in_type, layer.weight_type.width, terms, acc_bits) * lut_terms[:, None]
    product_bits = np.where(dsp_mask, signed_widths(plo, phi), 0).sum(axis=0)
    out_bits = np.zeros(w.shape[1])
    sat_bits = np.zeros(w.shape[1])
    sat_cmp = np.zeros(w.shape[1])
    for j in range(w.shape[1]):
        lo_j, hi_j = int(alo[j]), int(ahi[j])
        if lo_j == hi_j:
            continue  # a constant output (bias only): no logic, no register
        s = 0
        if out_type is not None:
            s = frac - out_type.frac
            rlo, rhi = (lo_j >> s, (hi_j >> s) + 1) if s > 0 else (lo_j << -s, hi_j << -s)
            over_hi = rhi > out_type.max_int  # saturating to the maximum sets the low bits
            over = over_hi or (rlo < out_type.min_int and not relu)
            # the overflow test compares the bits above the type's range
            cmp_bits = max(int(signed_widths(np.array([rlo]), np.array([rhi]))[0]) - out_type.width, 0)
            rlo, rhi = max(rlo, out_type.min_int), min(rhi, out_type.max_int)
        else:
            rlo, rhi, over, over_hi, cmp_bits = lo_j, hi_j, False, False, 0
        # The emitter's registers are signed and Yosys does no range analysis, so a non-negative
        # value's sign bit is a flip-flop, except after a ReLU that keeps the width (the mux
        # makes that bit provably zero).
        bits = int(signed_widths(np.array([max(rlo, 0) if relu else rlo]), np.array([rhi]))[0])
        if relu and lo_j < 0 < rhi and (bits == int(signed_widths(np.array([rlo]), np.array([rhi]))[0])
                                        or (out_type is not None and not out_type.signed)):
            bits -= 1  # (saturating into an unsigned type also leaves the sign bit provably zero)
        if s < 0:
            # bits appended below the accumulator's LSB are constant zeros (no logic, no FF), or,
            # where saturation to the maximum can set them, one shared flag bit
            bits += s + (1 if over_hi else 0)
        out_bits[j] = max(bits, 1) if (rhi > max(rlo, 0) if relu else rhi > rlo) else 0
        sat_bits[j] = out_bits[j] if over else 0
        sat_cmp[j] = cmp_bits if over else 0
    rounding = out_type is not None and out_type.quant != "TRN"
    saturating = out_type is not None and out_type.overflow == "SAT"
    zero = np.zeros_like(out_bits)
    first_uses = dsp_mask & _first_uses(w, dsp_mask)  # the DSPs Yosys builds
    other = np.stack([np.where(live, acc_bits, 0).astype(np.float64), out_bits if rounding else zero,
                      sat_bits if saturating else zero, sat_cmp if saturating else zero, out_bits if relu else zero,
                      (out_bits > 0).astype(np.float64), *_few_operand_features(terms, bias != 0, acc_bits),
                      *_dsp_features(first_uses, products, product_bits, acc_bits)], axis=-1)
    return np.concatenate([term_feats, other], axis=1), int(first_uses.sum()), float(out_bits.sum())


def _first_uses(w: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Where ``mask`` holds, whether this is the first output (column) to multiply its input by
    this constant: Yosys merges identical multiplies, so only first uses are DSPs of their own."""
    first = np.zeros_like(mask)
    for i in np.flatnonzero(mask.any(axis=1)):
        cols = np.flatnonzero(mask[i])
        _, at = np.unique(w[i, cols], return_index=True)
        first[i, cols[at]] = True
    return first


def _dsp_features(first_uses: np.ndarray, products: np.ndarray, product_bits: np.ndarray,
                  acc_bits: np.ndarray) -> list[np.ndarray]:
    """Per output, in DSP_FEATURES order."""
    acc = acc_bits.astype(np.float64)
    p = products.astype(np.float64)
    live = (p > 0).astype(np.float64)
    return [p, product_bits.astype(np.float64), first_uses.sum(axis=0).astype(np.float64), p * acc, live, live * acc]


def _few_operand_features(terms: np.ndarray, has_bias: np.ndarray, acc_bits: np.ndarray) -> list[np.ndarray]:
    """Per output: nonzero bias, one operand, two operands; each as a flag and times the accumulator width."""
    acc = acc_bits.astype(np.float64)
    out = []
    for flag in (has_bias & (terms > 0), terms == 1, terms == 2):
        f = flag.astype(np.float64)
        out += [f, f * acc]
    return out


def priced_luts(per_output: np.ndarray, coef: np.ndarray) -> float:
    """LUTs of a layer from its per-output features and the coefficients (FEATURES order). The fit
    lets overlapping features take negative coefficients; no output costs less than nothing."""
    return float(np.maximum(per_output @ coef, 0.0).sum())


def sharing_ratio(layer: Dense, in_type: FixedType, mapping: str | None = None) -> float:
    """Adder bits of the layer's shared adder graph (``codesign.core.cmvm``, what the emitter builds)
    over those of one shift-and-add per CSD digit: how much of the per-term price common
    subexpressions save. 1.0 when nothing is shared."""
    w = layer.weight.astype(np.int64)
    if not np.any(w):
        return 1.0
    mapping = mapping or layer.mult
    # the search prices the same layer many times over: keyed by everything the graph depends on
    key = (w.tobytes(), w.shape, layer.bias.astype(np.int64).tobytes(), layer.weight_type, layer.bias_type, in_type,
           mapping)
    if key not in _RATIOS:
        if len(_RATIOS) > 4096:
            _RATIOS.clear()
        _RATIOS[key] = _uncached_ratio(layer, in_type, mapping)
    return _RATIOS[key]


_RATIOS: dict[tuple, float] = {}  # a cache of pure results, not configuration


def pipeline_ffs(layer: Dense, in_type: FixedType, family: str, clock_mhz: float | None, regs_every: int = 0,
                 mapping: str | None = None, out_type: FixedType | None = None, relu: bool = False) -> tuple[int, int]:
    """The flip-flops and cycles that pipelining adds inside one Dense layer's shared adder graph, placed by
    the same rule as the emitter (``codesign.core.timing.schedule_graph``): by ``family``'s delay model for
    ``clock_mhz``, or every ``regs_every`` adder levels; (0, 0) when neither asks for registers or the family
    has no delay model. Each delayed value is one register per cycle it waits, its exact width in FFs, plus
    the stage's valid bit per added cycle."""
    return _pipeline(layer, in_type, family, clock_mhz, regs_every, mapping, out_type, relu)[:2]


def _pipeline(layer: Dense, in_type: FixedType, family: str, clock_mhz: float | None, regs_every: int,
              mapping: str | None, out_type: FixedType | None, relu: bool) -> tuple[int, int, int]:
    """(flip-flops, cycles, shift-register LUTs) of ``pipeline_ffs``'s placement, cached."""
    if not regs_every and not (clock_mhz and family in MODELS):
        return 0, 0, 0
    w = layer.weight.astype(np.int64)
    if not np.any(w):
        return 0, 0, 0
    mapping = mapping or layer.mult
    key = (w.tobytes(), w.shape, layer.bias.astype(np.int64).tobytes(), layer.weight_type, layer.bias_type, in_type,
           mapping, family, clock_mhz, regs_every, out_type, relu)
    if key not in _PIPELINES:
        if len(_PIPELINES) > 4096:
            _PIPELINES.clear()
        graph, frac = _shared_graph(layer, in_type, mapping)
        model = delay_model(family) if family in MODELS else None
        tail, steps = 0.0, [("relu", None)] if relu else []
        if model is not None and out_type is not None:
            tail = max((tail_delay(model, graph.nodes[r.node].lo << r.shift, graph.nodes[r.node].hi << r.shift, frac,
                                   steps + [("cast", out_type)]) for r in graph.outputs if r.node >= 0), default=0.0)
        sched = schedule_graph(graph, model, None if regs_every else clock_mhz, regs_every, None, tail)
        bits, srl = _held_bits(graph, sched, family)
        cycles = sched.last
        if model is not None and out_type is not None and not regs_every:  # registers in the output logic
            outs = [r for r in graph.outputs if r.node >= 0 and graph.nodes[r.node].op != "const"]
            at = max((sched.arrival[r.node] if sched.cycle[r.node] == sched.last else model.clk_to_q for r in outs),
                     default=model.clk_to_q)
            cuts = max((tail_cuts(model, clock_mhz, at, graph.nodes[r.node].lo << r.shift,
                                  graph.nodes[r.node].hi << r.shift, frac, steps + [("cast", out_type)])
                        for r in outs), default=0)
            bits += cuts * sum(graph.nodes[r.node].width + r.shift for r in outs)
            cycles += cuts
        _PIPELINES[key] = (bits + cycles, cycles, srl)
    return _PIPELINES[key]


def pipeline_srls(layer: Dense, in_type: FixedType, family: str, clock_mhz: float | None, regs_every: int = 0,
                  mapping: str | None = None, out_type: FixedType | None = None, relu: bool = False) -> int:
    """The shift-register LUTs of the same placement: on families with SRLs, a value held 3 or more cycles
    between two readers is one LUT per bit (Yosys's shregmap), not that many flip-flops (``pipeline_ffs``
    leaves those out)."""
    return _pipeline(layer, in_type, family, clock_mhz, regs_every, mapping, out_type, relu)[2]


def _held_bits(graph, sched, family: str) -> tuple[int, int]:
    """The placement's delay registers as (flip-flops, shift-register LUTs): each value's delay chain runs from
    its cycle to its last reader's, tapped at every cycle something reads it (``conv_cost.delay_line``'s rule)."""
    from codesign.compress.conv_cost import delay_line  # conv_cost imports this module

    taps: dict[int, set[int]] = {}
    for k, node in enumerate(graph.nodes):
        if node.op == "add":
            for i in (node.a, node.b):
                if graph.nodes[i].op != "const":
                    taps.setdefault(i, {sched.cycle[i]}).add(sched.cycle[k])
    for r in graph.outputs:
        if r.node >= 0 and graph.nodes[r.node].op != "const":
            taps.setdefault(r.node, {sched.cycle[r.node]}).add(sched.last)
    ff = srl = 0.0
    for k, t in taps.items():
        d = delay_line(t, graph.nodes[k].width, family)
        ff, srl = ff + d["ff"], srl + d["srl"]
    return int(ff), int(srl)


_PIPELINES: dict[tuple, tuple[int, int, int]] = {}  # a cache of pure results, not configuration


def _graph_operands(layer: Dense, in_type: FixedType, mapping: str) -> tuple[tuple, int]:
    """What ``cmvm.optimize`` builds the layer's adder graph from, as the emitter gives it (the input type's
    range, the bias at the product's binary point, the DSP-mapped weights), and the sum's fractional bits."""
    w = layer.weight.astype(np.int64)
    limit = {"lut": 10**9, "dsp": 1, "auto": CSD_MAX_DIGITS}.get(mapping, CSD_MAX_DIGITS)
    dsp = (w != 0) & (csd_count(w) > limit)
    pf = in_type.frac + layer.weight_type.frac
    frac = max(pf, layer.bias_type.frac)
    lo, hi = np.full(w.shape[0], in_type.min_int), np.full(w.shape[0], in_type.max_int)
    bias = layer.bias.astype(np.int64) << (frac - layer.bias_type.frac)
    return (w, lo, hi, bias, frac - pf, dsp), frac


def _shared_graph(layer: Dense, in_type: FixedType, mapping: str):
    """The layer's shared adder graph as the emitter builds it from the input type's range, and its frac
    (built once for this model and the energy model's activity: ``activity_model.layer_graph``)."""
    return layer_graph(layer, in_type, mapping)


def _uncached_ratio(layer: Dense, in_type: FixedType, mapping: str) -> float:
    args, _ = _graph_operands(layer, in_type, mapping)
    shared = _shared_graph(layer, in_type, mapping)[0].adder_bits()
    plain = optimize(*args, cse=False).adder_bits()
    return shared / plain if plain else 1.0


def dense_cost(layer: Dense, in_type: FixedType, family: str, mapping: str | None = None,
               out_type: FixedType | None = None, relu: bool = False, regs_every: int = 0,
               datapath: str = "cmvm", clock_mhz: float | None = None) -> LayerCost:
    """Cost of one Dense layer (fully parallel) for inputs of ``in_type``; ``datapath`` as the
    emitter's: "cmvm" scales the per-term price by the shared graph's saving (``sharing_ratio``).
    The pipeline registers the emitter adds for ``clock_mhz`` (or every ``regs_every`` adder levels)
    are priced as FFs (``pipeline_ffs``); a register sits in a LUT's slice, so it adds no LUT."""
    c = coefficients()[family]
    per_output, n_dsp, ff = output_features(layer, in_type, mapping, out_type, relu, family)
    if datapath == "cmvm":
        per_output[:, :len(TERM_FEATURES)] *= sharing_ratio(layer, in_type, mapping) * c.get("cmvm_term_scale", 1.0)
    lut = priced_luts(per_output, np.array([c[k] for k in FEATURES]))
    ff += 1  # the stage's valid bit
    if datapath == "cmvm":
        ff += pipeline_ffs(layer, in_type, family, clock_mhz, regs_every, mapping, out_type, relu)[0]
        lut += pipeline_srls(layer, in_type, family, clock_mhz, regs_every, mapping, out_type, relu)
    elif regs_every:
        w = layer.weight
        terms = int((w != 0).sum(axis=0).max(initial=1))
        depth = int(np.ceil(np.log2(max(terms, 1))))
        ff += ff * 1.5 * max((depth - 1) // regs_every, 0)
    reuse = max(int(layer.reuse), 1)
    if reuse > 1:  # time-multiplexed: fewer multipliers, plus input multiplexers
        bx = in_type.width + (0 if in_type.signed else 1)
        lut = lut / reuse + c["mux_per_bit"] * bx * np.count_nonzero(layer.weight) / reuse
        n_dsp = int(np.ceil(n_dsp / reuse))
    return LayerCost(layer.name, lut=lut, ff=ff, dsp=n_dsp)


def dense_stages(net: Network) -> list[tuple[Dense, FixedType, FixedType | None, bool]]:
    """Each Dense layer with its input type, the type reaching its stage register (after the
    ReLU/Quant that follow it) and whether a ReLU follows."""
    if not net.quantized:
        raise LayerError(f"network {net.name!r} is float; quantize it before pricing it")
    types = net.tensor_types()
    out = []
    t_in = net.input_type
    layers = net.layers
    zero_rows = constant_rows(net)  # HGQ's width-0 elements: their weights build nothing
    for i, layer in enumerate(layers):
        if isinstance(layer, Dense):
            relu = i + 1 < len(layers) and isinstance(layers[i + 1], ReLU)
            j, out_t = i, types[i]
            while j + 1 < len(layers) and isinstance(layers[j + 1], (ReLU, Quant)):
                j += 1
                out_t = types[j]
            out.append((without_rows(layer, zero_rows.get(layer.name)), t_in, out_t, relu))
        elif isinstance(layer, (Weighted, BatchNorm)):
            raise LayerError(f"layer {layer.name!r} ({layer.kind}): the cost model prices Dense networks")
        t_in = types[i] if types[i] is not None else t_in
    return out


def network_cost(net: Network, board: Board, mapping: str | None = None, regs_every: int = 0,
                 datapath: str = "cmvm", clock_mhz: float | None = None) -> dict[str, LayerCost]:
    """Per-layer cost (Dense layers, with the ReLU/Quant after each folded in) on a board's family;
    ``datapath`` as the emitter's (an MLP's only; a CNN's kernels are priced as the shared graph).
    ``clock_mhz``: the pipeline registers the emitter places for that clock are priced (``dense_cost``);
    None: the board's clock (the flow's default ``--clock``); 0: unpipelined."""
    if len(net.input_shape) > 1 or not net.is_chain:  # a CNN or a graph: per tensor, merges and their delay lines
        from codesign.compress.conv_cost import cnn_cost

        return cnn_cost(net, board, mapping, regs_every)
    family = board.synth_family
    clock_mhz = board.clock_mhz if clock_mhz is None else clock_mhz
    return {layer.name: dense_cost(layer, t_in, family, mapping, out_t, relu, regs_every, datapath, clock_mhz)
            for layer, t_in, out_t, relu in dense_stages(net)}


def total_cost(costs: dict[str, LayerCost]) -> dict[str, int]:
    tot = {"lut": 0.0, "ff": 0.0, "dsp": 0.0, "bram": 0.0}
    for c in costs.values():
        for k in tot:
            tot[k] += getattr(c, k)
    return {k: int(round(v)) for k, v in tot.items()}


def fits(total: dict[str, int], budget: dict[str, int]) -> bool:
    return all(total.get(k, 0) <= v for k, v in budget.items())


def binding_resource(total: dict[str, int], budget: dict[str, int]) -> str:
    """The resource most over its budget (ratio of cost to limit)."""
    ratios = {k: total.get(k, 0) / max(v, 1e-9) if v else (float("inf") if total.get(k, 0) else 0.0)
              for k, v in budget.items()}
    return max(ratios, key=ratios.get)
