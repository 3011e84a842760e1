"""Child entry point of the sandbox: ``python -m tools.worker WORKDIR``.

It normally runs inside bubblewrap (``tools.sandbox``). Order matters: reading
``job.json``, importing the handler (trusted code, may load native
libraries), an integrity snapshot, THEN the seccomp filter is loaded, the audit-hook
tripwire installed and armed, the isolation layers verified and sent to the parent as
the first event ("worker-ready"), and only then does the handler run candidate code.
The result is written atomically to ``result.json``: ``{"ok": true, **handler_result}``
or ``{"ok": false, "error_kind", "error", "traceback"}``.

Handlers are ``handler(payload: dict, workdir: Path) -> dict`` (JSON-serialisable) and may
call :func:`emit` to stream progress events to the parent. Keys of ``job.json`` the worker
itself consumes: ``kind``, ``payload``, ``threads``, ``deny_read``, ``parent_ns``.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tasks.io import atomic_write
from tools.confine import load_seccomp, tune_malloc, verify_layers
from tools.tripwire import AuditState, Integrity, install_audit_hook

JOBS: dict[str, str] = {
    "gate": "tools.gate:gate_job",
    "evaluate": "tools.jobs:evaluate_job",
}
RESULT_FILE = "result.json"
JOB_FILE = "job.json"

_events: IO[str] | None = None  # a private copy of stdout; candidate prints go to stderr
_integrity: Integrity | None = None


def emit(event: dict) -> None:
    """Send one progress event (a JSON object) to the parent; a no-op outside a worker.

    Args:
        event: JSON-serialisable dict, e.g. ``{"event": "epoch", "epoch": 1, "loss": 0.9}``.
    """
    if _events is None:
        return
    _events.write(json.dumps(event, default=str) + "\n")
    _events.flush()


def check_integrity() -> list[str]:
    """Describe torch/evaluator attributes the candidate replaced since setup (empty: intact).

    Handlers may call this between stages; the worker calls it before writing a result.
    """
    return _integrity.changes() if _integrity is not None else []


def resolve_handler(kind: str) -> Callable[[dict, Path], dict]:
    """Import the handler of ``kind`` (a JOBS key or a ``"module:function"`` path)."""
    target = JOBS.get(kind, kind)
    if ":" not in target:
        raise KeyError(f"unknown job kind {kind!r}; known: {sorted(JOBS)}")
    module, func = target.split(":", 1)
    return getattr(importlib.import_module(module), func)


class IsolationError(RuntimeError):
    """A required isolation layer could not be set up inside the worker."""


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, IsolationError):
        return "isolation"
    text = str(exc)
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
            "can't allocate memory" in text or "DefaultCPUAllocator" in text
            or "out of memory" in text)):
        return "memory"
    return "error"


def _result_temp_name() -> str:
    """Name of the temp file ``tasks.io.atomic_write`` writes ``result.json`` through."""
    return f".{RESULT_FILE}.{os.getpid()}.tmp"


def _write_result(workdir: Path, result: dict, audit: AuditState | None) -> None:
    data = json.dumps(result, default=str, allow_nan=False)
    if audit is not None:
        audit.allow_result_write = True  # the audit hook denies these writes otherwise
    try:
        atomic_write(workdir / RESULT_FILE, data)
    finally:
        if audit is not None:
            audit.allow_result_write = False


def _load_handler(job: dict, payload: dict, layers: list[str]) -> Callable[[dict, Path], dict]:
    """Import the job's handler and, unless its module is ``TORCH_FREE``, torch.

    torch (and the native libraries it loads) must be imported before the tripwire is
    armed, since candidate code will use it; a handler module that declares TORCH_FREE
    (the measure job: ONNX Runtime alone) starts ~3 s sooner without it.
    """
    threads = int(job.get("threads") or payload.get("threads") or 0)
    handler = resolve_handler(job["kind"])
    if not getattr(sys.modules.get(handler.__module__), "TORCH_FREE", False):
        # Training speed; the measure job keeps glibc's defaults so freed memory goes
        # back to the kernel and its resident-peak reading stays meaningful.
        if tune_malloc():
            layers.append("mallopt")
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
    return handler


def _confine(workdir: Path, job: dict, layers: list[str]) -> tuple[AuditState, str | None]:
    """Snapshot integrity, load seccomp, install and arm the audit hook, verify the layers.

    Returns:
        The audit hook's state (the worker needs it to write the result, also after a
        refusal) and why seccomp could not be loaded, or None.
    """
    global _integrity
    _integrity = Integrity()
    seccomp_problem = load_seccomp()
    audit = install_audit_hook(workdir, [str(p) for p in job.get("deny_read", [])],
                               [JOB_FILE, RESULT_FILE, _result_temp_name()])
    audit.armed = True
    layers += verify_layers(workdir, job.get("parent_ns", {}))
    layers += ["audit-hook", "integrity-check"]
    return audit, seccomp_problem


def _outcome(result: object) -> dict:
    """Turn a handler's return value into the result file's content (or a tamper report)."""
    if not isinstance(result, dict):
        raise TypeError(f"handler returned {type(result).__name__}, not dict")
    changed = check_integrity()
    if changed:
        return {"ok": False, "error_kind": "tamper",
                "error": "candidate code modified torch/evaluator internals: "
                         + "; ".join(changed), "traceback": ""}
    return {**result, "ok": True}


def main(workdir: Path) -> int:
    """Run the job in ``workdir`` and write its result; returns the exit status."""
    global _events
    t0 = time.perf_counter()
    # Events get their own descriptor; fd 1 becomes stderr so prints cannot fake events.
    _events = events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the file-size limit: EFBIG, not death
    job = json.loads((workdir / JOB_FILE).read_text())
    payload = job.get("payload", {})
    layers: list[str] = []
    audit = None
    try:
        handler = _load_handler(job, payload, layers)
        audit, seccomp_problem = _confine(workdir, job, layers)
        if seccomp_problem:
            sys.stderr.write(f"sandbox: {seccomp_problem}\n")
            if job.get("require_isolation"):
                raise IsolationError(f"refusing to run untrusted code: {seccomp_problem}")
        # The first event is the parent's record of what holds: sent before candidate code.
        emit({"event": "worker-ready", "seconds": round(time.perf_counter() - t0, 3),
              "layers": layers})
        out = _outcome(handler(payload, workdir))
    except BaseException as e:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from candidates too
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        out = {"ok": False, "error_kind": _error_kind(e), "error": f"{type(e).__name__}: {e}",
               "traceback": tb[-4000:]}
    try:
        _write_result(workdir, out, audit)
    except (TypeError, ValueError) as e:  # non-JSON (or NaN) values in the handler result
        _write_result(workdir, {"ok": False, "error_kind": "invalid-result",
                                "error": f"result not serialisable: {e}"}, audit)
    sys.stderr.flush()
    events.flush()
    # Skip interpreter teardown: candidate finalizers and thread pools cannot hang exit.
    os._exit(0)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tools.worker WORKDIR")
    # Run main() in the importable module object, so handlers' `from tools.worker import
    # emit` share its state (under -m this file is __main__, a different module object).
    from tools import worker

    sys.exit(worker.main(Path(sys.argv[1]).resolve()))
