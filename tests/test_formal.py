"""Formal equivalence of the cmvm and csd datapaths (rtl_sim.formal): proofs, disproofs, time limits."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from codesign.core.network import Network
from rtl_sim import formal
from rtl_sim.synth import stage_networks


@pytest.fixture(scope="module")
def last_stage(default_run):
    """The last Dense stage of the network the default flow compressed (fc3, pruned and quantized)."""
    return stage_networks(Network.load(default_run[1]))[-1]


@pytest.fixture(scope="module")
def small_stage(digits_q):
    """A slice of the 8-bit digits network's fc3 (8 inputs, 3 outputs): a few seconds per proof."""
    name, st = stage_networks(digits_q)[-1]
    d = st.layers[0]
    small = dataclasses.replace(d, weight=d.weight[:8, :3].copy(), bias=d.bias[:3].copy(),
                                mask=None if d.mask is None else d.mask[:8, :3].copy())
    return name, Network(f"{st.name}_small", (8,), [small], st.input_type)


def test_default_networks_last_layer_proven_equal(last_stage):
    name, st = last_stage
    r = formal.prove_datapaths_equal(st, name, timeout_s=240)
    assert r.status == "proven", r.describe()
    assert r.detail["obligations"] > np.count_nonzero(st.layers[0].weight)  # every product and adder checked
    assert "proven equal" in r.describe()


def _wrong_shift(t: formal.Traced) -> formal.Traced:
    """The cmvm design with one adder term's shift changed (``<<< k`` to ``<<< k+1``)."""
    lines = t.design.verilog.splitlines()
    for k, line in enumerate(lines):
        m = re.search(r"<<< (\d+)\)", line)
        if m and "_s_" in line:
            lines[k] = line[:m.start()] + f"<<< {int(m.group(1)) + 1})" + line[m.end():]
            break
    else:
        raise AssertionError("no shifted adder term in the cmvm design")
    return formal.Traced(dataclasses.replace(t.design, verilog="\n".join(lines) + "\n"), t.trace)


def test_wrong_shift_disproved_with_counterexample_the_reference_confirms(small_stage):
    name, st = small_stage
    gold = formal.emit_traced(st, "csd", "gold")
    gate = _wrong_shift(formal.emit_traced(st, "cmvm", "gate"))
    r = formal.prove_traced(st, gold, gate, name, timeout_s=120)
    assert r.status == "disproven", r.describe()
    assert "not its operands' exact result" in r.detail["failed"]
    x = r.counterexample
    ref = [int(v) for v in np.ravel(st.forward_int(np.array([x])).values)]
    assert formal.evaluate(gold.design, x) == ref  # the csd design agrees with the reference there
    assert formal.evaluate(gate.design, x) != ref  # the wrong design does not
    assert r.detail["gate_output"] != r.detail["reference"]


def test_timeout_reported_as_not_proven(small_stage):
    name, st = small_stage
    r = formal.prove_datapaths_equal(st, name, timeout_s=0.5)
    assert r.status == "timeout" and not r.proven
    assert "not proven in 0.5 s" in r.describe()
