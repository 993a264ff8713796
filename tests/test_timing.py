"""The delay model, register placement by the clock, the price of its flip-flops and the report's timing."""

import re

import numpy as np
import pytest

from codesign.board import load_board
from codesign.compress.cost import network_cost, total_cost
from codesign.core.timing import MODELS, delay_model
from codesign.core.verify import verification_inputs
from codesign.errors import BackendError, ConfigError
from rtl_sim.cosim import cosimulate, describe_mismatch, write_rtl
from rtl_sim.stream import emit_stream_verilog
from rtl_sim.verilog import emit_verilog
from tests.test_rtl_stream import tiny_cnn


@pytest.mark.parametrize("family", sorted(MODELS))
def test_the_delay_model_grows_with_adder_width_and_logic_levels(family):
    m = delay_model(family)
    widths = [m.adder(w) for w in (1, 4, 8, 16, 32)]
    assert widths == sorted(widths) and widths[0] < widths[-1]
    assert 0 < m.luts(1) < m.luts(2) and m.clk_to_q > 0 and m.setup >= 0
    assert m.budget(100) == pytest.approx(10.0 - m.setup)


@pytest.mark.parametrize("family, label, source", [("ecp5", "calibrated", "nextpnr"), ("xc7", "estimate", "DS181"),
                                                   ("xcup", "estimate", "DS923"), ("cyclonev", "estimate", "Cyclone V")])
def test_each_family_says_whether_it_is_calibrated_or_an_estimate_and_from_what(family, label, source):
    m = delay_model(family)
    assert m.label == label and source in m.source and label in m.describe()


def test_an_unknown_family_or_a_bad_clock_is_a_clear_error(small_mlp):
    with pytest.raises(ConfigError, match=r"^no delay model for family 'ice40'; families: ecp5, xc7, xcup, cyclonev$"):
        delay_model("ice40")
    with pytest.raises(ConfigError, match=r"^clock -5 MHz: give a positive frequency, e.g. --clock 100$"):
        emit_verilog(small_mlp, clock_mhz=-5, family="ecp5")
    with pytest.raises(BackendError, match=r"^a clock of 100 MHz needs the FPGA family"):
        emit_verilog(small_mlp, clock_mhz=100)


@pytest.mark.parametrize("family, clocks", [("ecp5", (50, 100, 150)), ("xc7", (50, 150, 200))])
def test_registers_placed_for_a_clock_meet_the_models_period(small_mlp, family, clocks):
    designs = [emit_verilog(small_mlp, clock_mhz=f, family=family) for f in clocks]
    for f, d in zip(clocks, designs):
        assert d.timing["critical_path_ns"] <= 1000.0 / f and d.timing["meets_target"]
        assert d.timing["target_mhz"] == f and d.timing["latency_cycles"] == d.latency
    lat = [d.latency for d in designs]
    assert lat == sorted(lat) and lat[0] < lat[-1]  # a faster clock: more stages


def test_the_manual_spacing_still_places_registers_and_is_timed(small_mlp):
    every1 = emit_verilog(small_mlp, adder_regs_every=1, family="ecp5", clock_mhz=50)  # the override wins
    plain = emit_verilog(small_mlp, family="ecp5")
    assert every1.verilog == emit_verilog(small_mlp, adder_regs_every=1, family="ecp5").verilog
    assert every1.timing["critical_path_ns"] < plain.timing["critical_path_ns"] and plain.latency == 3


def test_the_stream_cnn_meets_the_models_period():
    net = tiny_cnn()
    slow, fast = (emit_stream_verilog(net, clock_mhz=f, family="ecp5") for f in (50, 150))
    assert fast.timing["critical_path_ns"] <= 1000.0 / 150 < slow.timing["critical_path_ns"]
    assert fast.latency > slow.latency and fast.timing["ii"] == slow.timing["ii"] == 36.0


@pytest.mark.parametrize("clock", [150, pytest.param(300, marks=pytest.mark.slow)])
def test_a_clock_driven_mlp_cosimulates_bit_exact_in_verilator(small_mlp, tmp_path, clock):
    d = write_rtl(small_mlp, tmp_path / "rtl", clock_mhz=clock, family="ecp5")
    assert d.latency > 3
    q = verification_inputs(small_mlp, None, 500)
    r = cosimulate(small_mlp, tmp_path / "rtl", tmp_path / "cosim", q, mode="bulk")
    assert r.bit_exact and r.latency_cycles == d.latency and r.ii == 1.0, describe_mismatch(r)


def test_a_clock_driven_stream_cnn_cosimulates_bit_exact_in_verilator(tmp_path):
    net = tiny_cnn()
    d = write_rtl(net, tmp_path / "rtl", clock_mhz=200, family="ecp5")
    rng = np.random.default_rng(0)
    q = rng.integers(net.input_type.min_int, net.input_type.max_int + 1, size=(40, *net.input_shape))
    r = cosimulate(net, tmp_path / "rtl", tmp_path / "cosim", q, mode="bulk")
    assert r.bit_exact and r.latency_cycles == d.latency, describe_mismatch(r)


def test_a_faster_clock_costs_flip_flops_not_luts(small_mlp):
    board = load_board("arty-a7-35")
    costs = [total_cost(network_cost(small_mlp, board, clock_mhz=f)) for f in (0, 100, 200, 300)]
    assert len({c["lut"] for c in costs}) == 1
    ffs = [c["ff"] for c in costs]
    assert ffs == sorted(ffs) and ffs[0] < ffs[-1]
    assert network_cost(small_mlp, board) == network_cost(small_mlp, board, clock_mhz=board.clock_mhz)


def _data_reg_bits(verilog: str) -> int:
    return sum(int(m) + 1 for m in re.findall(r"reg signed \[(\d+):0\]", verilog))


@pytest.mark.parametrize("clock", [150, 300])
def test_the_priced_flip_flops_are_the_emitters_registers(small_mlp, clock):
    """The cost model's pipeline FFs are the bits of the registers the emitter adds (one placement rule)."""
    board = load_board("arty-a7-35")
    d, plain = emit_verilog(small_mlp, clock_mhz=clock, family="xc7"), emit_verilog(small_mlp)
    emitted = _data_reg_bits(d.verilog) - _data_reg_bits(plain.verilog) + d.latency - plain.latency
    priced = total_cost(network_cost(small_mlp, board, clock_mhz=clock))["ff"] \
        - total_cost(network_cost(small_mlp, board, clock_mhz=0))["ff"]
    assert emitted > 0 and abs(priced - emitted) <= 0.1 * emitted, (priced, emitted)


def test_the_report_gives_cycles_clock_latency_and_throughput():
    from codesign.app.report import timing_section, timing_text

    t = {"family": "ecp5", "model": "calibrated", "model_source": "nextpnr", "critical_path_ns": 5.0,
         "fmax_mhz": 200.0, "target_mhz": 150.0, "ii": 1.0}
    rep = {"rtl": {"latency_cycles": 6, "timing": t}, "cosim": {"latency_cycles": 6, "ii": 1.0}}
    est = timing_section(rep)
    assert est["cycles"] == 6 and est["clock_mhz"] == 150.0 and est["latency_ns"] == 40.0
    assert est["inferences_per_s"] == 150_000_000 and est["clock_basis"].startswith("estimated by the ecp5 delay model")
    measured = timing_section({**rep, "implement": {"fmax_mhz": 125.0, "tool": "nextpnr-ecp5 0.11"}})
    assert measured["clock_mhz"] == 125.0 and not measured["meets_target"] and measured["latency_ns"] == 48.0
    assert measured["clock_basis"] == "measured by nextpnr-ecp5 0.11 place and route"
    assert measured["model_error"] == pytest.approx(5.0 * 125.0 / 1000.0 - 1)
    assert timing_text(measured).startswith("6 cycles = 48.0 ns at 125 MHz (target 150 MHz NOT met), measured by")


def test_codesign_rtl_places_registers_for_clock_and_the_report_states_it(small_mlp, tmp_path):
    import json

    from codesign.app.artifact import Artifact
    from codesign.app.cli import main
    from codesign.app.report import write_report

    art = Artifact(tmp_path / "run")
    art.claim()
    small_mlp.save(art.dir)
    art.update(board=load_board("arty-a7-35").to_json())
    assert main(["rtl", str(art.dir), "--quiet"]) == 0
    nominal = art.report()["rtl"]
    assert main(["rtl", str(art.dir), "--clock", "200", "--quiet"]) == 0
    rtl = art.report()["rtl"]
    assert nominal["clock_mhz"] == 100 and rtl["clock_mhz"] == 200 and rtl["latency_cycles"] > nominal["latency_cycles"]
    assert rtl["timing"]["family"] == "xc7" and rtl["timing"]["model"] == "estimate"
    write_report(art)
    t = json.loads((art.dir / "report.json").read_text())["timing"]
    assert t["cycles"] == rtl["latency_cycles"] and t["clock_target_mhz"] == 200 and t["ii"] == 1.0
    assert t["clock_basis"] == "estimated by the xc7 delay model (estimate)"
    assert f"{t['cycles']} cycles = {t['latency_ns']:,} ns at {t['clock_mhz']:g} MHz" in (art.dir / "report.md").read_text()


@pytest.mark.parametrize("clock", ["0", "-3", "fast"])
def test_a_clock_that_is_not_a_positive_frequency_is_refused(clock, tmp_path, capsys):
    from codesign.app.cli import main

    with pytest.raises(SystemExit) as e:
        main(["rtl", str(tmp_path), "--clock", clock])
    assert e.value.code == 2 and f"must be a clock in MHz above 0, e.g. 100 or 250, not {clock!r}" in capsys.readouterr().err


def test_a_value_held_three_or_more_cycles_is_priced_as_shift_register_luts_on_xilinx_only():
    """Yosys maps a delay run of 3+ registers to SRL LUTs on xc7 (shregmap); synth_ecp5 keeps flip-flops."""
    from codesign.compress.cost import pipeline_ffs, pipeline_srls
    from codesign.core.fixed import FixedType
    from codesign.core.layers import Dense

    w = np.zeros((16, 2), dtype=np.int64)
    w[0, 0] = w[1, 0] = 1  # output 0: one adder in the first cycle, read in the last
    w[:, 1] = np.arange(16) * 2 + 1  # output 1: several adder levels
    wt = FixedType(8, 4)
    layer = Dense("d", w.astype(float), np.zeros(2), weight_type=wt, bias_type=wt)
    x = FixedType(8, 0)
    (ff_x, cycles), srl_x = pipeline_ffs(layer, x, "xc7", None, 1), pipeline_srls(layer, x, "xc7", None, 1)
    (ff_e, _), srl_e = pipeline_ffs(layer, x, "ecp5", None, 1), pipeline_srls(layer, x, "ecp5", None, 1)
    assert cycles >= 3 and srl_e == 0 and srl_x > 0
    assert ff_e - ff_x == srl_x * cycles  # each SRL bit replaces its run's flip-flops


def test_the_retimed_placement_holds_fewer_bits_at_the_same_latency_and_period(small_mlp):
    """Min-area retiming moves adders later within their slack: fewer held bits, same cycles, period met."""
    import codesign.core.timing as timing
    from codesign.compress.cost import _shared_graph

    layer, model = small_mlp.layers[0], delay_model("ecp5")
    graph, _ = _shared_graph(layer, small_mlp.input_type, layer.mult)
    retimed = timing.schedule_graph(graph, model, 200)
    asap = timing._retime
    try:
        timing._retime = lambda *a, **k: None
        plain = timing.schedule_graph(graph, model, 200)
    finally:
        timing._retime = asap
    assert retimed.last == plain.last and retimed.reg_bits < plain.reg_bits
    assert retimed.critical_ns <= model.budget(200) + model.setup + 1e-9
