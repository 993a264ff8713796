"""Fixed-point types with the meaning of ``ap_fixed<W,I,Q,O>`` / ``ap_ufixed``.

A value of type ``FixedType(signed, width, integer)`` is an integer ``q`` standing for
``q * 2**-(width - integer)``. All arithmetic here is on those integers, exactly: numpy
int64 where the widths allow, Python ints (numpy object arrays) otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from codesign.errors import FixedTypeError

QUANT_MODES = ("TRN", "RND", "RND_CONV")
OVERFLOW_MODES = ("WRAP", "SAT")
# Widths up to this many bits are computed in int64; a product of two such values plus
# an accumulation still fits, larger ones switch to Python ints.
INT64_SAFE_BITS = 62

_TYPE_RE = re.compile(
    r"^\s*ap_(u?)fixed\s*<\s*(\d+)\s*,\s*(-?\d+)\s*(?:,\s*(?:AP_)?(\w+)\s*)?(?:,\s*(?:AP_)?(\w+)\s*)?>\s*$"
)
_INT_RE = re.compile(r"^\s*ap_(u?)int\s*<\s*(\d+)\s*>\s*$")


@dataclass(frozen=True)
class FixedType:
    """``ap_fixed<width, integer, quant, overflow>`` (``ap_ufixed`` when not signed)."""

    width: int
    integer: int
    signed: bool = True
    quant: str = "TRN"
    overflow: str = "WRAP"

    def __post_init__(self) -> None:
        if not isinstance(self.width, (int, np.integer)) or isinstance(self.width, bool) or self.width < 1:
            raise FixedTypeError(f"fixed-point width must be a positive integer, not {self.width!r}")
        if not isinstance(self.integer, (int, np.integer)) or isinstance(self.integer, bool):
            raise FixedTypeError(f"fixed-point integer bits must be an integer, not {self.integer!r}")
        if self.quant not in QUANT_MODES:
            raise FixedTypeError(f"quantization mode must be one of {', '.join(QUANT_MODES)}, not {self.quant!r}")
        if self.overflow not in OVERFLOW_MODES:
            raise FixedTypeError(f"overflow mode must be one of {', '.join(OVERFLOW_MODES)}, not {self.overflow!r}")
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "integer", int(self.integer))

    @property
    def frac(self) -> int:
        """Number of fractional bits (may be negative)."""
        return self.width - self.integer

    @property
    def min_int(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max_int(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def step(self) -> float:
        return 2.0 ** -self.frac

    @property
    def min_value(self) -> float:
        return self.min_int * self.step

    @property
    def max_value(self) -> float:
        return self.max_int * self.step

    def __str__(self) -> str:
        return self.to_hls()

    def to_hls(self) -> str:
        """The hls4ml / Vivado HLS spelling, e.g. ``ap_fixed<8,3,AP_RND_CONV,AP_SAT>``."""
        base = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{base}<{self.width},{self.integer},AP_{self.quant},AP_{self.overflow}>"

    @classmethod
    def parse(cls, text: str) -> "FixedType":
        """Parse ``ap_fixed<W,I[,Q[,O]]>``, ``ap_ufixed<...>`` or ``ap_int<W>``/``ap_uint<W>``."""
        if isinstance(text, FixedType):
            return text
        if not isinstance(text, str):
            raise FixedTypeError(f"a fixed-point type must be a string like 'ap_fixed<16,6>', not {text!r}")
        m = _TYPE_RE.match(text)
        if m:
            unsigned, w, i, q, o = m.groups()
            return cls(int(w), int(i), not unsigned, (q or "TRN").upper(), (o or "WRAP").upper())
        m = _INT_RE.match(text)
        if m:
            unsigned, w = m.groups()
            return cls(int(w), int(w), not unsigned)
        raise FixedTypeError(
            f"cannot parse fixed-point type {text!r}: expected e.g. 'ap_fixed<16,6>', "
            "'ap_ufixed<8,0,AP_RND_CONV,AP_SAT>' or 'ap_int<8>'"
        )

    def to_json(self) -> str:
        return self.to_hls()

    def with_modes(self, quant: str | None = None, overflow: str | None = None) -> "FixedType":
        return FixedType(self.width, self.integer, self.signed, quant or self.quant, overflow or self.overflow)

    def contains(self, other: "FixedType") -> bool:
        """True when every value of ``other`` is exactly representable in this type."""
        if other.frac > self.frac:
            return False
        shift = self.frac - other.frac
        return self.min_int <= (other.min_int << shift) and (other.max_int << shift) <= self.max_int


def needs_object(width: int) -> bool:
    return width > INT64_SAFE_BITS


def as_int_array(values: np.ndarray, big: bool) -> np.ndarray:
    """Integers as int64, or as Python ints in an object array when ``big``."""
    arr = np.asarray(values)
    if big:
        return np.vectorize(int, otypes=[object])(arr) if arr.size else arr.astype(object)
    if arr.dtype == object:
        return arr.astype(np.int64)
    return arr.astype(np.int64, copy=False)


def round_shift(q: np.ndarray, shift: int, quant: str) -> np.ndarray:
    """Drop ``shift`` low bits of integers ``q`` with quantization mode ``quant``."""
    if shift <= 0:
        return q << (-shift) if shift < 0 else q
    floor = q >> shift
    if quant == "TRN":
        return floor
    rem = q - (floor << shift)  # in [0, 2**shift)
    half = 1 << (shift - 1)
    if quant == "RND":  # ties toward +infinity, as AP_RND
        return floor + (rem >= half)
    # RND_CONV: ties to even
    up = (rem > half) | ((rem == half) & ((floor & 1) == 1))
    return floor + up


def fit_overflow(q: np.ndarray, t: FixedType) -> np.ndarray:
    """Apply the overflow mode of ``t`` to integers already at ``t``'s scale."""
    if t.overflow == "SAT":
        lo, hi = t.min_int, t.max_int
        if q.dtype == object:
            return np.vectorize(lambda v: min(max(v, lo), hi), otypes=[object])(q) if q.size else q
        return np.clip(q, lo, hi)
    mod = 1 << t.width
    if q.dtype == object:
        half = 1 << (t.width - 1)

        def wrap(v: int) -> int:
            v &= mod - 1
            return v - mod if t.signed and v >= half else v

        return np.vectorize(wrap, otypes=[object])(q) if q.size else q
    if t.width >= 63:
        raise FixedTypeError(f"wrapping to {t} needs Python integers; got an int64 array")
    wrapped = np.bitwise_and(q, np.int64(mod - 1))
    if t.signed:
        wrapped = wrapped - ((wrapped >= (1 << (t.width - 1))) * mod)
    return wrapped


def cast(q: np.ndarray, src: FixedType, dst: FixedType) -> np.ndarray:
    """Exact ``ap_fixed`` assignment of integers ``q`` of type ``src`` to type ``dst``."""
    big = needs_object(max(src.width, dst.width) + abs(src.frac - dst.frac) + 1)
    q = as_int_array(q, big)
    q = round_shift(q, src.frac - dst.frac, dst.quant)
    out = fit_overflow(q, dst)
    return out if needs_object(dst.width) else as_int_array(out, False)


def quantize(x: np.ndarray, t: FixedType) -> np.ndarray:
    """Float values to integers of type ``t`` (the conversion ``ap_fixed`` does from double)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise FixedTypeError(f"cannot quantize NaN or infinite values to {t}")
    scaled = np.ldexp(x, t.frac)  # exact: multiplication by a power of two
    floor = np.floor(scaled)
    rem = scaled - floor  # exact for float64
    if t.quant == "TRN":
        q = floor
    elif t.quant == "RND":
        q = floor + (rem >= 0.5)
    else:
        q = floor + ((rem > 0.5) | ((rem == 0.5) & (np.mod(floor, 2) == 1)))
    big = needs_object(t.width + 1) or np.max(np.abs(q), initial=0) >= 2.0**62
    qi = as_int_array(q, big) if not big else np.vectorize(lambda v: int(v), otypes=[object])(q)
    return fit_overflow(qi, t)


def to_float(q: np.ndarray, t: FixedType) -> np.ndarray:
    """Integers of type ``t`` to their float64 values (exact while width <= 53)."""
    return np.ldexp(np.asarray(q, dtype=np.float64), -t.frac)


def representable(x: np.ndarray, t: FixedType) -> bool:
    """True when every value of ``x`` is exactly a value of ``t``."""
    x = np.asarray(x, dtype=np.float64)
    scaled = np.ldexp(x, t.frac)
    if not np.all(scaled == np.round(scaled)):
        return False
    return bool(np.all((scaled >= t.min_int) & (scaled <= t.max_int)))


def type_for_range(lo: int, hi: int, frac: int, quant: str = "TRN", overflow: str = "WRAP") -> FixedType:
    """The narrowest type with ``frac`` fractional bits holding integers in ``[lo, hi]``."""
    signed = lo < 0
    width = 1
    while True:
        t = FixedType(width, width - frac, signed, quant, overflow)
        if t.min_int <= lo and hi <= t.max_int:
            return t
        width += 1


def corner_values(t: FixedType) -> np.ndarray:
    """Integer corner cases of a type: extremes, zero, +-1 LSB, and the mid-scale points."""
    vals = {t.min_int, t.max_int, 0, 1, t.min_int + 1, t.max_int - 1, t.max_int // 2, t.max_int // 2 + 1}
    if t.signed:
        vals |= {-1, t.min_int // 2}
    return np.array(sorted(v for v in vals if t.min_int <= v <= t.max_int), dtype=np.int64)
