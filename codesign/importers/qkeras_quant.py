"""QKeras quantizers read from a model config and mapped onto exact fixed-point types, without QKeras.

A quantizer appears in a config in three forms: a string (``"quantized_bits(6,0,alpha=1)"``, parsed
with ``ast``, never evaluated), the old dict ``{"class_name", "config"}`` (hls4ml's example files),
or the nested ``{"module", "class_name", "config", "registered_name"}`` that tf-keras 2.21 writes.

Weight quantizers are applied here, in numpy, exactly as QKeras 0.9 applies them in float32
(``quantizers.py``): ``quantized_bits(bits, integer, keep_negative, alpha)`` is
``m_i * clip(round_half_even(x * m / m_i), keep_negative * (-m + symmetric), m - 1) / m * alpha`` with
``m = 2**(bits - keep_negative)``, ``m_i = 2**integer`` — every step a power-of-two scaling, so
float64 gives QKeras's float32 result bit for bit. Then QKeras returns ``x + (xq - x)`` in
float32 (its straight-through estimator); that is checked to give ``xq`` back, weight by weight.
``alpha='auto_po2'`` picks per-channel power-of-two scales by least squares in float32; the choice
is reproduced with QKeras's float32 operations, and refused only where a per-channel mean sits so
close to a rounding boundary that TensorFlow's float32 summation order (not reproduced) could decide
it. ``quantized_po2``/``quantized_relu_po2`` round ``log(|x|) / log(2)`` in float32, computed here with
the float32 operations TensorFlow's x86-64 CPU build performs (``tf_log_f32``; other builds, e.g.
aarch64 with FMA, may round a boundary weight differently), so a weight on a boundary goes the way it
goes in QKeras, and the import notes say how many lay within ``PO2_NOTE_MARGIN`` of one and which way
each went. ``binary``/``ternary`` with a fixed
(power-of-two) alpha are exact.

Activation quantizers must be casts: ``quantized_relu(bits, integer)`` is
``ap_ufixed<bits, integer, AP_RND_CONV, AP_SAT>`` of ``max(x, 0)`` and ``quantized_bits(bits,
integer, keep_negative, alpha=1)`` is ``ap_fixed<bits, integer + keep_negative, AP_RND_CONV,
AP_SAT>``; the others (power-of-two, sign, tanh, ...) are not casts and are refused, naming the layer.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from codesign.core import fixed
from codesign.errors import ModelFileError, UnsupportedLayerError
from codesign.core.fixed import FixedType

MAX_WEIGHT_FRAC = 40
EPS = np.float32(1e-7)  # Keras's K.epsilon(), as QKeras adds it (a float32 constant)
LN2_F32 = np.float32(np.log(2.0))  # QKeras divides by np.log(2.0), which TensorFlow converts to the tensor's float32
PO2_NOTE_MARGIN = 1e-5  # a po2 weight whose exact log2 lies this near a half-integer is reported in the import notes
PACKET = 8  # floats per packet of TensorFlow's x86-64 CPU build (AVX, no FMA)
# Eigen's plog_float: log(1 + x) on [sqrt(1/2) - 1, sqrt(2) - 1] as a rational (3, 3) function, float32 coefficients
_LOG_P = tuple(np.float32(c) for c in (0.18256296349849254, 1.0000000190281063, 1.0000000190281136))
_LOG_Q = tuple(np.float32(c) for c in (0.049616247954120038, 0.59923249590823520, 1.4999999999999927, 1.0))

# Each quantizer's parameters in positional order with their defaults (QKeras 0.9 signatures).
PARAMS: dict[str, dict[str, Any]] = {
    "quantized_bits": {"bits": 8, "integer": 0, "symmetric": 0, "keep_negative": True, "alpha": None,
                       "use_stochastic_rounding": False, "scale_axis": None, "qnoise_factor": 1.0,
                       "var_name": None, "use_ste": True, "use_variables": False},
    "quantized_relu": {"bits": 8, "integer": 0, "use_sigmoid": 0, "negative_slope": 0.0,
                       "use_stochastic_rounding": False, "relu_upper_bound": None, "is_quantized_clip": True,
                       "qnoise_factor": 1.0, "var_name": None, "use_ste": True, "use_variables": False},
    "quantized_po2": {"bits": 8, "max_value": None, "use_stochastic_rounding": False,
                      "quadratic_approximation": False, "log2_rounding": "rnd", "qnoise_factor": 1.0,
                      "var_name": None, "use_ste": True, "use_variables": False},
    "quantized_relu_po2": {"bits": 8, "max_value": None, "negative_slope": 0, "use_stochastic_rounding": False,
                           "quadratic_approximation": False, "log2_rounding": "rnd", "qnoise_factor": 1.0,
                           "var_name": None, "use_ste": True, "use_variables": False},
    "binary": {"use_01": False, "alpha": None, "use_stochastic_rounding": False},
    "ternary": {"alpha": None, "threshold": None, "use_stochastic_rounding": False, "number_of_unrolls": 5},
}
ACTIVATION_QUANTIZERS = "quantized_relu, quantized_bits (alpha=1)"
# Parameters QKeras for Keras 3 (github.com/fastmachinelearning/qkerasV3) adds after QKeras 0.9's, with the value
# that leaves 0.9's arithmetic unchanged; its quantized_bits saves ``post_training_scale`` in every config.
NOOP_PARAMS: dict[str, dict[str, Any]] = {
    "quantized_bits": {"elements_per_scale": None, "min_po2_exponent": None, "max_po2_exponent": None,
                       "post_training_scale": None},
    "binary": {"training": False, "scale_axis": None, "elements_per_scale": None, "min_po2_exponent": None,
               "max_po2_exponent": None},
}


@dataclass(frozen=True)
class QSpec:
    """A quantizer by name with its full configuration (defaults filled in)."""

    name: str
    cfg: dict[str, Any]

    def __str__(self) -> str:
        shown = {k: v for k, v in self.cfg.items() if k in ("bits", "integer", "alpha", "keep_negative", "symmetric")
                 and v != PARAMS[self.name].get(k)}
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def parse_quantizer(obj: Any, layer: str, what: str) -> QSpec | None:
    """A quantizer from any of its config forms, or None; anything else is refused naming the layer."""
    if obj is None:
        return None
    if isinstance(obj, str):
        name, args, kwargs = _parse_call(obj, layer, what)
    elif isinstance(obj, dict) and isinstance(obj.get("class_name"), str):
        name, args, kwargs = obj["class_name"], [], obj.get("config") or {}
        if not isinstance(kwargs, dict):
            raise ModelFileError(f"layer {layer!r}: {what} {name} has a malformed config")
        kwargs = dict(kwargs)
    else:
        raise ModelFileError(f"layer {layer!r}: {what} {obj!r:.80} is not a quantizer")
    if name not in PARAMS:
        raise UnsupportedLayerError(
            f"layer {layer!r}: {what} {name} has no exact fixed-point equivalent; supported: {', '.join(PARAMS)}"
        )
    params, noop = PARAMS[name], NOOP_PARAMS.get(name, {})
    for k in [k for k in kwargs if k in noop]:
        v = kwargs.pop(k)
        if not ((v is None) if noop[k] is None else (v == noop[k])):
            raise UnsupportedLayerError(f"layer {layer!r}: {what} {name}({k}={v!r:.60}) changes the arithmetic; only "
                                        f"{k}={noop[k]!r} (QKeras 0.9's behaviour) is supported")
    unknown = [k for k in kwargs if k not in params]
    if len(args) > len(params) or unknown:
        raise UnsupportedLayerError(f"layer {layer!r}: {what} {name} has parameters QKeras 0.9 does not know: "
                                    f"{', '.join(unknown) or f'{len(args)} positional'} in {obj!r:.120}")
    cfg = dict(params)
    cfg.update(zip(params, args))
    cfg.update(kwargs)
    return QSpec(name, cfg)


def _parse_call(text: str, layer: str, what: str) -> tuple[str, list[Any], dict[str, Any]]:
    """``name`` or ``name(literal, ..., key=literal)``: parsed, never evaluated."""
    try:
        if len(text) > 500:
            raise ValueError("too long")
        node = ast.parse(text.strip(), mode="eval").body
        if isinstance(node, ast.Name):
            return node.id, [], {}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
            return node.func.id, args, kwargs
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        pass
    raise UnsupportedLayerError(f"layer {layer!r}: {what} {text[:80]!r} is not a quantizer call with literal arguments")


# ---- activations -------------------------------------------------------------------------------
def activation_type(q: QSpec, layer: str) -> tuple[str, FixedType]:
    """``("relu" | "quant", type)`` for an activation quantizer that is an exact cast, or a refusal."""
    c = q.cfg
    _check_common(q, layer, "activation quantizer")
    if q.name == "quantized_relu":
        if c["negative_slope"] or c["use_sigmoid"] or c["relu_upper_bound"] is not None:
            raise UnsupportedLayerError(
                f"layer {layer!r}: quantized_relu with negative_slope, use_sigmoid or relu_upper_bound is not supported"
            )
        return "relu", FixedType(_int(c["bits"], layer), _int(c["integer"], layer), False, "RND_CONV", "SAT")
    if q.name == "quantized_bits":
        if c["symmetric"]:
            raise UnsupportedLayerError(
                f"layer {layer!r}: quantized_bits(symmetric=1) as an activation clips to a symmetric range that "
                "ap_fixed saturation does not have"
            )
        if c["alpha"] not in (None, 1, 1.0):
            raise UnsupportedLayerError(
                f"layer {layer!r}: quantized_bits(alpha={c['alpha']!r}) as an activation multiplies the quantized "
                "value by alpha, which is not a cast; use alpha=1"
            )
        keep = int(bool(c["keep_negative"]))
        bits, integer = _int(c["bits"], layer), _int(c["integer"], layer)
        if bits - keep < 1:
            raise UnsupportedLayerError(f"layer {layer!r}: quantized_bits({bits}) as an activation is a sign function")
        return "quant", FixedType(bits, integer + keep, bool(keep), "RND_CONV", "SAT")
    raise UnsupportedLayerError(
        f"layer {layer!r}: activation quantizer {q.name} is not a fixed-point cast (no exact equivalent); "
        f"supported: {ACTIVATION_QUANTIZERS}"
    )


def _check_common(q: QSpec, layer: str, what: str) -> None:
    c = q.cfg
    if c.get("use_stochastic_rounding"):
        raise UnsupportedLayerError(f"layer {layer!r}: {what} {q.name} with stochastic rounding has no fixed-point "
                                    "equivalent")
    if "qnoise_factor" in c and c["qnoise_factor"] != 1.0:
        raise UnsupportedLayerError(f"layer {layer!r}: {what} {q.name}(qnoise_factor={c['qnoise_factor']!r}) mixes "
                                    "float and quantized values; only qnoise_factor=1 is exact")


def _int(v: Any, layer: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or abs(v) > 64:
        raise UnsupportedLayerError(f"layer {layer!r}: quantizer parameter {v!r} is not a small integer")
    return int(v)


def _pow2_exponent(alpha: Any, layer: str, what: str, q: QSpec) -> int:
    """log2 of a fixed alpha (None: 0); a non-power-of-two or data-dependent alpha is refused."""
    if alpha is None:
        return 0
    if isinstance(alpha, str):
        raise UnsupportedLayerError(
            f"layer {layer!r}: {what} quantizer {q.name}(alpha={alpha!r}) scales by a float that is not a power of "
            "two; use alpha=1 or 'auto_po2'" if alpha != "auto_po2" else
            f"layer {layer!r}: {what} quantizer {q.name}(alpha='auto_po2') is supported for quantized_bits only"
        )
    try:
        f = float(alpha)
    except (TypeError, ValueError):
        raise UnsupportedLayerError(f"layer {layer!r}: {what} quantizer {q.name}(alpha={alpha!r}): alpha is not a number") from None
    if not (f > 0 and math.isfinite(f) and math.log2(f) == round(math.log2(f))):
        raise UnsupportedLayerError(f"layer {layer!r}: {what} quantizer {q.name}(alpha={alpha!r}): alpha is not a power of two")
    return int(round(math.log2(f)))


# ---- weights -----------------------------------------------------------------------------------
def weight_ints(values: np.ndarray, q: QSpec | None, layer: str, what: str,
                notes: list[str] | None = None) -> tuple[np.ndarray, FixedType]:
    """Apply a QKeras weight quantizer as QKeras does and return the integers and a type that holds them; what the
    user should know (po2 weights decided on a rounding boundary) is appended to ``notes``."""
    if q is None:
        raise UnsupportedLayerError(
            f"layer {layer!r}: {what} has no quantizer, so its values have no fixed-point type; give the layer a "
            f"{what}_quantizer (e.g. quantized_bits(8,0,alpha=1))"
        )
    _check_common(q, layer, f"{what}")
    x = np.asarray(values).astype(np.float32)  # QKeras casts to floatx (float32) first
    if not np.all(np.isfinite(x)):
        raise ModelFileError(f"layer {layer!r}: {what} holds NaN or infinite values")
    if q.name == "quantized_bits":
        xq, t = _quantized_bits(x, q, layer, what)
    elif q.name in ("quantized_po2", "quantized_relu_po2"):
        xq, t = _po2(x, q, layer, what, notes), None
    elif q.name == "quantized_relu":
        c = q.cfg
        if c["negative_slope"] or c["use_sigmoid"]:
            raise UnsupportedLayerError(f"layer {layer!r}: {what} quantizer quantized_relu with negative_slope or "
                                        "use_sigmoid is not supported")
        bits, integer = _int(c["bits"], layer), _int(c["integer"], layer)
        ints = np.clip(np.round(np.ldexp(x.astype(np.float64), bits - integer)), 0, 2**bits - 1)
        xq, t = np.ldexp(ints, integer - bits), FixedType(bits, integer, False)
    elif q.name == "binary":
        xq, t = _binary(x, q, layer, what), None
    else:
        xq, t = _ternary(x, q, layer, what), None
    _check_straight_through(x, xq, q, layer, what)
    if t is None:
        t = _exact_type(xq, layer, what, q)
    if not fixed.representable(xq, t):
        raise UnsupportedLayerError(f"layer {layer!r}: {what} quantizer {q.name} produced values outside {t}")
    return np.round(np.ldexp(xq, t.frac)).astype(np.int64), t


def _quantized_bits(x: np.ndarray, q: QSpec, layer: str, what: str) -> tuple[np.ndarray, FixedType | None]:
    c = q.cfg
    bits, integer, keep = _int(c["bits"], layer), _int(c["integer"], layer), int(bool(c["keep_negative"]))
    ub = bits - keep
    if c["alpha"] == "auto_po2":
        return _auto_po2_bits(x, bits, integer, c["scale_axis"], layer, what, q), None
    shift = _pow2_exponent(c["alpha"], layer, what, q)
    x64 = x.astype(np.float64)
    if ub > 0:
        lo = keep * (-(2**ub) + int(bool(c["symmetric"])))
        ints = np.clip(np.round(np.ldexp(x64, ub - integer)), lo, 2**ub - 1)
        return np.ldexp(ints, integer - ub + shift), FixedType(bits, integer + keep + shift, bool(keep))
    sign = np.where(x64 >= 0, 1.0, -1.0)  # quantized_bits with no magnitude bits is the sign (0 counts as +1)
    if not keep:
        sign = (sign + 1) / 2
    return np.ldexp(sign, shift), None


def _po2_round(v: np.ndarray, layer: str, what: str, q: QSpec, n_terms: int = 1) -> np.ndarray:
    """``2**round(log(v + eps) / log(2))`` with the float32 operations QKeras performs (``tf_log_f32``). ``v`` is
    exact for ``n_terms == 1``; a mean of ``n_terms`` non-negative float32 terms may differ from TensorFlow's by
    ``n_terms * 2**-23`` relative (its summation order is not reproduced), so a scale whose exponent differs across
    that interval is refused rather than guessed."""
    s = (v.astype(np.float32) + EPS).astype(np.float32)
    e = np.round(tf_log_f32(s) / LN2_F32)
    if n_terms > 1:
        rel = n_terms * 2.0**-22
        ends = [np.round(tf_log_f32((s.astype(np.float64) * f).astype(np.float32)) / LN2_F32)
                for f in (1 - rel, 1 + rel)]
        if not (np.array_equal(ends[0], e) and np.array_equal(ends[1], e)):
            raise UnsupportedLayerError(
                f"layer {layer!r}: {what} quantizer {q}: a power-of-two scale (a mean over {n_terms} weights) sits so "
                "near a rounding boundary that TensorFlow's float32 summation order decides it, which is not "
                "reproduced; use a fixed power-of-two alpha")
    return np.exp2(e.astype(np.float64))


def _auto_po2_bits(x: np.ndarray, bits: int, integer: int, scale_axis: Any, layer: str, what: str,
                   q: QSpec) -> np.ndarray:
    """quantized_bits(alpha='auto_po2'): QKeras's per-channel least-squares power-of-two scale."""
    m_i = 2.0**integer
    xs = x.astype(np.float64) / m_i
    levels = (2 ** (bits - 1) - 1) * 2
    nd = xs.ndim
    if scale_axis is not None:
        axis = tuple(a for a in range(nd) if a != scale_axis)
    else:
        axis = tuple(range(nd - 1)) if nd > 1 else (0,)
    scale = _po2_round(np.float32(np.max(np.abs(xs), axis=axis, keepdims=True) * 2) / np.float32(levels),
                       layer, what, q)
    n = int(np.prod([xs.shape[a] for a in axis])) if nd > 1 else 1
    for _ in range(5):
        v = np.floor(np.abs(xs) / scale + 0.5)
        z = np.sign(xs) * np.where(v < levels / 2, v, levels / 2)
        if nd > 1:
            qx, qq = np.mean(xs * z, axis=axis, keepdims=True), np.mean(z * z, axis=axis, keepdims=True)
            ratio = (qx / (qq + float(EPS))).astype(np.float32)  # within n_terms * 2**-22 of TensorFlow's
        else:  # a scale per weight: QKeras's float32 operations, each reproduced exactly
            x32, z32 = xs.astype(np.float32), z.astype(np.float32)
            ratio = (x32 * z32) / (z32 * z32 + EPS)
        scale = _po2_round(ratio, layer, what, q, n)
    return m_i * z * scale


def _po2(x: np.ndarray, q: QSpec, layer: str, what: str, notes: list[str] | None) -> np.ndarray:
    """quantized_po2 / quantized_relu_po2 on weights: ``sign * 2**clip(round(log(|x|) / log(2)), min_exp, max_exp)``,
    the exponent computed in float32 as TensorFlow computes it (QKeras's ``_clip_power_of_two``)."""
    c = q.cfg
    bits, max_value = _int(c["bits"], layer), c["max_value"]
    if c["quadratic_approximation"] or c["log2_rounding"] != "rnd":
        raise UnsupportedLayerError(f"layer {layer!r}: {what} quantizer {q.name} with quadratic_approximation or "
                                    "log2_rounding other than 'rnd' is not supported")
    need_sign = 1 if max_value is None or max_value > 1 else 0
    eff = (bits - 1 if q.name == "quantized_po2" else bits) - need_sign
    min_exp, max_exp = -(2**eff), 2**eff - 1
    if q.name == "quantized_relu_po2":
        if c["negative_slope"]:
            raise UnsupportedLayerError(f"layer {layer!r}: {what} quantizer quantized_relu_po2 with negative_slope "
                                        "is not supported")
        mag, sign = np.maximum(x, np.float32(0)), np.ones(x.shape)
    else:
        mag, sign = np.abs(x), np.where(x >= 0, 1.0, -1.0)
    small = mag < EPS
    filt = np.where(small, EPS, mag).astype(np.float32)
    if max_value is not None:
        filt = np.where(filt >= np.float32(max_value), np.float32(max_value), filt).astype(np.float32)
    e32 = np.round(tf_log_f32(filt) / LN2_F32)  # float32 division, then tf.round: half to even
    e = np.where(small, min_exp, np.clip(e32.astype(np.float64), min_exp, max_exp))
    lg = np.log2(filt.astype(np.float64))
    near = np.flatnonzero(~small.ravel() & (np.abs(lg - np.floor(lg) - 0.5) < PO2_NOTE_MARGIN).ravel())
    if near.size and notes is not None:
        notes.append(_po2_note(x, lg, e32, near, layer, what, q))
    return sign * np.exp2(e)


def _po2_note(x: np.ndarray, lg: np.ndarray, e32: np.ndarray, near: np.ndarray, layer: str, what: str,
              q: QSpec) -> str:
    """Which way each weight near a rounding boundary went."""
    up = [int(i) for i in near if e32.ravel()[i] > np.floor(lg.ravel()[i])]
    each = []
    for i in near[:20]:
        idx = ",".join(str(int(k)) for k in np.unravel_index(int(i), x.shape))
        each.append(f"[{idx}] {float(x.ravel()[i])!r} -> 2**{int(e32.ravel()[i])} "
                    f"({'up' if int(i) in up else 'down'})")
    more = f", and {near.size - 20} more" if near.size > 20 else ""
    return (f"layer {layer!r}: {near.size} {what} weight(s) of {q.name} lay within {PO2_NOTE_MARGIN:g} of a rounding "
            f"boundary of log2|w|, decided by QKeras's float32 arithmetic (TensorFlow's x86-64 log): {len(up)} up, "
            f"{near.size - len(up)} down: {'; '.join(each)}{more}")


def tf_log_f32(v: np.ndarray) -> np.ndarray:
    """``tf.math.log`` of a float32 tensor as TensorFlow's x86-64 CPU kernel computes it, bit for bit: Eigen's
    vectorized ``plog_float`` (no FMA) on whole packets of ``PACKET`` floats of the flattened tensor, the C library's
    ``logf`` on the last ``size % PACKET`` (Eigen's scalar tail). Checked equal to TensorFlow 2.21 on 500,000 values
    and on random tails (tests/test_import_fixes.py). Positive finite normal inputs only (QKeras clips to 1e-7)."""
    flat = np.asarray(v, dtype=np.float32).ravel()
    k = flat.size - flat.size % PACKET
    out = np.empty_like(flat)
    out[:k] = _eigen_plog(flat[:k])
    out[k:] = [_libm_logf(float(a)) for a in flat[k:]]
    return out.reshape(np.shape(v))


def _eigen_plog(v: np.ndarray) -> np.ndarray:
    """Eigen's ``plog_impl_float`` in float32 numpy: each step one float32 operation, multiply-adds rounded twice."""
    f32 = np.float32
    m, ex = np.frexp(v)
    x, e = m.astype(f32), ex.astype(f32)
    mask = x < f32(0.707106781186547524)
    tmp = np.where(mask, x, f32(0))
    x = x - f32(1)
    e = e - np.where(mask, f32(1), f32(0))
    x = x + tmp
    p = np.full_like(x, _LOG_P[0])
    for c in _LOG_P[1:]:
        p = p * x + c
    p = x * p
    qd = np.full_like(x, _LOG_Q[0])
    for c in _LOG_Q[1:]:
        qd = qd * x + c
    return e * LN2_F32 + p / qd


def _libm_logf(a: float) -> np.float32:
    """The C library's ``logf`` (what Eigen's scalar path calls), or the correctly rounded log where none is found."""
    global _LOGF
    if _LOGF is None:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("m")
        try:
            f = ctypes.CDLL(name).logf if name else None
        except OSError:
            f = None
        if f is not None:
            f.restype, f.argtypes = ctypes.c_float, [ctypes.c_float]
        _LOGF = f or (lambda y: float(np.float32(np.log(y))))
    return np.float32(_LOGF(a))


_LOGF: Any = None


def _binary(x: np.ndarray, q: QSpec, layer: str, what: str) -> np.ndarray:
    c = q.cfg
    shift = _pow2_exponent(c["alpha"], layer, what, q)
    k = np.where(x >= 0, 1.0, -1.0)
    if c["use_01"]:
        k = (k + 1) / 2
    return np.ldexp(k, shift)


def _ternary(x: np.ndarray, q: QSpec, layer: str, what: str) -> np.ndarray:
    c = q.cfg
    shift = _pow2_exponent(c["alpha"], layer, what, q)
    thr = np.float32(0.33 if c["threshold"] is None else c["threshold"])
    t = (np.abs(x) >= thr) * np.sign(x.astype(np.float64))
    return np.ldexp(t, shift)


def _check_straight_through(x: np.ndarray, xq: np.ndarray, q: QSpec, layer: str, what: str) -> None:
    """QKeras returns ``x + (xq - x)`` in float32 (``tanh(x)`` for binary/ternary without alpha): it must give ``xq``."""
    if q.name in ("binary", "ternary") and q.cfg["alpha"] is None:
        x = np.tanh(x)
    xq32 = xq.astype(np.float32)
    if not np.array_equal(xq32.astype(np.float64), xq):
        raise UnsupportedLayerError(f"layer {layer!r}: {what} quantizer {q} gives values float32 cannot hold")
    if q.cfg.get("use_ste", True) is False:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        back = x + (xq32 - x)
    bad = np.flatnonzero(back.ravel() != xq32.ravel())
    if bad.size:
        i = int(bad[0])
        raise UnsupportedLayerError(
            f"layer {layer!r}: {what} value {float(x.ravel()[i])!r} lies so far outside {q}'s range that QKeras's "
            f"straight-through arithmetic does not return the quantized value ({float(back.ravel()[i])!r} instead of "
            f"{float(xq32.ravel()[i])!r}); clip the weights"
        )


def _exact_type(xq: np.ndarray, layer: str, what: str, q: QSpec) -> FixedType:
    """The narrowest type holding every value of ``xq`` exactly."""
    frac = 0
    while frac < MAX_WEIGHT_FRAC and not np.all(np.ldexp(xq, frac) == np.round(np.ldexp(xq, frac))):
        frac += 1
    if not np.all(np.ldexp(xq, frac) == np.round(np.ldexp(xq, frac))):
        raise UnsupportedLayerError(f"layer {layer!r}: {what} quantizer {q} gives values finer than 2**-{MAX_WEIGHT_FRAC}")
    ints = np.round(np.ldexp(xq, frac))
    lo, hi = min(int(ints.min(initial=0)), 0), max(int(ints.max(initial=0)), 0)
    if max(abs(lo), abs(hi)) >= 2**61:
        raise UnsupportedLayerError(f"layer {layer!r}: {what} quantizer {q} spans more than 62 bits")
    return fixed.type_for_range(lo, hi, frac)
