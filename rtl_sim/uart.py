"""A board top that puts an emitted core behind a UART: the host sends a sample, the board answers
with the class and the logits, and shows the class on its LEDs.

The serial line is 8N1 at ``CLKS_PER_BIT`` clocks a bit (a module parameter, by default
``CLK_HZ / BAUD`` rounded; a board top overrides ``CLK_HZ`` with its oscillator's frequency).

Request (host to board): the byte ``REQUEST_SYNC`` (0xA5), then every input integer of the sample in
the network's input order (a CNN's pixels in raster order, channels innermost: the order of
``x.reshape(-1)``), each as ``ceil(W_in / 8)`` bytes little-endian, two's complement (the board keeps
the low ``W_in`` bits). The board hunts for the sync byte between requests; bytes of a request
that stop arriving for ``TIMEOUT_BITS`` bit times are dropped and the hunt starts again, so a lost
byte costs one request, not the link. The core takes the sample as it arrives: an MLP as one beat
when its last byte is in, a streaming CNN one pixel per beat (its core allows gaps between pixels).

A folded core (``rtl_sim.folded``, ``rtl_sim.stream_fold``) takes a beat only when its ``in_ready`` is
high, and the line has no flow control, so its beats go through a queue. Beats arrive at most every
``BEAT_CLKS`` cycles (a beat's bytes at 9 bit times a byte: the 10 of a frame less a 10 % margin for a
fast host) and leave at least every ``PACE`` cycles while the queue holds one, so over a sample's
``BEATS`` beats at most ``(BEATS - 1) * (1 - BEAT_CLKS / PACE) + 2`` wait at once; the queue's depth
(``BQ_DEPTH``, a localparam of ``CLKS_PER_BIT``) is that plus one, and never more than ``BEATS`` (the next
request starts after the reply). At 115,200 baud it is a few beats; a folded MLP's is one.

Reply (board to host): the byte ``REPLY_SYNC`` (0x5A), the class (one byte up to 256 outputs,
little-endian: the index of the largest output integer, the lowest index on ties, as ``numpy.argmax`` over the reference's
``forward_int``), then every output integer, each as ``ceil(W_out / 8)`` bytes little-endian, sign-
(or zero-) extended. The board takes the next request once its reply is sent; the host waits for
the reply (``codesign.app.board_host`` speaks this protocol).

``led`` shows the last class (binary, low bits; a board connects as many as it has). A power-on
reset of 16 cycles (register initial values, which ECP5, iCE40 and Gowin parts load with the
bitstream) means a board needs no reset button; ``rst`` resets too, active high.

This module depends only on the core's ``Design``: it never imports ``hls``.
"""

from __future__ import annotations

from codesign.errors import BackendError
from rtl_sim.axis import beat_pace, has_in_ready
from rtl_sim.verilog import Design

REQUEST_SYNC = 0xA5
REPLY_SYNC = 0x5A
DEFAULT_BAUD = 115_200
DEFAULT_CLOCK_HZ = 100_000_000
DEFAULT_TIMEOUT_BITS = 20_000  # about 0.17 s at 115,200 baud: longer than any USB-serial pause


def element_bytes(width: int) -> int:
    """Bytes one integer of ``width`` bits takes on the serial line."""
    return (width + 7) // 8


def request_bytes(d: Design) -> int:
    """Bytes of one request: the sync byte and every input integer."""
    return 1 + d.n_in * getattr(d, "pixels", 1) * element_bytes(d.in_type.width)


def class_bytes(n_out: int) -> int:
    """Bytes of the reply's class: one up to 256 outputs."""
    return element_bytes(max(1, (n_out - 1).bit_length()))


def reply_bytes(d: Design) -> int:
    """Bytes of one reply: the sync byte, the class and every output integer."""
    return 1 + class_bytes(d.n_out) + d.n_out * element_bytes(d.out_type.width)


def clks_per_bit(clock_hz: float, baud: int) -> int:
    """The UART's clocks per bit at ``clock_hz`` (the Verilog parameter's default rule: rounded)."""
    return int((clock_hz + baud // 2) // baud)


def emit_uart_top(d: Design, clock_hz: int = DEFAULT_CLOCK_HZ, baud: int = DEFAULT_BAUD) -> str:
    """``<top>_uart``: the core ``d`` behind the UART protocol of the module docstring."""
    if getattr(d, "outputs_per_image", 1) != 1:
        raise BackendError(f"design {d.top!r} presents {d.outputs_per_image} results per image (a per-layer "
                           "stream_out design); the UART top takes designs with one result per sample")
    if clks_per_bit(clock_hz, baud) < 4:
        raise BackendError(f"a {clock_hz} Hz clock gives {clks_per_bit(clock_hz, baud)} clocks per bit at {baud} baud; "
                           "the UART needs at least 4: lower the baud rate")
    return _HEADER.format(top=d.top, net=d.top, req=request_bytes(d), rep=reply_bytes(d)) + _module(d, clock_hz, baud)


def _core(d: Design, bw: int, beat_bytes: int, beats: int) -> str:
    """The core's instance, fed by ``core_in_valid``/``beat``; a folded core's through the beat queue."""
    n, ow = d.n_out, d.out_type.width
    queue, ports = "", ".in_valid(core_in_valid), .in_data(beat),"
    if has_in_ready(d):
        ports = ".in_valid(bq_valid), .in_ready(core_ready), .in_data(bq[bq_rp]),"
        queue = f"""  // ---- the beat queue: the folded core takes a beat only when its in_ready is high ------------------
  localparam integer PACE = {beat_pace(d)};  // the core's cycles per beat
  localparam integer BEATS = {beats};  // beats per sample
  localparam integer BEAT_CLKS = {beat_bytes} * 9 * CLKS_PER_BIT;  // the fastest beats arrive: 9 bit times a byte
  localparam integer BQ_NEED = (BEAT_CLKS >= PACE) ? 3 : BEATS + 2 - ((BEATS - 1) * BEAT_CLKS) / PACE;
  localparam integer BQ_DEPTH = (BQ_NEED < BEATS) ? BQ_NEED : BEATS;
  localparam integer BQ_AW = (BQ_DEPTH > 1) ? $clog2(BQ_DEPTH) : 1;
  localparam integer BQ_LAST_I = BQ_DEPTH - 1;
  localparam [BQ_AW - 1:0] BQ_LAST = BQ_LAST_I[BQ_AW - 1:0];
  reg [{bw - 1}:0] bq [0:BQ_DEPTH - 1];
  reg [BQ_AW - 1:0] bq_wp, bq_rp;
  reg [BQ_AW:0] bq_n;  // beats waiting
  wire core_ready;
  wire bq_valid = bq_n != {{(BQ_AW + 1){{1'b0}}}};
  wire bq_take = bq_valid && core_ready;
  always @(posedge clk) if (core_in_valid) bq[bq_wp] <= beat;
  always @(posedge clk) begin
    if (reset) begin
      bq_wp <= {{BQ_AW{{1'b0}}}};
      bq_rp <= {{BQ_AW{{1'b0}}}};
      bq_n <= {{(BQ_AW + 1){{1'b0}}}};
    end else begin
      if (core_in_valid) bq_wp <= (bq_wp == BQ_LAST) ? {{BQ_AW{{1'b0}}}} : bq_wp + 1'b1;
      if (bq_take) bq_rp <= (bq_rp == BQ_LAST) ? {{BQ_AW{{1'b0}}}} : bq_rp + 1'b1;
      if (core_in_valid && !bq_take) bq_n <= bq_n + 1'b1;
      else if (!core_in_valid && bq_take) bq_n <= bq_n - 1'b1;
    end
  end

"""
    return queue + f"""  // ---- the core ----------------------------------------------------------------------------------
  wire core_valid;
  wire [{n * ow - 1}:0] core_data;
  {d.top} core (
    .clk(clk), .rst(reset), {ports} .out_valid(core_valid), .out_data(core_data)
  );
"""


_HEADER = """// UART top for {top}, generated by fpga-codesign. Do not edit.
// 8N1, CLKS_PER_BIT clocks a bit. Request: 0xA5 then the inputs ({req} bytes in all);
// reply: 0x5A, the class, the outputs ({rep} bytes). See rtl_sim/uart.py for the protocol.
"""


def _module(d: Design, clock_hz: int, baud: int) -> str:
    w, bi = d.in_type.width, element_bytes(d.in_type.width)
    e, beats = d.n_in, getattr(d, "pixels", 1)
    ow, bo, n = d.out_type.width, element_bytes(d.out_type.width), d.n_out
    ew = bi * 8
    el_next = f"{{rx_byte, el[{ew - 1}:8]}}" if bi > 1 else "rx_byte"
    beat_next = f"{{el_next[{w - 1}:0], beat[{e * w - 1}:{w}]}}" if e > 1 else f"el_next[{w - 1}:0]"
    signed = d.out_type.signed
    ext = []
    for j in reversed(range(n)):
        sl = f"core_data[{j * ow + ow - 1}:{j * ow}]"
        if bo * 8 == ow:
            ext.append(sl)
        else:
            fill = f"core_data[{j * ow + ow - 1}]" if signed else "1'b0"
            ext.append(f"{{{{{bo * 8 - ow}{{{fill}}}}}, {sl}}}")
    greater = f"$signed(scan[{ow - 1}:0]) > $signed(best)" if signed else f"scan[{ow - 1}:0] > best"
    scan_next = f"{{{ow}'b0, scan[{n * ow - 1}:{ow}]}}" if n > 1 else "scan"
    scan_first = f"{{{ow}'b0, core_data[{n * ow - 1}:{ow}]}}" if n > 1 else "core_data"  # outputs 1.. in turn
    lw, cw = n * bo * 8, class_bytes(n) * 8
    rw = lw + cw
    total = 1 + class_bytes(n) + n * bo
    rsr_next = f"{{8'b0, rsr[{rw - 1}:8]}}" if rw > 8 else "rsr"
    pcount = ""
    if beats > 1:
        pcount = f"            if (ec == 16'd{e - 1}) pc <= pc + 16'd1;\n"
    return f"""`default_nettype none
module {d.top}_uart #(
  parameter integer CLK_HZ = {clock_hz},
  parameter integer BAUD = {baud},
  parameter integer CLKS_PER_BIT = (CLK_HZ + BAUD / 2) / BAUD,
  parameter integer TIMEOUT_BITS = {DEFAULT_TIMEOUT_BITS}
) (
  input  wire clk,
  input  wire rst,
  input  wire uart_rx,
  output wire uart_tx,
  output reg  [7:0] led
);
  localparam [31:0] CPB = CLKS_PER_BIT;
  localparam [31:0] HALF = CLKS_PER_BIT / 2;
  localparam [31:0] TIMEOUT = TIMEOUT_BITS * CLKS_PER_BIT;

  // power-on reset: 16 cycles from configuration, or rst (the initial values are the point here)
  /* verilator lint_off PROCASSINIT */
  reg [4:0] por = 5'd0;
  reg [9:0] tx_sr = 10'h3ff;  // the line idles high from configuration on
  /* verilator lint_on PROCASSINIT */
  always @(posedge clk) if (!por[4]) por <= por + 5'd1;
  wire reset = rst | ~por[4];

  // ---- receiver: 8N1, each bit sampled at its middle -------------------------------------------
  reg [2:0] rx_s;  // flushed by the line during the power-on reset
  always @(posedge clk) rx_s <= {{rx_s[1:0], uart_rx}};
  wire rxd = rx_s[2];
  reg [1:0] rx_state;
  reg [31:0] rx_cnt;
  reg [2:0] rx_bit;
  reg [7:0] rx_sr, rx_byte;
  reg rx_valid;
  always @(posedge clk) begin
    rx_valid <= 1'b0;
    if (reset) begin
      rx_state <= 2'd0;
      rx_cnt <= 32'd0;
    end else begin
      case (rx_state)
        2'd0: if (!rxd) begin rx_state <= 2'd1; rx_cnt <= 32'd0; end
        2'd1: if (rx_cnt == HALF - 32'd1) begin  // the middle of the start bit
                rx_cnt <= 32'd0;
                rx_bit <= 3'd0;
                rx_state <= rxd ? 2'd0 : 2'd2;
              end else rx_cnt <= rx_cnt + 32'd1;
        2'd2: if (rx_cnt == CPB - 32'd1) begin
                rx_cnt <= 32'd0;
                rx_sr <= {{rxd, rx_sr[7:1]}};
                rx_bit <= rx_bit + 3'd1;
                if (rx_bit == 3'd7) rx_state <= 2'd3;
              end else rx_cnt <= rx_cnt + 32'd1;
        default: if (rx_cnt == CPB - 32'd1) begin  // the middle of the stop bit: a frame error drops the byte
                   rx_state <= 2'd0;
                   if (rxd) begin rx_valid <= 1'b1; rx_byte <= rx_sr; end
                 end else rx_cnt <= rx_cnt + 32'd1;
      endcase
    end
  end

  // ---- transmitter -----------------------------------------------------------------------------
  reg [3:0] tx_n;
  reg [31:0] tx_cnt;
  reg tx_busy, tx_go;
  reg [7:0] tx_data;
  assign uart_tx = tx_sr[0];
  always @(posedge clk) begin
    if (reset) begin
      tx_sr <= 10'h3ff;
      tx_busy <= 1'b0;
    end else if (!tx_busy) begin
      if (tx_go) begin
        tx_sr <= {{1'b1, tx_data, 1'b0}};
        tx_n <= 4'd0;
        tx_cnt <= 32'd0;
        tx_busy <= 1'b1;
      end
    end else if (tx_cnt == CPB - 32'd1) begin
      tx_cnt <= 32'd0;
      tx_sr <= {{1'b1, tx_sr[9:1]}};
      tx_n <= tx_n + 4'd1;
      if (tx_n == 4'd9) tx_busy <= 1'b0;
    end else tx_cnt <= tx_cnt + 32'd1;
  end

  // ---- request parser: sync byte, then {bi} byte(s) per integer, {e} integer(s) per beat, {beats} beat(s) --
  localparam HUNT = 2'd0, BYTES = 2'd1, BUSY = 2'd2;
  reg [1:0] state;
  reg [15:0] bc, ec, pc;  // byte in the integer, integer in the beat, beat in the sample
  reg [31:0] quiet;
  /* verilator lint_off UNUSEDSIGNAL */
  reg [{ew - 1}:0] el;
  wire [{ew - 1}:0] el_next = {el_next};
  /* verilator lint_on UNUSEDSIGNAL */
  reg [{e * w - 1}:0] beat;
  reg core_in_valid;
  wire el_done = state == BYTES && rx_valid && bc == 16'd{bi - 1};
  wire reply_done;
  always @(posedge clk) begin
    core_in_valid <= 1'b0;
    if (reset) begin
      state <= HUNT;
    end else begin
      case (state)
        HUNT: if (rx_valid && rx_byte == 8'h{REQUEST_SYNC:02x}) begin
                state <= BYTES;
                bc <= 16'd0;
                ec <= 16'd0;
                pc <= 16'd0;
                quiet <= 32'd0;
              end
        BYTES: begin
          quiet <= rx_valid ? 32'd0 : quiet + 32'd1;
          if (!rx_valid && quiet == TIMEOUT) state <= HUNT;  // a request that stopped: drop it
          if (rx_valid) begin
            el <= el_next;
            bc <= el_done ? 16'd0 : bc + 16'd1;
          end
          if (el_done) begin
            beat <= {beat_next};
            ec <= (ec == 16'd{e - 1}) ? 16'd0 : ec + 16'd1;
            if (ec == 16'd{e - 1}) begin
              core_in_valid <= 1'b1;
              if (pc == 16'd{beats - 1}) state <= BUSY;
            end
{pcount}          end
        end
        default: if (reply_done) state <= HUNT;
      endcase
    end
  end

{_core(d, e * w, e * bi, beats)}
  // ---- reply: argmax over the outputs (ties: the lowest index), then the bytes ------------------
  localparam IDLE = 2'd0, SCAN = 2'd1, SEND = 2'd2;
  reg [1:0] phase;
  reg [{n * ow - 1}:0] scan;
  reg [{ow - 1}:0] best;
  reg [{cw}:0] j;
  reg [{cw - 1}:0] best_i;
  reg [{lw - 1}:0] logits;
  reg [{rw - 1}:0] rsr;  // the class and the outputs, sent low byte first
  reg [15:0] k;  // reply byte being sent
  always @(posedge clk) begin
    tx_go <= 1'b0;
    if (reset) begin
      phase <= IDLE;
      led <= 8'd0;
    end else begin
      case (phase)
        IDLE: if (core_valid) begin
                scan <= {scan_first};
                best <= core_data[{ow - 1}:0];
                best_i <= {cw}'d0;
                j <= {cw + 1}'d1;
                logits <= {{{', '.join(ext)}}};
                phase <= SCAN;
              end
        SCAN: if (j == {cw + 1}'d{n}) begin
                led <= best_i[7:0];
                rsr <= {{logits, best_i}};
                k <= 16'd0;
                phase <= SEND;
              end else begin
                if ({greater}) begin
                  best <= scan[{ow - 1}:0];
                  best_i <= j[{cw - 1}:0];
                end
                scan <= {scan_next};
                j <= j + {cw + 1}'d1;
              end
        default: if (!tx_busy && !tx_go) begin
                   if (k == 16'd{total}) phase <= IDLE;
                   else begin
                     tx_go <= 1'b1;
                     tx_data <= (k == 16'd0) ? 8'h{REPLY_SYNC:02x} : rsr[7:0];
                     if (k != 16'd0) rsr <= {rsr_next};
                     k <= k + 16'd1;
                   end
                 end
      endcase
    end
  end
  assign reply_done = phase == SEND && !tx_busy && !tx_go && k == 16'd{total};
endmodule
`default_nettype wire
"""
