"""Independent jobs on local processes or on a Ray cluster: the toolkit's one execution layer.

The toolkit has three kinds of independent work: a sweep's budget points (compression), the
per-layer Yosys runs of a synthesis, and the shards of a large co-simulation. Each is a
``Job``: a module-level function and its arguments, all data (the network IR, numpy arrays,
strings), returning data. Workers never see the artifact directory; only the driver writes it.

Two back ends run jobs. ``local`` (the default) keeps one worker process per CPU share, each
running one job at a time, so a job that crashes its worker takes only itself down. ``ray``
hands them to Ray (the ``cluster`` extra), which schedules them on this machine or on many:
``ray`` starts a Ray instance here for the run and stops it after, ``auto`` joins the cluster
that Ray's own discovery finds, ``ray://HOST:PORT`` a remote one through Ray Client.
``CODESIGN_CLUSTER`` is the environment's default.

Every job sizes torch's and the BLAS/OpenMP libraries' thread pools to the CPUs it was given,
so jobs that share a machine do not fight over its cores (on two loaded cores one compression
took 287 s with two threads against 21 s with one, with identical results). A job that
raises, or whose worker dies, is retried once and then reported as failed with its error;
the other jobs go on. Leaving the executor early (an error, Ctrl-C) cancels what is outstanding.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait as wait_connections
from typing import Any, Protocol

from codesign.errors import CodesignError, ConfigError, ToolFailedError, ToolNotFoundError

ENV_CLUSTER = "CODESIGN_CLUSTER"
CLUSTERS = "local, ray (a Ray instance on this machine for the run), auto (the running Ray cluster) or ray://HOST:PORT"
INSTALL_RAY = "pip install 'fpga-codesign[cluster]'"
RETRIES = 1  # a failed job runs once more before it is reported
# the thread-count variables of OpenMP and the BLAS libraries numpy and torch may load
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
# a Ray instance started for a run stays on loopback and reports nothing home (read when Ray is imported)
RAY_LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}

log = logging.getLogger(__name__)


# ---- CPUs and thread pools ---------------------------------------------------------------
def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def size_threads(cpus: int) -> None:
    """Size this process's thread pools to ``cpus``: torch's, OpenMP's and the BLAS libraries'
    (through threadpoolctl when it is installed), and those of libraries imported later (their
    environment variables, read when they load)."""
    cpus = max(1, int(cpus))
    for var in THREAD_VARS:
        os.environ[var] = str(cpus)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(cpus)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(cpus)


# ---- jobs and their outcomes -------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One independent piece of work: ``fn(*args, **kwargs)`` in a worker.

    ``fn`` must be a module-level function (workers import it by name); ``tag`` stays with the
    driver, for its own bookkeeping."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    tag: Any = None


@dataclass
class Outcome:
    """A finished job: its value, or the error of its last attempt."""

    job: Job
    value: Any = None
    error: str | None = None
    attempts: int = 1
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def describe_error(e: BaseException) -> str:
    """One line: a toolkit error's message, or any other exception's type, message and place."""
    if isinstance(e, CodesignError):
        return str(e)
    where = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
    at = f" (at {os.path.basename(where[0].filename)}:{where[0].lineno})" if where else ""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}{at}" if msg else f"{type(e).__name__}{at}"


def run_job(fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any], cpus: int,
            env: Mapping[str, str] | None = None) -> tuple[bool, Any]:
    """What a worker runs: thread pools sized to ``cpus``, then the job; ``(True, value)``, or
    ``(False, error)`` when it raised (the error travels back as data, not as an exception)."""
    if env is not None:  # the driver's environment, as a thread of the driver would have seen it
        os.environ.clear()
        os.environ.update(env)
    size_threads(cpus)
    try:
        return True, fn(*args, **kwargs)
    except Exception as e:
        return False, describe_error(e)


# ---- back ends ---------------------------------------------------------------------------
class Backend(Protocol):
    name: str
    cpus: int  # CPUs in all
    max_running: int | None  # jobs in flight at once for a given share (None: the scheduler queues them)

    def start(self, job: Job, cpus: int) -> Any: ...
    def wait(self, handles: list[Any]) -> list[Any]: ...
    def collect(self, handle: Any) -> tuple[bool, Any]: ...
    def cancel(self, handles: list[Any]) -> None: ...
    def close(self) -> None: ...


class _Worker:
    """A worker process: a fresh interpreter running ``python -m codesign.jobs FD``, one job at a
    time over a pipe. Started fresh, it never re-runs the driver's main script (no
    ``if __name__ == "__main__"`` needed); kept for the next job, it imports torch once."""

    def __init__(self, cpus: int) -> None:
        parent, child = mp.Pipe()
        env = dict(os.environ, **{v: str(cpus) for v in THREAD_VARS})  # read by OpenMP/BLAS when they load
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # it imports what the driver can
        # a session of its own: Ctrl-C is the driver's to handle (it cancels the job), and
        # cancelling stops the tools the job started too
        self.proc = subprocess.Popen([sys.executable, "-m", "codesign.jobs", str(child.fileno())],
                                     pass_fds=(child.fileno(),), env=env, start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        child.close()
        self.conn = parent

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
        self.conn.close()


def _worker_main(fd: int) -> None:
    """The worker's loop: a job in, ``(ok, value or error)`` out, until the driver says stop."""
    conn = Connection(fd)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        try:
            fn, args, kwargs, cpus, env = msg
        except Exception as e:  # noqa: BLE001 - a job that cannot be unpickled here is the job's failure
            conn.send((False, f"the job cannot be loaded in the worker: {describe_error(e)}"))
            continue
        res = run_job(fn, args, kwargs, cpus, env)
        try:
            conn.send(res)
        except Exception as e:  # an unpicklable result
            conn.send((False, f"the job's result cannot be sent back: {describe_error(e)}"))


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"worker died (killed by {signal.Signals(-code).name})"
    return f"worker died (exit code {code})"


class LocalProcesses:
    """Worker processes on this machine, one per CPU share; a worker that dies takes only its job
    with it and is replaced."""

    name = "local"

    def __init__(self, cpus: int | None = None) -> None:
        self.cpus = cpus or available_cpus()
        self.max_running: int | None = self.cpus
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()

    def start(self, job: Job, cpus: int) -> _Worker:
        w = self._idle.pop() if self._idle else _Worker(cpus)
        try:
            w.conn.send((job.fn, job.args, dict(job.kwargs), cpus, dict(os.environ)))
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            self._idle.append(w)
            raise ConfigError(f"job {job.name!r} cannot be sent to a worker: {describe_error(e)}") from None
        self._busy.add(w)
        return w

    def wait(self, handles: list[_Worker]) -> list[_Worker]:
        ready = set(wait_connections([w.conn for w in handles]))
        return [w for w in handles if w.conn in ready]

    def collect(self, w: _Worker) -> tuple[bool, Any]:
        self._busy.discard(w)
        try:
            res = w.conn.recv()
        except (EOFError, OSError):  # the worker died mid-job: only this job is lost
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(10)
            code = w.proc.poll()
            w.kill()
            return False, _death(code)
        self._idle.append(w)
        return res

    def cancel(self, handles: list[_Worker]) -> None:
        for w in handles:
            self._busy.discard(w)
            w.kill()

    def close(self) -> None:
        for w in self._busy:
            w.kill()
        for w in self._idle:
            w.stop()
        self._idle, self._busy = [], set()


def import_ray(local: bool) -> Any:
    """Ray, or a one-line error saying how to install it; a local instance stays on loopback."""
    if local and "ray" not in sys.modules:
        for k, v in RAY_LOCAL_ENV.items():
            os.environ.setdefault(k, v)
    try:
        import ray
    except ImportError:
        raise ToolNotFoundError(f"Ray is not installed, and the cluster back end needs it: {INSTALL_RAY}") from None
    return ray


class RayCluster:
    """Jobs as Ray tasks, each asking for its CPU share (``num_cpus``); Ray places and queues them.

    ``address=None`` starts a Ray instance on this machine (stopped by ``close``); ``"auto"`` or
    ``"ray://HOST:PORT"`` connects to a running cluster (``close`` disconnects). In a process
    that has already called ``ray.init``, that session is used and left running."""

    name = "ray"
    max_running = None

    def __init__(self, address: str | None = None) -> None:
        ray = import_ray(local=address is None)
        self._ray = ray
        self._owned = not ray.is_initialized()
        if self._owned:
            try:
                if address is None:
                    ray.init(num_cpus=available_cpus(), include_dashboard=False, log_to_driver=False,
                             logging_level=logging.WARNING)
                else:
                    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as e:
                if address is None:
                    raise ToolFailedError(f"cannot start a Ray instance on this machine: {describe_error(e)}") from None
                raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {describe_error(e)}; "
                                  "start one with 'ray start --head', or use --cluster ray") from None
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._task = ray.remote(run_job)

    def start(self, job: Job, cpus: int) -> Any:
        # retries are the executor's, the same for both back ends
        return self._task.options(num_cpus=cpus, max_retries=0, name=job.name).remote(
            job.fn, job.args, dict(job.kwargs), cpus)

    def wait(self, handles: list[Any]) -> list[Any]:
        ready, _ = self._ray.wait(handles, num_returns=1)
        return ready

    def collect(self, ref: Any) -> tuple[bool, Any]:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as e:  # the worker or its node died, the object was lost
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return False, f"worker died ({type(e).__name__}{': ' + first if first else ''})"

    def cancel(self, handles: list[Any]) -> None:
        for ref in handles:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owned:
            self._ray.shutdown()


# ---- the executor ------------------------------------------------------------------------
class Executor:
    """Runs jobs on a back end, ``cpus_per_job`` CPUs each; retries a failure once."""

    def __init__(self, backend: Backend, cpus_per_job: int = 1) -> None:
        if cpus_per_job < 1:
            raise ConfigError(f"CPUs per job must be at least 1, not {cpus_per_job!r}")
        self.backend = backend
        self.cpus_per_job = min(cpus_per_job, backend.cpus)
        self._queue: collections.deque[tuple[Job, int]] = collections.deque()
        self._running: dict[Any, tuple[Job, int, float]] = {}

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def slots(self) -> int:
        """Jobs that run at once."""
        return max(1, self.backend.cpus // self.cpus_per_job)

    def submit(self, job: Job) -> None:
        self._queue.append((job, 1))

    def _fill(self) -> None:
        limit = self.slots if self.backend.max_running is not None else len(self._queue) + len(self._running)
        while self._queue and len(self._running) < limit:
            job, attempt = self._queue.popleft()
            self._running[self.backend.start(job, self.cpus_per_job)] = (job, attempt, time.perf_counter())

    def as_completed(self) -> Iterator[Outcome]:
        """Outcomes as jobs finish, until none is queued or running (jobs may be submitted meanwhile)."""
        while self._queue or self._running:
            self._fill()
            for h in self.backend.wait(list(self._running)):
                job, attempt, t0 = self._running.pop(h)
                ok, value = self.backend.collect(h)
                seconds = time.perf_counter() - t0
                if ok:
                    yield Outcome(job, value, None, attempt, seconds)
                elif attempt <= RETRIES:
                    log.warning("job %s failed (%s); retrying", job.name, value)
                    self._queue.appendleft((job, attempt + 1))
                else:
                    yield Outcome(job, None, value, attempt, seconds)

    def map(self, jobs: Iterable[Job]) -> list[Outcome]:
        """Run ``jobs``; their outcomes in the order given."""
        jobs = list(jobs)
        for j in jobs:
            self.submit(j)
        by_id = {id(o.job): o for o in self.as_completed()}
        return [by_id[id(j)] for j in jobs]

    def cancel(self) -> None:
        """Drop queued jobs and stop running ones."""
        self._queue.clear()
        if self._running:
            self.backend.cancel(list(self._running))
            self._running.clear()

    def close(self) -> None:
        self.cancel()
        self.backend.close()


def parse_cluster(spec: str | None) -> str | None:
    """``None`` for local processes, else the Ray address (``""``: start an instance here).

    ``spec`` None falls back to ``$CODESIGN_CLUSTER``, then ``local``."""
    given = spec if spec is not None else os.environ.get(ENV_CLUSTER, "")
    s = given.strip() or "local"
    if s == "local":
        return None
    if s == "ray":
        return ""
    if s == "auto":
        return "auto"
    if re.fullmatch(r"ray://[\w.\-\[\]:]+:\d{1,5}", s):
        return s
    where = "" if spec is not None else f" (from ${ENV_CLUSTER})"
    raise ConfigError(f"unknown cluster {given!r}{where}: use {CLUSTERS}")


@contextlib.contextmanager
def executor(cluster: str | Executor | None = None, cpus_per_job: int = 1) -> Iterator[Executor]:
    """An executor for ``cluster`` (see ``parse_cluster``), closed on leaving (outstanding jobs
    cancelled, a Ray instance started here stopped). An ``Executor`` given is used as it is and
    left open."""
    if isinstance(cluster, Executor):
        yield cluster
        return
    address = parse_cluster(cluster)
    backend: Backend = LocalProcesses() if address is None else RayCluster(address or None)
    ex = Executor(backend, cpus_per_job)
    try:
        yield ex
    finally:
        ex.close()


if __name__ == "__main__":  # a local worker (see _Worker)
    _worker_main(int(sys.argv[1]))
