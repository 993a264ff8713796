"""A fast activity model: each Dense stage's toggles per inference from the data, without synthesis or simulation.

``rtl_sim.activity`` simulates each stage's Yosys netlist on the data (tens of seconds per design); compression
prices thousands of candidates, so it needs the same figure in milliseconds. This module evaluates, in numpy, the
datapath the emitter builds (``rtl_sim.verilog``): the layer's shared adder graph (``codesign.core.cmvm``, built as
the emitter builds it), its pipeline registers (placed by ``codesign.core.timing.schedule_graph`` for the clock),
the rounding, saturation and ReLU after it (the reference's values) and the stage register, on consecutive
samples, and counts the bits that flip from one sample to the next at each wire's exact width:

- ``input``: the stage's input bits;
- ``propagate``: each adder's propagate bits ``a xor b`` (``a xor not b`` for a subtraction): a LUT per bit
  on AMD's CARRY4 and ECP5's CCU2C;
- ``sum``: each adder's output bits (the carry cell's sum outputs);
- ``carry``: each adder's internal carries (``sum xor propagate``: the carry chain);
- ``round``: the rounded value of a RND/RND_CONV cast (one more adder);
- ``tail``: the cast, saturated, ReLU'd values after the datapath (LUT logic);
- ``register``: the pipeline registers (each delayed copy of a value toggles as the value does) and the stage
  register;
- ``product``: a DSP product's output bits;
- ``input_fanout``, ``sum_fanout``: the input and adder-output toggles, each weighted by how many adders (or
  outputs) read that value: the routing they drive.

Synthesis does not build these words one for one (Yosys merges chained additions into multi-operand sums, shares
and drops bits), so the word-level counts map onto the netlist's resource kinds (LUT, carry, carry chain, FF,
input) through per-family factors fitted against the simulated netlist counts (``bench/energy.py --calibrate``
refits ``CALIBRATION``; docs/energy.md gives the data and residuals). ``fast_energy`` prices the predicted activity
with the same coefficients as ``codesign.core.energy.energy_per_inference``, so the two figures compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from codesign.core.arith import CSD_MAX_DIGITS, csd_count
from codesign.core.cmvm import DEFAULT_DEPTH_SLACK, AdderGraph, optimize
from codesign.core.energy import energy_per_inference
from codesign.core.fixed import FixedType, round_shift
from codesign.core.layers import Dense, Output, Quant, ReLU
from codesign.core.network import Network
from codesign.core.timing import MODELS, delay_model, schedule_graph, tail_cuts, tail_delay
from codesign.errors import LayerError

FEATURES = ("input", "propagate", "sum", "carry", "round", "tail", "register", "product", "input_fanout",
            "sum_fanout")

# Per family: each netlist kind's toggles as a linear sum of word-level features, the toggle-weighted fan-out
# per toggle of each kind, and netlist flip-flops per register bit. Fitted by ``bench/energy.py --calibrate``
# (non-negative least squares over the calibration stages; data and residuals in docs/energy.md).
CALIBRATION: dict[str, dict[str, Any]] = {
    "xc7": {
        "toggles": {"input": {"input": 0.9997}, "lut": {"propagate": 1.041, "tail": 0.0573, "round": 0.3077},
                    "carry": {"sum": 0.5565, "round": 1.591}, "carry_chain": {"carry": 0.848, "round": 0.9714},
                    "ff": {"register": 1.0003}, "dsp": {"product": 1.0}},
        "fanout": {"input": {"input_fanout": 1.8691}, "lut": {"propagate": 0.1889, "tail": 0.235, "sum_fanout": 1.0805},
                   "carry": {"sum_fanout": 1.2328, "sum": 0.2506, "round": 0.7935}, "ff": {"register": 1.1454},
                   "dsp": {"product": 1.0}},
        "ff_per_bit": 0.9871,
        "source": "bench/energy.py --calibrate: NNLS over the 10 stages of tiny, small, small_pruned and the default "
                  "flow's digits MLP (xc7 netlists simulated on 400-500 samples); dynamic energy within 7.5 % of the "
                  "simulation on each, 8.3 % with the design held out of the fit",
    },
}
CALIBRATION["xcup"] = CALIBRATION["xc7"]  # the same cells (LUT6, CARRY8 in place of CARRY4, FDRE)
CALIBRATION_FAMILIES = tuple(CALIBRATION)
FIT_KINDS = {"input": ("input",), "lut": ("propagate", "tail", "round"), "carry": ("sum", "round"),
             "carry_chain": ("carry", "round"), "ff": ("register",), "dsp": ("product",)}
FIT_FANOUT = {"input": ("input_fanout", "input"), "lut": ("propagate", "tail", "round", "sum_fanout"),
              "carry": ("sum_fanout", "sum", "round"), "ff": ("register",), "dsp": ("product",)}


@dataclass
class StageFeatures:
    """One stage's word-level toggles per inference (``FEATURES``) and its register bits."""

    stage: str
    samples: int
    toggles: dict[str, float]
    register_bits: int
    cycles: int  # the stage's latency in cycles
    extra: dict[str, Any] = field(default_factory=dict)


def _toggles(v: np.ndarray, width: int) -> float:
    """Bit flips between consecutive rows of ``v`` (samples first) in ``width``-bit two's complement, per sample."""
    if len(v) < 2 or width <= 0:
        return 0.0
    if v.dtype == object or width > 62:
        mask = (1 << width) - 1
        d = [int(a) ^ int(b) for a, b in zip(np.ravel(v[1:]), np.ravel(v[:-1]))]
        return sum(bin(x & mask).count("1") for x in d) / (len(v) - 1)
    d = np.bitwise_and(np.bitwise_xor(v[1:], v[:-1]), np.int64((1 << width) - 1))
    return float(np.bitwise_count(d).sum()) / (len(v) - 1)


def _cols_toggles(v: np.ndarray, t: FixedType | None) -> float:
    return _toggles(np.asarray(v).reshape(len(v), -1), t.width if t is not None else 1)


def _stages(net: Network) -> list[tuple[int, list[int]]]:
    """Each Dense layer's index with the indices of the ReLU/Quant layers that join its stage."""
    out: list[tuple[int, list[int]]] = []
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Dense):
            out.append((i, []))
        elif isinstance(layer, (ReLU, Quant)) and out:
            out[-1][1].append(i)
        elif not isinstance(layer, Output):
            raise LayerError(f"layer {layer.name!r} ({layer.kind}): the activity model prices Dense stages (with "
                             "ReLU and Quant after them) only")
    return out


def dsp_mask(w: np.ndarray, mapping: str) -> np.ndarray:
    """Where a weight becomes a DSP product (``rtl_sim.verilog.uses_dsp``'s rule)."""
    limit = {"lut": 10**9, "dsp": 1, "auto": CSD_MAX_DIGITS}.get(mapping, CSD_MAX_DIGITS)
    return (w != 0) & (csd_count(w) > limit)


_GRAPHS: dict[tuple, tuple[AdderGraph, int]] = {}  # a cache of pure results (the search prices the same layers again)


def layer_graph(layer: Dense, in_type: FixedType, mapping: str) -> tuple[AdderGraph, int]:
    """The layer's shared adder graph as the emitter builds it, from the input type's range, and the sum's
    fractional bits; cached (the cost model, ``codesign.compress.cost``, prices the same graph)."""
    w = layer.weight.astype(np.int64)
    key = (w.tobytes(), w.shape, layer.bias.astype(np.int64).tobytes(), layer.weight_type, layer.bias_type, in_type,
           mapping)
    if key not in _GRAPHS:
        if len(_GRAPHS) > 2048:
            _GRAPHS.clear()
            _PLACEMENTS.clear()  # keyed by the graphs' ids
        pf = in_type.frac + layer.weight_type.frac
        frac = max(pf, layer.bias_type.frac)
        bias = layer.bias.astype(np.int64) << (frac - layer.bias_type.frac)
        n = w.shape[0]
        graph = optimize(w, np.full(n, in_type.min_int), np.full(n, in_type.max_int), bias, frac - pf,
                         dsp_mask(w, mapping), DEFAULT_DEPTH_SLACK)
        _GRAPHS[key] = (graph, frac)
    return _GRAPHS[key]


def _adder_toggles(graph: AdderGraph, vals: list, n: int) -> dict[str, float]:
    """Propagate, sum and carry toggles of every adder, over the bits that are not a plain wire of one operand."""
    out = {"propagate": 0.0, "sum": 0.0, "carry": 0.0, "product": 0.0, "sum_fanout": 0.0}
    readers = _readers(graph)
    for k, (node, v) in enumerate(zip(graph.nodes, vals)):
        if node.op == "mul":
            out["product"] += _toggles(np.asarray(v), node.width)
        if node.op != "add":
            continue
        a = np.broadcast_to(vals[node.a], (n,)) * (1 << node.sa)
        b = np.broadcast_to(vals[node.b], (n,)) * (1 << node.sb)
        # the low bits below the other operand's shift pass one operand's bits through (no logic), except the
        # low bits of a subtrahend (0 - b needs the carry chain)
        low = node.sb if (node.sub and node.sb > 0) else (0 if node.sub else max(node.sa, node.sb))
        p = a ^ (~b if node.sub else b)
        s = np.asarray(v)
        w = node.width
        if low:
            p, s = p >> low, s >> low
            w -= low
        out["propagate"] += _toggles(p, w)
        ts = _toggles(s, w)
        out["sum"] += ts
        out["sum_fanout"] += ts * readers.get(k, 0)
        out["carry"] += _toggles(s ^ p, w)
    return out


def _readers(graph: AdderGraph) -> dict[int, int]:
    """How many adders (and outputs) read each node."""
    out: dict[int, int] = {}
    for node in graph.nodes:
        if node.op == "add":
            for i in (node.a, node.b):
                out[i] = out.get(i, 0) + 1
    for r in graph.outputs:
        if r.node >= 0:
            out[r.node] = out.get(r.node, 0) + 1
    return out


def _tail_steps(t: FixedType, net: Network, post: list[int]) -> list[tuple[str, FixedType | None]]:
    steps: list[tuple[str, FixedType | None]] = [("cast", t)]
    for i in post:
        layer = net.layers[i]
        if isinstance(layer, ReLU):
            steps.append(("relu", None))
        if getattr(layer, "result_type", None) is not None:
            steps.append(("cast", layer.result_type))
    return steps


def _registers(graph: AdderGraph, sched: Any | None) -> dict[int, int]:
    """Each node's count of delay registers (the emitter's ``_delayed``: one per cycle a reader waits)."""
    if sched is None:
        return {}
    need: dict[int, int] = {}
    for k, node in enumerate(graph.nodes):
        if node.op == "add":
            for i in (node.a, node.b):
                if graph.nodes[i].op != "const":
                    need[i] = max(need.get(i, 0), sched.cycle[k] - sched.cycle[i])
    for r in graph.outputs:
        if r.node >= 0 and graph.nodes[r.node].op != "const":
            need[r.node] = max(need.get(r.node, 0), sched.last - sched.cycle[r.node])
    return {k: v for k, v in need.items() if v > 0}


_PLACEMENTS: dict[tuple, tuple[int, dict[int, int], int]] = {}  # a cache of pure results


def _placement(graph: AdderGraph, model: Any, clock_mhz: float, frac: int,
               steps: list[tuple[str, FixedType | None]]) -> tuple[int, dict[int, int], int]:
    """The emitter's register placement for the clock (as ``codesign.compress.cost`` prices it): the graph's
    last cycle, each node's delay registers, and the registers cut into the logic after it; cached."""
    key = (id(graph), model.family, clock_mhz, frac, tuple(steps))
    if key in _PLACEMENTS:
        return _PLACEMENTS[key]
    tail_ns = max((tail_delay(model, graph.nodes[r.node].lo << r.shift, graph.nodes[r.node].hi << r.shift,
                              frac, steps) for r in graph.outputs if r.node >= 0), default=0.0)
    sched = schedule_graph(graph, model, clock_mhz, 0, None, tail_ns)
    regs = _registers(graph, sched)
    outs = [r for r in graph.outputs if r.node >= 0 and graph.nodes[r.node].op != "const"]
    at = max((sched.arrival[r.node] if sched.cycle[r.node] == sched.last else model.clk_to_q for r in outs),
             default=model.clk_to_q)
    cuts = max((tail_cuts(model, clock_mhz, at, graph.nodes[r.node].lo << r.shift,
                          graph.nodes[r.node].hi << r.shift, frac, steps) for r in outs), default=0)
    if len(_PLACEMENTS) > 2048:
        _PLACEMENTS.clear()
    _PLACEMENTS[key] = (sched.last, regs, cuts)
    return _PLACEMENTS[key]


def stage_features(net: Network, q: np.ndarray, clock_mhz: float | None = None, family: str | None = None,
                   mapping: str | None = None) -> list[StageFeatures]:
    """Word-level toggles per inference of each Dense stage on the consecutive integer inputs ``q``; registers
    placed for ``clock_mhz`` by ``family``'s delay model as the emitter places them (none without a clock)."""
    net.check_chain("the activity model")
    if len(net.input_shape) != 1:
        raise LayerError(f"network {net.name!r}: the activity model prices flat (Dense) networks, not input "
                         f"shape {net.input_shape}")
    q = np.asarray(q).reshape(len(q), -1)
    trace = net.trace_int(q)
    types = net.tensor_types()
    model = delay_model(family) if (clock_mhz and family in MODELS) else None
    x, x_t = q, net.input_type
    n = len(q)
    out = []
    for i, post in _stages(net):
        layer = net.layers[i]
        graph, frac = layer_graph(layer, x_t, mapping or layer.mult)
        xv = np.asarray(x).reshape(n, -1)
        vals = graph.node_values(xv.astype(object) if xv.dtype == object else xv.astype(np.int64))
        f = dict.fromkeys(FEATURES, 0.0)
        tin = [_toggles(xv[:, k], x_t.width) for k in range(xv.shape[1])]
        f["input"] = sum(tin)
        readers = _readers(graph)
        f["input_fanout"] = sum(t * readers.get(k, 0) for k, t in enumerate(tin))  # inputs are the first nodes
        f.update(_adder_toggles(graph, vals, n))
        # the accumulators (graph outputs) and the logic after them
        accs = [np.broadcast_to(vals[r.node], (n,)) * (1 << r.shift) if r.node >= 0 else np.zeros(n, np.int64)
                for r in graph.outputs]
        t = types[i]
        steps = _tail_steps(t, net, post)
        s = frac - t.frac
        if s > 0 and t.quant != "TRN":
            f["round"] = sum(_toggles(round_shift(a, s, t.quant), t.width + 1) for a in accs)
        f["tail"] = _cols_toggles(trace[i].values, t) + sum(_cols_toggles(trace[j].values, types[j]) for j in post)
        last = post[-1] if post else i
        y, y_t = trace[last].values, types[last]
        out_tog = _cols_toggles(y, y_t)
        last_cycle, regs, cuts = _placement(graph, model, clock_mhz, frac, steps) if model is not None else (0, {}, 0)
        reg_tog = out_tog + sum(c * _toggles(np.broadcast_to(vals[k], (n,)), graph.nodes[k].width)
                                for k, c in regs.items())
        acc_widths = [graph.nodes[r.node].width + r.shift for r in graph.outputs if r.node >= 0]
        reg_tog += cuts * sum(_toggles(a, w) for a, w in zip(accs, acc_widths))
        f["register"] = reg_tog
        bits = (y_t.width * int(np.prod(y.shape[1:])) + sum(c * graph.nodes[k].width for k, c in regs.items())
                + cuts * sum(acc_widths))
        cycles = 1 + last_cycle + cuts
        out.append(StageFeatures(layer.name, n, f, int(bits), int(cycles),
                                 {"adders": len(graph.adders), "delay_registers": sum(regs.values()), "tail_cuts": cuts}))
        x, x_t = y, y_t
    return out


def predicted_activity(feat: StageFeatures, family: str) -> dict[str, Any]:
    """The netlist activity ``rtl_sim.activity`` would measure for one stage, predicted from its features, in
    the shape ``codesign.core.energy`` prices (per inference: ``samples`` 1)."""
    cal = calibration(family)
    kinds = ("input", "lut", "carry", "carry_chain", "ff", "dsp", "bram")
    toggles = dict.fromkeys(kinds, 0.0)
    for kind, terms in cal["toggles"].items():
        toggles[kind] = sum(c * feat.toggles.get(k, 0.0) for k, c in terms.items())
    fan = {k: sum(c * feat.toggles.get(f, 0.0) for f, c in cal["fanout"].get(k, {}).items()) for k in kinds}
    zero = dict.fromkeys(kinds, 0)
    return {"stage": feat.stage, "samples": 1, "cycles": 1, "toggles": toggles, "toggle_fanout": fan,
            "nets": zero, "fanout": zero, "ff": feat.register_bits * cal["ff_per_bit"]}


def calibration(family: str) -> dict[str, Any]:
    """The family's fitted factors; a family without its own fit takes xc7's (the result says so)."""
    return CALIBRATION.get(family, CALIBRATION["xc7"])


def fast_energy(net: Network, q: np.ndarray, family: str, part: str, clock_mhz: float,
                inferences_per_s: float | None = None, mapping: str | None = None,
                pipelined: bool = True) -> dict[str, Any]:
    """Energy per inference (J, low/mid/high: dynamic per layer and in total, static, total) by the fast model,
    the same figures ``energy_per_inference`` gives from the simulated netlist; ``inferences_per_s`` defaults to
    the clock (II = 1). ``pipelined``: registers placed for ``clock_mhz`` as the flow's RTL step places them."""
    feats = stage_features(net, q, clock_mhz if pipelined else None, family, mapping)
    acts = [predicted_activity(f, family) for f in feats]
    e = energy_per_inference(acts, family, part, clock_mhz, inferences_per_s or clock_mhz * 1e6)
    for b in ("low", "mid", "high"):
        e[b].pop("vectorless_dynamic_j", None)
    for k in ("toggle_rate", "vectorless_toggle_rate"):
        e.pop(k, None)
    e["model"] = {"method": "fast activity model (codesign.core.activity_model)", "samples": len(q),
                  "calibration": calibration(family)["source"], "calibrated_for": family in CALIBRATION,
                  "features": {f.stage: f.toggles for f in feats}}
    return e
