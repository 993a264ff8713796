"""HGQ proxy models: ``FixedPointQuantizer`` layers carry exact fixed-point formats as data.

HGQ (v1, ``HGQ.proxy.fixed_point_quantizer``) quantizes with ``gfixed_quantizer(x, keep_negative,
bits, integers, RND, SAT)``: ``f = bits - integers``, ``q = SAT(RND(x * 2**f)) / 2**f``, zero where
``bits == 0``, with ``RND`` floor(x + 1/2) (``AP_RND``), ``RND_CONV`` half to even, ``TRN`` floor and
``WRAP``/``SAT`` the ``ap_fixed`` overflow modes of ``ap_(u)fixed<bits, integers>`` — the same
per-element cast hls4ml generates (``ap_(u)fixed<b,i,AP_RND,AP_SAT>(inp[j])``). The three arrays
are weights of the layer (int8, broadcast over the tensor); where they vary, every element keeps its
own format (``Quant`` with per-element formats). A proxy's Dense/Conv weights are already on their
fixed-point grid, so their types are read off the values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from codesign.core import fixed
from codesign.errors import ModelFileError, UnsupportedLayerError
from codesign.core.fixed import FixedType
from codesign.core.layers import Quant

HGQ_QUANTIZERS = ("FixedPointQuantizer", "HGQ>FixedPointQuantizer")
MAX_GRID_FRAC = 40


def check_modes(name: str, cfg: dict[str, Any]) -> tuple[str, str]:
    """The layer's rounding and overflow modes, if the IR has them."""
    rnd, sat = cfg.get("RND", "TRN"), cfg.get("SAT", "WRAP")
    if rnd not in ("TRN", "RND", "RND_CONV"):
        raise UnsupportedLayerError(f"layer {name!r} (FixedPointQuantizer): rounding mode {rnd!r} is not supported; "
                                    "supported: TRN, RND, RND_CONV")
    if sat not in ("WRAP", "SAT"):
        raise UnsupportedLayerError(f"layer {name!r} (FixedPointQuantizer): overflow mode {sat!r} is not supported; "
                                    "supported: WRAP, SAT")
    return rnd, sat


def quantizer_layer(name: str, cfg: dict[str, Any], w: dict[str, np.ndarray], shape: tuple[int, ...]) -> Quant:
    """The IR layer of one FixedPointQuantizer acting on a tensor of ``shape`` (no batch axis)."""
    rnd, sat = check_modes(name, cfg)
    try:
        k, b, i = (np.asarray(w[n]) for n in ("keep_negative", "bits", "integers"))
    except KeyError as e:
        raise ModelFileError(f"layer {name!r} (FixedPointQuantizer): no {e.args[0]!r} array in the weights") from None
    if not k.shape == b.shape == i.shape:
        raise ModelFileError(f"layer {name!r}: keep_negative, bits and integers differ in shape")
    try:
        k, b, i = (np.broadcast_to(a, (1, *shape))[0].astype(np.int64) for a in (k, b, i))
    except ValueError:
        raise ModelFileError(f"layer {name!r}: its formats of shape {b.shape} do not fit the tensor {shape}") from None
    if np.any((k != 0) & (k != 1)) or np.any(b < 0) or np.any(b > 62) or np.any(np.abs(i) > 64):
        raise ModelFileError(f"layer {name!r}: keep_negative must be 0 or 1 and bits in [0, 62]")
    live = b > 0
    k, i = np.where(live, k, 0), np.where(live, i, 0)
    if b.size and live.all() and all(np.all(a == a.flat[0]) for a in (k, b, i)):
        return Quant(name, FixedType(int(b.flat[0]), int(i.flat[0]), bool(k.flat[0]), rnd, sat))
    signed = bool(np.any(k[live])) if live.any() else False
    int_bits = int(np.max((i - k)[live], initial=0))
    frac = int(np.max((b - i)[live], initial=0))
    env = FixedType(max(int_bits + frac + signed, 1), int_bits + signed, signed, rnd, sat)
    return Quant(name, env, element_width=b, element_integer=i, element_signed=k.astype(bool))


def grid_type(values: np.ndarray, layer: str, what: str) -> tuple[np.ndarray, FixedType]:
    """Integers and the narrowest type of values that are already on a fixed-point grid (a proxy's weights)."""
    x = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ModelFileError(f"layer {layer!r}: {what} holds NaN or infinite values")
    frac = 0
    while frac < MAX_GRID_FRAC and not np.all(np.ldexp(x, frac) == np.round(np.ldexp(x, frac))):
        frac += 1
    ints = np.round(np.ldexp(x, frac))
    if not np.all(np.ldexp(x, frac) == ints) or np.max(np.abs(ints), initial=0) >= 2.0**61:
        raise UnsupportedLayerError(
            f"layer {layer!r}: {what} is not on a fixed-point grid of at most 62 bits, as an HGQ proxy model's weights "
            "are; export the model with HGQ's to_proxy_model"
        )
    lo, hi = min(int(ints.min(initial=0)), 0), max(int(ints.max(initial=0)), 0)
    return ints.astype(np.int64), fixed.type_for_range(lo, hi, frac)


def carrier_type(q: Quant) -> FixedType:
    """The network's input type in front of a per-element input quantizer ``q``: ``q``'s envelope with one more
    fractional bit, truncating, with ``q``'s overflow mode. Truncating to a finer grid and then rounding to each
    element's grid (``floor(floor(x * 2**F) / 2**(F-f) + 1/2)`` with ``F > f``) gives exactly what rounding the
    float directly does, and a wider wrap or clamp first changes nothing; so the float data quantized to this type
    and then through ``q`` is HGQ's forward bit for bit (RND and TRN; half to even needs the float's tie)."""
    env = q.result_type
    if env.quant == "RND_CONV":
        raise UnsupportedLayerError(f"layer {q.name!r} (FixedPointQuantizer): a per-element input quantizer that "
                                    "rounds half to even (RND_CONV) has no exact fixed-point input type; use RND or TRN")
    return FixedType(env.width + 1, env.integer, env.signed, "TRN", env.overflow)


def reshaped(q: Quant, shape: tuple[int, ...]) -> Quant:
    """``q`` with its per-element formats re-viewed as ``shape`` (a Reshape of the tensor after it)."""
    ew, ei, es = (np.reshape(a, shape) for a in (q.element_width, q.element_integer, q.element_signed))
    return Quant(q.name, q.result_type, element_width=ew, element_integer=ei, element_signed=es, inputs=q.inputs)
