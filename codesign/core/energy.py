"""Energy per inference from simulated switching activity, per FPGA family, with its sources and range.

dynamic = sum over the netlist's nets of toggles x (the driver's output capacitance + the routing
capacitance per fan-out x fan-out) x V^2 / 2, plus the clock: every flip-flop's clock pin and its share
of the clock tree switch each cycle (C x V^2 per cycle, both edges);
static  = the part's static power x the time one inference takes at the design's throughput.

The activity comes from ``rtl_sim.activity`` (toggles by resource kind, per stage) as plain numbers, so
this module stays in the core: the report and compression both read it.

The capacitances are not measured by this project. They are triangulated, with a stated range each,
from public sources (docs/energy.md gives the table and the reasoning):

- the VTR power model (VersaPower: Goeders & Wilton, FPT 2012; the capacitances of VTR's 40/22 nm
  architecture files) for the switched capacitance of a routed connection and of a LUT's output;
- Li, Lin, He, Chen, Cong, "Power modeling and characteristics of FPGAs", IEEE TCAD 24(11), 2005, and
  Shang, Kaviani, Bathala, "Dynamic power consumption in Virtex-II FPGA family", FPGA 2002: interconnect
  is the larger part of dynamic power (60 % and more), clock 15-20 %, logic the rest;
- Xilinx UG440 (XPE) and its defaults (12.5 % toggle rate, fan-out 3) for the order of magnitude of
  7-series logic and signal power, and AMD's XPE/report_power device static figures for the parts;
- Lattice FPGA-DS-02012 (ECP5 data sheet, static supply current) and its power calculator's defaults.

Every figure is reported low / mid / high: the low and high ends take every coefficient at its low
(high) end together, so the range is the model's, not a statistical interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from codesign.errors import ConfigError

VECTORLESS_TOGGLE_RATE = 0.125  # Vivado/XPE's default toggle rate (UG440), per net and clock cycle
BOUNDS = ("low", "mid", "high")


@dataclass(frozen=True)
class Coefficients:
    """Switched capacitance per toggle of a net, by the kind of its driver, in fF (low, mid, high)."""

    family: str
    vdd: float  # the core supply, V
    lut: tuple[float, float, float]
    carry: tuple[float, float, float]
    carry_chain: tuple[float, float, float]
    ff: tuple[float, float, float]
    dsp: tuple[float, float, float]
    bram: tuple[float, float, float]
    route_per_fanout: tuple[float, float, float]
    clock_per_ff: tuple[float, float, float]  # per flip-flop and cycle (its pin and its share of the tree)
    source: str

    def c(self, kind: str, bound: int) -> float:
        return 0.0 if kind == "input" else getattr(self, kind)[bound]


# 7-series (28 nm HPL, VCCINT 1.0 V) and UltraScale+ (16 nm, 0.85 V); ECP5 (40 nm, VCC 1.1 V)
_XC7 = Coefficients(
    "xc7", 1.0, lut=(15, 30, 60), carry=(10, 20, 40), carry_chain=(2, 4, 8), ff=(10, 20, 40), dsp=(30, 60, 120),
    bram=(50, 100, 200), route_per_fanout=(50, 100, 200), clock_per_ff=(8, 15, 30),
    source="triangulated: VTR/VersaPower 40-22 nm capacitances, Li et al. TCAD 2005 and Shang et al. FPGA 2002 "
           "power shares, XPE (UG440) 7-series logic/signal power at 12.5 % toggle and fan-out 3; not measured")
_XCUP = Coefficients(
    "xcup", 0.85, lut=(10, 20, 40), carry=(7, 14, 28), carry_chain=(1.5, 3, 6), ff=(7, 14, 28), dsp=(20, 40, 80),
    bram=(35, 70, 140), route_per_fanout=(35, 70, 140), clock_per_ff=(6, 11, 22),
    source="the xc7 figures scaled by 0.7 for 16 nm FinFET (AMD WP482: UltraScale+ about half the 7-series "
           "dynamic power per function at 0.85 V); not measured")
_ECP5 = Coefficients(
    "ecp5", 1.1, lut=(15, 30, 60), carry=(12, 25, 50), carry_chain=(2, 4, 8), ff=(10, 20, 40), dsp=(30, 60, 120),
    bram=(50, 100, 200), route_per_fanout=(60, 120, 240), clock_per_ff=(10, 18, 36),
    source="triangulated: VTR/VersaPower 40 nm architecture capacitances (ECP5 is 40 nm), Li et al. TCAD 2005 "
           "power shares, Lattice ECP5 power calculator defaults; not measured")
COEFFICIENTS = {"xc7": _XC7, "xcup": _XCUP, "ecp5": _ECP5}

# static power of the part, W (low, mid, high) at 25-85 degC junction, and where it comes from
STATIC_W: dict[str, tuple[tuple[float, float, float], str]] = {
    "xc7z020": ((0.10, 0.13, 0.25), "XPE / report_power 'Device Static' of a Zynq-7020 (PL and PS static) at "
                "25 degC typical to 85 degC; UG440"),
    "xc7a35t": ((0.06, 0.075, 0.15), "XPE / report_power 'Device Static' of an Artix-7 35T, 25 degC typical to "
                "85 degC; UG440"),
    "xc7a100t": ((0.09, 0.11, 0.22), "XPE / report_power 'Device Static' of an Artix-7 100T, 25 degC typical to "
                 "85 degC; UG440"),
    "lfe5u-85f": ((0.05, 0.08, 0.20), "Lattice FPGA-DS-02012 ECP5 static supply currents (ICC, ICCAUX, ICCIO) "
                  "of an LFE5U-85F at 1.1/2.5/3.3 V, typical to worst case"),
    "lfe5u-25f": ((0.02, 0.03, 0.08), "Lattice FPGA-DS-02012 ECP5 static supply currents of an LFE5U-25F, "
                  "typical to worst case"),
}


def coefficients(family: str) -> Coefficients:
    if family not in COEFFICIENTS:
        raise ConfigError(f"no energy coefficients for family {family!r}; families with them: "
                          f"{', '.join(COEFFICIENTS)}")
    return COEFFICIENTS[family]


def static_power(part: str) -> tuple[tuple[float, float, float], str] | None:
    """The part's static power range (W) and its source, or None when the table lacks the part."""
    p = part.lower()
    return next((v for k, v in STATIC_W.items() if p.startswith(k)), None)


def stage_dynamic_j(act: dict[str, Any], co: Coefficients, bound: int, cycles_per_inference: float,
                    toggle_rate: float | None = None) -> float:
    """One stage's dynamic energy per inference, J: its nets' toggles and its flip-flops' clock.

    ``toggle_rate``: price the same netlist at a uniform rate per net and cycle instead (the vectorless
    estimate), with each net's fan-out as simulated."""
    n = max(int(act["samples"]), 1)
    e = 0.0
    for kind, toggles in act["toggles"].items():
        if toggle_rate is not None:
            per_net = toggle_rate * cycles_per_inference
            t, tf = per_net * act["nets"][kind], per_net * act["fanout"][kind]
        else:
            t, tf = toggles / n, act["toggle_fanout"][kind] / n
        e += 0.5 * co.vdd ** 2 * (t * co.c(kind, bound) + tf * co.route_per_fanout[bound]) * 1e-15
    e += act["ff"] * co.clock_per_ff[bound] * co.vdd ** 2 * cycles_per_inference * 1e-15
    return e


def energy_per_inference(stages: list[dict[str, Any]], family: str, part: str, clock_mhz: float,
                         inferences_per_s: float) -> dict[str, Any]:
    """Energy per inference (J, low/mid/high): dynamic per layer and in total, static, the total, the average
    power at ``inferences_per_s`` and the vectorless (12.5 %) dynamic estimate of the same netlist."""
    if not (clock_mhz > 0 and inferences_per_s > 0):
        raise ConfigError(f"energy needs a clock and a throughput, not {clock_mhz!r} MHz, {inferences_per_s!r}/s")
    co = coefficients(family)
    cycles = clock_mhz * 1e6 / inferences_per_s  # the clock runs between inferences too
    st = static_power(part)
    out: dict[str, Any] = {"family": family, "part": part, "vdd": co.vdd, "clock_mhz": clock_mhz,
                           "inferences_per_s": inferences_per_s, "cycles_per_inference": cycles,
                           "coefficients_source": co.source,
                           "static_source": st[1] if st else f"no static power figure for part {part!r}"}
    for i, b in enumerate(BOUNDS):
        layers = {a["stage"]: stage_dynamic_j(a, co, i, cycles) for a in stages}
        dyn = sum(layers.values())
        stat = (st[0][i] / inferences_per_s) if st else 0.0
        out[b] = {"dynamic_j": dyn, "static_j": stat, "total_j": dyn + stat,
                  "power_w": (dyn + stat) * inferences_per_s, "dynamic_layers_j": layers,
                  "vectorless_dynamic_j": sum(stage_dynamic_j(a, co, i, cycles, VECTORLESS_TOGGLE_RATE)
                                              for a in stages)}
    toggles = sum(sum(a["toggles"].values()) for a in stages)
    net_cycles = sum(sum(a["nets"].values()) * a["cycles"] for a in stages)
    out["toggle_rate"] = toggles / max(net_cycles, 1)
    out["vectorless_toggle_rate"] = VECTORLESS_TOGGLE_RATE
    return out
