"""Random Dense layers spanning the space the cost model is calibrated on.

``bench/calibrate_cost.py`` fits ``cost_coeffs.json`` on some seeds of this sweep and scores
held-out ones; the tests check the error bound on a seed never fitted. One generator for
both, so "random layers" means the same thing in the fit, the table and the test.
"""

from __future__ import annotations

import numpy as np

from codesign.core.fixed import FixedType
from codesign.core.layers import Dense, Output, ReLU
from codesign.core.network import Network

FAN_IN = (8, 16, 32, 64)
FAN_OUT = (4, 8, 16, 32)
SPARSITY = (0.3, 0.5, 0.7, 0.9)
INPUT_BITS = (4, 6, 8, 12, 16)
WEIGHT_BITS = {"lut": (3, 4, 6, 8), "dsp": (4, 6, 8, 12, 16)}


def random_layer(rng: np.random.Generator, i: int, mult: str = "lut", formats: str = "calibrated",
                 min_nonzero: int = 1, max_nonzero: int = 600) -> tuple[Network, dict]:
    """Network ``sweep<i>``: a Dense (``mult`` mapping) with random fan-in/out, sparsity, weight
    width, input width and signedness, result width and an optional ReLU; between ``min_nonzero``
    and ``max_nonzero`` nonzero weights. ``formats``: "calibrated" is the space the shipped
    coefficients are fitted on (inputs with up to 4 integer bits, results with 4, rounded
    convergently and saturated, as compression builds them); "varied" also draws the input's
    binary point and the result's integer bits, rounding (TRN or RND_CONV) and overflow (SAT or
    WRAP). Returns the network and a dict describing it."""
    # the draws for "calibrated" come in the order the shipped fit's sweep drew them (its
    # layers, and so their cached synthesis results, stay the same); "varied" adds its own
    n_in, n_out = int(rng.choice(FAN_IN)), int(rng.choice(FAN_OUT))
    n = n_in * n_out
    sparsity = max(float(rng.choice(SPARSITY)), 1.0 - max_nonzero / n)
    sparsity = min(sparsity, 1.0 - min_nonzero / n)
    wb = int(rng.choice(WEIGHT_BITS[mult]))
    xb = int(rng.choice(INPUT_BITS))
    if formats == "varied":
        signed = bool(rng.random() < 0.5)
        x_int = int(rng.integers(1 if signed else 0, xb))
    relu = bool(rng.random() < 0.6)
    wt = FixedType(wb, 1)
    w = rng.integers(wt.min_int, wt.max_int + 1, size=(n_in, n_out))
    w[rng.random(w.shape) < sparsity] = 0
    b = rng.integers(wt.min_int, wt.max_int + 1, size=n_out)
    r_bits = int(rng.choice([8, 10, 12, 16]))
    if formats == "varied":
        rt = FixedType(r_bits, int(rng.choice([2, 4, 6])), True, str(rng.choice(["RND_CONV", "TRN"])),
                       str(rng.choice(["SAT", "WRAP"])))
    else:
        rt = FixedType(r_bits, 4, True, "RND_CONV", "SAT")
        signed, x_int = bool(rng.random() < 0.5), min(xb - 1, 4)
    d = Dense("fc", w, b, weight_type=wt, bias_type=wt, result_type=rt, mult=mult)
    layers = [d] + ([ReLU("relu")] if relu else []) + [Output("o")]
    net = Network(f"sweep{i}", (n_in,), layers, FixedType(xb, x_int, signed))
    return net, {"n_in": n_in, "n_out": n_out, "sparsity": round(float(np.mean(w == 0)), 2),
                 "weight_bits": wb, "input_bits": xb, "relu": relu}


def random_layers(seed: int, n: int, mult: str = "lut", formats: str = "calibrated", min_nonzero: int = 1,
                  max_nonzero: int = 600) -> list[tuple[Network, dict]]:
    """``n`` random layers from one seed (ids ``s<seed>_sweep<i>``)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        net, info = random_layer(rng, i, mult, formats, min_nonzero, max_nonzero)
        out.append((net, {"id": f"s{seed}_{net.name}", **info}))
    return out


def small_mlp() -> Network:
    """A three-layer quantized MLP (16-12-8-4, 6-bit weights, a third of them pruned, seed 7): the RTL tests' and
    the timing bench's case with several layers but not the digits network's size."""
    r = np.random.default_rng(7)
    wt, layers = FixedType(6, 1), []
    for i, (n_in, n_out) in enumerate([(16, 12), (12, 8), (8, 4)], start=1):
        w = r.integers(wt.min_int, wt.max_int + 1, size=(n_in, n_out))
        w[r.random(w.shape) < 0.33] = 0
        layers.append(Dense(f"fc{i}", w, r.integers(-20, 20, size=n_out), weight_type=wt, bias_type=wt,
                            result_type=FixedType(12, 5, True, "RND_CONV", "SAT")))
        if i < 3:
            layers.append(ReLU(f"relu{i}"))
    return Network("small_mlp", (16,), layers + [Output("out")], FixedType(8, 3))
