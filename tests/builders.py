"""The one builder of random quantized Dense layers the tests share."""

from __future__ import annotations

from typing import Any

import numpy as np

from codesign.core.fixed import FixedType
from codesign.core.layers import Dense


def _bounds(r: tuple[int, int] | FixedType) -> tuple[int, int]:
    """``rng.integers``' (low, high) for a range, or for every integer of a type."""
    return (r.min_int, r.max_int + 1) if isinstance(r, FixedType) else r


def random_dense(rng: np.random.Generator, name: str, n_in: int, n_out: int, weight_type: FixedType | str,
                 bias_type: FixedType | str | None = None, weights: tuple[int, int] | FixedType | None = None,
                 biases: tuple[int, int] | FixedType | None = None, sparsity: float | None = None,
                 **layer: Any) -> Dense:
    """A quantized Dense with integer weights drawn from ``weights`` (default: every value of ``weight_type``),
    then, with ``sparsity``, that fraction zeroed, then biases from ``biases`` (default: ``bias_type``'s values),
    in that order from ``rng``. ``layer``: the Dense's other fields (result_type, inputs, mult, ...)."""
    wt = FixedType.parse(weight_type) if isinstance(weight_type, str) else weight_type
    bt = wt if bias_type is None else FixedType.parse(bias_type) if isinstance(bias_type, str) else bias_type
    w = rng.integers(*_bounds(weights if weights is not None else wt), size=(n_in, n_out))
    if sparsity is not None:
        w[rng.random(w.shape) < sparsity] = 0
    b = rng.integers(*_bounds(biases if biases is not None else bt), size=n_out)
    return Dense(name, w, b, weight_type=wt, bias_type=bt, **layer)
