"""Quiet imports of native libraries: TensorFlow (absl, oneDNN, cudart) and the hls4ml stack that pulls it
in write their start-up lines from C++ straight to file descriptor 2, before ``TF_CPP_MIN_LOG_LEVEL``
or Python's logging can stop them; our one-line errors must be the only thing on stderr."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration (C++ libraries write there directly)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tf_environment() -> None:
    """The environment TensorFlow reads when it is first imported: no C++ log lines, Keras 2 for QKeras."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
