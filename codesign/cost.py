"""The analytic cost model: LUT, FF and DSP of the fully parallel datapath, per layer.

It prices the structure ``rtl_sim`` emits: one constant multiplication per nonzero weight
(canonical-signed-digit shift-and-add in LUTs, or a DSP multiply), an adder tree per
output, rounding, saturation and ReLU logic, and the pipeline registers. A pruned weight
costs nothing. Coefficients per synthesis family are calibrated against Yosys
(``bench/calibrate_cost.py`` refits ``cost_coeffs.json``). Everything is numpy over the
weight matrix, so one evaluation takes well under a millisecond for jet-tagger-sized layers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from codesign.board import Board
from codesign.errors import LayerError
from codesign.fixed import FixedType
from codesign.layers import BatchNorm, Dense, Layer, Quant, ReLU, Weighted
from codesign.network import Network

LUT_INPUTS = 6  # inputs of the family's LUT (LUT6 on 7-series/UltraScale+; a Cyclone V ALM is similar)
CSD_MAX_DIGITS = 6  # must match rtl_sim.verilog: above this, 'auto' maps a weight to a DSP


@lru_cache(maxsize=None)
def coefficients() -> dict[str, dict[str, float]]:
    """Per synthesis family: LUT per adder bit, per rounding/saturation bit, etc."""
    return json.loads(resources.files("codesign").joinpath("cost_coeffs.json").read_text())


@dataclass
class LayerCost:
    name: str
    lut: float = 0.0
    ff: float = 0.0
    dsp: float = 0.0
    bram: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"lut": round(self.lut), "ff": round(self.ff), "dsp": round(self.dsp), "bram": round(self.bram)}


def csd_count(w: np.ndarray) -> np.ndarray:
    """Number of nonzero canonical-signed-digit digits of each integer (vectorized)."""
    x = np.abs(w.astype(np.int64))
    # the number of nonzero CSD digits equals popcount(x ^ (3x)) / 2... use the NAF identity:
    # popcount(x XOR 3x) counts digit changes; NAF weight = popcount((3x) ^ x) >> 1 bits
    three = 3 * x
    v = np.bitwise_xor(three, x) >> 1
    count = np.zeros_like(x)
    while np.any(v):
        count += v & 1
        v >>= 1
    return count


def _bits(v: np.ndarray) -> np.ndarray:
    """Bits of the two's-complement width holding |v| with a sign (elementwise, v >= 0)."""
    v = np.maximum(np.asarray(v, dtype=np.float64), 1)
    return np.ceil(np.log2(v + 1)).astype(np.int64) + 1


# LUTs are linear in these. Adders fed by signed inputs cost more than unsigned ones (every
# shifted term carries live sign-extension bits), so the adder features are split by the
# input's signedness.
FEATURES = ("mult_bits_signed", "mult_bits_unsigned", "tree_bits_signed", "tree_bits_unsigned",
            "round_bits", "sat_bits", "sat_cmp_bits", "relu_bits", "outputs", "nonzero")


def _signed_bits(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Two's-complement width holding [lo, hi] (elementwise), as rtl_sim sizes its wires."""
    m = np.maximum(np.maximum(-lo - 1, hi), 0).astype(np.float64)
    return np.ceil(np.log2(m + 1)).astype(np.int64) + 1


def _tree_bits(lo: np.ndarray, hi: np.ndarray, tz: np.ndarray) -> float:
    """Sum of adder widths of the pairwise adder tree over leaf intervals (emitter's order).

    Below the larger trailing-zero count of its operands an adder only passes bits through,
    so those bits are not counted."""
    total = 0.0
    while len(lo) > 1:
        n = len(lo) // 2 * 2
        slo, shi = lo[0:n:2] + lo[1:n:2], hi[0:n:2] + hi[1:n:2]
        stz = np.minimum(tz[0:n:2], tz[1:n:2])
        total += float(np.sum(np.maximum(_signed_bits(slo, shi) - np.maximum(tz[0:n:2], tz[1:n:2]), 1)))
        if len(lo) % 2:
            slo, shi, stz = np.append(slo, lo[-1]), np.append(shi, hi[-1]), np.append(stz, tz[-1])
        lo, hi, tz = slo, shi, stz
    return total


def _csd_adder_bits(w: np.ndarray, pbits: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Per weight: the summed width of the shift-and-add chain's adders (the emitter adds the
    CSD terms lowest shift first, and bits below a term's shift pass through), and the
    weight's trailing zeros."""
    v = np.abs(w.astype(np.int64))
    bits = np.zeros_like(v)
    first = np.full_like(v, -1)
    k = 0
    while np.any(v):
        odd = (v & 1) == 1
        d = np.where(odd, 2 - (v & 3), 0)
        new_first = odd & (first < 0)
        first = np.where(new_first, k, first)
        bits += np.where(odd & ~new_first, np.maximum(pbits - (k + shift), 1), 0)
        v = (v - d) >> 1
        k += 1
    return bits, np.maximum(first, 0) + shift


def dense_features(layer: Dense, in_type: FixedType, mapping: str | None = None, out_type: FixedType | None = None,
                   relu: bool = False) -> tuple[dict[str, float], int, float]:
    """The structural quantities the LUT count is linear in (bits of adders and of output logic,
    from the same exact intervals the Verilog emitter uses), the DSP count, and the output FFs."""
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
    else:
        dsp_mask = nz & (digits > CSD_MAX_DIGITS)
    xlo, xhi = in_type.min_int, in_type.max_int
    pf = in_type.frac + layer.weight_type.frac
    frac = max(pf, layer.bias_type.frac)
    sh, bsh = frac - pf, frac - layer.bias_type.frac
    plo = np.minimum(w * xlo, w * xhi) << sh
    phi = np.maximum(w * xlo, w * xhi) << sh
    pbits = _signed_bits(plo, phi)
    adder_bits, tz = _csd_adder_bits(w, pbits, sh)
    if in_type.width <= LUT_INPUTS:
        # every product bit is a function of at most LUT_INPUTS input bits: the logic
        # optimizer makes it one LUT per product bit when that beats the adder chain
        adder_bits = np.minimum(adder_bits, pbits)
    mult_bits = float(np.sum(np.where(nz & ~dsp_mask, adder_bits, 0)))
    tree_bits = 0.0
    out_bits = np.zeros(w.shape[1])
    sat_bits = np.zeros(w.shape[1])
    sat_cmp = np.zeros(w.shape[1])
    bias = layer.bias.astype(np.int64) << bsh
    for j in range(w.shape[1]):
        col = np.flatnonzero(nz[:, j])
        lo, hi, z = plo[col, j], phi[col, j], tz[col, j]
        if bias[j]:
            b = int(bias[j])
            lo, hi = np.append(lo, b), np.append(hi, b)
            z = np.append(z, (b & -b).bit_length() - 1)
        if len(lo) == 0:
            continue
        tree_bits += _tree_bits(lo, hi, z)
        alo, ahi = int(lo.sum()), int(hi.sum())
        if alo == ahi:
            continue  # a constant output (bias only): no logic, no register
        s = 0
        if out_type is not None:
            s = frac - out_type.frac
            rlo, rhi = (alo >> s, (ahi >> s) + 1) if s > 0 else (alo << -s, ahi << -s)
            over_hi = rhi > out_type.max_int  # saturating to the maximum sets the low bits
            over = over_hi or (rlo < out_type.min_int and not relu)
            # the overflow test compares the bits above the type's range
            cmp_bits = max(int(_signed_bits(np.array([rlo]), np.array([rhi]))[0]) - out_type.width, 0)
            rlo, rhi = max(rlo, out_type.min_int), min(rhi, out_type.max_int)
        else:
            rlo, rhi, over, over_hi, cmp_bits = alo, ahi, False, False, 0
        # The emitter's registers are signed and Yosys does no range analysis, so a non-negative
        # value's sign bit is a flip-flop, except after a ReLU that keeps the width (the mux
        # makes that bit provably zero).
        bits = int(_signed_bits(np.array([max(rlo, 0) if relu else rlo]), np.array([rhi]))[0])
        if relu and alo < 0 < rhi and (bits == int(_signed_bits(np.array([rlo]), np.array([rhi]))[0])
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
    sign = "signed" if in_type.signed else "unsigned"
    other = "unsigned" if in_type.signed else "signed"
    feats = {
        f"mult_bits_{sign}": mult_bits,
        f"mult_bits_{other}": 0.0,
        f"tree_bits_{sign}": tree_bits,
        f"tree_bits_{other}": 0.0,
        "round_bits": float(out_bits.sum()) if rounding else 0.0,
        "sat_bits": float(sat_bits.sum()) if saturating else 0.0,
        "sat_cmp_bits": float(sat_cmp.sum()) if saturating else 0.0,
        "relu_bits": float(out_bits.sum()) if relu else 0.0,
        "outputs": float(np.count_nonzero(out_bits)),
        "nonzero": float(np.count_nonzero(nz & ~dsp_mask)),
    }
    return feats, int(np.sum(dsp_mask)), float(out_bits.sum())


def dense_cost(layer: Dense, in_type: FixedType, family: str, mapping: str | None = None,
               out_type: FixedType | None = None, relu: bool = False, regs_every: int = 0) -> LayerCost:
    """Cost of one Dense layer (fully parallel) for inputs of ``in_type``."""
    c = coefficients()[family]
    feats, n_dsp, ff = dense_features(layer, in_type, mapping, out_type, relu)
    lut = sum(c[k] * v for k, v in feats.items())
    ff += 1  # the stage's valid bit
    if regs_every:
        w = layer.weight
        terms = int((w != 0).sum(axis=0).max(initial=1))
        depth = int(np.ceil(np.log2(max(terms, 1))))
        ff += ff * 1.5 * max((depth - 1) // regs_every, 0)
    reuse = max(int(layer.reuse), 1)
    if reuse > 1:  # time-multiplexed: fewer multipliers, plus input multiplexers
        bx = in_type.width + (0 if in_type.signed else 1)
        lut = lut / reuse + c["mux_per_bit"] * bx * np.count_nonzero(layer.weight) / reuse
        n_dsp = int(np.ceil(n_dsp / reuse))
    return LayerCost(layer.name, lut=lut + c["lut_per_dsp"] * n_dsp, ff=ff, dsp=n_dsp)


def _acc_width(col: np.ndarray, bx: int, bias: int) -> int:
    s = float(np.sum(np.abs(col))) * (2.0 ** (bx - 1)) + abs(bias)
    return int(np.ceil(np.log2(s + 1))) + 1 if s > 0 else 1


def dense_stages(net: Network) -> list[tuple[Dense, FixedType, FixedType | None, bool]]:
    """Each Dense layer with its input type, the type reaching its stage register (after the
    ReLU/Quant that follow it) and whether a ReLU follows."""
    if not net.quantized:
        raise LayerError(f"network {net.name!r} is float; quantize it before pricing it")
    types = net.tensor_types()
    out = []
    t_in = net.input_type
    layers = net.layers
    for i, layer in enumerate(layers):
        if isinstance(layer, Dense):
            relu = i + 1 < len(layers) and isinstance(layers[i + 1], ReLU)
            j, out_t = i, types[i]
            while j + 1 < len(layers) and isinstance(layers[j + 1], (ReLU, Quant)):
                j += 1
                out_t = types[j]
            out.append((layer, t_in, out_t, relu))
        elif isinstance(layer, (Weighted, BatchNorm)):
            raise LayerError(f"layer {layer.name!r} ({layer.kind}): the cost model prices Dense networks")
        t_in = types[i] if types[i] is not None else t_in
    return out


def network_cost(net: Network, board: Board | str, mapping: str | None = None, regs_every: int = 0) -> dict[str, LayerCost]:
    """Per-layer cost (Dense layers, with the ReLU/Quant after each folded in) on a board's family."""
    from codesign.board import load_board

    family = load_board(board).synth_family
    return {layer.name: dense_cost(layer, t_in, family, mapping, out_t, relu, regs_every)
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


def hardware_layer(layer: Layer) -> bool:
    return isinstance(layer, Dense)
