"""The folded-layer cost model (codesign.compress.fold_cost) against Yosys's counts of single folded layers, stored
by bench/calibrate_fold.py in bench/results/calibrate_fold.json (synth_xilinx; the layers are rebuilt from the same
seeds here and priced, no synthesis): LUT within 15 %, DSP exact, FF within 10 %; and the measured tables the model
prices the input selects and ROMs with are the ones stored."""

import json
import sys
from pathlib import Path

import pytest

from codesign.compress.fold_cost import ROM_LUTS, SELECT_LUTS, network_folded_cost

ROOT = Path(__file__).resolve().parents[1]
RESULTS = json.loads((ROOT / "bench" / "results" / "calibrate_fold.json").read_text())


def _layer(name: str):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from calibrate_fold import layer_nets
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return layer_nets()[name]


def _stored(layer: str, family: str, mode: str) -> dict:
    return next(r["yosys"] for r in RESULTS["layers"]
                if r["layer"] == layer and r["family"] == family and r["mode"] == mode)


# the 16-100^5-5 MLP's hidden layers at II 126 (100:1 selects: the part the model over-priced by a third) and at
# II 6 (the vcu118 fold: shallow ROMs, many DSP units), on xcup, with DSPs and LUT multipliers
@pytest.mark.parametrize("layer", ["wide_r126", "wide_r6"])
@pytest.mark.parametrize("mode", ["dsp", "nodsp"])
def test_a_folded_layer_prices_within_15_percent_of_yosys_luts_with_dsps_exact(layer, mode):
    net, reuse = _layer(layer)
    y = _stored(layer, "xcup", mode)
    c = network_folded_cost(net, reuse, "xcup", dsp=mode == "dsp")
    assert c["dsp"] == y["dsp"]
    assert abs(c["lut"] / y["lut"] - 1) <= 0.15
    assert abs(c["ff"] / y["ff"] - 1) <= 0.10


def test_the_select_and_rom_tables_are_the_measured_ones():
    for family, m in RESULTS["micro"].items():
        assert {str(n): v for n, v in SELECT_LUTS if n > 1} == m["select_lut_per_bit"], family
        stored = {int(d): r["lut_per_bit"] for d, r in m["rom"].items()}
        assert all(stored[d] == v for d, v in ROM_LUTS if d in stored), family
