"""``codesign.importers.load``: one entry point for every model source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codesign.core.fixed import FixedType
from codesign.core.network import NETWORK_JSON, WEIGHTS_NPZ, Network
from codesign.errors import ModelFileError
from codesign.importers.builtin import BUILTIN_MODELS, builtin_model

TORCH_SUFFIXES = (".pt", ".pth", ".pt2")
KERAS_SUFFIXES = (".h5", ".hdf5", ".json", ".keras")
ONNX_SUFFIXES = (".onnx",)


def load(
    model: Any,
    weights: str | Path | None = None,
    trust: bool = False,
    input_shape: tuple[int, ...] | None = None,
    input_type: FixedType | str | None = None,
) -> Network:
    """A Network from a path (.pt/.pt2/.h5/.json/.keras/.onnx or a saved artifact directory), a built-in
    name, a live ``nn.Module`` or a live tf-keras model.

    ``trust`` allows unpickling a full ``.pt`` module (that runs code from the file).
    ``input_type`` sets the input fixed-point type of a quantized (QKeras, or QONNX without an input Quant) model.
    """
    if isinstance(model, Network):
        return model
    if isinstance(model, (str, Path)):
        s = str(model)
        if s in BUILTIN_MODELS:
            return builtin_model(s)
        path = Path(s)
        if path.is_dir():
            if (path / NETWORK_JSON).is_file():
                return Network.load(path)
            raise ModelFileError(f"{path}: a directory without {NETWORK_JSON}; give a model file or a saved network")
        if not path.exists():
            hint = f"; built-in models: {', '.join(BUILTIN_MODELS)}" if path.suffix == "" else ""
            raise ModelFileError(f"model file {s!r} does not exist{hint}")
        if path.name == NETWORK_JSON and (path.parent / WEIGHTS_NPZ).is_file():  # a saved network, named by its file
            return Network.load(path.parent)
        suffix = path.suffix.lower()
        if suffix in TORCH_SUFFIXES:
            from codesign.importers.torch_import import load_torch_file

            return load_torch_file(path, trust=trust, input_shape=input_shape)
        if suffix in KERAS_SUFFIXES:
            from codesign.importers.keras_import import load_keras_file

            return load_keras_file(path, weights=weights, input_type=input_type)
        if suffix in ONNX_SUFFIXES:
            from codesign.importers.onnx_import import load_onnx_file

            return load_onnx_file(path, input_type=input_type)
        raise ModelFileError(
            f"{path}: unknown model format {suffix!r}; expected one of "
            f"{', '.join(TORCH_SUFFIXES + KERAS_SUFFIXES + ONNX_SUFFIXES)}, a saved network directory, or a built-in name"
        )
    mod = type(model).__module__
    if mod.startswith("torch") or _is_torch_module(model):
        from codesign.importers.torch_import import network_from_module

        return network_from_module(model, input_shape=input_shape)
    if mod.startswith(("keras", "tf_keras", "tensorflow", "qkeras")) or hasattr(model, "get_config"):
        from codesign.importers.keras_live import network_from_keras

        return network_from_keras(model, input_type=input_type)
    raise ModelFileError(f"cannot load a {type(model).__name__}: give a path, a built-in name, an nn.Module or a Keras model")


def _is_torch_module(obj: Any) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(obj, torch.nn.Module)


def model_name(model: Any) -> str:
    """How reports name a model: its path or built-in name, a Network's name, or a module's class."""
    if isinstance(model, (str, Path)):
        return str(model)
    if isinstance(model, Network):
        return model.name
    return type(model).__name__
