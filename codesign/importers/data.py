"""Data sets: ``.npz`` files with ``X_train, y_train, X_test, y_test``, or the built-in ``digits``."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from codesign.core.fixed import FixedType
from codesign.errors import DataError

BUILTIN_DATA = ("digits",)
DIGITS_IMAGE = (8, 8, 1)  # the 64 pixels row by row, one channel
NPZ_KEYS = ("X_train", "y_train", "X_test", "y_test")


@dataclass
class Dataset:
    """Train / validation / test splits; the validation split is carved from the training data."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str  # "classification" or "regression"
    n_classes: int = 0
    input_type: FixedType | None = None  # a type that holds every input exactly, when one is known
    image_shape: tuple[int, ...] | None = None  # channels-last image shape of flat samples (digits: (8, 8, 1))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.X_train.shape[1:])


def _split_val(X: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    idx = np.random.default_rng(seed).permutation(len(X))
    n_val = max(1, int(round(len(X) * fraction)))
    v, t = idx[:n_val], idx[n_val:]
    return X[t], y[t], X[v], y[v]


def load_digits_dataset(seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (shipped inside scikit-learn), pixels scaled to [0, 1] in steps of 1/16."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.data / 16.0).astype(np.float64)
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(12345).permutation(len(X))  # fixed test split, independent of the seed
    n_test = 360
    test, train = idx[:n_test], idx[n_test:]
    Xtr, ytr, Xv, yv = _split_val(X[train], y[train], 0.15, seed)
    return Dataset("digits", Xtr, ytr, Xv, yv, X[test], y[test], "classification", 10,
                   FixedType(5, 1, signed=False), DIGITS_IMAGE)


def load_dataset(spec: str | Dataset, seed: int = 0, val_fraction: float = 0.15) -> Dataset:
    """``digits`` or a path to an ``.npz`` with X_train, y_train, X_test, y_test."""
    if isinstance(spec, Dataset):
        return spec
    if spec == "digits":
        return load_digits_dataset(seed)
    path = Path(spec)
    if path.suffix != ".npz":
        raise DataError(f"unknown data set {spec!r}: give a built-in name ({', '.join(BUILTIN_DATA)}) or an .npz file")
    if not path.is_file():
        raise DataError(f"data file {spec!r} does not exist")
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path}: missing arrays {', '.join(missing)}; an .npz needs {', '.join(NPZ_KEYS)}")
            arrs = {k: np.asarray(npz[k]) for k in NPZ_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    Xtr, ytr, Xte, yte = (arrs[k] for k in NPZ_KEYS)
    for xn, yn, X, y in (("X_train", "y_train", Xtr, ytr), ("X_test", "y_test", Xte, yte)):
        if X.dtype.kind not in "fiu":
            raise DataError(f"{path}: {xn} must be numeric, got {X.dtype}")
        if len(X) != len(y):
            raise DataError(f"{path}: {xn} has {len(X)} rows but {yn} has {len(y)}")
        if not np.all(np.isfinite(X)):
            raise DataError(f"{path}: {xn} contains NaN or infinite values; clean or impute them first")
    if Xtr.shape[1:] != Xte.shape[1:]:
        raise DataError(f"{path}: X_train samples are {Xtr.shape[1:]} but X_test samples are {Xte.shape[1:]}")
    if ytr.dtype.kind in "iu" and ytr.ndim == 1:
        task = "classification"
        n_classes = int(max(ytr.max(initial=0), yte.max(initial=0))) + 1
        if min(ytr.min(initial=0), yte.min(initial=0)) < 0:
            raise DataError(f"{path}: class labels must be 0..K-1; found a negative label")
    else:
        task, n_classes = "regression", 0
        if not (np.all(np.isfinite(ytr)) and np.all(np.isfinite(yte))):
            raise DataError(f"{path}: regression targets contain NaN or infinite values")
    Xtr, ytr, Xv, yv = _split_val(Xtr.astype(np.float64), ytr, val_fraction, seed)
    return Dataset(path.stem, Xtr, ytr, Xv, yv, Xte.astype(np.float64), yte, task, n_classes)


def shaped_for(data: Dataset, input_shape: tuple[int, ...]) -> Dataset:
    """``data`` with its samples in the model's input shape: flat images (``digits``) reshaped to an image
    model's ``(H, W, C)`` (or ``(H, W)`` for a Conv1D over rows), image samples flattened for an MLP.

    Only a data set that knows its image shape is reshaped; any other mismatch is left for
    ``check_fits`` to refuse, since guessing the layout of someone else's samples would be wrong silently.
    """
    shape = tuple(int(d) for d in input_shape)
    if data.input_shape == shape or data.image_shape is None:
        return data
    image, flat = tuple(data.image_shape), (int(np.prod(data.image_shape)),)
    squeezed = image[:-1] if image[-1] == 1 else image
    if shape not in (image, flat, squeezed) or data.input_shape not in (image, flat, squeezed):
        return data
    return replace(data, X_train=data.X_train.reshape(-1, *shape), X_val=data.X_val.reshape(-1, *shape),
                   X_test=data.X_test.reshape(-1, *shape))


def check_fits(data: Dataset, input_shape: tuple[int, ...], n_outputs: int, model: str) -> None:
    """Data must have the model's input shape, and labels must index its outputs."""
    if data.input_shape != tuple(input_shape):
        fits = shaped_for(data, input_shape).input_shape == tuple(input_shape)
        hint = "; reshape it first with codesign.importers.data.shaped_for(data, input_shape)" if fits else ""
        raise DataError(
            f"data {data.name!r} has samples of shape {data.input_shape} but model {model!r} takes "
            f"{tuple(input_shape)}{hint}"
        )
    if data.task == "classification":
        top = int(max(data.y_train.max(initial=0), data.y_test.max(initial=0)))
        if top >= n_outputs:
            raise DataError(
                f"data {data.name!r} has label {top} but model {model!r} has only {n_outputs} outputs (labels 0..{n_outputs - 1})"
            )
