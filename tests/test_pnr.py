"""Place and route on the open-toolchain boards: their files, the board top and constraints, a tiny
MLP through ``codesign implement`` to a bitstream, and a network too big for the iCE40."""

import json

import numpy as np
import pytest

from codesign.app import cli, flow
from codesign.app.artifact import Artifact
from codesign.board import load_board, parse_board
from codesign.core.fixed import FixedType
from codesign.core.layers import Dense, Output, ReLU
from codesign.core.network import Network
from codesign.errors import BoardError
from rtl_sim.pnr import board_top, constraints, module_ports, shift_register_top
from tests.builders import random_dense

OPEN_BOARDS = {"ulx3s-85f": ("LFE5U-85F", "ecp5"), "orangecrab-25f": ("LFE5U-25F", "ecp5"),
               "icebreaker": ("iCE40UP5K", "ice40"), "tangnano9k": ("GW1NR-LV9", "gowin")}


def tiny_mlp(mult: str = "auto", n_in: int = 4, n_hidden: int = 3, in_bits: int = 4) -> Network:
    """4-3-2, 4-bit weights: a few dozen LUT4, so synthesis and place and route take seconds."""
    r = np.random.default_rng(3)
    wt, out_t = FixedType(4, 1), FixedType(8, 4, True, "RND_CONV", "SAT")
    l1 = random_dense(r, "fc1", n_in, n_hidden, wt, biases=(-4, 4), result_type=out_t, mult=mult)
    l2 = random_dense(r, "fc2", n_hidden, 2, wt, biases=(-4, 4), result_type=out_t, mult=mult)
    return Network("tiny_mlp", (n_in,), [l1, ReLU("relu1"), l2, Output("out")], FixedType(in_bits, 2))


def artifact_with_rtl(tmp_path, net: Network, board: str) -> Artifact:
    art = Artifact(tmp_path / "run")
    art.claim()
    net.save(art.dir)
    art.update(board=load_board(board).to_json())
    flow.step_rtl(art)
    return art


@pytest.mark.parametrize("name", sorted(OPEN_BOARDS))
def test_open_toolchain_board_has_part_pins_and_source(name):
    b = load_board(name)
    part, arch = OPEN_BOARDS[name]
    assert b.part.startswith(part) and b.synth_family == arch and b.pnr.arch == arch
    assert {"clk", "uart_rx", "uart_tx"} <= dict(b.pnr.pins).keys() and b.pnr.led and b.pnr.source
    assert b.lut_unit == "LUT4" and b.lut > 0 and b.ff > 0 and b.dsp > 0 and "Data Sheet" in b.source


def test_boards_command_lists_the_open_toolchain_boards(capsys):
    assert cli.main(["boards", "--json"]) == 0
    names = {b["name"] for b in json.loads(capsys.readouterr().out)}
    assert set(OPEN_BOARDS) <= names


def test_pnr_entry_without_the_uart_pins_is_refused():
    text = "name: x\nvendor: lattice\nfamily: ECP5\npart: p\nlut: 1\nff: 1\ndsp: 1\nbram: 1\nclock_mhz: 25\n" \
           "synth_family: ecp5\nsource: s\npnr: {arch: ecp5, device: 85k, pins: {clk: G2}}\n"
    with pytest.raises(BoardError, match=r"^x.yaml: pnr pins must name the sites of clk, uart_rx, uart_tx$"):
        parse_board(text, "x.yaml")


@pytest.mark.parametrize("name, expected", [
    ("ulx3s-85f", 'LOCATE COMP "uart_tx" SITE "L4";'),
    ("icebreaker", "set_io -nowarn uart_rx 6\n"),
    ("tangnano9k", 'IO_LOC "led[5]" 16;'),
])
def test_constraints_place_the_board_pins(name, expected):
    pnr = load_board(name).pnr
    assert expected in constraints(pnr, len(pnr.led))[1]


def test_shift_register_top_has_only_board_ports():
    top = shift_register_top("core", 16, 8, 3)
    assert module_ports(top, "codesign_board_top") == {"clk": ("input", 1), "uart_rx": ("input", 1),
                                                       "uart_tx": ("output", 1), "led": ("output", 3)}


def test_uart_top_gets_the_board_clock():
    uart = ("module net_uart #(\n  parameter integer CLK_HZ = 100000000\n) (\n  input wire clk,\n  input wire rst,\n"
            "  input wire uart_rx,\n  output wire uart_tx,\n  output reg [7:0] led\n);\nendmodule\n")
    text, kind = board_top(uart, "net_uart", load_board("icebreaker"))
    assert kind == "uart" and "net_uart #(.CLK_HZ(12000000)) core" in text and "assign led[1:0] = core_led[1:0];" in text


def _implement(tmp_path, board, capsys, net: Network | None = None) -> dict:
    art = artifact_with_rtl(tmp_path, net or tiny_mlp(), board)
    assert cli.main(["implement", str(art.dir), "--quiet"]) == 0, capsys.readouterr().err
    imp = art.report()["implement"]
    bit = art.dir / imp["bitstream"]
    assert bit.is_file() and bit.stat().st_size > 0 and (art.dir / "implement" / "pnr.json").is_file()
    assert imp["fmax_mhz"] > 0 and imp["critical_path_ns"] > 0 and imp["utilisation"]["lut"]["used"] > 0
    assert art.incomplete is None
    return art.report()


def test_tiny_mlp_implements_to_an_ecp5_bitstream(tmp_path, capsys):
    _implement(tmp_path, "ulx3s-85f", capsys)


@pytest.mark.slow
@pytest.mark.parametrize("board", ["icebreaker", "tangnano9k"])
def test_tiny_mlp_implements_to_a_bitstream(tmp_path, capsys, board):
    _implement(tmp_path, board, capsys)


@pytest.mark.slow
def test_a_folded_mlp_implements_to_an_ecp5_bitstream_behind_its_uart_top(tmp_path, capsys):
    from codesign.compress.fold_choice import with_reuse

    rep = _implement(tmp_path, "ulx3s-85f", capsys, with_reuse(tiny_mlp(), {"fc1": 4, "fc2": 3}))
    assert rep["rtl"]["kind"] == "folded" and rep["rtl"]["ii"] == 4
    assert (rep["implement"]["top"], rep["implement"]["wrapper"]) == ("tiny_mlp_uart", "uart")


def test_network_over_the_ice40_dsp_blocks_exits_2_in_one_line(tmp_path, capsys):
    r = np.random.default_rng(5)  # 6 x 3 distinct odd 8-bit constants, each a DSP multiply; the UP5K has 8
    w = r.choice([-1, 1], size=(6, 3)) * (2 * r.integers(20, 63, size=(6, 3)) + 1)
    wt = FixedType(8, 1)
    fc = Dense("fc1", w, np.zeros(3, dtype=int), weight_type=wt, bias_type=wt, mult="dsp",
               result_type=FixedType(8, 4, True, "RND_CONV", "SAT"))
    net = Network("dsp_mlp", (6,), [fc, Output("out")], FixedType(8, 2))
    art = artifact_with_rtl(tmp_path, net, "icebreaker")
    assert cli.main(["implement", str(art.dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("codesign: error: the design does not fit icebreaker (iCE40UP5K-SG48): ")
    assert "ICESTORM_DSP (dsp), the part has 8" in err and "--budget dsp=" in err
    assert not (art.dir / "implement").exists() and "implement" not in art.report()


def test_implement_on_a_board_without_open_toolchain_exits_2(tmp_path, capsys):
    art = Artifact(tmp_path / "run")
    art.claim()
    tiny_mlp().save(art.dir)
    art.update(board=load_board("arty-a7-35").to_json(), rtl={"top": "tiny_mlp"})
    (art.dir / "rtl").mkdir()
    assert cli.main(["implement", str(art.dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("codesign: error: board 'arty-a7-35' (xc7a35ticsg324-1L) has no open place-and-route "
                          "toolchain: build it with the vendor's tools (hls/ has the project); boards with one: ")
    assert "icebreaker, orangecrab-25f, tangnano9k, ulx3s-85f" in err
