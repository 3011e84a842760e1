"""Where evaluations run: a bounded local pool, or Ray tasks on a cluster (docs/scale-out.md).

Both executors run the very same :func:`tools.evaluate.evaluate_candidate` (gate, sandboxed
training, measure job, parent-side scoring); they only decide where and how many at once.

* :class:`LocalExecutor` (``--executor local --workers N``): ``N`` threads, each driving one
  evaluation whose sandbox is a child process; ``--gpus-per-eval`` hands each evaluation a
  GPU from a free-device queue (the sandboxed job then sees only that GPU through
  ``CUDA_VISIBLE_DEVICES``).
* :class:`tools.executor_ray.RayExecutor` (``--executor ray``): one Ray task per evaluation.

A future never raises for a candidate's failure: every failure is an
:class:`~evaluation.report.EvaluationReport` with ``status == "failed"``. A sandbox worker
lost to an outside signal (SIGKILL / SIGTERM that is not our own timeout or memory limit)
is evaluated again up to ``retries`` times; a candidate's own error never is.
"""

from __future__ import annotations

import os
import queue
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evaluation.report import Budgets, EvaluationReport
from tasks.cache import PreparedData
from tasks.io import atomic_write
from tools.gate import GateReport
from tools.train import Recipe

__all__ = ["EvalJob", "Executor", "ExecutorError", "LocalExecutor", "PoolExecutor",
           "evaluate_with_retries", "lost_signal", "make_executor", "threads_per_eval"]

OnEvent = Callable[[dict], None]

# What the sandbox writes when its worker died of a signal it did not send itself
# (tools/sandbox.py _classify_exit, through tools/checks.py sandbox_failure and the gate's
# message). Anchored, so that a candidate's own exception text ("RuntimeError: killed by
# SIGKILL") cannot ask for a retry. Our timeout is stage "timeout", RLIMIT_AS a MemoryError.
_OUTSIDE = r"SIG(?:KILL|TERM|HUP|INT)"
_LOST = (
    re.compile(rf"^(?:measuring the exported graph failed: )?(?:the worker was )?"
               rf"killed by ({_OUTSIDE})\b"),
    re.compile(rf"^Gate stage 'build' failed: [^\n]*\n- (?:the worker was )?"
               rf"killed by ({_OUTSIDE})\b"),
)
_LOST_STAGES = ("memory", "crash", "gate")


class ExecutorError(RuntimeError):
    """An executor cannot be set up as asked (a missing extra, a bad setting)."""


class EvalJob(BaseModel):
    """One evaluation to run: the arguments of :func:`tools.evaluate.evaluate_candidate`.

    Everything but the data (shipped once per executor) and the progress callback (a
    closure of the caller), so that a job pickles to another process or node.
    """

    model_config = ConfigDict(frozen=True)

    code: str
    recipe: Recipe = Field(default_factory=Recipe)
    budgets: Budgets = Field(default_factory=Budgets)
    split: Literal["val", "test"] = "val"
    candidate_id: str | None = None
    out_dir: str | None = Field(default=None, description="Receives model.py, report.json "
                                "and, on success, weights.pt and model.onnx.")
    gate_report: GateReport | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    n_boot: int = Field(default=0, ge=0)

    @field_validator("out_dir", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, os.PathLike) else value

    def with_threads(self, threads: int) -> EvalJob:
        """Return the job with ``threads`` torch threads, unless its recipe fixes its own."""
        if self.recipe.threads is not None:
            return self
        return self.model_copy(update={"recipe": self.recipe.model_copy(
            update={"threads": max(1, int(threads))})})

    def evaluate(self, data: PreparedData, *, on_event: OnEvent | None = None,
                 device: str = "auto") -> EvaluationReport:
        """Run this job once, here (gate, sandboxed training and measuring, scoring)."""
        from tools.evaluate import evaluate_candidate  # looked up at call time: tests spy

        return evaluate_candidate(
            self.code, data, recipe=self.recipe, budgets=self.budgets, split=self.split,
            candidate_id=self.candidate_id, out_dir=self.out_dir, on_event=on_event,
            device=device, gate_report=self.gate_report, n_boot=self.n_boot,
            timeout_s=self.timeout_s)


@runtime_checkable
class Executor(Protocol):
    """Runs evaluations, ``workers`` at a time; a context manager that closes itself."""

    name: str
    workers: int
    threads: int
    """Torch threads of an evaluation whose recipe sets none."""

    def submit(self, job: EvalJob, data: PreparedData,
               on_event: OnEvent | None = None) -> Future[EvaluationReport]:
        """Queue ``job``; the future's report says ``failed`` rather than raising."""
        ...

    def run(self, job: EvalJob, data: PreparedData,
            on_event: OnEvent | None = None) -> EvaluationReport:
        """Submit ``job`` and wait for its report."""
        ...

    def close(self) -> None:
        """Wait for the submitted evaluations, then release the workers."""
        ...

    def __enter__(self) -> Executor:
        """Return the executor itself."""
        ...

    def __exit__(self, *exc: object) -> None:
        """Close the executor."""
        ...


def lost_signal(report: EvaluationReport) -> str | None:
    """Name the outside signal that killed a sandbox worker of this evaluation, if any.

    Returns:
        e.g. ``"SIGKILL"`` when a worker died of that signal without our sandbox having
        sent it (its timeout) or the worker having reported a memory error; else None.
    """
    if report.ok or report.failure_stage not in _LOST_STAGES:
        return None
    text = report.failure_reason or ""
    for pattern in _LOST:
        match = pattern.match(text)
        if match:
            return match.group(1)
    return None


def oom_kills(vmstat: Path = Path("/proc/vmstat")) -> int | None:
    """Return the kernel's count of out-of-memory kills since boot (None: unreadable).

    A SIGKILL from the OOM killer looks like one from a person; when this count grew
    during an attempt, the kill is taken for the candidate's memory use and not retried.
    """
    try:
        for line in vmstat.read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def evaluate_with_retries(job: EvalJob, data: PreparedData, *, retries: int,
                          on_event: OnEvent | None = None, device: str = "auto",
                          lost_before: list[str] | None = None) -> EvaluationReport:
    """Evaluate ``job``, again when a sandbox worker was lost to an outside signal.

    Args:
        job: The evaluation.
        data: The prepared dataset.
        retries: Extra attempts after lost workers, in all (0: none).
        on_event: Progress callback of the sandboxed jobs.
        device: ``"auto"``, ``"cpu"`` or ``"cuda:i"``.
        lost_before: Workers already lost to this job elsewhere (a Ray worker), by cause;
            they count against ``retries``.

    Returns:
        The last attempt's report with ``attempts`` set; after ``retries + 1`` lost
        workers a failed report (stage "crash") that says so.
    """
    lost = list(lost_before or [])
    while True:
        before = oom_kills()
        report = job.evaluate(data, on_event=on_event, device=device)
        signal_name = lost_signal(report)
        if signal_name is not None and before is not None and oom_kills() != before:
            signal_name = None  # the OOM killer's SIGKILL: the candidate's memory use
        if signal_name is None:
            report.attempts = len(lost) + 1
            break
        lost.append(signal_name)
        if len(lost) > retries:
            report.attempts = len(lost)
            report.failure_stage = "crash"
            report.failure_reason = gave_up(lost, retries, report.failure_reason or "")
            break
    if job.out_dir is not None and report.attempts > 1:
        # evaluate_candidate wrote the last attempt's report; this one has its history.
        atomic_write(Path(job.out_dir) / "report.json", report.model_dump_json(indent=2))
    return report


def gave_up(lost: list[str], retries: int, last: str) -> str:
    """Word the failure of a job whose workers were all lost (``lost``: their causes)."""
    return (f"the worker was lost {len(lost)} time(s) ({', '.join(lost)}), with {retries} "
            f"retr{'y' if retries == 1 else 'ies'} allowed; last: {last}")


def usable_cpus() -> int:
    """Return the CPUs this process may run on (affinity mask, else ``os.cpu_count()``).

    Capped by ``OMP_NUM_THREADS`` when the caller set it: ``graph.bench --jobs`` shares
    the cores between concurrent searches that way.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cpus, int(omp))) if omp.isdigit() and int(omp) > 0 else cpus


def threads_per_eval(workers: int, cpus_per_eval: float | None) -> int:
    """Torch threads of one evaluation when its recipe sets none.

    ``cpus_per_eval`` when given, else the machine's CPUs shared out between the
    ``workers``: two OpenMP pools on two cores run slower than one thread each.
    """
    if cpus_per_eval is not None:
        return max(1, int(cpus_per_eval))
    return max(1, usable_cpus() // max(1, workers))


class PoolExecutor:
    """Shared part of the executors: ``workers`` threads, each running one evaluation.

    Subclasses implement :meth:`evaluate` (one job, blocking, never raising for the
    candidate's failure).
    """

    name = "pool"

    def __init__(self, workers: int, *, cpus_per_eval: float | None, retries: int) -> None:
        """Start the thread pool (threads start lazily, on submit)."""
        self.workers, self.retries = workers, retries
        self.threads = threads_per_eval(workers, cpus_per_eval)
        self._pool = ThreadPoolExecutor(max_workers=workers,
                                        thread_name_prefix=f"flnas-{self.name}")
        self._closed = False

    def evaluate(self, job: EvalJob, data: PreparedData,
                 on_event: OnEvent | None) -> EvaluationReport:
        """Run one job to its report (in a pool thread)."""
        raise NotImplementedError

    def submit(self, job: EvalJob, data: PreparedData,
               on_event: OnEvent | None = None) -> Future[EvaluationReport]:
        """Queue ``job``; at most ``workers`` evaluations run at once.

        Raises:
            ExecutorError: The executor is closed.
        """
        if self._closed:
            raise ExecutorError(f"the {self.name} executor is closed")
        return self._pool.submit(self.evaluate, job.with_threads(self.threads), data, on_event)

    def run(self, job: EvalJob, data: PreparedData,
            on_event: OnEvent | None = None) -> EvaluationReport:
        """Submit ``job`` and wait for its report."""
        return self.submit(job, data, on_event).result()

    def close(self) -> None:
        """Wait for the submitted evaluations, then stop the threads (idempotent)."""
        self._closed = True
        self._pool.shutdown(wait=True)

    def __enter__(self) -> PoolExecutor:
        """Return the executor itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the executor."""
        self.close()


def cuda_devices() -> int:
    """CUDA devices this process sees (0 without a GPU or a CUDA build of torch)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class LocalExecutor(PoolExecutor):
    """A bounded pool of ``workers`` concurrent sandboxed evaluations on this machine."""

    name = "local"

    def __init__(self, workers: int = 1, *, cpus_per_eval: float | None = None,
                 gpus_per_eval: float = 0.0, retries: int = 1,
                 gpus: int | None = None) -> None:
        """Set up the pool and, with ``gpus_per_eval > 0``, its free-device queue.

        Args:
            workers: Evaluations at once.
            cpus_per_eval: Torch threads per evaluation (default: CPUs / workers).
            gpus_per_eval: GPU share of one evaluation: 1 gives each evaluation a device
                of its own, 0.5 lets two share one; 0 leaves the device to ``"auto"``.
            retries: Extra attempts after a sandbox worker was lost.
            gpus: Devices to hand out (default: those CUDA sees).

        Raises:
            ExecutorError: GPUs asked for but none visible, or more than one per evaluation.
        """
        self._devices: queue.Queue[int] | None = None
        if gpus_per_eval > 0:
            count = cuda_devices() if gpus is None else gpus
            if count == 0:
                raise ExecutorError(f"--gpus-per-eval {gpus_per_eval:g} but this machine "
                                    "has no CUDA device that torch can see")
            if gpus_per_eval > 1:
                raise ExecutorError("--gpus-per-eval above 1: one evaluation trains on one "
                                    "device; give 1 (or a share like 0.5)")
            self._devices = queue.Queue()
            for _ in range(max(1, round(1 / gpus_per_eval))):  # slots per device
                for device in range(count):
                    self._devices.put(device)
        super().__init__(workers, cpus_per_eval=cpus_per_eval, retries=retries)

    def evaluate(self, job: EvalJob, data: PreparedData,
                 on_event: OnEvent | None) -> EvaluationReport:
        """Run one job here, on a free GPU when the pool hands them out."""
        if self._devices is None:
            return evaluate_with_retries(job, data, retries=self.retries, on_event=on_event)
        device = self._devices.get()  # blocks while every device slot is busy
        try:
            return evaluate_with_retries(job, data, retries=self.retries, on_event=on_event,
                                         device=f"cuda:{device}")
        finally:
            self._devices.put(device)


def make_executor(kind: Literal["local", "ray"], *, workers: int = 1,
                  ray_address: str | None = None, cpus_per_eval: float | None = None,
                  gpus_per_eval: float = 0.0, retries: int = 1) -> Executor:
    """Build the executor the settings ask for (``--executor``, ``--workers``, ...).

    Args:
        kind: ``"local"`` (a pool on this machine) or ``"ray"`` (Ray tasks).
        workers: Evaluations at once.
        ray_address: Ray cluster to join (``"auto"``: the one ``ray start`` runs here);
            None starts a local Ray instance. Ray only.
        cpus_per_eval: CPUs (torch threads) per evaluation; default CPUs / workers.
        gpus_per_eval: GPUs per evaluation (a share below 1 lets evaluations share one).
        retries: Extra attempts after a lost sandbox worker (or Ray worker / node).

    Raises:
        ExecutorError: A bad setting, or ``"ray"`` without Ray installed.
    """
    problems = [msg for bad, msg in (
        (kind not in ("local", "ray"), f"--executor must be local or ray, got {kind!r}"),
        (workers < 1, f"--workers must be at least 1, got {workers}"),
        (retries < 0, f"--eval-retries must be 0 or more, got {retries}"),
        (cpus_per_eval is not None and cpus_per_eval <= 0,
         f"--cpus-per-eval must be positive, got {cpus_per_eval}"),
        (gpus_per_eval < 0, f"--gpus-per-eval must be 0 or more, got {gpus_per_eval}"),
        (kind == "local" and ray_address is not None,
         "--ray-address needs --executor ray")) if bad]
    if problems:
        raise ExecutorError(problems[0])
    if kind == "local":
        return LocalExecutor(workers, cpus_per_eval=cpus_per_eval, gpus_per_eval=gpus_per_eval,
                             retries=retries)
    from tools.executor_ray import RayExecutor

    return RayExecutor(workers, address=ray_address, cpus_per_eval=cpus_per_eval,
                       gpus_per_eval=gpus_per_eval, retries=retries)
