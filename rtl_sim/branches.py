"""Skip branches in the RTL: a tensor that fans out and rejoins at an ``Add`` or ``Concatenate``.

``rtl_sim.stream`` builds a chain of window stages, one pixel per clock. A residual network's stream forks (the
shortcut) and rejoins at a merge. The branches reach the merge at different times, and with input gaps the
difference is not a constant (a 'same' convolution emits pixel ``(r, c)`` when input ``(r+1, c+1)`` arrives,
and its last row on the ticks after the image), so each operand but the latest gets a FIFO: it pushes a pixel
when its producer emits it and pops when the latest operand presents the same position, which is when the
merge computes (exactly: operands aligned to the finest binary point, ``reference.merge_exact_type``, then the
cast to ``result_type`` as ``codesign.core.fixed.cast`` does) and registers its result. Which operand is the
latest, and each FIFO's depth (the most positions its operand can be ahead), follow from the schedule: the
per-position emission cycles that ``rtl_sim.stream.schedule``'s rules give, with images back to back and with
every input pixel isolated by a long gap; a graph where no operand is the strictly latest one in both is
refused. In simulation, a push into a full FIFO or a pop from an empty one stops with ``$fatal`` naming the
merge; synthesis (``SYNTHESIS`` defined) skips that check. Dense tails after Flatten/GlobalAvgPool stay fully
parallel, as in the chain design.

In a fully parallel network (a residual MLP, ``emit_graph_verilog``) every stage takes one cycle or a known
number, so a shortcut is a register delay up to the latest operand's cycle, and the merge is the same exact
merge and cast. With a clock target (``clock_mhz``/``family``) the merges' casts and fused layers get pipeline
registers where the delay model needs them, and the schedule (hence the FIFO depths and delays) follows.

This module depends only on the IR: it never imports ``hls``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codesign.core.arith import signed_width
from codesign.core.cmvm import DEFAULT_DEPTH_SLACK
from codesign.core.fixed import FixedType
from codesign.core.kinds import lookup
from codesign.core.layers import Add, Concatenate, Dense, Flatten, GlobalAvgPool, Layer, Merge, Output, Quant
from codesign.core.network import INPUT, Network
from codesign.core.reference import merge_exact_type
from codesign.errors import BackendError
from rtl_sim.stream import (ELEMENTWISE, STREAM_LAYER_NAMES, STREAM_STAGES, WINDOW_LAYERS, StreamDesign, _bits, _collect,
                            _dense_stage, _elementwise, _elementwise_timed, _module, _pack, _reg_chain, _Stage, _u, _unpack,
                            _window_stage, geometry, refuse_unbuilt, window_cycles)
from rtl_sim.verilog import (MLP_STAGES, Design, Sig, _Emitter, _ident, _timing_args, const_sig, dense_datapath,
                             flat_module, tail_steps)

# The branched emitters' kind tables: the chain emitters' (rtl_sim.stream, rtl_sim.verilog) and the merges.
GRAPH_STREAM_STAGES: dict[type[Layer], str] = {**STREAM_STAGES, Add: "merge", Concatenate: "merge"}
GRAPH_MLP_STAGES: dict[type[Layer], str] = {**MLP_STAGES, Add: "merge", Concatenate: "merge"}
GAP_MODEL = 64  # cycles between input pixels in the isolated-pixel schedule (longer than any stage's latency)


@dataclass
class _Stream:
    """A pixel stream in the netlist: its valid, one pixel's channels, their type, the tensor's shape, and the
    cycle each position of image 0 is presented, images back to back (``fast``) and pixels isolated (``slow``)."""

    valid: str
    px: list[Sig]
    type: FixedType
    shape: tuple[int, ...]
    fast: list[int]
    slow: list[int]


def _fused_post(net: Network, k: int, consumers: dict[str, list[str]], sources: dict[str, tuple[str, ...]]
                ) -> list[Layer]:
    """The element-wise layers after layer ``k`` that read only the layer before them, which nothing else reads."""
    post, prev = [], net.layers[k].name
    for layer in net.layers[k + 1:]:
        if not isinstance(layer, ELEMENTWISE) or sources[layer.name] != (prev,) or consumers[prev] != [layer.name]:
            break
        post.append(layer)
        prev = layer.name
    return post


def _check_layer(layer: Layer) -> None:
    refuse_unbuilt(layer)
    if lookup(GRAPH_STREAM_STAGES, type(layer)) is None:
        raise BackendError(f"layer {layer.name!r} ({layer.kind}): not supported by the streaming RTL emitter; "
                           f"supported: {', '.join(STREAM_LAYER_NAMES)}, Add, Concatenate")


# ---- the schedule --------------------------------------------------------------------------------
def fifo_depth(ahead: list[int], latest: list[int], period: int, images: int = 4) -> int:
    """The most positions an operand presented at ``ahead`` holds before the latest operand (``latest``) takes
    them: pushes minus pops up to each cycle, over ``images`` images ``period`` cycles apart (counted while
    every image that can have pushed or popped by then is included)."""
    push = np.sort(np.concatenate([np.asarray(ahead) + i * period for i in range(images)]))
    pop = np.sort(np.concatenate([np.asarray(latest) + i * period for i in range(images)]))
    t = np.unique(np.concatenate([push, pop]))
    t = t[t < images * period]
    n = np.searchsorted(push, t, side="right") - np.searchsorted(pop, t, side="right")
    return max(int(n.max(initial=0)), 1)


# ---- the merge --------------------------------------------------------------------------------------
def _fifo(e: _Emitter, blocks: list[str], f: str, src: _Stream, pop: str, depth: int, where: str) -> list[Sig]:
    """A FIFO of ``depth`` pixels on ``src``: pushed on its valid, popped on ``pop``; the head pixel."""
    bus, bw, offs = _pack(e, f"{f}_px", src.px)
    if not bw:  # every channel constant: nothing to hold
        return list(src.px)
    aw, cw = _bits(depth - 1), _bits(depth)
    e.lines.append(f"  reg [{bw - 1}:0] {f}_mem [0:{depth - 1}];")
    e.lines.append(f"  reg [{aw - 1}:0] {f}_wr, {f}_rd;\n  reg [{cw - 1}:0] {f}_n;")
    e.lines.append(f"  wire [{bw - 1}:0] {f}_q = {f}_mem[{f}_rd];")
    push = src.valid

    def step(p: str) -> str:
        return f"({p} == {_u(depth - 1, aw)}) ? {_u(0, aw)} : {p} + {_u(1, aw)}"

    blocks.append(f"  always @(posedge clk) if ({push}) {f}_mem[{f}_wr] <= {bus};")
    blocks.append(f"  always @(posedge clk) begin\n    if (rst) begin\n      {f}_wr <= {_u(0, aw)}; {f}_rd <= "
                  f"{_u(0, aw)}; {f}_n <= {_u(0, cw)};\n    end else begin\n"
                  f"      if ({push}) {f}_wr <= {step(f'{f}_wr')};\n"
                  f"      if ({pop}) {f}_rd <= {step(f'{f}_rd')};\n"
                  f"      if ({push} && !({pop})) {f}_n <= {f}_n + {_u(1, cw)};\n"
                  f"      else if (!({push}) && {pop}) {f}_n <= {f}_n - {_u(1, cw)};\n    end\n  end")
    blocks.append("`ifndef SYNTHESIS\n"
                  f"  always @(posedge clk) if (!rst) begin\n"
                  f"    if ({push} && !({pop}) && {f}_n == {_u(depth, cw)}) $fatal(1, \"{where}: FIFO {f} of {depth} "
                  "pixels overflows\");\n"
                  f"    if ({pop} && {f}_n == {_u(0, cw)}) $fatal(1, \"{where}: FIFO {f} is empty when the merge "
                  "reads it\");\n  end\n`endif")
    return _unpack(e, f"{f}_h", f"{f}_q", src.px, offs)


def _reuse(e: _Emitter, p: str, i: int, heads: list[tuple[_Stream, str]], latest: _Stream
           ) -> tuple[list[Sig], dict] | None:
    """An operand's pixels from a FIFO another merge already pops, when this merge takes each position a constant
    ``d >= 0`` cycles later: its head through ``d`` registers; None when no such FIFO exists."""
    for head, f in heads:
        d = {b - a for a, b in zip(head.fast, latest.fast)} | {b - a for a, b in zip(head.slow, latest.slow)}
        if len(d) == 1 and min(d) >= 0:
            px = head.px
            for j in range(min(d)):
                px = [e.register(v, f"{p}_r{i}_{j + 1}") for v in px]
            return px, {"depth": 0, "reuses": f, "delay_cycles": min(d),
                        "bits": min(d) * sum(v.width for v in head.px if v.const is None)}
    return None


def _merge_stage(e: _Emitter, blocks: list[str], si: int, layer: Merge, post: list[Layer], ins: list[_Stream],
                 names: list[str], period: tuple[int, int], depths: dict[str, int] | None,
                 heads: dict[str, list[tuple[_Stream, str]]]) -> tuple[_Stream, dict, dict]:
    """An Add or Concatenate of pixel streams: FIFOs on the earlier operands (or another merge's FIFO of the same
    operand, delayed, recorded in ``heads``), the exact merge, the cast, the fused element-wise layers, output
    registers one cycle after the latest operand."""
    p = f"M{si}_{_ident(layer.name)}"
    last = max(range(len(ins)), key=lambda i: (ins[i].fast[-1], ins[i].slow[-1]))
    fifos, px_of = [], {}
    for i, s in enumerate(ins):
        if s.valid == ins[last].valid:
            continue  # the same stream: no wait
        if s.fast == ins[last].fast and s.slow == ins[last].slow:  # presented together (twin branches): no wait
            blocks.append(f"`ifndef SYNTHESIS\n  always @(posedge clk) if (!rst && ({s.valid} != {ins[last].valid})) "
                          f"$fatal(1, \"layer {layer.name}: operands {names[i]} and {names[last]} are not presented "
                          "together\");\n`endif")
            continue
        for sched, per in ((s.fast, ins[last].fast), (s.slow, ins[last].slow)):
            if any(a >= b for a, b in zip(sched, per)):
                raise BackendError(f"layer {layer.name!r} ({layer.kind}): operand {names[i]!r} is not always ahead of "
                                   f"{names[last]!r}, which the streaming RTL's merge FIFOs need; delay the shortcut "
                                   "with a layer or swap the branches")
        reused = None if depths and names[i] in depths else _reuse(e, p, i, heads.get(names[i], []), ins[last])
        if reused is not None:
            px_of[i] = reused[0]
            fifos.append({"layer": layer.name, "operand": names[i], **reused[1]})
            continue
        depth = max(fifo_depth(s.fast, ins[last].fast, period[0]), fifo_depth(s.slow, ins[last].slow, period[1]))
        f = f"{p}_f{i}"
        if depths and names[i] in depths:
            depth = depths[names[i]]
        px_of[i] = _fifo(e, blocks, f, s, ins[last].valid, depth, f"layer {layer.name} operand {names[i]}")
        fifos.append({"layer": layer.name, "operand": names[i], "depth": depth,
                      "bits": depth * sum(v.width for v in s.px if v.const is None), "signal": f})
        heads.setdefault(names[i], []).append(
            (_Stream(ins[last].valid, px_of[i], s.type, s.shape, ins[last].fast, ins[last].slow), f))
    e.prefix = p
    y, t, extra = _merge_values(e, layer, [px_of.get(i, s.px) for i, s in enumerate(ins)], [s.type for s in ins],
                                post, f"{p}_p")
    e.prefix = ""
    y = [e.register(v, f"{p}_o") for v in y]
    valid = _reg_chain(e, f"{p}_v", ins[last].valid, 1 + extra, blocks)
    shape = (*ins[0].shape[:-1], len(y))
    out = _Stream(valid, y, t, shape, [c + 1 + extra for c in ins[last].fast],
                  [c + 1 + extra for c in ins[last].slow])
    n = int(np.prod(shape[:-1]))
    info = {"name": layer.name, "kind": layer.kind, "layers": [layer.name] + [l.name for l in post],
            "operands": names, "latest": names[last], "out_shape": list(shape), "fifos": fifos, "type": t.to_hls()}
    stage = {"name": layer.name, "layers": info["layers"], "valid": valid, "n": n, "type": t.to_hls(),
             "signals": [None if v.const is not None else v.expr for v in y], "consts": [v.const for v in y]}
    return out, info, stage


# ---- the design --------------------------------------------------------------------------------------
def _input_sigs(e: _Emitter, in_t: FixedType, n: int) -> list[Sig]:
    """``in_data``'s ``n`` elements of ``in_t`` as signed wires ``x0_<i>``."""
    out = []
    for i in range(n):
        sl = f"in_data[{i * in_t.width + in_t.width - 1}:{i * in_t.width}]"
        src = f"$signed({sl})" if in_t.signed else f"$signed({{1'b0, {sl}}})"
        e.lines.append(f"  wire signed [{signed_width(in_t.min_int, in_t.max_int) - 1}:0] x0_{i} = {src};")
        out.append(Sig(f"x0_{i}", in_t.min_int, in_t.max_int))
    return out


def emit_graph_stream(net: Network, top: str | None = None, adder_regs_every: int = 0, mult: str | None = None,
                      datapath: str | None = None, fifo_depths: dict[str, dict[str, int]] | None = None,
                      clock_mhz: float | None = None, family: str | None = None) -> StreamDesign:
    """The streaming design of a network whose pixel stream branches and rejoins at merges (see the module
    docstring); ``rtl_sim.stream.emit_stream_verilog`` hands graph networks here. ``fifo_depths`` overrides the
    schedule's depth of a merge's operand FIFO (``{merge: {operand: depth}}``), to check the overflow guard;
    ``clock_mhz``/``family`` place the kernels' adder-graph registers by the delay model, as in the chain design."""
    if not net.quantized:
        raise BackendError(f"network {net.name!r} is float; quantize or compress it before emitting RTL")
    if len(net.input_shape) < 2:
        raise BackendError(f"network {net.name!r}: the streaming RTL takes a (length, channels) or (height, width, "
                           f"channels) input, not {net.input_shape}; emit_verilog builds flat inputs")
    for layer in net.layers:
        _check_layer(layer)
    top = top or _ident(net.name)
    dp = {} if datapath is None else {"datapath": datapath}
    sources, consumers = net.sources(), net.consumers()
    types = {INPUT: net.input_type, **dict(zip((l.name for l in net.layers), net.tensor_types()))}
    e, blocks = _Emitter(True, None, *_timing_args(clock_mhz, family, adder_regs_every)), []
    in_t, c_in = net.input_type, net.input_shape[-1]
    pixels = int(np.prod(net.input_shape[:-1]))
    streams = {INPUT: _Stream("in_valid", _input_sigs(e, in_t, c_in), in_t, net.input_shape, list(range(pixels)),
                              [k * GAP_MODEL for k in range(pixels)])}
    period = (pixels, pixels * GAP_MODEL)
    layers_info, design_stages, multipliers, fifos = [], [], {}, []
    fused: set[str] = set()
    heads: dict[str, list[tuple[_Stream, str]]] = {}  # each operand's merge FIFOs: the head as popped, its name
    k = 0
    while k < len(net.layers):
        layer = net.layers[k]
        if layer.name in fused or isinstance(layer, Output):
            k += 1
            continue
        ins = [streams[s] for s in sources[layer.name]]
        if isinstance(layer, (Flatten, GlobalAvgPool, Dense)) and len(ins[0].shape) > 1 or isinstance(layer, Dense):
            break  # the end of the stream: the rest is a chain of Dense stages
        post = _fused_post(net, k, consumers, sources)
        fused |= {l.name for l in post}
        out_name = (post[-1] if post else layer).name
        si = k + 1
        if isinstance(layer, ELEMENTWISE):  # a standalone element-wise layer on a stream: combinational
            e.prefix = f"E{si}"
            y, t = _elementwise(e, ins[0].px, ins[0].type.frac, ins[0].type, [layer, *post])
            e.prefix = ""
            streams[out_name] = _Stream(ins[0].valid, y, t, ins[0].shape, ins[0].fast, ins[0].slow)
        elif isinstance(layer, WINDOW_LAYERS):
            st = _Stage(layer, "window", ins[0].shape, ins[0].type, post, types[out_name])
            valid, y, info = _window_stage(e, blocks, si, st, ins[0].valid, ins[0].px, adder_regs_every, mult, dp)
            g = geometry(layer, ins[0].shape)
            lat = info["kernel_latency"]
            streams[out_name] = _Stream(valid, y, FixedType.parse(info["type"]), tuple(info["out_shape"]),
                                        window_cycles(g, ins[0].fast, period[0], lat),
                                        window_cycles(g, ins[0].slow, period[1], lat))
            if info["datapath"]:
                multipliers[layer.name] = info["datapath"]
            layers_info.append(info)
            design_stages.append({k2: info[k2] for k2 in ("name", "layers", "valid", "signals", "consts", "n", "type")})
        else:  # a merge of streams
            depths = (fifo_depths or {}).get(layer.name)
            out, info, stage = _merge_stage(e, blocks, si, layer, post, ins, list(sources[layer.name]), period, depths,
                                            heads)
            streams[out_name] = out
            fifos += info["fifos"]
            layers_info.append(info)
            design_stages.append(stage)
        k += 1
    tail = [l for l in net.layers[k:] if l.name not in fused and not isinstance(l, Output)]
    hardware = [l for l in net.layers if not isinstance(l, Output)]
    stream_name = sources[tail[0].name][0] if tail else hardware[-1].name
    s = streams[stream_name]
    valid, x, x_type, latency = _dense_tail(e, blocks, net, tail, s, sources, adder_regs_every, mult, dp, multipliers,
                                            design_stages)
    verilog = _module(net, top, e, blocks, in_t, c_in, x, x_type, valid, pixels, latency)
    d = StreamDesign(top, verilog, in_t, x_type, c_in, len(x), latency, design_stages, multipliers,
                     timing=e.timing(latency, float(pixels)), in_shape=list(net.input_shape), pixels=pixels,
                     cycles_per_image=pixels, outputs_per_image=1, layers=layers_info, fifos=fifos)
    return d


def _dense_tail(e: _Emitter, blocks: list[str], net: Network, tail: list[Layer], s: _Stream,
                sources: dict[str, tuple[str, ...]], every: int, mult: str | None, dp: dict, multipliers: dict,
                design_stages: list[dict]) -> tuple[str, list[Sig], FixedType, int]:
    """Flatten or GlobalAvgPool of the stream (or a collect of a network that ends on it), then the Dense chain,
    fully parallel: the output valid, values, type and the designed latency."""
    prev = sources[tail[0].name][0] if tail else None
    for layer in tail:
        if layer.merge or sources[layer.name] != (prev,):
            raise BackendError(f"layer {layer.name!r} ({layer.kind}): after Flatten/GlobalAvgPool the streaming RTL "
                               "builds a chain of Dense stages; branches there are not built yet")
        prev = layer.name
    stages: list[_Stage] = []
    cur_shape, cur_t = s.shape, s.type
    types = dict(zip((l.name for l in net.layers), net.tensor_types()))
    shapes = dict(zip((l.name for l in net.layers), net.shapes()))
    for layer in tail:
        if isinstance(layer, Flatten) and len(cur_shape) == 1:
            pass
        elif isinstance(layer, ELEMENTWISE) and stages:
            stages[-1].post.append(layer)
        elif isinstance(layer, (Flatten, GlobalAvgPool)) and not stages:
            stages.append(_Stage(layer, "collect", cur_shape, cur_t))
        elif isinstance(layer, Dense):
            stages.append(_Stage(layer, "dense", cur_shape, cur_t))
        else:
            raise BackendError(f"layer {layer.name!r} ({layer.kind}): not supported after the end of the stream")
        if stages:
            stages[-1].out_type = types[layer.name]
        cur_shape, cur_t = shapes[layer.name], types[layer.name]
    if not stages or stages[0].kind != "collect":
        stages.insert(0, _Stage(Flatten("collect_output"), "collect", s.shape, s.type, out_type=s.type))
    n_pos = int(np.prod(s.shape[:-1]))
    valid, x, x_type, _ = _collect(e, blocks, stages[0], s.valid, s.px, n_pos)
    latency = s.fast[-1]
    lats = []
    for si, st in enumerate(stages[1:], 1):
        valid, x, x_type, counts, lat = _dense_stage(e, blocks, 1000 + si, st, valid, x, st.in_type, every, mult, dp)
        lats.append(lat)
        multipliers[st.layer.name] = counts
        design_stages.append({"name": st.layer.name, "layers": [st.layer.name] + [l.name for l in st.post],
                              "valid": valid, "signals": [None if v.const is not None else v.expr for v in x],
                              "consts": [v.const for v in x], "n": 1, "type": x_type.to_hls()})
    if not lats:  # no Dense after the stream: register the collected vector
        e.prefix = ""
        x = [e.register(v, "OUT") for v in x]
        valid = _reg_chain(e, "OUT_v", valid, 1, blocks)
        design_stages.append({"name": stages[0].layer.name, "layers": [stages[0].layer.name], "valid": valid,
                              "signals": [None if v.const is not None else v.expr for v in x],
                              "consts": [v.const for v in x], "n": 1, "type": x_type.to_hls()})
    return valid, x, x_type, latency + (sum(lats) if lats else 1)


# ---- a residual MLP: fully parallel, the shortcut a register delay -------------------------------------
def emit_graph_verilog(net: Network, top: str | None = None, adder_regs_every: int = 0, mult: str | None = None,
                       datapath: str = "cmvm", depth_slack: int | None = DEFAULT_DEPTH_SLACK,
                       clock_mhz: float | None = None, family: str | None = None) -> Design:
    """Fully parallel Verilog for a flat network with branches (``rtl_sim.verilog.emit_verilog`` hands graph
    networks here): each Dense with its fused element-wise layers is a registered stage as in the chain design;
    a merge delays each earlier operand by registers to the latest operand's cycle (II stays 1), merges exactly,
    casts, and registers its result one cycle later. ``clock_mhz``/``family`` as in ``emit_verilog``."""
    if not net.quantized:
        raise BackendError(f"network {net.name!r} is float; quantize or compress it before emitting RTL")
    for layer in net.layers:
        if lookup(GRAPH_MLP_STAGES, type(layer)) is None:
            raise BackendError(f"layer {layer.name!r} ({layer.kind}): the RTL emitter builds Dense, ReLU, Quant, Add "
                               "and Concatenate layers in a flat network")
        if isinstance(layer, Quant) and layer.per_element:
            raise BackendError(f"layer {layer.name!r}: per-element quantizer formats (HGQ) are not supported by the "
                               "RTL emitter yet")
    top = top or _ident(net.name)
    sources, consumers = net.sources(), net.consumers()
    types = {INPUT: net.input_type, **dict(zip((l.name for l in net.layers), net.tensor_types()))}
    e = _Emitter(True, None, *_timing_args(clock_mhz, family, adder_regs_every))
    in_t, n_in = net.input_type, net.input_shape[0]
    vals: dict[str, tuple[list[Sig], FixedType, int]] = {INPUT: (_input_sigs(e, in_t, n_in), in_t, 0)}  # and cycle
    stages, multipliers, delays, fused = [], {}, [], set()
    last = INPUT
    for k, layer in enumerate(net.layers):
        if layer.name in fused or isinstance(layer, Output):
            continue
        ins = [vals[s] for s in sources[layer.name]]
        if isinstance(layer, Flatten):
            vals[layer.name] = ins[0]
            last = layer.name
            continue
        post = _fused_post(net, k, consumers, sources) if isinstance(layer, (Dense, Merge)) else []
        fused |= {l.name for l in post}
        out_name = (post[-1] if post else layer).name
        if isinstance(layer, ELEMENTWISE):  # standalone on a registered tensor: combinational
            e.prefix = f"E{k}"
            y, t = _elementwise(e, ins[0][0], ins[0][1].frac, ins[0][1], [layer])
            e.prefix = ""
            vals[out_name], last = (y, t, ins[0][2]), out_name
            continue
        if isinstance(layer, Dense):
            (xs, x_t, cyc), t = ins[0], types[layer.name]
            y, frac, extra, counts = dense_datapath(e, layer, xs, x_t, adder_regs_every, mult or layer.mult, datapath,
                                                    depth_slack, tail_steps(t, post))
            multipliers[layer.name] = counts
            y, k1 = e.cast_all(y, frac, t, f"L{k}_p")
            e.prefix = f"L{k}"
            y, t, k2 = _elementwise_timed(e, y, t.frac, t, post, f"L{k}_p")
            cyc += 1 + extra + k1 + k2
        else:
            cyc = max(c for _, _, c in ins) + 1
            aligned = []
            for (xs, x_t, c), name in zip(ins, sources[layer.name]):
                for j in range(c, cyc - 1):  # the shortcut: registers up to the latest operand's cycle
                    xs = [e.register(v, f"{_ident(layer.name)}_{_ident(name)}_d{j + 1}") for v in xs]
                if cyc - 1 > c:
                    delays.append({"layer": layer.name, "operand": name, "cycles": cyc - 1 - c,
                                   "bits": (cyc - 1 - c) * sum(v.width for v in xs if v.const is None)})
                aligned.append(xs)
            e.prefix = f"M{k}"
            y, t, extra = _merge_values(e, layer, aligned, [x_t for _, x_t, _ in ins], post, f"M{k}_p")
            cyc += extra
        e.prefix = ""
        y = [e.register(v, f"L{k}_{_ident(layer.name)}") for v in y]
        vals[out_name], last = (y, t, cyc), out_name
        stages.append({"name": layer.name, "layers": [layer.name] + [l.name for l in post], "type": t.to_hls(),
                       "n": len(y), "latency": cyc, "signals": [v.expr if v.const is None else None for v in y],
                       "consts": [v.const for v in y]})
        if layer.merge:
            stages[-1]["shortcut_delays"] = [dl for dl in delays if dl["layer"] == layer.name]
    x, out_t, cum = vals[last]
    if cum < 1:
        raise BackendError(f"network {net.name!r} has no hardware layers")
    return Design(top, flat_module(net, top, e, in_t, out_t, n_in, x, cum), in_t, out_t, n_in, len(x), cum, stages,
                  multipliers, datapath, e.timing(cum))


def _merge_values(e: _Emitter, layer: Merge, xs: list[list[Sig]], in_types: list[FixedType], post: list[Layer],
                  base: str) -> tuple[list[Sig], FixedType, int]:
    """The exact merge of aligned operands (each shifted to the finest binary point), cast to ``result_type``, then
    the fused element-wise layers ``post``: the values, their type, and the pipeline registers that the emitter's
    clock target put in (named from ``base``)."""
    exact = merge_exact_type(layer, in_types)
    shifted = [[v if exact.frac == t.frac or v.const == 0 else
                (const_sig(v.const << (exact.frac - t.frac)) if v.const is not None else
                 e.shift_add(v, exact.frac - t.frac, const_sig(0), 0, False)) for v in vs]
               for vs, t in zip(xs, in_types)]
    if isinstance(layer, Add):
        y = shifted[0]
        for other in shifted[1:]:
            y = [e.add(a, b) for a, b in zip(y, other)]
    else:
        y = [v for vs in shifted for v in vs]
    t, extra = exact, 0
    if layer.result_type is not None:
        y, extra = e.cast_all(y, exact.frac, layer.result_type, base)
        t = layer.result_type
    y, t, k = _elementwise_timed(e, y, t.frac, t, post, base)
    return y, t, extra + k
