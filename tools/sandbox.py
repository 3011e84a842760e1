"""Run a job in a sandboxed child process (DESIGN.md §6, layers 2 and 3).

:func:`run_job` writes ``job.json`` into a fresh temporary work dir, starts
``python -m tools.worker WORKDIR`` in its own session with rlimits, a minimal
environment (no API keys), new network and mount namespaces where the OS allows, and a
wall-clock timeout that kills the whole process group. The parent trusts only the
``result.json`` the worker writes, after validating it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tools import _isolation as iso
from tools.tmpdirs import make_temp_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
ErrorKind = Literal["timeout", "memory", "crash", "killed", "invalid-result", "tamper", "error"]
# Environment variables passed through when set: device selection only, never secrets.
_PASS_ENV = ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "NVIDIA_VISIBLE_DEVICES")


class SandboxLimits(BaseModel):
    """Resource limits of one sandboxed job.

    ``memory_mb`` is an address-space limit (RLIMIT_AS): right for CPU runs, wrong for CUDA
    (the driver reserves huge virtual ranges), so pass ``None`` on GPU. Importing torch
    alone reserves ~0.7 GB of address space here; each extra thread adds glibc arenas.
    """

    timeout_s: float = Field(600.0, gt=0, description="Wall-clock limit; the group is killed.")
    memory_mb: int | None = Field(12 * 1024, description="RLIMIT_AS in MiB; None = unlimited.")
    cpu_seconds: int | None = Field(None, description="RLIMIT_CPU; None = derived from timeout.")
    file_size_mb: int = Field(1024, description="RLIMIT_FSIZE: largest file the job may write.")
    open_files: int = Field(512, description="RLIMIT_NOFILE.")
    nproc: int | None = Field(None, description="RLIMIT_NPROC (per uid, counts threads; "
                                                "ignored for root). None = unchanged.")
    threads: int = Field(1, ge=1, description="torch / OpenMP / MKL threads.")
    max_result_mb: int = Field(256, description="Largest accepted result.json.")


class SandboxResult(BaseModel):
    """What came back from one sandboxed job."""

    ok: bool
    result: dict | None = None
    error_kind: ErrorKind | None = None
    error: str | None = None
    traceback: str | None = None
    stderr_tail: str = ""
    returncode: int | None = None
    wall_s: float = 0.0
    isolation: list[str] = Field(default_factory=list)


def _env(workdir: Path, threads: int) -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
           "LANG": "C.UTF-8", "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.update({k: os.environ[k] for k in _PASS_ENV if k in os.environ})
    return env


def _rlimits(limits: SandboxLimits) -> dict[int, int]:
    cpu = limits.cpu_seconds or int(limits.timeout_s * max(limits.threads, 1) * 2 + 60)
    out = {resource.RLIMIT_CPU: cpu, resource.RLIMIT_FSIZE: limits.file_size_mb << 20,
           resource.RLIMIT_NOFILE: limits.open_files}
    if limits.memory_mb is not None:
        out[resource.RLIMIT_AS] = limits.memory_mb << 20
    if limits.nproc is not None:
        out[resource.RLIMIT_NPROC] = limits.nproc
    return out


def _tail(path: Path, n: int = 4096) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - n))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _pump(stream: Iterable[bytes], on_event: Callable[[dict], None] | None) -> None:
    for raw in stream:
        if on_event is None:
            continue
        try:
            event = json.loads(raw[:65536])
        except ValueError:
            continue
        if isinstance(event, dict):
            try:
                on_event(event)
            except Exception:  # noqa: BLE001 - a display callback must not break the run
                pass


def _read_result(path: Path, limit_mb: int) -> tuple[dict | None, str | None]:
    try:
        size = path.stat().st_size
    except OSError:
        return None, "the worker wrote no result.json"
    if size > limit_mb << 20:
        return None, f"result.json is {size} bytes (limit {limit_mb} MiB)"
    try:
        data = json.loads(path.read_bytes())
    except ValueError as e:
        return None, f"result.json is not JSON: {e}"
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        return None, "result.json is not a JSON object with a boolean 'ok'"
    return data, None


def _classify_exit(rc: int) -> tuple[ErrorKind, str]:
    if rc < 0:
        sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        if -rc == signal.SIGKILL:
            return "memory", "killed by SIGKILL (most likely the out-of-memory killer)"
        if -rc == signal.SIGXCPU:
            return "timeout", "CPU-time limit exceeded (SIGXCPU)"
        if -rc in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE):
            return "crash", f"the worker crashed ({sig})"
        return "killed", f"the worker was killed by {sig}"
    return "crash", f"the worker exited with status {rc} without a result"


def run_job(kind: str, payload: dict, *, limits: SandboxLimits | None = None,
            read_only: Iterable[str | Path] = (), deny_read: Iterable[str | Path] = (),
            keep_workdir: Path | None = None,
            on_event: Callable[[dict], None] | None = None) -> SandboxResult:
    """Run one job in a sandboxed worker process.

    Args:
        kind: A key of ``tools.worker.JOBS`` ("gate", "evaluate", "profile") or a
            ``"package.module:function"`` handler path (used by tests).
        payload: JSON-serialisable job input, passed to the handler. The worker itself
            reads ``payload["threads"]`` when ``limits.threads`` is not set explicitly.
        limits: Resource limits (defaults: :class:`SandboxLimits`).
        read_only: Data paths the job reads (memory-mapped caches); writes there are denied.
        deny_read: Paths the job must never read (label files); also taken from
            ``payload["deny_read"]``. Hidden under empty mounts where the OS allows, and
            denied by the audit hook.
        keep_workdir: If given, the work dir is copied there after the run (debugging,
            or to collect saved weights).
        on_event: Called with each progress event (dict) the worker emits.

    Returns:
        The validated outcome; ``result`` is the handler's dict without ``ok``/``isolation``.
    """
    limits = limits or SandboxLimits()
    base = make_temp_dir("flnas-job-")
    workdir = base / "work"
    workdir.mkdir()
    deny = [str(Path(p).resolve()) for p in [*deny_read, *payload.get("deny_read", [])]]
    job = {"kind": kind, "payload": payload, "threads": limits.threads, "deny_read": deny,
           "read_only": [str(Path(p).resolve()) for p in read_only],
           "parent_net_ns": iso.namespace_id("net"), "parent_mnt_ns": iso.namespace_id("mnt")}
    (workdir / "job.json").write_text(json.dumps(job))
    stderr_path = base / "stderr.log"
    t0 = time.perf_counter()
    timed_out = False
    try:
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-P", "-s", "-m", "tools.worker", str(workdir)],
                cwd=workdir, env=_env(workdir, limits.threads), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=err, start_new_session=True,
                preexec_fn=iso.make_preexec(_rlimits(limits)), close_fds=True)
            pump = threading.Thread(target=_pump, args=(proc.stdout, on_event), daemon=True)
            pump.start()
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc)
            pump.join(timeout=2)
        wall = time.perf_counter() - t0
        stderr_tail = _tail(stderr_path)
        res = SandboxResult(ok=False, returncode=proc.returncode, wall_s=wall,
                            stderr_tail=stderr_tail)
        if timed_out:
            res.error_kind, res.error = "timeout", f"wall-clock limit of {limits.timeout_s:g} s"
            return res
        data, problem = _read_result(workdir / "result.json", limits.max_result_mb)
        if data is None:
            if proc.returncode != 0:
                res.error_kind, res.error = _classify_exit(proc.returncode)
            else:
                res.error_kind, res.error = "invalid-result", problem
            return res
        res.isolation = [str(x) for x in data.pop("isolation", [])][:32]
        if data.pop("ok"):
            res.ok, res.result = True, data
            return res
        kind_ = data.get("error_kind")
        res.error_kind = kind_ if kind_ in ErrorKind.__args__ else "error"  # type: ignore[attr-defined]
        res.error = str(data.get("error", ""))[:4000]
        res.traceback = str(data.get("traceback", ""))[-4000:] or None
        return res
    finally:
        if keep_workdir is not None:
            shutil.copytree(workdir, keep_workdir, dirs_exist_ok=True, symlinks=True)
        shutil.rmtree(base, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the worker's whole process group (it is its own session leader)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
