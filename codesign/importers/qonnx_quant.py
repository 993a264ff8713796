"""QONNX quantizers (``Quant``/``IntQuant``, ``BipolarQuant``, ``Trunc``) as exact fixed-point types.

Semantics are qonnx 1.0's executor (``custom_op/general/intquant.py``, ``trunc.py``,
``bipolar_quant.py``), which ports Brevitas's ``IntQuant``:
``Quant(x, scale, zp, b) = (round(clip(x / scale + zp, lo, hi)) - zp) * scale`` with
``[lo, hi]`` the ``b``-bit signed or unsigned range (one less at the bottom, or for unsigned
at the top, when ``narrow``). The bounds are integers and every rounding mode is monotone, so
clipping first equals rounding first: with ``scale = 2**-f`` and ``zp = 0`` this is the
``ap_fixed<b, b - f>`` conversion with ``AP_SAT`` and the rounding mode below. A signed 1-bit
Quant and ``BipolarQuant`` are sign functions (+-scale), which no ``ap_fixed`` cast is.

Rounding modes: ``ROUND``/``HALF_EVEN`` is ``AP_RND_CONV`` and ``FLOOR`` is ``AP_TRN``; on
values that cannot be negative ``HALF_UP`` (half away from zero) is ``AP_RND`` and ``DOWN``
(toward zero) is ``AP_TRN``. Where nothing is rounded (the input has no more fractional bits
than the output), every mode is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from codesign.core import fixed
from codesign.errors import UnsupportedLayerError
from codesign.core.fixed import FixedType

QUANT_OPS = ("Quant", "IntQuant", "BipolarQuant", "Trunc")
MAX_CONST_FRAC = 40  # an unquantized float constant needing more fractional bits than this is refused
MAX_QUANT_BITS = 62

_ROUNDERS = {
    "ROUND": np.round, "HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor, "DOWN": np.fix,
    "UP": lambda x: np.sign(x) * np.ceil(np.abs(x)),
    "HALF_UP": lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5),
    "HALF_DOWN": lambda x: np.sign(x) * np.ceil(np.abs(x) - 0.5),
}
_ALWAYS = {"ROUND": "RND_CONV", "HALF_EVEN": "RND_CONV", "FLOOR": "TRN"}
_NONNEG = {"HALF_UP": "RND", "DOWN": "TRN"}


@dataclass(frozen=True)
class QuantSpec:
    """One ``Quant`` node's parameters, checked: scale ``2**-frac`` per element, zero point 0."""

    frac: np.ndarray  # integer exponents, broadcastable to the quantized tensor
    bits: int
    signed: bool
    narrow: bool
    mode: str

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1)) + int(self.narrow) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1 - int(self.narrow)

    @property
    def bipolar(self) -> bool:
        return self.signed and self.bits == 1

    def scalar_frac(self, where: str) -> int:
        f = np.unique(self.frac)
        if f.size != 1:
            raise UnsupportedLayerError(
                f"{where}: per-channel activation scales {sorted(2.0 ** -f)} would give each channel its own "
                "fixed-point type; use one power-of-two scale per tensor"
            )
        return int(f[0])


def pow2_exponents(scale: np.ndarray, where: str) -> np.ndarray:
    """``f`` with ``scale == 2**-f`` element-wise, or a refusal naming the node."""
    s = np.asarray(scale, dtype=np.float64)
    bad = ~(np.isfinite(s) & (s > 0))
    if not bad.any():
        m, _ = np.frexp(s)
        bad = m != 0.5
    if bad.any():
        v = float(s[bad].ravel()[0])
        raise UnsupportedLayerError(
            f"{where}: scale {v!r} is not a power of two, so the quantized values have no fixed-point type; use "
            "power-of-two scales (Brevitas: the *FixedPoint quantizers, e.g. Int8WeightPerTensorFixedPoint)"
        )
    return -np.round(np.log2(s)).astype(np.int64)


def check_zero_point(zp: np.ndarray, where: str) -> None:
    z = np.asarray(zp, dtype=np.float64)
    if np.any(z != 0):
        raise UnsupportedLayerError(
            f"{where}: zero-point {float(z[z != 0].ravel()[0])!r} is not zero; fixed-point types have no offset, so "
            "use a symmetric quantizer (zero_point=0)"
        )


def bit_width(b: np.ndarray, where: str) -> int:
    arr = np.asarray(b, dtype=np.float64)
    if arr.size != 1 or arr.ravel()[0] != round(arr.ravel()[0]) or not 1 <= arr.ravel()[0] <= MAX_QUANT_BITS:
        raise UnsupportedLayerError(f"{where}: bit width {arr.ravel().tolist()} must be one integer in 1..{MAX_QUANT_BITS}")
    return int(arr.ravel()[0])


def rounding_mode(mode: str, where: str) -> str:
    m = (mode or "ROUND").upper()
    if m not in _ROUNDERS:
        raise UnsupportedLayerError(f"{where}: unknown rounding_mode {mode!r}; known: {', '.join(_ROUNDERS)}")
    return m


def quantize_const(values: np.ndarray, q: QuantSpec) -> np.ndarray:
    """What qonnx's executor computes for a constant (exact in float64: the scales are powers of two)."""
    y = np.ldexp(np.asarray(values, dtype=np.float64), np.broadcast_to(q.frac, np.shape(values)))
    if q.bipolar:
        y = np.where(y >= 0, 1.0, -1.0)
    else:
        y = _ROUNDERS[q.mode](np.clip(y, q.lo, q.hi))
    return np.ldexp(y, -np.broadcast_to(q.frac, np.shape(values)))


def const_type(q: QuantSpec) -> FixedType:
    """The type of a quantized constant: ``ap_fixed<b, b - f>`` for scale ``2**-f``; with one scale per
    channel, the type holding every channel's range (``b`` bits at the finest scale, the coarsest's top)."""
    f = np.asarray(q.frac)
    lo, hi = int(f.min()), int(f.max())
    bits = 2 if q.bipolar else q.bits  # +-1: two's complement needs 2 bits
    return FixedType(bits + hi - lo, bits - lo, q.signed)


def exact_type(values: np.ndarray, max_frac: int = MAX_CONST_FRAC) -> FixedType | None:
    """The narrowest type holding dyadic ``values`` exactly (None when more than ``max_frac`` bits are needed)."""
    v = np.asarray(values, dtype=np.float64)
    for frac in range(0, max_frac + 1):
        s = np.ldexp(v, frac)
        if np.all(s == np.round(s)) and np.all(np.abs(s) < 2.0**62):
            ints = np.round(s).astype(np.int64)
            return fixed.type_for_range(min(int(ints.min(initial=0)), 0), max(int(ints.max(initial=0)), 0), frac)
    return None


def activation_type(q: QuantSpec, src: FixedType | None, nonneg: bool, where: str) -> FixedType:
    """The ``ap_fixed`` cast equal to ``q`` on every value of ``src`` (None: any float), or a refusal."""
    if q.bipolar:
        raise UnsupportedLayerError(
            f"{where}: a signed 1-bit quantizer on activations is a sign function (+-scale), which no ap_fixed cast "
            "is; it works on weights, or use 2 bits for activations"
        )
    frac = q.scalar_frac(where)
    t = FixedType(q.bits, q.bits - frac, q.signed, "TRN", "SAT")
    rounds = src is None or src.frac > frac
    clipped_nonneg = nonneg or not q.signed
    if not rounds:
        quant = _ALWAYS.get(q.mode, "TRN")
    elif q.mode in _ALWAYS:
        quant = _ALWAYS[q.mode]
    elif clipped_nonneg and q.mode in _NONNEG:
        quant = _NONNEG[q.mode]
    else:
        raise UnsupportedLayerError(
            f"{where}: rounding_mode {q.mode!r} has no ap_fixed equivalent on values that can be negative; use ROUND "
            "(half to even) or FLOOR"
        )
    if q.narrow and not _narrow_is_inert(q, frac, src, nonneg):
        raise UnsupportedLayerError(
            f"{where}: narrow=1 clips to [{q.lo}, {q.hi}], a range ap_fixed saturation does not have; export the "
            "activation with narrow_range=False (Brevitas' default for activations)"
        )
    return t.with_modes(quant=quant)


def _narrow_is_inert(q: QuantSpec, frac: int, src: FixedType | None, nonneg: bool) -> bool:
    """True when the one value that ``narrow`` removes can never occur for inputs of ``src``."""
    if q.signed:
        if nonneg:
            return True
        return src is not None and src.min_value >= math.ldexp(q.lo, -frac)
    return src is not None and src.max_value <= math.ldexp(q.hi, -frac)
