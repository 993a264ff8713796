"""Co-simulation of the emitted Verilog in Verilator against the integer reference.

Two drivers run the same RTL: the cocotb test bench (``rtl_sim.cocotb_tb``, through
cocotb's Python runner), which also records every stage register so a mismatch can be
traced to the first layer that diverges; and a bulk C++ harness for large sample
counts. Both stream one sample per clock and measure latency and initiation interval.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from codesign import jobs, tools
from codesign.core.fixed import FixedType
from codesign.core.network import Network
from codesign.core.verify import compare_with_reference
from codesign.errors import BackendError, ToolFailedError
from codesign.tools import Tool, find_verilator, first_error_line, run_tool, tool_environ
from rtl_sim.axis import beat_pace, emit_axis_wrapper, has_in_ready
from rtl_sim.stream import StreamDesign, emit_stream_verilog, is_streaming
from rtl_sim.uart import emit_uart_top
from rtl_sim.verilog import Design, emit_verilog

DESIGN_JSON = "design.json"
SHARD_SAMPLES = 1_000_000  # the bulk harness streams ~350k samples/s: fewer are not worth a dispatch


def write_rtl(net: Network, out_dir: str | Path, adder_regs_every: int = 0, mult: str | None = None,
              datapath: str = "cmvm", clock_mhz: float | None = None, family: str | None = None) -> Design:
    """Write ``<top>.v``, ``<top>_axis.v`` (``rtl_sim.axis``), ``<top>_uart.v`` (``rtl_sim.uart``) and
    ``design.json`` into ``out_dir`` (a CNN, i.e. a network with a spatial input, gets the streaming design
    of ``rtl_sim.stream``, folded where its layers' reuse says so; the wrappers read a folded core's ``in_ready``)."""
    if is_streaming(net):
        d = emit_stream_verilog(net, adder_regs_every=adder_regs_every, mult=mult, datapath=datapath,
                                clock_mhz=clock_mhz, family=family)
    else:
        d = emit_verilog(net, adder_regs_every=adder_regs_every, mult=mult, datapath=datapath, clock_mhz=clock_mhz,
                         family=family)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{d.top}.v").write_text(d.verilog)
    (out / f"{d.top}_axis.v").write_text(emit_axis_wrapper(d))
    (out / f"{d.top}_uart.v").write_text(emit_uart_top(d))
    meta = asdict(d)
    meta.pop("verilog")
    meta["in_type"], meta["out_type"] = d.in_type.to_hls(), d.out_type.to_hls()
    meta["adder_regs_every"] = adder_regs_every
    (out / DESIGN_JSON).write_text(json.dumps(meta, indent=1))
    return d


def load_design(rtl_dir: str | Path) -> Design:
    """The Design written by ``write_rtl`` (Verilog re-read from disk, so edits are simulated)."""
    p = Path(rtl_dir) / DESIGN_JSON
    if not p.is_file():
        raise BackendError(f"{rtl_dir}: no {DESIGN_JSON}; run 'codesign rtl' first")
    meta = json.loads(p.read_text())
    meta.pop("adder_regs_every", None)
    meta["in_type"], meta["out_type"] = FixedType.parse(meta["in_type"]), FixedType.parse(meta["out_type"])
    verilog = (Path(rtl_dir) / f"{meta['top']}.v").read_text()
    return (StreamDesign if meta.get("kind") == "stream" else Design)(verilog=verilog, **meta)


# ---- samples and bit packing ------------------------------------------------------------
def pack_words(q: np.ndarray, t: FixedType, n_words: int) -> np.ndarray:
    """Samples of integers to little-endian 32-bit words of the flat bus (element i at bits i*W)."""
    if t.width > 32:
        raise BackendError(f"port elements wider than 32 bits are not supported ({t})")
    q = q.reshape(len(q), -1).astype(np.int64)
    mask = (1 << t.width) - 1
    words = np.zeros((len(q), n_words), dtype=np.uint64)
    for i in range(q.shape[1]):
        v = (q[:, i] & mask).astype(np.uint64)
        off = i * t.width
        k, sh = off // 32, off % 32
        words[:, k] |= (v << np.uint64(sh)) & np.uint64(0xFFFFFFFF)
        if sh + t.width > 32:
            words[:, k + 1] |= v >> np.uint64(32 - sh)
    return words.astype(np.uint32)


def unpack_words(words: np.ndarray, t: FixedType, n: int) -> np.ndarray:
    """The inverse of ``pack_words``: integers of type ``t``."""
    w = words.astype(np.uint64)
    mask = np.uint64((1 << t.width) - 1)
    out = np.zeros((len(words), n), dtype=np.int64)
    for i in range(n):
        off = i * t.width
        k, sh = off // 32, off % 32
        v = w[:, k] >> np.uint64(sh)
        if sh + t.width > 32:
            v |= w[:, k + 1] << np.uint64(32 - sh)
        v = (v & mask).astype(np.int64)
        if t.signed:
            v = np.where(v >= (1 << (t.width - 1)), v - (1 << t.width), v)
        out[:, i] = v
    return out


def _n_words(bits: int) -> int:
    return (bits + 31) // 32


# ---- results -----------------------------------------------------------------------------
@dataclass
class CosimResult:
    simulator: str
    mode: str
    bit_exact: bool
    samples: int
    mismatches: int
    latency_cycles: int
    designed_latency: int
    ii: float
    samples_per_s: float
    first_mismatch: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


# ---- cocotb ------------------------------------------------------------------------------
def _tool_environ(tool: Tool, makeflags: str = "") -> contextlib.AbstractContextManager[None]:
    """cocotb's runner finds Verilator through PATH and VERILATOR_ROOT of this process (``tools.tool_environ``)."""
    # cocotb runs make itself: the make variables go through the environment
    return tool_environ(dict(tool.env, MAKEFLAGS=" ".join(f for f in (*tools.VERILATOR_MAKEFLAGS, makeflags) if f)))


def run_cocotb(design: Design, rtl_dir: Path, work: Path, q: np.ndarray, tool: Tool | None = None,
               gaps: list[int] | None = None) -> dict[str, Any]:
    """Stream ``q`` through the RTL in cocotb; returns outputs, latency, II, stage values. A streaming
    design takes ``gaps`` (idle cycles before each input beat) when given."""
    from cocotb_tools.runner import get_results, get_runner

    tool = tool or find_verilator()
    work.mkdir(parents=True, exist_ok=True)
    ints = _bus_ints(q.reshape(-1, design.n_in), design.in_type)  # one bus word a beat
    stream = isinstance(design, StreamDesign)
    if stream:
        job = {"inputs": [str(v) for v in ints], "latency": design.latency, "per_out": design.pixels, "gaps": gaps,
               "pace": beat_pace(design),
               "watch": [{"valid": st["valid"], "signals": st["signals"]} for st in design.stages]}
    else:
        job = {"inputs": [str(v) for v in ints], "latency": design.latency,
               "stages": [{"latency": st["latency"], "signals": st["signals"]} for st in design.stages]}
    job_path, res_path = work / "cocotb_job.json", work / "cocotb_result.json"
    job_path.write_text(json.dumps(job))
    res_path.unlink(missing_ok=True)
    sources = [rtl_dir / f"{design.top}.v"]
    t0 = time.perf_counter()
    with _tool_environ(tool):
        runner = get_runner("verilator")
        try:
            with open(work / "cocotb_stdout.log", "w") as out, contextlib.redirect_stdout(out):
                runner.build(sources=sources, hdl_toplevel=design.top, build_dir=work / "sim_build",
                             build_args=["-Wno-fatal"], always=False, log_file=work / "cocotb_build.log")
        except (RuntimeError, OSError) as e:  # cocotb raises RuntimeError for a failed build command
            log = (work / "cocotb_build.log").read_text() if (work / "cocotb_build.log").is_file() else str(e)
            raise ToolFailedError(f"Verilator build for cocotb failed: {first_error_line(log)}") from None
        t1 = time.perf_counter()
        xml = runner.test(test_module="rtl_sim.cocotb_tb", hdl_toplevel=design.top, build_dir=work / "sim_build",
                          testcase="stream_images" if stream else "stream_samples",
                          test_dir=work, results_xml=str(work / "results.xml"), log_file=work / "cocotb_test.log",
                          extra_env={"CODESIGN_COSIM_JOB": str(job_path), "CODESIGN_COSIM_RESULT": str(res_path),
                                     "COCOTB_RESOLVE_X": "ZEROS"})
    _, failed = get_results(xml)
    if failed or not res_path.is_file():
        log = (work / "cocotb_test.log").read_text() if (work / "cocotb_test.log").is_file() else ""
        raise ToolFailedError(f"cocotb test bench failed: {first_error_line(log)} (log: {work / 'cocotb_test.log'})")
    res = json.loads(res_path.read_text())
    sim_s = time.perf_counter() - t1
    res["build_s"], res["sim_s"] = t1 - t0, sim_s
    if stream:
        res["stage_values"] = _stream_stage_values(design, res.pop("records"), len(q))
    return res


def _stream_stage_values(design: StreamDesign, records: list[list], n: int) -> list[list]:
    """Each stage's values per image, flattened channels last (constants filled in); None when missing."""
    out = []
    for st, recs in zip(design.stages, records):
        per = st["n"]
        vals = []
        for s in range(n):
            got = recs[s * per:(s + 1) * per]
            vals.append([c if c is not None else v for r in got for c, v in zip(st["consts"], r)]
                        if len(got) == per else None)
        out.append(vals)
    return out


def _bus_ints(q: np.ndarray, t: FixedType) -> list[int]:
    words = pack_words(q, t, _n_words(q.reshape(len(q), -1).shape[1] * t.width))
    return [sum(int(w) << (32 * k) for k, w in enumerate(row)) for row in words]


def _from_bus_ints(vals: list[int], t: FixedType, n: int) -> np.ndarray:
    nw = _n_words(n * t.width)
    words = np.array([[(v >> (32 * k)) & 0xFFFFFFFF for k in range(nw)] for v in vals], dtype=np.uint64)
    return unpack_words(words.reshape(len(vals), nw), t, n)


def first_diverging_layer(net: Network, design: Design, q1: np.ndarray, stage_values: list[list]) -> dict[str, Any] | None:
    """Compare each stage register with the reference for one sample; the first stage that differs."""
    trace = net.trace_int(q1)
    by_name = {layer.name: out for layer, out in zip(net.layers, trace)}
    if isinstance(design, StreamDesign):
        return _first_diverging_stream(design, by_name, stage_values)
    for st, vals in zip(design.stages, stage_values):
        ref = by_name[st["layers"][-1]].values.reshape(-1)
        got = [c if c is not None else v for c, v in zip(st["consts"], vals or [None] * len(ref))]
        for j, (r, g) in enumerate(zip(ref, got)):
            if g is None or int(r) != int(g):
                return {"stage": st["name"], "layers": st["layers"], "index": j, "expected": int(r),
                        "received": None if g is None else int(g)}
    return None


def _first_diverging_stream(design: StreamDesign, by_name: dict, stage_values: list[list]) -> dict[str, Any] | None:
    for st, vals in zip(design.stages, stage_values):
        ref = by_name[st["layers"][-1]].values if st["layers"][-1] in by_name else None
        if ref is None:  # the collected output of a network that ends on the stream
            continue
        shape, ref = ref.shape[1:], ref.reshape(-1)
        for j, r in enumerate(ref):
            g = None if vals is None or j >= len(vals) else vals[j]
            if g is None or int(r) != int(g):
                pos = np.unravel_index(j, shape)
                return {"stage": st["name"], "layers": st["layers"], "index": j,
                        "position": [int(p) for p in pos[:-1]], "channel": int(pos[-1]),
                        "expected": int(r), "received": None if g is None else int(g)}
    return None


# ---- bulk --------------------------------------------------------------------------------
def build_bulk(design: Design, tool: Tool | None = None) -> Path:
    """The C++ streaming harness compiled with Verilator, in this machine's cache (keyed by a hash
    of the RTL, the harness and Verilator's version; one build at a time per key, so concurrent
    jobs on one machine share it)."""
    return build_harness(design, _harness_source(design), tool)


def build_harness(design: Design, harness: str, tool: Tool | None = None, prefix: str = "") -> Path:
    """``design`` with the C++ ``harness`` compiled by Verilator into this machine's cache, keyed by both and
    Verilator's version (``prefix`` names the harness kind in the folder's name)."""
    tool = tool or find_verilator()
    key = hashlib.sha256((design.verilog + harness + tool.version).encode()).hexdigest()[:16]
    obj = tools.cache_dir("bulk") / f"{prefix}{key}"  # absolute: Verilator runs in the build folder
    exe, stamp = obj / "harness", obj / "hash.txt"
    obj.mkdir(parents=True, exist_ok=True)
    with open(obj / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.is_file() and stamp.is_file() and stamp.read_text() == key:
            return exe
        vfile = obj / f"{design.top}.v"
        vfile.write_text(design.verilog)
        (obj / "harness.cpp").write_text(harness)
        args = ["--cc", "--exe", "--build", "-j", "2", "-Wno-fatal", "--top-module", design.top, "-Mdir", str(obj),
                *tools.verilator_make_args(), "-CFLAGS", "-O1", "-o", "harness",
                str(vfile), str(obj / "harness.cpp")]
        run_tool(tool, args, obj, f"Verilator build of {vfile.name}")
        stamp.write_text(key)
    return exe


def _harness_source(design: Design, trace_saif: bool = False) -> str:
    """The bulk harness for ``design``; ``trace_saif``: also a SAIF trace of every net (``rtl_sim.activity``)."""
    tmpl = resources.files("rtl_sim").joinpath("templates/harness.cpp").read_text()
    iw, ow = _n_words(design.in_width), _n_words(design.out_width)
    return (tmpl.replace("@TOP@", design.top).replace("@TRACE_SAIF@", "1" if trace_saif else "0")
            .replace("@IN_WORDS@", str(iw)).replace("@OUT_WORDS@", str(ow))
            .replace("@LATENCY@", str(design.latency)).replace("@PER_OUT@", str(getattr(design, "pixels", 1)))
            .replace("@PACE@", str(beat_pace(design)))
            .replace("@READY@", "top->in_ready" if has_in_ready(design) else "true")
            .replace("@SET_INPUT@", _port_code("top->in_data", design.in_width, "s", write=True))
            .replace("@GET_OUTPUT@", _port_code("top->out_data", design.out_width, "o", write=False)))


def _port_code(port: str, bits: int, arr: str, write: bool) -> str:
    ind = " " * 12
    if bits <= 32:
        return f"{ind}{port} = {arr}[0];" if write else f"{ind}{arr}[0] = {port};"
    if bits <= 64:
        if write:
            return f"{ind}{port} = (static_cast<uint64_t>({arr}[1]) << 32) | {arr}[0];"
        return f"{ind}{arr}[0] = static_cast<uint32_t>({port}); {arr}[1] = static_cast<uint32_t>({port} >> 32);"
    n = _n_words(bits)
    if write:
        return f"{ind}for (int k = 0; k < {n}; ++k) {port}[k] = {arr}[k];"
    return f"{ind}for (int k = 0; k < {n}; ++k) {arr}[k] = {port}[k];"


def run_bulk(design: Design, exe: Path, work: Path, q: np.ndarray) -> dict[str, Any]:
    """Stream ``q`` through the compiled harness; outputs as integers, latency and II."""
    import subprocess

    inp, outp = work / "bulk_in.bin", work / "bulk_out.bin"
    pack_words(q.reshape(-1, design.n_in), design.in_type, _n_words(design.in_width)).tofile(inp)  # one row a beat
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), str(inp), str(outp)], capture_output=True, text=True, timeout=3600)
    sim_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise ToolFailedError(f"bulk co-simulation failed: {first_error_line(proc.stdout + proc.stderr)}")
    stats = dict(kv.split("=") for kv in proc.stdout.split())
    words = np.fromfile(outp, dtype=np.uint32).reshape(len(q), _n_words(design.out_width))
    n = int(stats["outputs"])
    return {"outputs": unpack_words(words, design.out_type, design.n_out), "latency": int(stats["latency"]),
            "ii": _ii(design, int(stats["span"]), int(stats["max_gap"]), n), "sim_s": sim_s}


def _ii(design: Design, span: int, max_gap: int, n: int) -> float:
    """Cycles per result with inputs back to back: the mean interval, or for a streaming design the longest
    (its last image may finish early, see ``rtl_sim.stream.schedule``)."""
    if isinstance(design, StreamDesign) and n < 3:  # a steady-state interval needs two results before the last
        return float(design.cycles_per_image)
    if n < 2:
        return 1.0
    return float(max_gap) if isinstance(design, StreamDesign) else span / (n - 1)


# ---- the entry point ---------------------------------------------------------------------
def bulk_shard(design: Design, q: np.ndarray) -> dict[str, Any]:
    """One shard of a bulk co-simulation, run as a job: the harness (built, or found in this
    machine's cache) streams ``q``; the outputs, latency and II come back as data."""
    with tempfile.TemporaryDirectory(prefix="codesign-cosim-") as tmp:
        res = run_bulk(design, build_bulk(design), Path(tmp), q)
    res["samples"] = len(q)
    return res


def _bulk_sharded(design: Design, q: np.ndarray, shard_samples: int, cluster: str | jobs.Executor | None
                  ) -> dict[str, Any]:
    """``q`` in shards of ``shard_samples`` as jobs on ``cluster``; the outputs in order, the worst
    latency and II (each shard streams on its own, so each measures both)."""
    bounds = list(range(0, len(q), shard_samples)) + [len(q)]
    shards = [jobs.Job(f"co-simulation samples {a}-{b - 1}", bulk_shard, (design, q[a:b]))
              for a, b in zip(bounds, bounds[1:])]
    with jobs.executor(cluster) as ex:
        outs = ex.map(shards)
        name = ex.name
    failed = [o for o in outs if not o.ok]
    if failed:
        raise ToolFailedError(f"{failed[0].job.name}: {failed[0].error}")
    rs = [o.value for o in outs]
    return {"outputs": np.concatenate([r["outputs"] for r in rs]), "latency": max(r["latency"] for r in rs),
            "ii": max(r["ii"] for r in rs), "sim_s": sum(r["sim_s"] for r in rs), "shards": len(rs), "cluster": name}


def cosimulate(net: Network, rtl_dir: str | Path, work: str | Path, q: np.ndarray, mode: str = "bulk",
               cluster: str | jobs.Executor | None = None, shard_samples: int = SHARD_SAMPLES) -> CosimResult:
    """Run the RTL in ``rtl_dir`` on integer inputs ``q`` and compare every output bit with the reference.

    In bulk mode, more than ``shard_samples`` samples are split into shards that run as jobs on
    ``cluster`` (``codesign.jobs.executor``); the comparison stays with the driver."""
    if mode not in ("bulk", "cocotb"):
        raise BackendError(f"co-simulation mode must be 'bulk' or 'cocotb', not {mode!r}")
    rtl_dir, work = Path(rtl_dir).absolute(), Path(work).absolute()  # the tools run in other directories
    work.mkdir(parents=True, exist_ok=True)
    design = load_design(rtl_dir)
    tool = find_verilator()
    q = np.asarray(q).reshape(len(q), *net.input_shape)
    extra: dict[str, Any] = {}
    if mode == "bulk" and len(q) > shard_samples:
        res = _bulk_sharded(design, q, shard_samples, cluster)
        got, latency, ii, sim_s = res["outputs"], res["latency"], res["ii"], res["sim_s"]
        extra = {"shards": res["shards"], "cluster": res["cluster"]}
    elif mode == "bulk":
        res = run_bulk(design, build_bulk(design, tool), work, q)
        got, latency, ii, sim_s = res["outputs"], res["latency"], res["ii"], res["sim_s"]
    else:
        res = run_cocotb(design, rtl_dir, work, q, tool)
        got = _from_bus_ints([int(v) for v in res["outputs"]], design.out_type, design.n_out)
        oc = res["out_cycles"]
        latency = oc[0] + 1 if oc else -1
        ii = _ii(design, oc[-1] - oc[0], max(np.diff(oc), default=0), len(oc)) if oc else 1.0
        sim_s = res["sim_s"]
    if len(got) != len(q):
        raise ToolFailedError(f"the RTL produced {len(got)} outputs for {len(q)} samples")
    want_ii = 1.0
    if isinstance(design, StreamDesign):  # the ideal: one input pixel per cycle, images back to back
        want_ii = float(design.cycles_per_image)
        extra.update(cycles_per_image=float(ii), input_pixels=design.pixels,
                     cycles_per_pixel=float(ii) / design.pixels, latency_after_last_pixel=int(latency) - design.pixels)
    cmp = compare_with_reference(net, q, got)
    mismatches, first = cmp.mismatches, cmp.first_mismatch
    if first is not None:
        s = first["sample"]
        if mode == "cocotb":
            stage_values = [vals[s] for vals in res["stage_values"]]
        else:  # re-run the failing sample in cocotb, which can see the stage registers
            one = run_cocotb(design, rtl_dir, work / "diagnose", q[s : s + 1], tool)
            stage_values = [vals[0] for vals in one["stage_values"]]
        first["first_diverging"] = first_diverging_layer(net, design, q[s : s + 1], stage_values)
    return CosimResult(
        simulator=f"verilator {tool.version}", mode=mode, bit_exact=mismatches == 0 and latency == design.latency
        and ii == want_ii, samples=int(len(q)), mismatches=mismatches, latency_cycles=int(latency),
        designed_latency=design.latency, ii=float(ii), samples_per_s=float(len(q) / max(sim_s, 1e-9)),
        first_mismatch=first, extra=extra,
    )


def describe_mismatch(r: CosimResult) -> str:
    """One line naming the first failing sample, output, values and the first diverging layer."""
    f = r.first_mismatch
    if not f:
        return "bit-exact"
    where = ""
    if f.get("first_diverging"):
        d = f["first_diverging"]
        at = f" (position {tuple(d['position'])}, channel {d['channel']})" if "position" in d else ""
        where = f"; first diverging layer {d['stage']!r} (layers {', '.join(d['layers'])}), element {d['index']}{at}: " \
                f"expected {d['expected']}, received {d['received']}"
    return (f"{r.mismatches} of {r.samples} samples differ; first: sample {f['sample']}, output {f['output']}: "
            f"expected {f['expected']}, received {f['received']}{where}")
