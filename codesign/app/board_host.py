"""The host side of the UART board top (``rtl_sim.uart``): encode a sample, decode the reply, classify.

``classify`` speaks the protocol over any byte stream with ``write(bytes)`` and ``read(n)`` (a
serial port, a socket file, a pipe to a simulator); ``classify_dataset`` (``codesign classify DIR
--port ...``) runs a data set's test samples through a board and checks every reply against the
reference. ``open_port`` opens a serial device: through
pyserial when it is installed (an optional dependency, not required), else with the standard
library's ``termios`` (POSIX), raw 8N1 at the baud rate.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol as TypingProtocol

import numpy as np

from codesign.core.fixed import FixedType
from codesign.core.network import Network
from codesign.errors import ArtifactError, DataError, ToolFailedError
from codesign.importers.data import load_dataset, shaped_for
from rtl_sim.uart import DEFAULT_BAUD, REPLY_SYNC, REQUEST_SYNC, class_bytes, element_bytes


class ByteStream(TypingProtocol):
    def write(self, data: bytes, /) -> Any: ...

    def read(self, n: int, /) -> bytes | None: ...


@dataclass(frozen=True)
class Framing:
    """What the two ends must agree on: the input and output integers' types and counts."""

    in_type: FixedType
    n_inputs: int  # every input integer of a sample (a CNN: pixels x channels)
    out_type: FixedType
    n_outputs: int

    @classmethod
    def from_rtl_dir(cls, rtl_dir: str | Path) -> "Framing":
        """The framing of the design ``codesign rtl`` wrote into ``rtl_dir`` (its ``design.json``)."""
        p = Path(rtl_dir) / "design.json"
        if not p.is_file():
            raise ArtifactError(f"{rtl_dir}: no design.json; run 'codesign rtl' first")
        m = json.loads(p.read_text())
        return cls(FixedType.parse(m["in_type"]), int(m["n_in"]) * int(m.get("pixels", 1)),
                   FixedType.parse(m["out_type"]), int(m["n_out"]))

    @property
    def request_bytes(self) -> int:
        return 1 + self.n_inputs * element_bytes(self.in_type.width)

    @property
    def reply_bytes(self) -> int:
        return 1 + class_bytes(self.n_outputs) + self.n_outputs * element_bytes(self.out_type.width)


@dataclass(frozen=True)
class Reply:
    cls: int  # the argmax of the logits, the lowest index on ties
    logits: np.ndarray  # the output integers


def encode_sample(q: np.ndarray, f: Framing) -> bytes:
    """A request: the sync byte, then each input integer (the network's input order) little-endian in whole bytes."""
    q = np.asarray(q).reshape(-1)
    if q.size != f.n_inputs:
        raise DataError(f"a sample of {q.size} integers for a network that takes {f.n_inputs}")
    t = f.in_type
    bad = (q < t.min_int) | (q > t.max_int)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"input {i} is {int(q[i])}, outside {t.to_hls()} [{t.min_int}, {t.max_int}]; quantize it first")
    nb = element_bytes(t.width)
    out = bytearray([REQUEST_SYNC])
    for v in q:
        out += (int(v) & ((1 << (8 * nb)) - 1)).to_bytes(nb, "little")
    return bytes(out)


def decode_reply(data: bytes, f: Framing) -> Reply:
    """The class and the output integers of one reply (``f.reply_bytes`` bytes starting with the sync byte)."""
    if len(data) != f.reply_bytes or data[0] != REPLY_SYNC:
        raise ToolFailedError(f"a reply of {len(data)} bytes starting {data[:1].hex() or 'with nothing'}; expected "
                              f"{f.reply_bytes} bytes starting {REPLY_SYNC:02x}")
    cb, nb = class_bytes(f.n_outputs), element_bytes(f.out_type.width)
    cls = int.from_bytes(data[1:1 + cb], "little")
    raw = data[1 + cb:]
    logits = np.array([int.from_bytes(raw[k * nb:(k + 1) * nb], "little", signed=f.out_type.signed)
                       for k in range(f.n_outputs)], dtype=np.int64)
    return Reply(cls, logits)


def _read_exactly(port: ByteStream, n: int, total: int) -> bytes:
    """The last ``n`` of a reply's ``total`` bytes."""
    buf = bytearray()
    while len(buf) < n:
        got = port.read(n - len(buf))
        if not got:
            raise ToolFailedError(f"the board sent {total - n + len(buf)} of {total} reply bytes and then nothing; "
                                  "check the port, the baud rate and that the bitstream is the one for this network")
        buf += got
    return bytes(buf)


def classify(port: ByteStream, q: np.ndarray, f: Framing) -> Reply:
    """Send one sample of input integers ``q`` and read the board's reply (bytes before its sync byte are skipped)."""
    port.write(encode_sample(q, f))
    if hasattr(port, "flush"):
        port.flush()
    while _read_exactly(port, 1, f.reply_bytes)[0] != REPLY_SYNC:
        pass
    return decode_reply(bytes([REPLY_SYNC]) + _read_exactly(port, f.reply_bytes - 1, f.reply_bytes), f)


def open_port(path: str, baud: int = DEFAULT_BAUD, timeout_s: float = 2.0) -> BinaryIO:
    """A serial device, raw 8N1 at ``baud``, reads returning what came within ``timeout_s``."""
    try:
        import serial  # pyserial, optional
    except ImportError:
        return _open_termios(path, baud, timeout_s)
    return serial.Serial(path, baud, bytesize=8, parity="N", stopbits=1, timeout=timeout_s)


def _open_termios(path: str, baud: int, timeout_s: float) -> BinaryIO:
    import termios
    import tty

    speed = getattr(termios, f"B{baud}", None)
    if speed is None:
        raise DataError(f"baud rate {baud} is not one termios knows; use a standard rate (e.g. 115200) or install "
                        "pyserial")
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    except OSError as e:
        raise ToolFailedError(f"cannot open serial port {path!r}: {e.strerror}") from None
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[4] = attrs[5] = speed
    attrs[2] = (attrs[2] & ~(termios.PARENB | termios.CSTOPB | termios.CSIZE)) | termios.CS8 | termios.CLOCAL | termios.CREAD
    attrs[6][termios.VMIN] = 0
    attrs[6][termios.VTIME] = max(1, min(255, round(timeout_s * 10)))
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    termios.tcflush(fd, termios.TCIOFLUSH)
    return os.fdopen(fd, "r+b", buffering=0)


def classify_dataset(art_dir: str | Path, port: str | ByteStream, data: str = "digits", samples: int | None = None,
                     baud: int = DEFAULT_BAUD) -> dict[str, Any]:
    """The test samples of ``data`` through the board on ``port`` (a device path or an open byte stream) running
    the UART top of the network in ``art_dir``: the board's accuracy and its replies against the reference."""
    art_dir = Path(art_dir)
    net = Network.load(art_dir)
    f = Framing.from_rtl_dir(art_dir / "rtl")
    ds = shaped_for(load_dataset(data), net.input_shape)
    x, y = ds.X_test[:samples], ds.y_test[:samples]
    q = net.quantize_input(x)
    ref = net.forward_int(q).values.reshape(len(q), -1)
    stream = open_port(port, baud) if isinstance(port, str) else contextlib.nullcontext(port)
    classes, mismatches, first_mismatch = [], 0, None
    with stream as s:
        for i, sample in enumerate(q):
            r = classify(s, sample, f)
            classes.append(r.cls)
            if r.logits.tolist() != ref[i].tolist() or r.cls != int(np.argmax(ref[i])):
                mismatches += 1
                first_mismatch = first_mismatch or {"sample": i, "expected": ref[i].tolist(),
                                                    "received": r.logits.tolist(), "class": r.cls}
    return {"samples": len(q), "accuracy": float(np.mean(np.array(classes) == y)), "bit_exact": mismatches == 0,
            "mismatches": mismatches, "first_mismatch": first_mismatch}
