"""Live tf-keras / Keras 3 / QKeras / HGQ models (objects the user already built) to the IR.

The model's own ``to_json()`` and its weight arrays go through the same mapping as a file read
as data (``keras_import``), so a live model and its saved file import identically. TensorFlow is
imported only by ``import_tf`` (for callers that need it, e.g. tests comparing with Keras), quietly.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from codesign.errors import ModelFileError
from codesign.core.fixed import FixedType
from codesign.importers.keras_files import KerasFile, short_weight_name
from codesign.importers.keras_import import network_from_config, plan
from codesign.tools import quiet_import, tensorflow_defaults
from codesign.core.network import Network


def import_tf() -> Any:
    """TensorFlow with legacy (Keras 2) Keras for QKeras, its native start-up lines kept off stderr."""
    tensorflow_defaults()
    if os.environ["TF_USE_LEGACY_KERAS"] != "1":
        raise ModelFileError("TF_USE_LEGACY_KERAS must be 1 for QKeras (Keras-2 only); unset it or set it to 1")
    try:
        tf = quiet_import("tensorflow")
        quiet_import("tf_keras")
    except ImportError:
        raise ModelFileError(
            "comparing with Keras needs TensorFlow: pip install 'fpga-codesign[keras]' (tensorflow, tf-keras, qkeras)"
        ) from None
    return tf


def network_from_keras(model: Any, input_type: FixedType | str | None = None, name: str | None = None) -> Network:
    """Import a live Keras model through its config and weights, like a file."""
    try:
        config = json.loads(model.to_json())
    except (TypeError, ValueError, NotImplementedError) as e:
        raise ModelFileError(f"model {getattr(model, 'name', '?')!r}: its config cannot be serialized ({e})") from None
    weights: dict[str, dict[str, np.ndarray]] = {}
    for layer in model.layers:
        weights[layer.name] = {short_weight_name(getattr(w, "path", None) or w.name): np.asarray(w.numpy())
                               for w in layer.weights}
    source = f"model {model.name!r}"
    return network_from_config(KerasFile(config, weights, source, plan(config, source)), input_type=input_type,
                               name=name or model.name)
