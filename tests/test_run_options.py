"""``run_flow`` and ``run_sweep`` take an options object; fields given by name still work."""

from __future__ import annotations

import pytest

from codesign.app.flow import FlowOptions, run_flow
from codesign.app.sweep import SweepOptions, sweep_options


def test_sweep_fields_by_name_go_to_the_options_and_the_rest_to_the_search():
    o = sweep_options(SweepOptions(seed=3, search={"epochs": 2}), {"cluster": "ray", "final_epochs": 1})
    assert (o.seed, o.cluster, o.search) == (3, "ray", {"epochs": 2, "final_epochs": 1})


@pytest.mark.parametrize("call, message", [
    (lambda: run_flow("unused", "digits-mlp", "digits", "arty-a7-35", None, "vitis"),
     r"^run_flow: options must be a FlowOptions, not 'vitis'; give the rest by name$"),
    (lambda: sweep_options("hardware", {}), r"^run_sweep: options must be a SweepOptions, not 'hardware'"),
    (lambda: run_flow("unused", colck_mhz=100), r"unexpected keyword argument 'colck_mhz'"),
])
def test_a_positional_option_or_a_misspelt_one_is_refused_before_anything_runs(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_flow_options_default_to_the_cli_defaults():
    o = FlowOptions()
    assert (o.method, o.synth, o.clock_mhz, o.samples, o.force) == ("hardware", True, None, None, False)
