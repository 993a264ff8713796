"""The layer-kind protocol, and the lookup every stage's kind table goes through.

A layer kind (a dataclass in ``codesign.core.layers``) declares, once:

- its shape rule: ``output_shape(in_shape)`` (a merge: ``merged_shape(shapes)``);
- its type rule and its reference evaluation: ``codesign.core.reference.OUTPUT_TYPES`` and
  ``codesign.core.reference.REFERENCE``, one entry per kind (they need the exact-arithmetic helpers there);
- its window geometry: ``window(in_shape)``, a ``Window`` of kernel, strides and (before, after) pads per
  spatial axis (a Dense is the 1x1-window case with no spatial axis; element-wise layers read a 1x1 window;
  Flatten and the merges read no window: None);
- its prunable units: ``units``, a subset of ``UNITS``.

Each stage keeps one explicit module-level table from kind (a layer class) to its handler, and looks a
layer up with ``handler``: a table keyed by a base class (``Conv``, ``Pool``) covers its subclasses. Adding
a kind is a class in ``layers.py`` plus one handler in each stage that builds it; ``tests/test_layer_kinds.py``
fails when a stage claims a kind its table has no handler for, or when a kind is in no stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from codesign.errors import UnsupportedLayerError

UNITS = ("weights", "neurons", "channels")  # what pruning may remove: single weights, Dense outputs, conv filters

H = TypeVar("H")


def lookup(table: Mapping[type, H], cls: type) -> H | None:
    """The handler ``table`` holds for layer class ``cls`` or its nearest base class, or None."""
    for base in cls.__mro__:
        if base in table:
            return table[base]
    return None


def handler(table: Mapping[type, H], layer: Any, stage: str,
            error: type[Exception] = UnsupportedLayerError) -> H:
    """The handler of ``layer``'s kind in ``stage``'s ``table``; a kind the stage does not build is refused with
    ``error``, naming the layer, the stage and the kinds it builds."""
    h = lookup(table, type(layer))
    if h is None:
        raise error(f"layer {layer.name!r} ({layer.kind}): not supported by {stage}; "
                                    f"supported: {kind_names(table)}")
    return h


def kind_names(table: Iterable[type]) -> str:
    """The kinds a table's keys name, comma-separated, for messages."""
    return ", ".join(getattr(cls, "kind", cls.__name__) for cls in table)
