"""The layer-kind protocol: every stage has a handler for each kind it claims, and every kind is in some stage.

Each stage keeps one module-level table from kind (a layer class) to handler (docs/architecture.md, "Layer
kinds"); a table keyed by a base class covers its subclasses (``codesign.core.kinds.lookup``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import hls.cnn
import hls.graph
import hls.project
import rtl_sim.branches
import rtl_sim.stream
import rtl_sim.verilog
from codesign.compress import conv_cost, qcnn, quantize
from codesign.core import reference
from codesign.core.kinds import UNITS, handler, lookup
from codesign.core.layers import LAYER_CLASSES, Conv2D, Dense, Flatten, Layer
from codesign.errors import UnsupportedLayerError

MERGES = ("Add", "Concatenate")
MLP_KINDS = ("Dense", "ReLU", "Quant", "Flatten", "Output")
ALL_KINDS = tuple(LAYER_CLASSES)

# stage -> (its kind table, the kinds it claims to build, by name: read from what the stage publishes where it does)
STAGES = {
    "reference": (reference.REFERENCE, ALL_KINDS),
    "reference type rule": (reference.OUTPUT_TYPES, ALL_KINDS),
    "quantization": (quantize.QUANTIZERS, ALL_KINDS),
    "training surrogate": (qcnn.SURROGATES,  # the QCNN fuses ReLU into the stage it reads; Output is the head
                           tuple(k for k in hls.project.SUPPORTED if k != "ReLU")),
    "cost (stream)": (conv_cost.CNN_PARTS, (*rtl_sim.stream.STREAM_LAYER_NAMES, *MERGES)),
    "HLS (CNN and graph)": ({**hls.cnn.CNN_MODULES, **hls.graph.MERGE_OPS}, hls.project.SUPPORTED),
    "HLS precisions (CNN and graph)": (hls.cnn.CNN_PRECISIONS,
                                       tuple(k for k in hls.project.SUPPORTED if k not in MERGES)),
    "HLS (branched MLP)": (hls.graph.MLP_MODULES, ("Dense", "ReLU")),
    "RTL (stream)": (rtl_sim.stream.STREAM_STAGES, rtl_sim.stream.STREAM_LAYER_NAMES),
    "RTL (MLP)": (rtl_sim.verilog.MLP_STAGES, MLP_KINDS),
    "RTL (branched stream)": (rtl_sim.branches.GRAPH_STREAM_STAGES, (*rtl_sim.stream.STREAM_LAYER_NAMES, *MERGES)),
    "RTL (branched MLP)": (rtl_sim.branches.GRAPH_MLP_STAGES, (*MLP_KINDS, *MERGES)),
}
CORE_STAGES = ("reference", "reference type rule")  # every kind has these; the rest are the stages that build it


def missing_handlers(table: dict, kinds: tuple[str, ...], classes: dict[str, type] = LAYER_CLASSES) -> list[str]:
    """The claimed kinds the table has no handler for."""
    return [k for k in kinds if lookup(table, classes[k]) is None]


def covered(table: dict, cls: type) -> bool:
    """The table names the kind or one of its bases other than ``Layer`` itself (no catch-all counts)."""
    return any(base in table for base in cls.__mro__ if base is not Layer)


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_has_a_handler_for_every_kind_it_claims(stage):
    table, claimed = STAGES[stage]
    assert not missing_handlers(table, claimed), f"{stage}: no handler for {missing_handlers(table, claimed)}"


def test_a_claimed_kind_without_a_handler_is_found():
    @dataclass
    class Upsample(Layer):
        kind = "Upsample"

    classes = {**LAYER_CLASSES, "Upsample": Upsample}
    assert missing_handlers({Dense: "dense"}, ("Dense", "Upsample"), classes) == ["Upsample"]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_kind_is_built_by_some_stage(kind):
    stages = [s for s, (table, _) in STAGES.items() if s not in CORE_STAGES and covered(table, LAYER_CLASSES[kind])]
    assert stages, f"{kind} has a reference but no stage builds it"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_kind_declares_its_prunable_units_from_the_protocol(kind):
    assert set(LAYER_CLASSES[kind].units) <= set(UNITS)


def test_a_dense_layer_is_the_one_by_one_window_case():
    w = Dense("d", np.zeros((12, 3))).window((12,))
    assert (w.kernel, w.strides, w.pads) == ((), (), ())


def test_a_convolution_declares_its_window_with_the_same_padding():
    w = Conv2D("c", np.zeros((3, 3, 1, 2)), padding="same", strides=(2, 2)).window((8, 8, 1))
    assert (w.kernel, w.strides, w.pads) == ((3, 3), (2, 2), ((0, 1), (0, 1)))


def test_a_kind_no_stage_builds_is_refused_naming_the_layer_and_the_stage():
    with pytest.raises(UnsupportedLayerError, match=r"^layer 'f' \(Flatten\): not supported by the test stage; "
                                                    r"supported: Dense$"):
        handler({Dense: None}, Flatten("f"), "the test stage")
