"""The UART board top (rtl_sim/uart.py) driven through its serial pins in cocotb, with the host side
(codesign/app/board_host.py) encoding the requests and decoding the replies: the class, the logits and
the LEDs bit-exact against the reference, for fully parallel and folded cores (whose beats wait in the
top's queue for the core's in_ready); and the host side alone on byte streams.
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

from codesign.app.board_host import Framing, Reply, classify, decode_reply, encode_sample
from codesign.app.fold_step import write_folded_rtl
from codesign.compress.fold_choice import with_reuse
from codesign.core.fixed import FixedType
from codesign.core.layers import Conv2D, Flatten, Output, ReLU
from codesign.core.network import Network
from codesign.core.verify import verification_inputs
from codesign.errors import BackendError, DataError, ToolFailedError
from codesign.tools import find_verilator
from rtl_sim.cosim import write_rtl
from rtl_sim.stream import emit_stream_verilog
from rtl_sim.uart import REPLY_SYNC, REQUEST_SYNC, clks_per_bit, emit_uart_top
from rtl_sim.wrapper_sim import run_uart
from tests.test_rtl_stream import _conv, _dense, tiny_cnn

TIMEOUT_BITS = 200  # the bench's request timeout (the default is 20,000 bit times)


@pytest.fixture(scope="module")
def verilator():
    return find_verilator()


def queued_cnn() -> Network:
    """4x4x1 -> conv 3x3 valid (6, all 54 weights, reuse 54) -> ReLU -> flatten -> dense 3 (reuse 24): the core
    takes a pixel every 54 cycles, slower than the pixels arrive at 4 clocks a bit (40 cycles a byte), so they
    pile up in the UART top's queue (8 beats deep here; about 5 wait at once)."""
    rng = np.random.default_rng(6)
    layers = [_conv(rng, "conv", Conv2D, (3, 3), 1, 6, sparsity=0.0), ReLU("relu"), Flatten("flat"),
              _dense(rng, "fc", 24, 3), Output("out", "argmax")]
    return with_reuse(Network("queued_cnn", (4, 4, 1), layers, FixedType(8, 2)), {"conv": 54, "fc": 24})


def _through_the_pins(net: Network, q: np.ndarray, root, junk: bool = False) -> tuple[list[Reply], dict]:
    """Write the RTL, send every sample as a request through uart_rx, decode each reply from uart_tx. With
    ``junk``: a stray byte before the first request and a truncated request, abandoned, before them. A flat
    network with a Dense layer at reuse > 1 is written folded (``codesign rtl``'s writer for it)."""
    folded_mlp = len(net.input_shape) == 1 and any(getattr(l, "reuse", 1) > 1 for l in net.layers)
    d = write_folded_rtl(net, root / "rtl") if folded_mlp else write_rtl(net, root / "rtl")
    f = Framing.from_rtl_dir(root / "rtl")
    requests = [encode_sample(x, f) for x in q]
    idle, answered = [0] * len(q), [True] * len(q)
    if junk:
        requests = [bytes([0x13]) + requests[0][: len(requests[0]) // 2]] + requests
        idle, answered = [0, TIMEOUT_BITS + 50] + idle[1:], [False] + answered
    res = run_uart(d, root / "rtl", root / "bench", requests, f.reply_bytes, clks_per_bit=4, idle_bits=idle,
                   answered=answered, timeout_bits=TIMEOUT_BITS)
    assert not res["timed_out"], f"no reply after {len(res['replies']) - 1} requests"
    return [decode_reply(bytes(r), f) for r in res["replies"]], res


def _check(net: Network, q: np.ndarray, replies: list[Reply], leds: list[int]) -> np.ndarray:
    ref = net.forward_int(q).values.reshape(len(q), -1)
    assert [r.logits.tolist() for r in replies] == ref.tolist()
    classes = np.argmax(ref, axis=1)  # numpy's argmax: the lowest index on ties
    assert [r.cls for r in replies] == classes.tolist() and leds == (classes & 0xFF).tolist()
    return ref


def test_a_small_mlp_classifies_bit_exact_through_the_serial_pins(small_mlp, tmp_path, verilator):
    """With a stray byte and an abandoned request first; outputs 1 and 3 are equal (the same weights), so
    wherever they are the largest the class must be 1, the lowest index."""
    net = copy.deepcopy(small_mlp)
    fc3 = net.layer("fc3")
    fc3.weight[:, 3], fc3.bias[3] = fc3.weight[:, 1], fc3.bias[1]
    q = verification_inputs(net, None, 50, 4)  # the input type's corners first, then random
    replies, res = _through_the_pins(net, q, tmp_path, junk=True)
    ref = _check(net, q, replies, res["leds"])
    assert sum(int(row[1] == row[3] == row.max()) for row in ref) >= 5  # the tie rule was exercised


@pytest.mark.slow  # a second Verilator build; CI drives the MLP top through its pins
def test_a_cnn_streams_its_pixels_from_the_serial_line_bit_exact(tmp_path, verilator):
    net = tiny_cnn()
    q = verification_inputs(net, None, 4, 7)
    replies, res = _through_the_pins(net, q, tmp_path)
    _check(net, q, replies, res["leds"])


@pytest.mark.slow
def test_the_default_flow_network_classifies_1000_digits_bit_exact_through_the_pins(default_run, digits, tmp_path,
                                                                                     verilator):
    code, out = default_run
    assert code == 0
    _classify_1000_digits(Network.load(out), digits, tmp_path)


def _classify_1000_digits(net: Network, digits, tmp_path) -> None:
    """1,000 digits samples through the pins, every reply checked against the reference; the accuracy printed."""
    x = np.concatenate([digits.X_test, digits.X_val, digits.X_train])[:1000]
    q = net.quantize_input(x)
    replies, res = _through_the_pins(net, q, tmp_path)
    _check(net, q, replies, res["leds"])
    y = np.concatenate([digits.y_test, digits.y_val, digits.y_train])[:1000]
    print(f"board accuracy on 1,000 digits: {np.mean([r.cls for r in replies] == y):.3f}")


def test_a_folded_mlp_classifies_bit_exact_through_the_serial_pins(small_mlp, tmp_path, verilator):
    """The small MLP at reuse 4 (a sample every 4 cycles through in_ready), after junk as above."""
    net = with_reuse(small_mlp, {"fc1": 4, "fc2": 4, "fc3": 4})
    q = verification_inputs(net, None, 20, 5)
    replies, res = _through_the_pins(net, q, tmp_path, junk=True)
    _check(net, q, replies, res["leds"])


def test_a_folded_cnns_pixels_wait_in_the_queue_and_classify_bit_exact(tmp_path, verilator):
    net = queued_cnn()
    d = emit_stream_verilog(net)
    assert d.cycles_per_pixel == 54 and "localparam integer BEAT_CLKS = 1 * 9 * CLKS_PER_BIT;" in emit_uart_top(d)
    q = verification_inputs(net, None, 6, 8)
    replies, res = _through_the_pins(net, q, tmp_path)
    _check(net, q, replies, res["leds"])


@pytest.mark.slow  # a Verilator build of its own
def test_a_queue_of_one_beat_loses_the_folded_cnns_pixels(tmp_path, verilator):
    """The mutant: the same top with its queue cut to one beat must fail (the pixels pile up, as intended)."""
    net = queued_cnn()
    d = write_rtl(net, tmp_path / "rtl")
    top = tmp_path / "rtl" / f"{d.top}_uart.v"
    old = "localparam integer BQ_DEPTH = (BQ_NEED < BEATS) ? BQ_NEED : BEATS;"
    assert top.read_text().count(old) == 1
    top.write_text(top.read_text().replace(old, "localparam integer BQ_DEPTH = 1;"))
    f = Framing.from_rtl_dir(tmp_path / "rtl")
    q = verification_inputs(net, None, 4, 8)
    res = run_uart(d, tmp_path / "rtl", tmp_path / "bench", [encode_sample(x, f) for x in q], f.reply_bytes,
                   clks_per_bit=4, timeout_bits=TIMEOUT_BITS)
    got = [decode_reply(bytes(r), f).logits.tolist() for r in res["replies"] if len(r) == f.reply_bytes]
    assert res["timed_out"] or got != net.forward_int(q).values.reshape(len(q), -1).tolist()


@pytest.mark.slow
def test_a_folded_digits_mlp_classifies_1000_digits_bit_exact_through_the_pins(digits_q, digits, tmp_path, verilator):
    """The digits MLP at the default precision, every Dense layer at reuse 8."""
    _classify_1000_digits(with_reuse(digits_q, {l.name: 8 for l in digits_q.layers if hasattr(l, "reuse")}), digits,
                          tmp_path)


# ---- the host side alone ------------------------------------------------------------------------
FRAMING = Framing(FixedType(10, 3), 3, FixedType(12, 5), 2)  # two bytes per input and per output


def test_a_request_is_the_sync_byte_and_each_integer_in_whole_bytes_little_endian():
    assert encode_sample(np.array([1, -2, 511]), FRAMING) == bytes([REQUEST_SYNC, 1, 0, 0xFE, 0xFF, 0xFF, 0x01])


def test_an_input_outside_the_type_is_refused_naming_it():
    with pytest.raises(DataError, match=r"^input 1 is 512, outside ap_fixed<10,3,AP_TRN,AP_WRAP> \[-512, 511\]; "
                                        r"quantize it first$"):
        encode_sample(np.array([0, 512, 0]), FRAMING)


def test_a_reply_decodes_to_the_class_and_the_signed_logits():
    r = decode_reply(bytes([REPLY_SYNC, 1, 0xFF, 0xFF, 0x00, 0x08]), FRAMING)
    assert (r.cls, r.logits.tolist()) == (1, [-1, 2048])


class _Loopback(io.RawIOBase):
    """A board stand-in: answers any request with ``reply`` after some line noise, a few bytes per read."""

    def __init__(self, reply: bytes) -> None:
        self.sent, self.out = b"", b"\x00\xff" + reply

    def write(self, b) -> int:
        self.sent += bytes(b)
        return len(b)

    def read(self, n: int = -1) -> bytes:
        got, self.out = self.out[:min(n, 3)], self.out[min(n, 3):]
        return got


def test_classify_skips_noise_before_the_reply_and_reads_it_in_pieces():
    port = _Loopback(bytes([REPLY_SYNC, 0, 0x05, 0x00, 0xFB, 0xFF]))
    r = classify(port, np.array([0, 1, 2]), FRAMING)
    assert port.sent == encode_sample(np.array([0, 1, 2]), FRAMING) and (r.cls, r.logits.tolist()) == (0, [5, -5])


def test_a_reply_that_stops_is_a_clear_error():
    with pytest.raises(ToolFailedError, match=r"^the board sent 3 of 6 reply bytes and then nothing; check the port"):
        classify(_Loopback(bytes([REPLY_SYNC, 0, 0x05])), np.array([0, 1, 2]), FRAMING)


def test_clocks_per_bit_follow_the_clock_and_a_too_fast_baud_is_refused(small_mlp):
    from rtl_sim.verilog import emit_verilog

    assert (clks_per_bit(100e6, 115_200), clks_per_bit(25e6, 115_200), clks_per_bit(12e6, 115_200)) == (868, 217, 104)
    with pytest.raises(BackendError, match=r"^a 400000 Hz clock gives 3 clocks per bit at 115200 baud; the UART needs "
                                        r"at least 4: lower the baud rate$"):
        emit_uart_top(emit_verilog(small_mlp), clock_hz=400_000)


class _ReferenceBoard(io.RawIOBase):
    """A board stand-in that decodes each request on its own (one byte per input integer here) and answers
    with the reference's outputs, two bytes each; ``wrong`` corrupts one reply's first logit."""

    def __init__(self, net: Network, wrong: int | None = None) -> None:
        self.net, self.wrong, self.n, self.out = net, wrong, 0, b""

    def write(self, b) -> int:
        t = self.net.input_type
        assert b[0] == REQUEST_SYNC and len(b) == 1 + int(np.prod(self.net.input_shape))
        q = np.array([v - 256 if t.signed and v > t.max_int else v for v in b[1:]]).reshape(1, *self.net.input_shape)
        y = self.net.forward_int(q).values.reshape(-1).astype(int)
        if self.n == self.wrong:
            y[0] += 1
        self.out += bytes([REPLY_SYNC, int(np.argmax(y))]) + b"".join(int(v).to_bytes(2, "little", signed=True)
                                                                     for v in y)
        self.n += 1
        return len(b)

    def read(self, n: int = -1) -> bytes:
        got, self.out = self.out[:n], self.out[n:]
        return got


@pytest.mark.parametrize("wrong", [None, 3])
def test_classify_dataset_checks_every_reply_against_the_reference(digits_q, tmp_path, wrong):
    from codesign.app.board_host import classify_dataset

    digits_q.save(tmp_path)
    write_rtl(digits_q, tmp_path / "rtl")
    r = classify_dataset(tmp_path, _ReferenceBoard(digits_q, wrong), "digits", samples=20)
    assert r["samples"] == 20 and r["accuracy"] > 0.8 and r["bit_exact"] == (wrong is None)
    assert r["mismatches"] == (wrong is not None) and (r["first_mismatch"] or {}).get("sample") == wrong


def test_codesign_classify_talks_to_a_board_on_a_serial_device(digits_q, tmp_path, capsys):
    """A pseudo-terminal stands for the USB serial port (opened raw through termios, or pyserial when installed);
    a thread behind it answers as the board would."""
    import json
    import os
    import pty
    import threading

    from codesign.app.cli import main

    digits_q.save(tmp_path)
    write_rtl(digits_q, tmp_path / "rtl")
    master, slave = pty.openpty()
    board, size = _ReferenceBoard(digits_q), 1 + int(np.prod(digits_q.input_shape))

    def serve() -> None:
        for _ in range(12):
            buf = b""
            while len(buf) < size:
                buf += os.read(master, size - len(buf))
            board.write(buf)
            os.write(master, board.read(1 << 16))

    threading.Thread(target=serve, daemon=True).start()
    try:
        code = main(["classify", str(tmp_path), "--port", os.ttyname(slave), "--samples", "12", "--quiet", "--json"])
    finally:
        os.close(slave)
        os.close(master)
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["samples"] == 12 and res["bit_exact"] and board.n == 12
