"""The C-simulation build of an hls4ml project: ours to drive, split, parallel and cached.

hls4ml's ``compile()`` rewrites the project and runs its ``build_lib.sh``: one g++ at ``-O3`` on
``firmware/myproject.cpp``. At reuse 1 that file pulls in ``nnet_code_gen.h``, where da4ml's
distributed arithmetic is one straight-line function per layer, tens of thousands of
``ap_fixed`` statements for a 41k-weight network. g++ spends most of its time resolving the
operator overloads of those statements (``-ftime-report``: most of a build is parsing the one
huge function body) and then optimising it; 10 minutes for hls4ml's 16-100^5-5 MLP.

Here the project hls4ml wrote for the vendor tools is left exactly as it is. We compile a copy
(in the cache folder) in which each generated layer function of ``nnet_code_gen.h`` moves,
verbatim, into a translation unit of its own with an explicit instantiation for the template
arguments ``myproject.cpp`` calls it with; the header keeps a declaration. A long straight-line
body is cut into functions of ``PART_LINES`` generated lines each (``split_body``: the lines stay
verbatim, values crossing a cut are copied bit for bit). The units compile in
parallel, at the optimisation level ``OPT_LEVEL`` (chosen for build time: the C simulation
checks correctness, not speed; see ``bench/hls_scale.py``), and are linked into the same shared
library ``build_lib.sh`` makes, with the same ``<project>_double`` entry point hls4ml's
``predict`` calls. The library is cached under a key of every source byte, the compiler's
version and the flags: an unchanged project is never compiled twice.

Where a project does not have that shape (other strategies, other backends), the copy is
compiled as hls4ml's script does, as one unit, still at ``OPT_LEVEL`` and still cached.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from codesign.errors import ToolFailedError
from codesign.tools import Tool, find_gpp, first_error_line

# -Og: on the 16-100^5-5 MLP, cut into parts, -Og compiles in about the CPU time of -O0 on the uncut layers
# (~150 s of g++ on 2 cores) and simulates 8x faster (1.7 against 13.3 ms per vector); -O1 costs ~40 % more
# to compile. Measured figures: README, "The HLS step at scale".
OPT_LEVEL = "-Og"
BUILD_VERSION = 4  # part of the cache key: bump when the way we split or compile changes
MIN_UNIT_LINES = 1500  # generated functions are packed into units of at least this many lines
PART_LINES = 500  # a longer straight-line function is cut into functions of this many lines (its unit's)
# the generated layer code throws nothing and needs no more than C++11 (hls4ml's build_lib.sh falls back to it):
# without exception regions g++ spends ~25 % less on it, and parsing as C++11 ~10 % less than as C++23
LAYER_FLAGS = ("-fno-exceptions", "-std=c++11")
CPU_S_PER_LINE, CPU_S_PER_UNIT = 0.006, 1.5  # g++ at OPT_LEVEL: seconds per generated line, per unit's headers
CACHE_ENTRIES = 20  # the newest libraries kept in the cache folder
PROJECT = "myproject"
CODE_GEN = Path("firmware") / "nnet_utils" / "nnet_code_gen.h"
# the include folders of hls4ml's build_lib.sh, per backend, and the C++ standard it uses
_INCLUDES = {"vitis": ("firmware/ap_types",), "vivado": ("firmware/ap_types",),
             "quartus": ("firmware/ac_types", "firmware/ap_types")}
_STD = {"vitis": "c++23", "vivado": "c++23", "quartus": "c++11"}
# a generated layer function of nnet_code_gen.h: its template head, its signature, its body
_FUNCTION = re.compile(r"^template <(?P<params>[^>\n]*)>\n(?P<sig>void (?P<name>\w+)\((?P<args>[^)\n]*)\)) \{[^\n]*\n"
                       r"(?P<body>.*?)^\}\n", re.M | re.S)


@dataclass(frozen=True)
class Unit:
    """One translation unit of the build: the source (relative to the build folder) and its size."""

    source: str
    lines: int
    flags: tuple[str, ...] = ()


@dataclass
class CsimLibrary:
    """A built (or cached) C-simulation library and what building it cost."""

    path: Path
    key: str
    cached: bool
    compile_s: float
    units: int
    split: bool
    flags: tuple[str, ...]


def compiler_flags(gpp: Tool, backend: str, opt: str = OPT_LEVEL) -> tuple[str, ...]:
    """hls4ml's build_lib.sh flags with our optimisation level (``-fno-gnu-unique``, as it adds, lets the
    library be unloaded)."""
    std = _STD.get(backend, "c++11")
    if std == "c++23" and not _supports(gpp, "-std=c++23"):
        std = "c++11"
    flags = [opt, "-fPIC", f"-std={std}"]
    if _supports(gpp, "-fno-gnu-unique"):
        flags.append("-fno-gnu-unique")
    return tuple(flags) + tuple(f"-I{d}" for d in _INCLUDES.get(backend, ("firmware/ap_types",)))


_SUPPORTED: dict[tuple[str, str], bool] = {}


def _supports(gpp: Tool, flag: str) -> bool:
    key = (gpp.command[0], flag)
    if key not in _SUPPORTED:
        proc = subprocess.run([*gpp.command, "-Werror", "-fsyntax-only", flag, "-xc++", "-", "-o", os.devnull],
                              input="", capture_output=True, text=True, timeout=60)
        _SUPPORTED[key] = proc.returncode == 0
    return _SUPPORTED[key]


def project_sources(project_dir: Path) -> list[Path]:
    """What the C-simulation library is built from, relative to the project: the firmware folder (code,
    headers, type libraries, weight files read at run time) and the Python bridge."""
    files = sorted(p.relative_to(project_dir) for p in (project_dir / "firmware").rglob("*") if p.is_file())
    return files + [Path(f"{PROJECT}_bridge.cpp")]


def cache_key(project_dir: Path, gpp: Tool, flags: tuple[str, ...]) -> str:
    """sha256 over the build recipe, the compiler's identity and every source byte."""
    h = hashlib.sha256(_RECIPE)
    h.update(f"codesign-csim {BUILD_VERSION}\n{gpp.command[0]}\n{_compiler_identity(gpp)}\n{' '.join(flags)}\n".encode())
    for rel in project_sources(project_dir):
        data = (project_dir / rel).read_bytes()
        h.update(f"{rel.as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


_RECIPE = Path(__file__).read_bytes()  # how we split and compile is part of the key (read once: a stable key)
_IDENTITY: dict[str, str] = {}


def _compiler_identity(gpp: Tool) -> str:
    exe = gpp.command[0]
    if exe not in _IDENTITY:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
        machine = subprocess.run([exe, "-dumpmachine"], capture_output=True, text=True, timeout=60).stdout
        _IDENTITY[exe] = f"{out.strip()}\n{machine.strip()}"
    return _IDENTITY[exe]


# ---- splitting nnet_code_gen.h ---------------------------------------------------------------------


# what a layer unit includes: the layer types and the helpers the generated code calls, not parameters.h, which
# defines the weight arrays and (io_stream) the conv configs' tables: included twice they would be defined twice
UNIT_HEAD = '#include "defines.h"\n#include "nnet_utils/nnet_code_gen.h"\n\n'


def split_code_gen(build: Path) -> list[Unit] | None:
    """Move each generated layer function of the copy's ``nnet_code_gen.h`` into units of its own.

    A function whose body is longer than ``PART_LINES`` and is da4ml's straight-line form is cut
    into parts (``split_body``), each a unit; shorter ones are packed into units of at least
    ``MIN_UNIT_LINES``. Returns the units (layer units, then ``myproject.cpp``), or None when no
    function can move, so that the caller compiles the project whole. A function moves when it is
    called from ``myproject.cpp`` (io_parallel) or named by a layer config of ``parameters.h``
    (io_stream) with explicit template arguments, is named nowhere else, and its braces balance;
    any other (e.g. a conv kernel that its wrapper in the header calls) stays where it is."""
    header = build / CODE_GEN
    top = build / "firmware" / f"{PROJECT}.cpp"
    if not header.is_file():
        return None
    text, caller = header.read_text(), top.read_text()
    # io_stream: hls4ml writes the next layer's function on the line that closes the previous one's wrapper
    text = re.sub(r"^\};(?=template <)", "};\n", text, flags=re.M)
    found = list(_FUNCTION.finditer(text))
    if not found:
        return None
    others = "".join(p.read_text(errors="replace") for p in (build / "firmware").rglob("*")
                     if p.is_file() and p.suffix in (".h", ".cpp") and p not in (header, top))
    pieces = []
    for m in found:  # a function used otherwise (a conv kernel reached through its wrapper) stays in the header
        inst = _instantiations(m, caller, others)
        if inst is not None:
            pieces.append((m, inst))
    if not pieces:
        return None
    head = UNIT_HEAD + "namespace nnet {\n\n"
    units: list[Unit] = []

    def emit(code: str, lines: int) -> None:
        src = Path("firmware") / f"codesign_part{len(units)}.cpp"
        (build / src).write_text(head + code + "\n} // namespace nnet\n")
        units.append(Unit(src.as_posix(), lines, LAYER_FLAGS))

    group: list[str] = []
    lines = 0
    for i, (m, inst) in enumerate(pieces):
        code = split_body(m, inst) if m["body"].count("\n") > PART_LINES else None
        if code is None:
            code = f"// {m['name']}: verbatim from nnet_code_gen.h\n{m.group(0)}\n" + "\n".join(inst) + "\n"
        group.append(code)
        lines += m.group(0).count("\n")
        if lines >= MIN_UNIT_LINES or i == len(pieces) - 1:
            emit("\n".join(group), lines)
            group, lines = [], 0
    stripped, pos = [], 0
    for m, _ in pieces:
        stripped += [text[pos:m.start()], f"template <{m['params']}>\n{m['sig']}; // defined in codesign_part*.cpp\n"]
        pos = m.end()
    header.write_text("".join(stripped) + text[pos:])
    return units + [Unit(f"firmware/{PROJECT}.cpp", caller.count("\n"))]


def _instantiations(m: re.Match, caller: str, others: str) -> list[str] | None:
    """The explicit instantiations of generated function ``m`` for the template arguments
    ``myproject.cpp`` calls it with (io_parallel) or a layer config of ``parameters.h`` names it with
    (io_stream), or None when it is used anywhere else."""
    name = m["name"]
    calls = set(re.findall(rf"\bnnet::{name}<([^;()]*)>\(", caller))
    # io_stream: the layer's config in parameters.h names the function (``auto dense_da = nnet::f<a, b>;``)
    named = re.findall(rf"=\s*nnet::{name}<([^;()]*)>;", others)
    calls |= {re.sub(r"\btypename\s+", "", c) for c in named}
    if not calls or len(re.findall(rf"\b{name}\b", caller)) != len(re.findall(rf"\bnnet::{name}<", caller)) \
            or len(re.findall(rf"\b{name}\b", others)) != len(named) or not _balanced(m["body"]):
        return None
    params = [p.split()[-1] for p in _split_top(m["params"])]
    inst = []
    for call in sorted(calls):
        args = _split_top(call)
        if len(args) != len(params):
            return None
        sig = m["sig"]
        for p, a in zip(params, args):
            sig = re.sub(rf"\b{re.escape(p)}\b", a, sig)
        sig = sig.replace(f"void {name}(", f"void {name}<{', '.join(args)}>(", 1)
        inst.append(f"template {sig};")
    return inst


# da4ml's straight-line form: one typed value per line, outputs assigned from them
_VALUE = re.compile(r"^\s*(?P<type>ap_u?fixed<[-\d, ]+>) (?P<name>v\d+) = (?P<expr>[^;]*);[^\n]*$")
_OUTPUT = re.compile(r"^\s*model_out\[\d+\] = (?P<expr>[^;]*);[^\n]*$")
_NAME = re.compile(r"\bv\d+\b")


def split_body(m: re.Match, inst: list[str]) -> str | None:
    """The generated function ``m`` with its straight-line body cut into parts of ``PART_LINES`` lines.

    g++'s time on one function grows faster than its length: a 6,000-line da4ml layer compiles in
    ~2/3 of the time as six functions of 1,000 lines in the same unit. Every line of a part is the
    generated line, verbatim, in a plain function of the one type pair ``myproject.cpp`` calls the
    layer with (``inp_t``/``out_t`` typedef'd to them). A value a later part reads is copied bit for
    bit into a struct the parts share and read back as a const reference of its own type: no
    ``ap_fixed`` operation is added, so nothing can round or wrap differently. Returns the source
    (struct, parts, the function calling them, its explicit instantiation), or None when the body
    is not of that form or the function is called with more than one type pair."""
    if len(inst) != 1:
        return None
    kept: list[tuple[str, str | None, str | None]] = []  # (line, defined name, its type)
    for line in m["body"].split("\n"):
        v = _VALUE.match(line)
        if v:
            kept.append((line, v["name"], v["type"]))
        elif _OUTPUT.match(line) or not line.strip():
            kept.append((line, None, None))
        elif not line.strip().startswith("#pragma"):
            return None
    chunks = [kept[i:i + PART_LINES] for i in range(0, len(kept), PART_LINES)]
    types = {n: t for _, n, t in kept if n}
    defined_in = {n: k for k, c in enumerate(chunks) for _, n, _ in c if n}
    uses = [set(_NAME.findall("\n".join(line.split("//")[0] for line, _, _ in c))) for c in chunks]
    if any(n not in defined_in for u in uses for n in u):
        return None
    shared = sorted({n for k, u in enumerate(uses) for n in u if defined_in[n] < k}, key=lambda n: int(n[1:]))
    name, state = m["name"], f"{m['name']}_state"
    params = [p.split()[-1] for p in _split_top(m["params"])]
    args = _split_top(re.search(rf"void {name}<(.*)>\(", inst[0]).group(1))
    typedefs = "".join(f"    typedef {a} {p};\n" for p, a in zip(params, args))
    concrete = re.search(rf"void {name}<.*>\((.*)\);$", inst[0]).group(1)
    arg_names = [re.match(r"\s*\S+\s+(\w+)", a).group(1) for a in _split_top(m["args"])]
    out = [f"// {name}: its lines, verbatim from nnet_code_gen.h, in {len(chunks)} parts\n"
           f"struct {state} {{\n" + "".join(f"    {types[n]} {n};\n" for n in shared) + "};\n"]
    for k, chunk in enumerate(chunks):
        body = [f"    const {types[n]} &{n} = s.{n};" for n in shared if n in uses[k] and defined_in[n] < k]
        body += [line for line, _, _ in chunk]
        body += [f"    __builtin_memcpy(&s.{n}, &{n}, sizeof {n});" for n in shared if defined_in[n] == k]
        out.append(f"static void {name}_part{k}({concrete}, {state} &s) {{\n{typedefs}" + "\n".join(body) + "\n}\n")
    calls = "".join(f"    {name}_part{k}({', '.join(arg_names)}, s);\n" for k in range(len(chunks)))
    pragmas = "".join(line + "\n" for line in m["body"].split("\n") if line.strip().startswith("#pragma"))
    out.append(f"template <{m['params']}>\n{m['sig']} {{\n{pragmas}    {state} s;\n{calls}}}\n{inst[0]}\n")
    return "\n".join(out)


def _split_top(s: str) -> list[str]:
    """Split a template argument list on its top-level commas."""
    out, depth, cur = [], 0, ""
    for ch in s:
        depth += (ch in "<([") - (ch in ">)]")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + ([cur.strip()] if cur.strip() else [])


def _balanced(body: str) -> bool:
    code = re.sub(r"//[^\n]*", "", body)
    return code.count("{") == code.count("}")


def estimate_build_seconds(units: list[Unit], jobs: int | None = None) -> float:
    """Wall seconds the build should take on an idle machine with ``jobs`` cores (calibrated on the
    16-100^5-5 MLP at ``OPT_LEVEL``; a loaded machine takes longer)."""
    jobs = jobs or os.cpu_count() or 1
    cpu = sum(u.lines for u in units) * CPU_S_PER_LINE + len(units) * CPU_S_PER_UNIT
    longest = max((u.lines * CPU_S_PER_LINE + CPU_S_PER_UNIT for u in units), default=0.0)
    return max(cpu / jobs, longest)


# ---- building ---------------------------------------------------------------------------------------


def build_library(project_dir: str | Path, backend: str, cache_root: str | Path, *, opt: str = OPT_LEVEL,
                  jobs: int | None = None, split: bool = True, gpp: Tool | None = None,
                  on_start: Callable[[list[Unit]], None] | None = None,
                  on_unit: Callable[[Unit], None] | None = None) -> CsimLibrary:
    """The C-simulation library of the project in ``project_dir``, from the cache or built now.

    ``on_start`` is told the units before the build starts, ``on_unit`` each one as it finishes (progress)."""
    t0 = time.perf_counter()
    project_dir = Path(project_dir).resolve()
    gpp = gpp or find_gpp()
    flags = compiler_flags(gpp, backend, opt)
    key = cache_key(project_dir, gpp, flags + (("split",) if split else ()))
    root = Path(cache_root)
    final = root / key[:24]
    lib = final / "firmware" / f"{PROJECT}.so"
    if lib.is_file():
        os.utime(final)  # the newest entries are the ones kept
        return CsimLibrary(lib, key, True, 0.0, 0, (final / "split").exists(), flags)
    root.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=root, prefix=f".{key[:24]}."))
    try:
        for rel in project_sources(project_dir):
            (build / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(project_dir / rel, build / rel)
        units = split_code_gen(build) if split else None
        if units is not None:
            (build / "split").write_text("layer functions of nnet_code_gen.h compiled as their own units\n")
        else:
            units = [Unit(f"firmware/{PROJECT}.cpp", (build / "firmware" / f"{PROJECT}.cpp").read_text().count("\n"))]
        units.append(Unit(f"{PROJECT}_bridge.cpp", 1))
        # the weight files the library reads at run time: from its own cache entry, wherever the project goes
        defines = (f'-DWEIGHTS_DIR="{final / "firmware" / "weights"}"',)
        if on_start:
            on_start(units)
        _compile_units(gpp, build, units, flags + defines, jobs or os.cpu_count() or 1, on_unit)
        objects = [_object(u) for u in units]
        _run(gpp, [*flags, "-shared", *objects, "-o", f"firmware/{PROJECT}.so"], build, "linking the C simulation")
        for o in objects:
            (build / o).unlink()
        try:
            os.rename(build, final)
        except OSError:  # another process built the same key meanwhile: use its library
            shutil.rmtree(build, ignore_errors=True)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    _evict(root)
    return CsimLibrary(lib, key, False, round(time.perf_counter() - t0, 2), len(units), (final / "split").exists(), flags)


def _object(u: Unit) -> str:
    return "obj_" + u.source.replace("/", "_").rsplit(".", 1)[0] + ".o"


def _compile_units(gpp: Tool, build: Path, units: list[Unit], flags: tuple[str, ...], jobs: int,
                   on_unit: Callable[[Unit], None] | None) -> None:
    """Compile the units in parallel, largest first (so the last to start are the short ones). The first
    unit that fails stops the others: a broken project fails in the time its broken unit takes."""
    order = sorted(units, key=lambda u: -u.lines)
    running: set[subprocess.Popen] = set()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_run, gpp, [*flags, *u.flags, "-c", u.source, "-o", _object(u)], build,
                               f"C simulation build ({u.source})", running): u for u in order}
        try:
            for f in concurrent.futures.as_completed(futures):
                f.result()
                if on_unit:
                    on_unit(futures[f])
        except BaseException:
            for f in futures:
                f.cancel()
            for proc in list(running):  # the whole group: g++'s cc1plus holds the pipes open
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            raise


def _run(gpp: Tool, args: list[str], cwd: Path, what: str, running: set | None = None) -> None:
    """Run g++; with ``running``, in a process group of its own, listed there while it runs (to be stopped)."""
    proc = subprocess.Popen([*gpp.command, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=gpp.environ(), start_new_session=running is not None)
    if running is not None:
        running.add(proc)
    try:
        out, err = proc.communicate()
    finally:
        if running is not None:
            running.discard(proc)
    if proc.returncode != 0:
        raise ToolFailedError(f"{what} failed: {first_error_line(err + out)}")


def _evict(root: Path) -> None:
    entries = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[CACHE_ENTRIES:]:
        shutil.rmtree(old, ignore_errors=True)


# ---- running ----------------------------------------------------------------------------------------


def run_library(lib: CsimLibrary | Path, x: np.ndarray, n_out: int, chunk: int = 100,
                on_chunk: Callable[[int], None] | None = None) -> np.ndarray:
    """Run ``<project>_double`` (the entry point hls4ml's ``predict`` calls for float64 inputs) on each
    row of ``x``; returns the outputs as float64, one row per sample."""
    path = lib.path if isinstance(lib, CsimLibrary) else Path(lib)
    handle = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL)
    top = getattr(handle, f"{PROJECT}_double")
    top.restype = None
    top.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    x = np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float64)
    y = np.zeros((len(x), n_out), dtype=np.float64)
    xp, yp = x.ctypes.data, y.ctypes.data
    xs, ys = x.strides[0], y.strides[0]
    for start in range(0, len(x), chunk):
        stop = min(start + chunk, len(x))
        for i in range(start, stop):
            top(xp + i * xs, yp + i * ys)
        if on_chunk:
            on_chunk(stop - start)
    return y
