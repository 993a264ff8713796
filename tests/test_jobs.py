"""The execution layer: the same jobs give the same outcomes on local processes and on Ray; a
failure is retried once and then reported while the other jobs finish; threads follow CPUs."""

import os
import signal
import sys
import threading
import time

import pytest

from codesign import jobs
from codesign.errors import ConfigError, ToolNotFoundError


# ---- jobs (module level: workers import them by name) ------------------------------------
def square(x: int) -> int:
    return x * x


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x


def fail_first_time(marker: str) -> str:
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("transient")
    return "second try"


def die(x: int) -> int:
    if x == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def thread_pools() -> dict:
    import numpy  # noqa: F401 - its BLAS is one of the pools
    import torch
    from threadpoolctl import threadpool_info

    return {"torch": torch.get_num_threads(), "omp_env": os.environ["OMP_NUM_THREADS"],
            "blas": sorted({p["num_threads"] for p in threadpool_info()})}


def sleep_and_note(pid_file: str) -> None:
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)


# ---- choosing the back end ---------------------------------------------------------------
@pytest.mark.parametrize("spec, address", [(None, None), ("local", None), ("ray", ""), ("auto", "auto"),
                                           ("ray://head.example:10001", "ray://head.example:10001")])
def test_a_cluster_spec_names_the_back_end(spec, address, monkeypatch):
    monkeypatch.delenv(jobs.ENV_CLUSTER, raising=False)
    assert jobs.parse_cluster(spec) == address


def test_the_environment_gives_the_default_cluster(monkeypatch):
    monkeypatch.setenv(jobs.ENV_CLUSTER, "auto")
    assert jobs.parse_cluster(None) == "auto" and jobs.parse_cluster("local") is None


@pytest.mark.parametrize("spec, env, msg", [
    ("slurm", None, r"^unknown cluster 'slurm': use local, ray \(a Ray instance on this machine for the run\), "
                    r"auto \(the running Ray cluster\) or ray://HOST:PORT$"),
    ("ray://head", None, "unknown cluster 'ray://head': use local"),
    (None, "yes", r"unknown cluster 'yes' \(from \$CODESIGN_CLUSTER\): use local"),
])
def test_an_unknown_cluster_is_refused_naming_it(spec, env, msg, monkeypatch):
    monkeypatch.delenv(jobs.ENV_CLUSTER, raising=False)
    if env:
        monkeypatch.setenv(jobs.ENV_CLUSTER, env)
    with pytest.raises(ConfigError, match=msg):
        jobs.parse_cluster(spec)


def test_asking_for_ray_without_it_says_how_to_install(monkeypatch, capsys, tmp_path):
    from codesign.app.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra sees
    with pytest.raises(ToolNotFoundError, match=r"^Ray is not installed, and the cluster back end needs it: "
                                                r"pip install 'fpga-codesign\[cluster\]'$"):
        with jobs.executor("ray"):
            pass
    assert main(["sweep", "digits-mlp", "--data", "digits", "--budgets", "lut=0.1", "--out", str(tmp_path / "s"),
                 "--cluster", "ray", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'fpga-codesign[cluster]'" in err


# ---- the same behaviour on both back ends ------------------------------------------------
@pytest.fixture(params=["local", "ray"])
def cluster(request):
    if request.param == "ray":
        request.getfixturevalue("ray_session")  # the session's instance: "ray" joins it
    return request.param


def test_jobs_return_their_values_in_the_order_given(cluster):
    with jobs.executor(cluster) as ex:
        out = ex.map(jobs.Job(f"square {i}", square, (i,)) for i in range(5))
    assert [o.value for o in out] == [0, 1, 4, 9, 16] and all(o.ok and o.attempts == 1 for o in out)


def test_a_job_that_raises_is_retried_once_then_reported_while_the_others_finish(cluster):
    with jobs.executor(cluster) as ex:
        out = ex.map(jobs.Job(f"job {i}", fail_on, (i, 2)) for i in range(4))
    assert [o.value for o in out if o.ok] == [0, 1, 3]
    bad = out[2]
    assert not bad.ok and bad.attempts == 2 and bad.error.startswith("ValueError: bad input 2 (at test_jobs.py:")


def test_a_job_that_fails_once_succeeds_on_its_retry(cluster, tmp_path):
    with jobs.executor(cluster) as ex:
        (o,) = ex.map([jobs.Job("flaky", fail_first_time, (str(tmp_path / "marker"),))])
    assert o.ok and o.value == "second try" and o.attempts == 2


def test_a_worker_that_dies_is_reported_while_the_others_finish(cluster):
    with jobs.executor(cluster) as ex:
        out = ex.map(jobs.Job(f"job {i}", die, (i,)) for i in range(3))
    assert [o.value for o in out] == [0, None, 2]
    assert out[1].attempts == 2 and out[1].error.startswith("worker died")


@pytest.mark.parametrize("cpus", [1, 2])
def test_each_job_sizes_its_thread_pools_to_its_cpus(cluster, cpus):
    with jobs.executor(cluster, cpus_per_job=cpus) as ex:
        (o,) = ex.map([jobs.Job("threads", thread_pools)])
    assert o.value == {"torch": cpus, "omp_env": str(cpus), "blas": [cpus]}


def test_leaving_early_cancels_the_running_jobs(tmp_path):
    """Ctrl-C in the driver: the executor stops its workers (and so the jobs) on the way out."""
    pid_file = tmp_path / "pid"
    main = threading.main_thread().ident

    def interrupt():
        while not pid_file.exists():
            time.sleep(0.05)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        with jobs.executor("local") as ex:
            ex.map([jobs.Job("sleeper", sleep_and_note, (str(pid_file),))])
    time.sleep(0.5)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
