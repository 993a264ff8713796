"""Arithmetic the cost model and the Verilog emitter must agree on: canonical signed digits of a
constant and the exact two's-complement width of an integer range."""

from __future__ import annotations

import numpy as np

CSD_MAX_DIGITS = 6  # above this many nonzero CSD digits, the 'auto' mapping makes a weight a DSP multiply


def csd_digits(v: int) -> list[tuple[int, int]]:
    """Canonical signed digits of ``v`` as ``(shift, +1|-1)``, fewest nonzero digits."""
    out, k = [], 0
    while v:
        if v & 1:
            d = 2 - (v & 3)  # +1 when v % 4 == 1, -1 when v % 4 == 3
            out.append((k, d))
            v -= d
        v >>= 1
        k += 1
    return out


def csd_count(w: np.ndarray) -> np.ndarray:
    """Number of nonzero canonical-signed-digit digits of each integer (vectorized)."""
    x = np.abs(np.asarray(w).astype(np.int64))
    # the non-adjacent form's weight is popcount((3x) XOR x) with the lowest bit dropped
    v = np.bitwise_xor(3 * x, x) >> 1
    count = np.zeros_like(x)
    while np.any(v):
        count += v & 1
        v >>= 1
    return count


def signed_width(lo: int, hi: int) -> int:
    """Bits of the narrowest two's-complement type holding ``[lo, hi]``."""
    w = 1
    while not (-(1 << (w - 1)) <= lo and hi <= (1 << (w - 1)) - 1):
        w += 1
    return w


def signed_widths(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``signed_width`` elementwise (for ranges within float64's exact integers)."""
    m = np.maximum(np.maximum(-lo - 1, hi), 0).astype(np.float64)
    return np.ceil(np.log2(m + 1)).astype(np.int64) + 1
