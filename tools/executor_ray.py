"""The Ray executor (``--executor ray``): one Ray task per evaluation (docs/scale-out.md).

Each task runs the same :func:`tools.executors.evaluate_with_retries` as the local pool,
so the bwrap sandbox runs inside the Ray worker. What Ray adds:

* resources: each task asks for ``cpus_per_eval`` CPUs and ``gpus_per_eval`` GPUs; Ray
  sets ``CUDA_VISIBLE_DEVICES`` for the task and the sandbox passes it on;
* the dataset once per executor, not per task: a task on a node that has the cache
  folder (the driver's machine, or a shared file system) reads it in place; otherwise
  the arrays are ``ray.put`` once and a node copies them into a node-local cache folder
  the first time it needs them;
* outputs: on a node other than the driver's, the candidate's files (model.py,
  report.json, weights.pt, model.onnx) come back as bytes and the driver writes them;
* faults: a Ray worker or node lost mid-task is resubmitted up to ``retries`` times (the
  driver counts the attempts; the same budget covers lost sandbox workers), then
  recorded as failed; a task past its wall-clock limit is cancelled and recorded as a
  timeout. A bug of the evaluator itself (an exception in the task) is raised as is.

Progress events of the sandboxed jobs are not relayed from Ray tasks.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.report import EvaluationReport
from tasks.cache import PreparedData
from tasks.io import atomic_write
from tools.executors import (
    EvalJob,
    ExecutorError,
    OnEvent,
    PoolExecutor,
    evaluate_with_retries,
    gave_up,
    threads_per_eval,
)
from tools.payloads import SPLIT_CODES, default_limits, measure_limits
from tools.sandbox import REPO_ROOT
from tools.tmpdirs import make_temp_dir

__all__ = ["RAY_MISSING", "RayExecutor", "node_data", "ray_init_args", "run_task"]

RAY_MISSING = "--executor ray needs Ray: pip install -e '.[ray]'"
#: Seconds a Ray task may run past its evaluation's own limits (worker start, queueing).
MARGIN_S = 300.0
_ARRAYS = ("images", "labels", "sex", "age")
_READY = ".ready"


def import_ray() -> Any:
    """Import Ray, or stop with the one message that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ExecutorError(RAY_MISSING) from e
    return ray


def ray_init_args(workers: int, cpus_per_eval: float | None,
                  address: str | None) -> dict[str, Any]:
    """Keyword arguments of ``ray.init``: join ``address``, or start a quiet local instance.

    Tasks import this checkout first (``PYTHONPATH``), like the sandbox's worker does.
    """
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    args: dict[str, Any] = {"runtime_env": {"env_vars": {"PYTHONPATH": path}},
                            "logging_level": logging.WARNING, "log_to_driver": False}
    if address is not None:
        return {**args, "address": address}
    cpus = cpus_per_eval or threads_per_eval(workers, None)
    return {**args, "num_cpus": max(1, round(workers * cpus)), "include_dashboard": False}


def node_cache_dir(data: PreparedData) -> Path:
    """Return this node's copy of a shipped dataset (one folder per data fingerprint)."""
    import tempfile

    return Path(tempfile.gettempdir()) / "flnas-ray-data" / data.fingerprint[:32]


def data_bundle(data: PreparedData) -> dict[str, Any]:
    """Gather what a node needs to rebuild the cache folder: arrays, split, meta.json."""
    return {"arrays": {k: np.load(data.cache_dir / f"{k}.npy") for k in _ARRAYS},
            "split": np.load(data.split_path), "split_name": data.split_path.name,
            "meta": (data.cache_dir / "meta.json").read_bytes()}


def node_data(data: PreparedData, refs: list | None, *, copy: bool = False) -> PreparedData:
    """Return the dataset as this node can read it: in place, or copied from the store.

    Args:
        data: The driver's dataset.
        refs: ``[object ref of data_bundle(data)]`` when the driver shipped it, else None
            (a list, so that Ray does not fetch the bundle before the task looks).
        copy: Use the node-local copy even where the driver's folder exists (tests).

    Raises:
        ExecutorError: The cache folder is not on this node and the data was not shipped.
    """
    if not copy and data.cache_dir.is_dir() and data.split_path.is_file():
        return data
    if refs is None:
        raise ExecutorError(f"the data cache {data.cache_dir} is not on this node and the "
                            "driver did not ship it")
    folder = node_cache_dir(data)
    if not (folder / _READY).is_file():
        import ray

        bundle = ray.get(refs[0])
        build = folder.with_name(f"{folder.name}.{uuid.uuid4().hex}.tmp")
        build.mkdir(parents=True)
        for name, array in bundle["arrays"].items():
            np.save(build / f"{name}.npy", array)
        np.save(build / bundle["split_name"], bundle["split"])
        (build / "meta.json").write_bytes(bundle["meta"])
        (build / _READY).write_text("")
        try:
            build.rename(folder)  # whole folder or none; another task may have won
        except OSError:
            shutil.rmtree(build, ignore_errors=True)
    return replace(data, cache_dir=folder, split_path=folder / data.split_path.name)


def read_outputs(folder: Path) -> dict[str, bytes]:
    """Read the regular files an evaluation wrote into ``folder``, by name."""
    if not folder.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and not p.is_symlink()}


def run_task(job: EvalJob, data: PreparedData, refs: list | None, driver_node: str,
             retries: int, lost: list[str], copy_data: bool = False
             ) -> tuple[EvaluationReport, dict[str, bytes]]:
    """Body of the Ray task: evaluate ``job`` on this node.

    Returns:
        The report, and the output files' bytes when this node is not the driver's (on
        the driver's node the files are written into ``job.out_dir`` directly).
    """
    import ray

    data = node_data(data, refs, copy=copy_data)
    if job.out_dir is None or ray.get_runtime_context().get_node_id() == driver_node:
        return evaluate_with_retries(job, data, retries=retries, lost_before=lost), {}
    tmp = make_temp_dir("flnas-eval-")
    try:
        local = job.model_copy(update={"out_dir": str(tmp / "out")})
        report = evaluate_with_retries(local, data, retries=retries, lost_before=lost)
        return report, read_outputs(tmp / "out")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def failed_report(job: EvalJob, data: PreparedData, stage: str, reason: str,
                  attempts: int, wall_s: float) -> EvaluationReport:
    """Build the failed report of a job whose task never came back (and write it out)."""
    from tools.evaluate import code_hash

    report = EvaluationReport(
        candidate_id=job.candidate_id, code_hash=code_hash(job.code), status="failed",
        failure_stage=stage, failure_reason=reason,
        split=job.split, budgets=job.budgets, recipe=job.recipe.model_dump(mode="json"),
        data_fingerprint=data.fingerprint, wall_s=wall_s, attempts=attempts)
    if job.out_dir is not None:
        atomic_write(Path(job.out_dir) / "model.py", job.code)
        atomic_write(Path(job.out_dir) / "report.json", report.model_dump_json(indent=2))
    return report


class RayExecutor(PoolExecutor):
    """Evaluations as Ray tasks, ``workers`` in flight at once (module docstring)."""

    name = "ray"

    def __init__(self, workers: int = 1, *, address: str | None = None,
                 cpus_per_eval: float | None = None, gpus_per_eval: float = 0.0,
                 retries: int = 1, ship_data: bool | None = None,
                 margin_s: float = MARGIN_S) -> None:
        """Join (or start) Ray and define the task.

        Args:
            workers: Tasks in flight at once.
            address: Cluster address (``"auto"``: the one ``ray start`` runs on this
                machine); None starts a local instance with ``workers * cpus_per_eval`` CPUs.
                An instance that is already initialised in this process is used as is.
            cpus_per_eval: CPUs (and torch threads) per task; default CPUs / workers.
            gpus_per_eval: GPUs per task (Ray sets ``CUDA_VISIBLE_DEVICES``).
            retries: Extra attempts after a lost Ray worker or sandbox worker.
            ship_data: Put the dataset in the object store: None when the cluster has
                more than one node, True always (nodes then use their local copy), False
                never (the cache folder must be on every node).
            margin_s: Seconds a task may run past its evaluation's own limits.

        Raises:
            ExecutorError: Ray is not installed, or cannot start or join the cluster.
        """
        ray = import_ray()
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            try:
                ray.init(**ray_init_args(workers, cpus_per_eval, address))
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"join the Ray cluster at {address}" if address else "start Ray here"
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ExecutorError(f"--executor ray: cannot {where}: {first}") from e
        super().__init__(workers, cpus_per_eval=cpus_per_eval, retries=retries)
        self.ship_data, self.margin_s = ship_data, margin_s
        self._driver_node = ray.get_runtime_context().get_node_id()
        self._task = ray.remote(run_task).options(
            num_cpus=cpus_per_eval or self.threads, num_gpus=gpus_per_eval, max_retries=0,
            name="flnas-evaluate")
        self._refs: dict[str, list] = {}
        self._lock = threading.Lock()

    def _shipped(self, data: PreparedData) -> list | None:
        """Return the data's object ref (put on first use) when it is shipped, else None."""
        with self._lock:
            if data.fingerprint in self._refs:
                return self._refs[data.fingerprint]
            ship = self.ship_data
            if ship is None:
                ship = sum(1 for n in self._ray.nodes() if n.get("Alive")) > 1
            if not ship:
                return None
            self._refs[data.fingerprint] = [self._ray.put(data_bundle(data))]
            return self._refs[data.fingerprint]

    def wall_limit(self, job: EvalJob, data: PreparedData) -> float:
        """Return the seconds one task may take.

        The gate's, training's and measuring's own limits (the sandbox's formulas), once
        per allowed attempt, plus the margin.
        """
        from tools.gate import gate

        codes = np.load(data.split_path, mmap_mode="r")
        n_train, n_eval = int((codes == 0).sum()), int((codes == SPLIT_CODES[job.split]).sum())
        cost = job.gate_report.train_s_per_image if job.gate_report is not None else None
        lim = default_limits(job.recipe, n_train, "cpu", train_s_per_image=cost, n_eval=n_eval)
        gated = job.gate_report is not None and job.gate_report.ok
        gate_s = 0.0 if gated else float(inspect.signature(gate).parameters["timeout_s"].default)
        once = gate_s + (job.timeout_s or lim.timeout_s) + measure_limits(lim, n_eval,
                                                                          cost).timeout_s
        return (self.retries + 1) * once + self.margin_s

    def evaluate(self, job: EvalJob, data: PreparedData,
                 on_event: OnEvent | None) -> EvaluationReport:
        """Run one job as a Ray task, again after a lost worker; never raise for those."""
        import time

        ray = self._ray
        refs, limit = self._shipped(data), self.wall_limit(job, data)
        lost: list[str] = []
        copy = self.ship_data is True
        while True:
            t0 = time.monotonic()
            ref = self._task.remote(job, data, refs, self._driver_node, self.retries, lost, copy)
            ready, _ = ray.wait([ref], timeout=limit)
            if not ready:
                ray.cancel(ref, force=True)
                return failed_report(job, data, "timeout", f"the Ray task ran past its "
                                     f"wall-clock limit of {limit:.0f} s and was cancelled",
                                     len(lost) + 1, time.monotonic() - t0)
            try:
                report, files = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                raise e.as_instanceof_cause() from None  # the evaluator's own bug
            except ray.exceptions.OutOfMemoryError as e:
                return failed_report(job, data, "memory", "Ray's memory monitor killed the "
                                     f"worker: {str(e).strip().splitlines()[0]}",
                                     len(lost) + 1, time.monotonic() - t0)
            except ray.exceptions.RayError as e:
                lost.append(type(e).__name__)
                if len(lost) > self.retries:
                    why = f"the Ray worker was lost: {str(e).strip().splitlines()[0]}"
                    return failed_report(job, data, "crash", gave_up(lost, self.retries, why),
                                         len(lost), time.monotonic() - t0)
                continue
            for name, blob in files.items():
                atomic_write(Path(str(job.out_dir)) / name, blob)
            return report

    def close(self) -> None:
        """Wait for the submitted tasks; shut Ray down if this executor started it."""
        super().close()
        self._refs.clear()
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
