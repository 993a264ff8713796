"""The layers of the IR: small dataclasses over numpy arrays, checked when made.

Tensors are channels-last (``(length, channels)`` for 1-D, ``(height, width, channels)``
for 2-D), as in Keras and hls4ml. A layer reads the output of the layer before it unless its
``inputs`` name others (``"input"`` is the network's input): the network is a DAG, and a merge
layer (``Add``, ``Concatenate``) names two or more inputs. A weighted layer is quantized when its ``weight_type``
is set: its ``weight`` and ``bias`` then hold integers of those types. ``mask`` is the
explicit pruning mask (True = kept); a pruned weight is always stored as zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from codesign.core.fixed import FixedType
from codesign.errors import LayerError, UnsupportedLayerError

MAX_PARAM_BITS = 62
MULT_MAPPINGS = ("auto", "dsp", "lut")


def _check_type(layer: str, attr: str, value: Any, required: bool = False) -> FixedType | None:
    if value is None:
        if required:
            raise LayerError(f"layer {layer!r}: {attr} is required")
        return None
    if isinstance(value, str):
        value = FixedType.parse(value)
    if not isinstance(value, FixedType):
        raise LayerError(f"layer {layer!r}: {attr} must be a FixedType or an 'ap_fixed<...>' string, not {value!r}")
    return value


@dataclass(frozen=True)
class Window:
    """A layer's window geometry on one input: kernel, strides and (before, after) zero pads per spatial axis."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]


def _pointwise(in_shape: tuple[int, ...]) -> Window:
    """The 1x1 window of a layer that reads one position at a time."""
    n = len(in_shape) - 1
    return Window((1,) * n, (1,) * n, ((0, 0),) * n)


@dataclass
class Layer:
    """Base class: every layer has a unique name and reads ``inputs`` (empty: the layer before it).

    The kind protocol (``codesign.core.kinds``): ``output_shape``, ``window``, ``units``."""

    name: str
    inputs: tuple[str, ...] = field(default=(), kw_only=True)
    kind: ClassVar[str] = "Layer"
    has_weights: ClassVar[bool] = False
    merge: ClassVar[bool] = False  # True: reads two or more tensors
    units: ClassVar[tuple[str, ...]] = ()  # what pruning may remove here (codesign.core.kinds.UNITS)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def window(self, in_shape: tuple[int, ...]) -> Window | None:
        """The window this layer reads per output position of an input of ``in_shape`` (None: no window)."""
        return None

    def arrays(self) -> dict[str, np.ndarray]:
        """The layer's numpy arrays by attribute name (saved to weights.npz)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)}


@dataclass
class Weighted(Layer):
    """Common part of Dense and the convolutions."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    bias: np.ndarray | None = None
    mask: np.ndarray | None = None
    weight_type: FixedType | None = None
    bias_type: FixedType | None = None
    accum_type: FixedType | None = None
    result_type: FixedType | None = None
    reuse: int = 1
    mult: str = "auto"
    has_weights: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight)
        n_out = self.weight.shape[-1] if self.weight.ndim else 0
        if self.bias is None:
            self.bias = np.zeros(n_out, dtype=np.int64 if self.weight_type is not None else np.float64)
        self.bias = np.asarray(self.bias)
        if self.bias.shape != (n_out,):
            raise LayerError(f"layer {self.name!r}: bias shape {self.bias.shape} does not match {n_out} outputs")
        for attr in ("weight_type", "bias_type", "accum_type", "result_type"):
            setattr(self, attr, _check_type(self.name, attr, getattr(self, attr)))
        if self.mask is None:
            self.mask = np.ones(self.weight.shape, dtype=bool)
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.mask.shape != self.weight.shape:
            raise LayerError(f"layer {self.name!r}: mask shape {self.mask.shape} differs from weight shape {self.weight.shape}")
        if not isinstance(self.reuse, (int, np.integer)) or self.reuse < 1:
            raise LayerError(f"layer {self.name!r}: reuse factor must be a positive integer, not {self.reuse!r}")
        if self.mult not in MULT_MAPPINGS:
            raise LayerError(f"layer {self.name!r}: mult must be one of {MULT_MAPPINGS}, not {self.mult!r}")
        if self.quantized:
            if self.bias_type is None:
                raise LayerError(f"layer {self.name!r}: a quantized layer needs bias_type as well as weight_type")
            self.weight = self._checked_ints("weight", self.weight, self.weight_type)
            self.bias = self._checked_ints("bias", self.bias, self.bias_type)
        else:
            self.weight = self.weight.astype(np.float64)
            self.bias = self.bias.astype(np.float64)
        self.weight = np.where(self.mask, self.weight, 0).astype(self.weight.dtype)

    def _checked_ints(self, attr: str, values: np.ndarray, t: FixedType) -> np.ndarray:
        if t.width > MAX_PARAM_BITS:
            raise LayerError(f"layer {self.name!r}: {attr} type {t} is wider than {MAX_PARAM_BITS} bits")
        if values.dtype.kind == "f":
            if not np.all(values == np.round(values)):
                raise LayerError(f"layer {self.name!r}: quantized {attr} must hold integers (units of the LSB of {t})")
        ints = values.astype(np.int64)
        if ints.size and (ints.min() < t.min_int or ints.max() > t.max_int):
            raise LayerError(
                f"layer {self.name!r}: {attr} integers span [{ints.min()}, {ints.max()}], outside {t} "
                f"([{t.min_int}, {t.max_int}])"
            )
        return ints

    @property
    def quantized(self) -> bool:
        return self.weight_type is not None

    @property
    def n_params(self) -> int:
        return int(self.weight.size + self.bias.size)

    @property
    def n_nonzero(self) -> int:
        return int(np.count_nonzero(self.weight)) + int(np.count_nonzero(self.bias))

    @property
    def sparsity(self) -> float:
        return 1.0 - np.count_nonzero(self.weight) / max(self.weight.size, 1)

    def float_weight(self) -> np.ndarray:
        return np.ldexp(self.weight.astype(np.float64), -self.weight_type.frac) if self.quantized else self.weight

    def float_bias(self) -> np.ndarray:
        return np.ldexp(self.bias.astype(np.float64), -self.bias_type.frac) if self.quantized else self.bias


@dataclass
class Dense(Weighted):
    """``y = x @ weight + bias`` with ``weight`` of shape ``(n_in, n_out)``."""

    kind: ClassVar[str] = "Dense"
    units: ClassVar[tuple[str, ...]] = ("weights", "neurons")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight.ndim != 2:
            raise LayerError(f"layer {self.name!r}: Dense weight must be 2-D (n_in, n_out), got shape {self.weight.shape}")

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape != (self.weight.shape[0],):
            raise LayerError(f"layer {self.name!r}: Dense expects input shape ({self.weight.shape[0]},), got {in_shape}")
        return (self.weight.shape[1],)

    def window(self, in_shape: tuple[int, ...]) -> Window:
        """The 1x1-window case: one position of ``n_in`` channels, no spatial axis."""
        return _pointwise(in_shape)


@dataclass
class Conv(Weighted):
    """Convolution, channels-last; ``weight`` is ``(k..., c_in, c_out)``."""

    strides: tuple[int, ...] = ()
    padding: str = "valid"
    kind: ClassVar[str] = "Conv"
    ndim: ClassVar[int] = 0
    units: ClassVar[tuple[str, ...]] = ("weights", "channels")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight.ndim != self.ndim + 2:
            raise LayerError(
                f"layer {self.name!r}: {self.kind} weight must be {self.ndim + 2}-D (kernel..., c_in, c_out), "
                f"got shape {self.weight.shape}"
            )
        self.strides = tuple(int(s) for s in (self.strides or (1,) * self.ndim))
        if len(self.strides) != self.ndim or min(self.strides) < 1:
            raise LayerError(f"layer {self.name!r}: strides must be {self.ndim} positive integers, not {self.strides!r}")
        if self.padding not in ("valid", "same"):
            raise LayerError(f"layer {self.name!r}: padding must be 'valid' or 'same', not {self.padding!r}")

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.weight.shape[: self.ndim])

    def pads(self, spatial: tuple[int, ...]) -> list[tuple[int, int]]:
        """(before, after) zero padding per spatial axis, as Keras/TensorFlow pad 'same'."""
        if self.padding == "valid":
            return [(0, 0)] * self.ndim
        out = []
        for n, k, s in zip(spatial, self.kernel, self.strides):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            out.append((total // 2, total - total // 2))
        return out

    def window(self, in_shape: tuple[int, ...]) -> Window:
        return Window(self.kernel, self.strides, tuple(self.pads(tuple(in_shape[:-1]))))

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        c_in = self.weight.shape[-2]
        if len(in_shape) != self.ndim + 1 or in_shape[-1] != c_in:
            raise LayerError(
                f"layer {self.name!r}: {self.kind} expects a {self.ndim + 1}-D channels-last input with {c_in} "
                f"channels, got {in_shape}"
            )
        spatial = []
        for n, k, s, (a, b) in zip(in_shape[:-1], self.kernel, self.strides, self.pads(in_shape[:-1])):
            m = (n + a + b - k) // s + 1
            if m < 1:
                raise LayerError(f"layer {self.name!r}: kernel {self.kernel} is larger than the input {in_shape}")
            spatial.append(m)
        return (*spatial, self.weight.shape[-1])


@dataclass
class Conv1D(Conv):
    kind: ClassVar[str] = "Conv1D"
    ndim: ClassVar[int] = 1


@dataclass
class Conv2D(Conv):
    kind: ClassVar[str] = "Conv2D"
    ndim: ClassVar[int] = 2


@dataclass
class BatchNorm(Layer):
    """Per-channel ``(x - mean) / sqrt(var + eps) * gamma + beta`` on the last axis.

    Kept in float until compression folds it into the preceding layer; a quantized
    BatchNorm carries integer ``scale``/``shift`` of ``scale_type``/``shift_type`` and
    computes ``cast(x * scale + shift)`` as hls4ml does.
    """

    gamma: np.ndarray = field(default_factory=lambda: np.zeros(0))
    beta: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    var: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eps: float = 1e-3
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None
    scale_type: FixedType | None = None
    shift_type: FixedType | None = None
    result_type: FixedType | None = None
    kind: ClassVar[str] = "BatchNorm"

    def __post_init__(self) -> None:
        n = np.asarray(self.gamma).shape
        for attr in ("gamma", "beta", "mean", "var"):
            setattr(self, attr, np.asarray(getattr(self, attr), dtype=np.float64))
            if getattr(self, attr).shape != n or len(n) != 1:
                raise LayerError(f"layer {self.name!r}: BatchNorm {attr} must be 1-D with {n} entries")
        if np.any(self.var + self.eps <= 0):
            raise LayerError(f"layer {self.name!r}: BatchNorm variance + eps must be positive")
        for attr in ("scale_type", "shift_type", "result_type"):
            setattr(self, attr, _check_type(self.name, attr, getattr(self, attr)))
        if self.scale_type is not None:
            if self.scale is None or self.shift is None or self.shift_type is None:
                raise LayerError(f"layer {self.name!r}: a quantized BatchNorm needs scale, shift and their types")
            self.scale = np.asarray(self.scale, dtype=np.int64)
            self.shift = np.asarray(self.shift, dtype=np.int64)

    @property
    def quantized(self) -> bool:
        return self.scale_type is not None

    def float_scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        scale = self.gamma / np.sqrt(self.var + self.eps)
        return scale, self.beta - self.mean * scale

    def window(self, in_shape: tuple[int, ...]) -> Window:
        return _pointwise(in_shape)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape[-1] != self.gamma.shape[0]:
            raise LayerError(f"layer {self.name!r}: BatchNorm has {self.gamma.shape[0]} channels, input has {in_shape[-1]}")
        return in_shape


@dataclass
class ReLU(Layer):
    """``max(x, 0)``, then a cast to ``result_type`` when one is set (QKeras ``quantized_relu``)."""

    result_type: FixedType | None = None
    kind: ClassVar[str] = "ReLU"

    def __post_init__(self) -> None:
        self.result_type = _check_type(self.name, "result_type", self.result_type)

    def window(self, in_shape: tuple[int, ...]) -> Window:
        return _pointwise(in_shape)


@dataclass
class Quant(Layer):
    """A cast of the tensor to ``result_type`` (QKeras ``quantized_bits`` as an activation).

    With per-element formats (HGQ's heterogeneous quantizers) element ``j`` is cast to
    ``ap_fixed<element_width[j], element_integer[j]>`` (``ap_ufixed`` where ``element_signed[j]``
    is False; width 0 is the constant 0) with ``result_type``'s quantization and overflow modes,
    and the tensor is held in ``result_type``, which must contain every element's format.
    """

    result_type: FixedType | None = None
    element_width: np.ndarray | None = None
    element_integer: np.ndarray | None = None
    element_signed: np.ndarray | None = None
    kind: ClassVar[str] = "Quant"

    def __post_init__(self) -> None:
        self.result_type = _check_type(self.name, "result_type", self.result_type, required=True)
        given = [a is not None for a in (self.element_width, self.element_integer, self.element_signed)]
        if any(given) and not all(given):
            raise LayerError(f"layer {self.name!r}: per-element formats need element_width, element_integer and "
                             "element_signed together")
        if self.per_element:
            self._check_elements()

    @property
    def per_element(self) -> bool:
        return self.element_width is not None

    def window(self, in_shape: tuple[int, ...]) -> Window:
        return _pointwise(in_shape)

    def element_formats(self) -> list[tuple[FixedType | None, np.ndarray]]:
        """Each distinct element format (None for width 0, the constant 0) with the mask of its elements."""
        keys = np.stack([self.element_width, self.element_integer, self.element_signed.astype(np.int64)])
        out = []
        for w, i, s in np.unique(keys.reshape(3, -1), axis=1).T:
            mask = (self.element_width == w) & (self.element_integer == i) & (self.element_signed == bool(s))
            t = None if w == 0 else FixedType(int(w), int(i), bool(s), self.result_type.quant, self.result_type.overflow)
            out.append((t, mask))
        return out

    def _check_elements(self) -> None:
        self.element_width = np.asarray(self.element_width, dtype=np.int64)
        self.element_integer = np.asarray(self.element_integer, dtype=np.int64)
        self.element_signed = np.asarray(self.element_signed, dtype=bool)
        if not self.element_width.shape == self.element_integer.shape == self.element_signed.shape:
            raise LayerError(f"layer {self.name!r}: element_width, element_integer and element_signed differ in shape")
        if self.element_width.size and (self.element_width.min() < 0 or self.element_width.max() > MAX_PARAM_BITS):
            raise LayerError(f"layer {self.name!r}: element widths must be in [0, {MAX_PARAM_BITS}]")
        for t, _ in self.element_formats():
            if t is not None and not self.result_type.contains(t):
                raise LayerError(f"layer {self.name!r}: result_type {self.result_type} does not hold element format {t}")

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.per_element and self.element_width.shape != tuple(in_shape):
            raise LayerError(f"layer {self.name!r}: per-element formats of shape {self.element_width.shape} do not "
                             f"match the input {tuple(in_shape)}")
        return in_shape


@dataclass
class Pool(Layer):
    """Common part of the windowed poolings: ``pool`` windows taken every ``strides`` (default: the pool), no
    padding (a partial window at the end is dropped, as Keras' and torch's 'valid' pooling do), channels-last."""

    pool: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    kind: ClassVar[str] = "Pool"
    ndim: ClassVar[int] = 0

    def __post_init__(self) -> None:
        self.pool = tuple(int(p) for p in self.pool)
        self.strides = tuple(int(s) for s in (self.strides or self.pool))
        for attr in ("pool", "strides"):
            v = getattr(self, attr)
            if len(v) != self.ndim or min(v, default=0) < 1:
                raise LayerError(f"layer {self.name!r}: {attr} must be {self.ndim} positive integers, not {v!r}")

    def window(self, in_shape: tuple[int, ...]) -> Window:
        return Window(self.pool, self.strides, ((0, 0),) * self.ndim)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != self.ndim + 1:
            raise LayerError(f"layer {self.name!r}: {self.kind} expects a {self.ndim + 1}-D channels-last input, "
                             f"got {in_shape}")
        spatial = [(n - p) // s + 1 for n, p, s in zip(in_shape[:-1], self.pool, self.strides)]
        if min(spatial) < 1:
            raise LayerError(f"layer {self.name!r}: pool {self.pool} is larger than the input {in_shape}")
        return (*spatial, in_shape[-1])


@dataclass
class MaxPool(Pool):
    """Maximum of each window; the type passes through."""

    kind: ClassVar[str] = "MaxPool"


@dataclass
class MaxPool1D(MaxPool):
    kind: ClassVar[str] = "MaxPool1D"
    ndim: ClassVar[int] = 1


@dataclass
class MaxPool2D(MaxPool):
    kind: ClassVar[str] = "MaxPool2D"
    ndim: ClassVar[int] = 2


def _pool_shift(name: str, kind: str, count: int, what: str) -> int:
    """log2 of a pooled count, or a refusal: only a power-of-two average is exact in fixed point."""
    if count < 1 or count & (count - 1):
        raise LayerError(
            f"layer {name!r}: {kind} averages {what}; only a power-of-two count (1, 2, 4, 8, ...) is "
            "exact in fixed point; choose such a window or input size, or use MaxPool or a strided Conv instead"
        )
    return count.bit_length() - 1


@dataclass
class AvgPool(Pool):
    """Mean of each window, exact in fixed point: the window's exact sum with the binary point moved left by
    ``shift = log2(prod(pool))`` bits (so ``prod(pool)`` must be a power of two), then a cast to
    ``result_type`` when one is set (see ``codesign.core.reference``).
    """

    result_type: FixedType | None = None
    kind: ClassVar[str] = "AvgPool"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.result_type = _check_type(self.name, "result_type", self.result_type)
        n = int(np.prod(self.pool))
        _pool_shift(self.name, self.kind, n, f"a {'x'.join(map(str, self.pool))} window ({n} values)")

    @property
    def shift(self) -> int:
        """log2 of the window size: the bits the binary point moves."""
        return int(np.prod(self.pool)).bit_length() - 1


@dataclass
class AvgPool1D(AvgPool):
    kind: ClassVar[str] = "AvgPool1D"
    ndim: ClassVar[int] = 1


@dataclass
class AvgPool2D(AvgPool):
    kind: ClassVar[str] = "AvgPool2D"
    ndim: ClassVar[int] = 2


@dataclass
class GlobalAvgPool(Layer):
    """Mean over every spatial position of each channel: ``(..., C)`` to ``(C,)`` (Keras' default keepdims=False).

    Exact as ``AvgPool`` is: the exact sum over the positions with the binary point moved by
    ``log2(positions)``; a count that is not a power of two is refused when the input shape is known.
    """

    result_type: FixedType | None = None
    kind: ClassVar[str] = "GlobalAvgPool"
    ndim: ClassVar[int] = 0

    def __post_init__(self) -> None:
        self.result_type = _check_type(self.name, "result_type", self.result_type)

    def shift(self, in_shape: tuple[int, ...]) -> int:
        """log2 of the number of positions averaged for an input of ``in_shape``."""
        spatial, n = tuple(in_shape[:-1]), int(np.prod(in_shape[:-1]))
        return _pool_shift(self.name, self.kind, n, f"{'x'.join(map(str, spatial))} = {n} positions")

    def window(self, in_shape: tuple[int, ...]) -> Window:
        """One window over every position (read once, at the image's last position)."""
        spatial = tuple(int(n) for n in in_shape[:-1])
        return Window(spatial, spatial, ((0, 0),) * len(spatial))

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != self.ndim + 1:
            raise LayerError(f"layer {self.name!r}: {self.kind} expects a {self.ndim + 1}-D channels-last input, "
                             f"got {in_shape}")
        self.shift(in_shape)
        return (in_shape[-1],)


@dataclass
class GlobalAvgPool1D(GlobalAvgPool):
    kind: ClassVar[str] = "GlobalAvgPool1D"
    ndim: ClassVar[int] = 1


@dataclass
class GlobalAvgPool2D(GlobalAvgPool):
    kind: ClassVar[str] = "GlobalAvgPool2D"
    ndim: ClassVar[int] = 2


@dataclass
class Flatten(Layer):
    kind: ClassVar[str] = "Flatten"

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(in_shape)),)


@dataclass
class Merge(Layer):
    """Common part of the layers that read two or more tensors; ``result_type`` casts the exact result."""

    result_type: FixedType | None = None
    merge: ClassVar[bool] = True
    kind: ClassVar[str] = "Merge"

    def __post_init__(self) -> None:
        self.result_type = _check_type(self.name, "result_type", self.result_type)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        raise LayerError(f"layer {self.name!r}: {self.kind} reads two or more inputs; name them in 'inputs'")

    def merged_shape(self, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        raise NotImplementedError


@dataclass
class Add(Merge):
    """Element-wise sum, exact: the operands' binary points aligned, the result as wide as the exact sum, then
    a cast to ``result_type`` when one is set (see ``codesign.core.reference``)."""

    kind: ClassVar[str] = "Add"

    def merged_shape(self, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        if any(tuple(s) != tuple(shapes[0]) for s in shapes):
            raise LayerError(f"layer {self.name!r}: Add needs inputs of one shape, got {', '.join(map(str, shapes))}")
        return tuple(shapes[0])


@dataclass
class Concatenate(Merge):
    """Inputs joined along the channel (last) axis; the result holds every input's values exactly."""

    kind: ClassVar[str] = "Concatenate"

    def merged_shape(self, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        if any(len(s) != len(shapes[0]) or tuple(s[:-1]) != tuple(shapes[0][:-1]) for s in shapes):
            raise LayerError(f"layer {self.name!r}: Concatenate joins channels; the inputs' other axes differ: "
                             f"{', '.join(map(str, shapes))}")
        return (*shapes[0][:-1], sum(int(s[-1]) for s in shapes))


HEAD_KINDS = ("softmax", "argmax", "sigmoid", "linear")


@dataclass
class Output(Layer):
    """The output head. Not hardware: the hardware output is the tensor before it."""

    head: str = "linear"
    kind: ClassVar[str] = "Output"

    def __post_init__(self) -> None:
        if self.head not in HEAD_KINDS:
            raise LayerError(f"layer {self.name!r}: output head must be one of {HEAD_KINDS}, not {self.head!r}")


LAYER_CLASSES: dict[str, type[Layer]] = {
    cls.kind: cls
    for cls in (Dense, Conv1D, Conv2D, BatchNorm, ReLU, Quant, MaxPool1D, MaxPool2D, AvgPool1D, AvgPool2D,
                GlobalAvgPool1D, GlobalAvgPool2D, Flatten, Add, Concatenate, Output)
}

# What a convolutional network may hold, end to end (importers map onto these; a backend checks a network
# against the subset it builds with ``check_supported``). BatchNorm is float only: folded before hardware.
POOL_LAYERS: tuple[type[Layer], ...] = (MaxPool1D, MaxPool2D, AvgPool1D, AvgPool2D, GlobalAvgPool1D, GlobalAvgPool2D)
CNN_LAYERS: tuple[type[Layer], ...] = (Conv1D, Conv2D, *POOL_LAYERS, BatchNorm, ReLU, Quant, Flatten, Dense, Output)
CNN_LAYER_NAMES = ", ".join(cls.kind for cls in CNN_LAYERS)


def check_supported(layers: list[Layer], supported: tuple[type[Layer], ...], who: str) -> None:
    """Refuse, naming the first layer that is not an instance of one of ``supported``, and the supported list."""
    for layer in layers:
        if not isinstance(layer, supported):
            raise UnsupportedLayerError(
                f"layer {layer.name!r} ({layer.kind}): not supported by {who}; supported: "
                f"{', '.join(cls.kind for cls in supported)}"
            )
