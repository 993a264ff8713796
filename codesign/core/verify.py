"""Verification vectors and the one comparison with the reference.

The HLS C simulation and the RTL co-simulation are checked by the same two functions, so
both are held to the same vectors and report a mismatch the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from codesign.core import fixed
from codesign.core.network import Network


def verification_inputs(net: Network, X: np.ndarray | None = None, n_total: int = 10000, seed: int = 0) -> np.ndarray:
    """Integer inputs: the data (quantized), corner vectors of the input type, then random values
    (uniform and corner-heavy) until there are ``n_total``."""
    t = net.input_type
    rng = np.random.default_rng(seed)
    n_in = int(np.prod(net.input_shape))
    parts = []
    if X is not None and len(X):
        parts.append(net.quantize_input(X).reshape(len(X), n_in))
    corners = fixed.corner_values(t)
    parts.append(np.repeat(corners[:, None], n_in, axis=1))  # every element at each corner together
    parts.append(rng.choice(corners, size=(256, n_in)))
    have = sum(len(p) for p in parts)
    n_rand = max(n_total - have, 0)
    parts.append(rng.integers(t.min_int, t.max_int + 1, size=(n_rand, n_in), dtype=np.int64))
    return np.concatenate(parts).astype(np.int64).reshape(-1, *net.input_shape)


@dataclass(frozen=True)
class Comparison:
    """How an implementation's integer outputs compare with the reference's."""

    samples: int
    mismatches: int  # samples with at least one differing output
    first_mismatch: dict[str, Any] | None  # sample, output, expected, received (integers), input

    @property
    def bit_exact(self) -> bool:
        return self.mismatches == 0


def compare_with_reference(net: Network, q: np.ndarray, got: np.ndarray, exact: np.ndarray | None = None) -> Comparison:
    """Compare integer outputs ``got`` (samples × outputs, in the output type) for integer inputs ``q``
    with the reference. ``exact`` marks elements that were exactly a value of the output type (an
    implementation that returns floats); an element that was not counts as a mismatch."""
    expected = net.forward_int(q).values.reshape(len(q), -1).astype(np.int64)
    got = np.asarray(got).reshape(len(q), -1)
    bad_mask = expected != got
    if exact is not None:
        bad_mask |= ~np.asarray(exact, dtype=bool).reshape(bad_mask.shape)
    bad = np.argwhere(bad_mask)
    if not len(bad):
        return Comparison(int(len(q)), 0, None)
    s, j = (int(v) for v in bad[0])
    first = {"sample": s, "output": j, "expected": int(expected[s, j]), "received": int(got[s, j]),
             "input": np.asarray(q[s]).reshape(-1).tolist()}
    return Comparison(int(len(q)), int(len(np.unique(bad[:, 0]))), first)
