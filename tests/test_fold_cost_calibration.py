"""The folded-layer cost model (codesign.compress.fold_cost) against Yosys's counts of single folded layers, stored
by bench/calibrate_fold.py in bench/results/calibrate_fold.json (synth_xilinx; the layers are rebuilt from the same
seeds here and priced, no synthesis): LUT within 15 %, DSP exact, FF within 10 %; the measured tables the model
prices the input selects, ROMs and LUT-multiplier units with are the ones stored; Yosys's block RAM choice for a ROM
is the model's; and every folded design of bench/folding.py's benchmark (the digits MLP and CNN, their networks in
tests/models) prices within 15 % of its stored Yosys LUTs, DSP exact, BRAM within one block."""

import json
import math
import sys
from pathlib import Path

import pytest

from codesign.board import load_board
from codesign.compress.cost import network_cost, total_cost
from codesign.compress.fold_choice import reuse_at, with_reuse
from codesign.compress.fold_cost import ROM_LUTS, SELECT_LUTS, UNIT_LUTS, auto_in_block, memory_cost, \
    network_folded_cost
from codesign.core.network import Network

ROOT = Path(__file__).resolve().parents[1]
RESULTS = json.loads((ROOT / "bench" / "results" / "calibrate_fold.json").read_text())
FOLDING = json.loads((ROOT / "bench" / "results" / "folding.json").read_text())
FOLDING_CNN = json.loads((ROOT / "bench" / "results" / "folding_cnn.json").read_text())


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


def test_the_lut_multiplier_units_table_is_the_measured_one():
    assert {str(a): [list(r) for r in t] for a, t in UNIT_LUTS.items()} == RESULTS["units"]["xc7"]


def test_yosys_puts_a_rom_in_block_ram_where_the_model_does_and_as_many_blocks():
    """Deep and narrow ROMs too: 3,280 x 13 (the 28x28 CNN's 400-input Dense at one MAC unit) is 2 BRAM on Yosys,
    where the model once priced it in LUTs for being under 32 bits wide."""
    rows = RESULTS["rom_blocks"]["xc7"]
    assert any((r["depth"], r["width"], r["auto"]["bram"]) == (3280, 13, 2) for r in rows)
    for r in rows:
        assert auto_in_block(r["depth"], r["width"], "xc7") == (r["auto"]["bram"] > 0), r
        assert math.ceil(memory_cost(r["depth"], r["width"], "xc7", "block")["bram"]) == r["block"]["bram"], r
        auto = memory_cost(r["depth"], r["width"], "xc7")
        assert math.ceil(auto["bram"]) == r["auto"]["bram"], r
        if auto["bram"]:  # in block RAM the model prices no LUT; Yosys adds at most a read mux (two LUTs a bit)
            assert auto["lut"] == 0 and r["auto"]["lut"] <= 2 * r["width"], r


def _benchmark_rows():
    mlp = [("mlp", r, m) for r in FOLDING["rows"] if r["network"] == "digits" and r["reuse"] > 1
           for m in ("nodsp", "dsp", "block_nodsp") if m in r]
    cnn = [("cnn", r, m) for r in FOLDING_CNN["rows"] if r["reuse_per_pixel"] for m in ("nodsp", "dsp") if m in r]
    return [pytest.param(k, r, m, id=f"{k}-R{r.get('reuse') or r.get('reuse_per_pixel')}-{m}") for k, r, m in mlp + cnn]


@pytest.mark.parametrize("kind,row,mode", _benchmark_rows())
def test_every_folded_design_of_the_benchmark_prices_within_15_percent_of_yosys_luts(kind, row, mode):
    dsp = mode == "dsp"
    if kind == "mlp":
        net = Network.load(ROOT / "tests" / "models" / "folded_digits_mlp")
        c = network_folded_cost(net, row["reuse"], "xc7", dsp=dsp, memory="block" if mode == "block_nodsp" else "auto")
    else:
        net = Network.load(ROOT / "tests" / "models" / "folded_digits_cnn")
        c = total_cost(network_cost(with_reuse(net, reuse_at(net, 64 * row["reuse_per_pixel"])), load_board("pynq-z2"),
                                    None if dsp else "lut"))
    y = row[mode]
    assert c["dsp"] == y["dsp"]
    assert abs(c["bram"] - y["bram"]) <= 1
    assert abs(c["lut"] / y["lut"] - 1) <= 0.15
