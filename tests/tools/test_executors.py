"""The evaluation executors: the local pool and Ray, end to end, with lost workers.

Workers are killed from outside while they train (a signal from this test, found in
/proc); the candidate is then evaluated again or recorded as failed, never raised.
The Ray tests share one local Ray instance with 2 CPUs (``-m ray`` selects them).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from evaluation.report import EvaluationReport
from tasks.data_args import add_data_args, prepare_from_args
from tests.fakes.code import LINEAR_CODE
from tools.checks import sandbox_failure
from tools.executors import (
    EvalJob,
    Executor,
    ExecutorError,
    LocalExecutor,
    lost_signal,
    make_executor,
    threads_per_eval,
)
from tools.gate import GateReport
from tools.sandbox import SandboxLimits, SandboxResult, run_job
from tools.train import Recipe

TINY = ["--synthetic", "--synthetic-n", "240", "--image-size", "32", "--seed", "0"]
FAST = Recipe(epochs=1, batch_size=32)
GATED = GateReport(ok=True)  # a passing gate report: only the static policy runs again
# Trains for a second or two on one thread (time to kill its worker), predicts at once.
SLOW_CODE = LINEAR_CODE.replace("from torch import nn", "import torch\nfrom torch import nn") \
    .replace("        return self.fc(x.mean((2, 3)))", """        if self.training:
            w = x.new_ones(256, 256)
            for _ in range(40):
                w = torch.tanh(w @ w / 256)
            x = x + 0 * w.sum()
        return self.fc(x.mean((2, 3)))""")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("flnas-cache")
    args = add_data_args(argparse.ArgumentParser()).parse_args([*TINY, "--cache-dir", str(cache)])
    return prepare_from_args(args, progress=False)


# ------------------------------------------------------------------ process helpers

def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, command line) of a live process, None when gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[1]), cmd) if fields[0] != "Z" else None


def _processes() -> dict[int, tuple[int, str]]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (info := _stat(int(name))) is not None:
            out[int(name)] = info
    return out


def _ancestors(pid: int, procs: dict[int, tuple[int, str]]) -> list[tuple[int, str]]:
    chain = []
    while pid in procs and pid > 1:
        pid = procs[pid][0]
        chain.append((pid, procs.get(pid, (0, ""))[1]))
    return chain


def our_sandbox_workers() -> list[tuple[int, list[tuple[int, str]]]]:
    """Python processes of this test's sandboxed jobs, each with its ancestors (pid, cmd).

    Others' jobs (another search on this machine) are not descendants of this process.
    """
    procs, me = _processes(), os.getpid()
    out = []
    for pid, (_, cmd) in procs.items():
        if "-m tools.worker" in cmd and not cmd.split(" ")[0].endswith("bwrap"):
            chain = _ancestors(pid, procs)
            if any(p == me for p, _ in chain):
                out.append((pid, chain))
    return out


def kill_in_background(pick: Callable[[], int | None], sig: int, timeout: float = 120
                       ) -> list[int]:
    """Send ``sig`` once to the first pid ``pick`` returns (polled); the list gets it."""
    killed: list[int] = []

    def loop() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = pick()
            if pid is not None:
                os.kill(pid, sig)
                killed.append(pid)
                return
            time.sleep(0.05)

    threading.Thread(target=loop, daemon=True).start()
    return killed


def kill_on_build(sig: int) -> tuple[Callable[[dict], None], list[int]]:
    """An on_event callback that kills our sandbox worker once, when it built the model."""
    killed: list[int] = []

    def on_event(event: dict) -> None:
        if event.get("event") == "built" and not killed:
            for pid, _ in our_sandbox_workers()[:1]:
                os.kill(pid, sig)
                killed.append(pid)

    return on_event, killed


# ---------------------------------------------------------------------- the local pool

def test_two_workers_evaluate_concurrently_and_write_their_outputs(data, tmp_path):
    with make_executor("local", workers=2) as ex:
        assert isinstance(ex, Executor) and ex.name == "local" and ex.workers == 2
        jobs = [EvalJob(code=LINEAR_CODE, recipe=FAST, gate_report=GATED, candidate_id="a",
                        out_dir=tmp_path / "a"),
                EvalJob(code=LINEAR_CODE, recipe=FAST.model_copy(update={"seed": 1}),
                        gate_report=GATED, candidate_id="b", out_dir=tmp_path / "b"),
                EvalJob(code="import os\n", recipe=FAST, candidate_id="bad")]
        t0 = time.monotonic()
        futures = [ex.submit(job, data) for job in jobs]
        reports = [f.result() for f in futures]
        wall = time.monotonic() - t0
    a, b, bad = reports
    assert a.ok and b.ok, (a.failure_reason, b.failure_reason)
    assert (a.candidate_id, b.candidate_id, a.attempts) == ("a", "b", 1)
    # one thread each: the 2 CPUs shared out (the recipe set none)
    assert a.recipe["threads"] == threads_per_eval(2, None)
    assert bad.status == "failed" and bad.failure_stage == "gate" and bad.attempts == 1
    for name in ("a", "b"):
        assert {"model.py", "report.json", "weights.pt", "model.onnx"} <= \
            {p.name for p in (tmp_path / name).iterdir()}
    # concurrent: the pair took less than the two evaluations one after the other
    assert wall < a.wall_s + b.wall_s, (wall, a.wall_s, b.wall_s)


def test_threads_share_the_cores_and_follow_omp_num_threads(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [threads_per_eval(w, None) for w in (1, 2, 3, 16)] == [8, 4, 2, 1]
    assert threads_per_eval(2, 3.0) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # e.g. one of graph.bench --jobs 4's searches
    assert [threads_per_eval(w, None) for w in (1, 2, 4)] == [2, 1, 1]


def test_a_worker_killed_from_outside_is_retried(data, tmp_path):
    on_event, killed = kill_on_build(signal.SIGKILL)
    with LocalExecutor(1, cpus_per_eval=1, retries=1) as ex:
        report = ex.run(EvalJob(code=SLOW_CODE, recipe=FAST, gate_report=GATED,
                                out_dir=tmp_path / "out"), data, on_event=on_event)
    assert len(killed) == 1
    assert report.ok and report.attempts == 2, report.failure_reason
    saved = EvaluationReport.model_validate_json((tmp_path / "out" / "report.json").read_text())
    assert saved.attempts == 2 and saved.ok


def test_a_lost_worker_without_retries_fails_cleanly(data):
    on_event, killed = kill_on_build(signal.SIGTERM)
    with LocalExecutor(1, cpus_per_eval=1, retries=0) as ex:
        report = ex.run(EvalJob(code=SLOW_CODE, recipe=FAST, gate_report=GATED), data,
                        on_event=on_event)
    assert len(killed) == 1 and report.status == "failed" and report.attempts == 1
    assert report.failure_stage == "crash"
    assert report.failure_reason.startswith("the worker was lost 1 time(s) (SIGTERM), with 0 "
                                            "retries allowed; last: the worker was killed by "
                                            "SIGTERM"), report.failure_reason


def _failed(stage: str, reason: str) -> EvaluationReport:
    return EvaluationReport(code_hash="x", status="failed", failure_stage=stage,
                            failure_reason=reason)


def test_only_outside_signals_count_as_lost_workers():
    def from_sandbox(kind: str, error: str) -> EvaluationReport:
        return _failed(*sandbox_failure(SandboxResult(ok=False, error_kind=kind, error=error,
                                                      stderr_tail="Traceback ...")))

    assert lost_signal(from_sandbox("memory", "killed by SIGKILL (most likely the "
                                    "out-of-memory killer)")) == "SIGKILL"
    assert lost_signal(from_sandbox("killed", "the worker was killed by SIGHUP")) == "SIGHUP"
    assert lost_signal(_failed("memory", "measuring the exported graph failed: killed by "
                               "SIGKILL (most likely the out-of-memory killer)")) == "SIGKILL"
    assert lost_signal(_failed("gate", "Gate stage 'build' failed: building or running the "
                               "model ran out of memory (make it smaller)\n- killed by SIGKILL "
                               "(most likely the out-of-memory killer)\nChange only ...")) \
        == "SIGKILL"
    # our own limits and the candidate's own errors are never retried
    assert lost_signal(from_sandbox("timeout", "wall-clock limit of 4 s")) is None
    assert lost_signal(from_sandbox("memory", "MemoryError: cannot allocate")) is None
    assert lost_signal(from_sandbox("crash", "the worker crashed (SIGSEGV)")) is None
    assert lost_signal(from_sandbox("killed", "the job filled its work dir past the limit "
                                    "(killed by SIGKILL)")) is None
    assert lost_signal(_failed("crash", "RuntimeError: killed by SIGKILL")) is None
    assert lost_signal(_failed("train", "killed by SIGKILL (")) is None


def test_gpus_are_handed_out_one_evaluation_per_device(data, monkeypatch):
    import tools.executors

    busy: set[str] = set()
    seen: list[str] = []
    lock = threading.Lock()

    def fake(job, data, *, retries, on_event=None, device="auto", lost_before=None):
        with lock:
            assert device not in busy, f"{device} given to two evaluations at once"
            busy.add(device)
            seen.append(device)
        time.sleep(0.05)
        with lock:
            busy.discard(device)
        return EvaluationReport(code_hash="x", status="ok", recipe=job.recipe.model_dump())

    monkeypatch.setattr(tools.executors, "evaluate_with_retries", fake)
    with LocalExecutor(4, gpus_per_eval=1, gpus=2, cpus_per_eval=3) as ex:
        reports = [f.result() for f in [ex.submit(EvalJob(code="x"), data) for _ in range(8)]]
    assert set(seen) == {"cuda:0", "cuda:1"} and len(seen) == 8
    assert {r.recipe["threads"] for r in reports} == {3}
    with LocalExecutor(2, gpus_per_eval=0.5, gpus=1) as ex:  # two share the one device
        assert ex.run(EvalJob(code="x", recipe=Recipe(threads=1)), data).recipe["threads"] == 1
    with pytest.raises(ExecutorError, match="no CUDA device"):
        LocalExecutor(1, gpus_per_eval=1, gpus=0)


def test_a_job_on_one_gpu_sees_only_that_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    res = run_job("tests.tools.test_sandbox:job_echo", {"device": "cuda:1"},
                  limits=SandboxLimits(timeout_s=60))
    assert res.ok, (res.error, res.stderr_tail)
    assert res.result["env"]["CUDA_VISIBLE_DEVICES"] == "5"
    assert res.result["payload"]["device"] == "cuda"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "cluster"}, "--executor must be local or ray"),
    ({"workers": 0}, "--workers must be at least 1"),
    ({"retries": -1}, "--eval-retries must be 0 or more"),
    ({"cpus_per_eval": 0}, "--cpus-per-eval must be positive"),
    ({"ray_address": "auto"}, "--ray-address needs --executor ray"),
])
def test_bad_settings_are_one_clear_error(kwargs, message):
    kind = kwargs.pop("kind", "local")
    with pytest.raises(ExecutorError, match=re.escape(message)):
        make_executor(kind, **kwargs)


def test_ray_executor_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ExecutorError) as info:
        make_executor("ray", workers=2)
    assert str(info.value) == "--executor ray needs Ray: pip install -e '.[ray]'"


# ------------------------------------------------------------------------------- Ray

@pytest.mark.ray
def test_no_ray_cluster_at_the_address_is_one_clear_error(monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance runs in this process already")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ExecutorError, match=r"^--executor ray: cannot join the Ray cluster at "
                       r"auto: .*running Ray instance"):
        make_executor("ray", ray_address="auto")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from tools.executor_ray import ray_init_args

    ray.init(**ray_init_args(2, 1, None))
    yield ray
    ray.shutdown()


def _ray_worker_of_a_sandbox() -> int | None:
    """The Ray worker running one of our sandboxed jobs (killing it loses the task)."""
    for _, chain in our_sandbox_workers():
        for pid, cmd in chain:
            if cmd.startswith("ray::"):
                return pid
    return None


@pytest.mark.ray
def test_ray_evaluates_from_shipped_data_and_retries_a_killed_worker(ray_cluster, data,
                                                                      tmp_path):
    import shutil

    from tools.executor_ray import RayExecutor, node_cache_dir

    shutil.rmtree(node_cache_dir(data), ignore_errors=True)
    killed = kill_in_background(_ray_worker_of_a_sandbox, signal.SIGKILL)
    try:
        with RayExecutor(2, retries=1, ship_data=True) as ex:
            assert ex.name == "ray" and isinstance(ex, Executor)
            futures = [ex.submit(EvalJob(code=code, recipe=FAST, gate_report=GATED,
                                         candidate_id=name, out_dir=tmp_path / name), data)
                       for name, code in (("fast", LINEAR_CODE), ("slow", SLOW_CODE))]
            refused = ex.submit(EvalJob(code="import os\n", recipe=FAST), data).result()
            reports = [f.result() for f in futures]
        assert len(killed) == 1
        assert all(r.ok for r in reports), [r.failure_reason for r in reports]
        # one of the two lost its Ray worker and ran again; the other ran once
        assert sorted(r.attempts for r in reports) == [1, 2]
        assert {r.recipe["threads"] for r in reports} == {1}
        assert refused.failure_stage == "gate"
        # trained from the node-local copy of the shipped arrays
        assert (node_cache_dir(data) / ".ready").is_file()
        for r in reports:
            out = tmp_path / str(r.candidate_id)
            assert {"model.py", "report.json", "weights.pt", "model.onnx"} <= \
                {p.name for p in out.iterdir()}
            saved = EvaluationReport.model_validate_json((out / "report.json").read_text())
            assert saved.attempts == r.attempts
    finally:
        shutil.rmtree(node_cache_dir(data), ignore_errors=True)


@pytest.mark.ray
def test_a_remote_node_returns_the_files_for_the_driver(ray_cluster, data, tmp_path):
    from tools.executor_ray import run_task

    job = EvalJob(code="import os\n", recipe=FAST, out_dir=tmp_path / "out")
    report, files = run_task(job, data, None, "another-node", 0, [])
    assert report.failure_stage == "gate" and not (tmp_path / "out").exists()
    assert set(files) == {"model.py", "report.json"} and files["model.py"] == b"import os\n"


@pytest.mark.ray
def test_a_lost_ray_worker_without_retries_and_a_task_past_its_limit_fail_cleanly(
        ray_cluster, data, monkeypatch):
    from tools.executor_ray import RayExecutor

    killed = kill_in_background(_ray_worker_of_a_sandbox, signal.SIGKILL)
    with RayExecutor(1, retries=0) as ex:
        lost = ex.run(EvalJob(code=SLOW_CODE, recipe=FAST, gate_report=GATED), data)
        assert len(killed) == 1 and lost.status == "failed" and lost.attempts == 1
        assert lost.failure_stage == "crash" and "the Ray worker was lost" in lost.failure_reason
        monkeypatch.setattr(ex, "wall_limit", lambda job, data: 1.0)
        late = ex.run(EvalJob(code=SLOW_CODE, recipe=FAST, gate_report=GATED), data)
    assert late.failure_stage == "timeout" and "cancelled" in late.failure_reason
