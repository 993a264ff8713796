"""An AXI4-Stream wrapper around an emitted core that honours ``tready`` on both sides.

The cores (``rtl_sim.verilog``, ``rtl_sim.stream``) are fully pipelined and have no stall input:
a sample that enters comes out ``latency`` cycles later whatever happens downstream. Two ways
keep such a core correct behind a stalling consumer: a clock enable on every register of the
core (which would put one high-fanout enable into every pipeline stage and line buffer, and
change the emitted cores that the formal proof and the synthesis counts are about), or an output
FIFO deep enough for every result the core can have in flight, with a credit counter that stops
taking input when the FIFO could overflow. This wrapper does the second: the core stays exactly
as emitted and verified, and the wrapper's cost is one small FIFO.

Credits. ``used`` counts the results that are reserved: in the core's pipeline or waiting in the
FIFO. A result is reserved when the first beat of its sample (the MLP's only beat, a CNN image's
first pixel) is accepted and released when ``m_axis`` hands it on. ``s_axis_tready`` is low only at
the first beat of a sample while ``used`` equals the FIFO's capacity, so the FIFO never holds more
than it can; the other pixels of an image are always taken. Nothing the consumer does can be lost:
if it stalls, input stops once the FIFO's capacity is reserved, and restarts as it drains. No
``tready`` depends combinationally on the other side's signals (both come from registers).

Folded cores. A folded core (``rtl_sim.folded``: an MLP taking a sample every II cycles;
``rtl_sim.stream_fold``: a CNN taking a pixel every P cycles) has an ``in_ready`` output and takes a beat
only on ``in_valid && in_ready``. The wrapper then ANDs ``s_axis_tready`` with the core's ``in_ready``
(a register compare in the core, so still no combinational path from the other side), and
``s_fire`` is exactly the core's take: every beat the producer sees accepted is one the core took.

Capacity. With both sides always ready a result's credit is held from its first beat's accept to
``latency + 1`` cycles later (the FIFO adds one register), and a new sample starts every ``period``
cycles (``sample_period``: 1 for a parallel MLP, its II folded; ``pixels`` for a CNN, ``pixels * P``
folded), so ``(latency + 1) // period + 1`` credits keep the core at its full rate: capacity
``latency + 2`` for a parallel MLP. The wrapper's latency is the core's plus one cycle, from the
accepted (first) beat to ``m_axis_tvalid``.

Frames. ``m_axis_tlast`` marks the last result of an image; a design gives one result per sample or
image, so it is high on every result beat. ``s_axis_tlast`` is checked, not used: it must be high
on the last pixel of each image (every beat of an MLP); a beat that disagrees sets the sticky
``s_axis_tlast_error`` output (cleared by reset) and the data still flows by the pixel count.
A 'same'-padded CNN whose next image has begun needs that image's pixels to finish the previous
one's last outputs (``rtl_sim.stream``), so a producer that stops in the middle of an image delays
the previous image's result until it goes on; with no next image begun, idle cycles finish it.

This module depends only on the core's ``Design``: it never imports ``hls``.
"""

from __future__ import annotations

from codesign.errors import BackendError
from rtl_sim.verilog import Design


def has_in_ready(d: Design) -> bool:
    """Whether the core has an ``in_ready`` output: a folded MLP (``rtl_sim.folded``) or a CNN folded to take a
    pixel every P > 1 cycles (``rtl_sim.stream_fold``)."""
    from rtl_sim.folded import FoldedDesign

    return isinstance(d, FoldedDesign) or getattr(d, "cycles_per_pixel", 1) > 1


def beat_pace(d: Design) -> int:
    """Cycles per input beat at the core's full rate: a folded MLP's II, a folded CNN's P; 1 for a parallel core."""
    return int(getattr(d, "ii", None) or getattr(d, "cycles_per_pixel", 1))


def sample_period(d: Design) -> int:
    """Cycles per sample (MLP) or image (CNN) at the core's full rate: ``pace * pixels``."""
    return beat_pace(d) * getattr(d, "pixels", 1)


def axis_capacity(d: Design) -> int:
    """Results the wrapper's FIFO holds: every result in flight at the core's full rate."""
    return (d.latency + 1) // sample_period(d) + 1


def axis_latency(d: Design) -> int:
    """Cycles from an accepted (first) beat to its result's ``m_axis_tvalid``: the core's plus the FIFO's."""
    return d.latency + 1


def emit_axis_wrapper(d: Design) -> str:
    """``<top>_axis``: one sample (MLP) or pixel (CNN) per ``s_axis`` beat, one result per ``m_axis`` beat,
    ``tready`` honoured on both sides (see the module docstring)."""
    if getattr(d, "outputs_per_image", 1) != 1:
        raise BackendError(f"design {d.top!r} presents {d.outputs_per_image} results per image (a per-layer "
                           "stream_out design); the AXI4-Stream wrapper takes designs with one result per image")
    iw, ow = _bytes(d.in_width) * 8, _bytes(d.out_width) * 8
    pixels, cap = getattr(d, "pixels", 1), axis_capacity(d)
    ready, pace, period = has_in_ready(d), beat_pace(d), sample_period(d)
    aw = max(1, (cap - 1).bit_length())  # FIFO address bits: 2**aw >= cap slots
    cw = cap.bit_length()  # credits 0..cap
    pad_in = (f"  /* verilator lint_off UNUSEDSIGNAL */\n  wire [{iw - 1}:0] s_data = s_axis_tdata;\n"
              f"  /* verilator lint_on UNUSEDSIGNAL */") if iw > d.in_width else f"  wire [{iw - 1}:0] s_data = s_axis_tdata;"
    out_expr = f"{{{ow - d.out_width}'b0, fifo_q}}" if ow > d.out_width else "fifo_q"
    if pixels > 1:
        pw = (pixels - 1).bit_length()
        frame = f"""  reg [{pw - 1}:0] pixel;  // the accepted beat's position in its image
  wire first = (pixel == {pw}'d0);
  wire last = (pixel == {pw}'d{pixels - 1});
  always @(posedge aclk) begin
    if (!aresetn) pixel <= {pw}'d0;
    else if (s_fire) pixel <= last ? {pw}'d0 : pixel + {pw}'d1;
  end"""
    else:
        frame = "  wire first = 1'b1;\n  wire last = 1'b1;"
    if pixels > 1:
        rate = f"one image every {period} cycles" + (f" (a pixel every {pace}: the core's in_ready)" if ready else "")
    else:
        rate = f"initiation interval {pace}" + (" (the core's in_ready)" if ready else "")
    busy = ", and while the core's in_ready is low" if ready else ""
    one_c, one_a = f"{{{{{cw - 1}{{1'b0}}}}, 1'b1}}" if cw > 1 else "1'b1", f"{{{{{aw - 1}{{1'b0}}}}, 1'b1}}" if aw > 1 else "1'b1"
    return f"""// AXI4-Stream wrapper for {d.top}, generated by fpga-codesign. Do not edit.
// s_axis: one {'pixel' if pixels > 1 else 'sample'} per beat{f', {pixels} beats per image, s_axis_tlast on the last' if pixels > 1 else ', s_axis_tlast high on every beat'} (checked: s_axis_tlast_error)
// m_axis: one result per beat, m_axis_tlast high on the last (only) result of each {'image' if pixels > 1 else 'sample'}
// latency : {axis_latency(d)} cycles from the accepted {'first pixel' if pixels > 1 else 'beat'} to m_axis_tvalid ({d.latency} in the core, 1 in the FIFO);
//           {rate} while m_axis_tready is high; tready honoured on both sides
// FIFO    : {cap} results (every result in flight at the full rate); s_axis_tready drops at a first beat when all are reserved{busy}
`default_nettype none
module {d.top}_axis (
  input  wire aclk,
  input  wire aresetn,
  input  wire [{iw - 1}:0] s_axis_tdata,
  input  wire s_axis_tvalid,
  input  wire s_axis_tlast,
  output wire s_axis_tready,
  output wire [{ow - 1}:0] m_axis_tdata,
  output wire m_axis_tvalid,
  output wire m_axis_tlast,
  input  wire m_axis_tready,
  output reg  s_axis_tlast_error
);
  wire s_fire, m_fire;
{"  wire core_ready;  // the folded core takes a beat only when in_ready is high" + chr(10) if ready else ""}{frame}

  // credits: results reserved in the core or the FIFO
  reg [{cw - 1}:0] used;
  assign s_axis_tready = {"core_ready & (" if ready else ""}~first | (used != {cw}'d{cap}){")" if ready else ""};
  assign s_fire = s_axis_tvalid & s_axis_tready;
  assign m_fire = m_axis_tvalid & m_axis_tready;
  wire reserve = s_fire & first;
  always @(posedge aclk) begin
    if (!aresetn) used <= {cw}'d0;
    else if (reserve & ~m_fire) used <= used + {one_c};
    else if (~reserve & m_fire) used <= used - {one_c};
  end

  always @(posedge aclk) begin
    if (!aresetn) s_axis_tlast_error <= 1'b0;
    else if (s_fire && (s_axis_tlast != last)) s_axis_tlast_error <= 1'b1;
  end

  wire core_valid;
  wire [{d.out_width - 1}:0] core_data;
{pad_in}
  {d.top} core (
    .clk(aclk), .rst(~aresetn), .in_valid(s_fire),{" .in_ready(core_ready)," if ready else ""}
    .in_data(s_data[{d.in_width - 1}:0]), .out_valid(core_valid), .out_data(core_data)
  );

  // the FIFO: written by the core (never full: every entry was reserved), read by m_axis
  reg [{d.out_width - 1}:0] fifo [0:{(1 << aw) - 1}];
  reg [{aw - 1}:0] wp, rp;
  reg [{cw - 1}:0] count;
  always @(posedge aclk) if (core_valid) fifo[wp] <= core_data;
  always @(posedge aclk) begin
    if (!aresetn) begin
      wp <= {aw}'d0;
      rp <= {aw}'d0;
      count <= {cw}'d0;
    end else begin
      if (core_valid) wp <= wp + {one_a};
      if (m_fire) rp <= rp + {one_a};
      if (core_valid & ~m_fire) count <= count + {one_c};
      else if (~core_valid & m_fire) count <= count - {one_c};
    end
  end
  wire [{d.out_width - 1}:0] fifo_q = fifo[rp];
  assign m_axis_tvalid = (count != {cw}'d0);
  assign m_axis_tdata = {out_expr};
  assign m_axis_tlast = 1'b1;
endmodule
`default_nettype wire
"""


def _bytes(bits: int) -> int:
    return (bits + 7) // 8
