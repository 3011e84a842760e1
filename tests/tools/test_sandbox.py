"""The sandboxed worker: timeouts, memory, audit-hook denials, env, result validation.

The job handlers below run inside the worker (``kind="tests.tools.test_sandbox:NAME"``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tools.sandbox import SandboxLimits, run_job
from tools.workdir import read_result
from tools.worker import emit

HERE = "tests.tools.test_sandbox"
REPO = Path(__file__).resolve().parents[2]


def job_echo(payload: dict, workdir: Path) -> dict:
    emit({"event": "epoch", "epoch": 1, "loss": 0.5})
    print('{"event": "forged"}')  # candidate prints go to stderr, not the event channel
    (workdir / "weights.bin").write_bytes(b"ok")  # writing inside the work dir is allowed
    return {"env": dict(os.environ), "cwd": os.getcwd(), "payload": payload}


def job_loop(payload: dict, workdir: Path) -> dict:
    while True:
        pass


def job_alloc(payload: dict, workdir: Path) -> dict:
    import torch

    hoard = []
    while True:
        hoard.append(torch.ones(64 << 20, dtype=torch.uint8))


def job_escape(payload: dict, workdir: Path) -> dict:
    import socket
    import subprocess

    attempts = {
        "write_outside": lambda: open(payload["outside"], "w").write("x"),
        "read_denied": lambda: open(payload["secret"]).read(),
        "spawn": lambda: subprocess.run(["true"]),
        "system": lambda: os.system("true"),
        "socket": lambda: socket.socket(),
        "forge_result": lambda: (workdir / "result.json").write_text('{"ok": true}'),
        "parent_environ": lambda: open(f"/proc/{os.getppid()}/environ").read(),
    }
    out = {}
    for name, attempt in attempts.items():
        try:
            out[name] = f"allowed: {attempt()!r}"[:200]
        except PermissionError as e:
            out[name] = f"denied: {type(e).__name__}: {e}"
        except OSError as e:  # e.g. a read-only file system underneath
            out[name] = f"failed: {type(e).__name__}: {e}"
    return out


def job_tamper(payload: dict, workdir: Path) -> dict:
    import torch.nn.functional as F

    F.cross_entropy = lambda *a, **k: 0.0
    return {"patched": True}


def job_exit(payload: dict, workdir: Path) -> dict:
    os._exit(0)


def job_nan(payload: dict, workdir: Path) -> dict:
    return {"value": float("nan")}


def test_echo_env_events_and_isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    events: list[dict] = []
    res = run_job(f"{HERE}:job_echo", {"x": 1}, limits=SandboxLimits(timeout_s=60),
                  on_event=events.append)
    assert res.ok, (res.error, res.stderr_tail)
    env = res.result["env"]
    assert "OPENAI_API_KEY" not in env and "sk-test-secret" not in json.dumps(env)
    assert env["HOME"] == res.result["cwd"]
    assert res.result["payload"] == {"x": 1}
    assert {"event": "epoch", "epoch": 1, "loss": 0.5} in events
    assert not any(e.get("event") == "forged" for e in events)
    assert "forged" in res.stderr_tail
    assert {"audit-hook", "integrity-check", "own-session"} <= set(res.isolation)
    ready = [e for e in events if e.get("event") == "worker-ready"]
    assert ready and ready[0]["seconds"] > 0  # speed is measured by tools.bench
    assert ready[0]["layers"] == res.isolation[-len(ready[0]["layers"]):]


def test_timeout_kills_infinite_loop() -> None:
    res = run_job(f"{HERE}:job_loop", {}, limits=SandboxLimits(timeout_s=4))
    assert not res.ok and res.error_kind == "timeout"
    assert res.wall_s < 4 + 3


def test_unbounded_allocation_is_memory() -> None:
    res = run_job(f"{HERE}:job_alloc", {}, limits=SandboxLimits(timeout_s=60, memory_mb=2048))
    assert not res.ok and res.error_kind == "memory", (res.error, res.stderr_tail[-500:])


def test_audit_hook_denies_escapes(tmp_path: Path) -> None:
    secret = tmp_path / "labels.npy"
    secret.write_text("LABELS-SECRET-7731")
    # Outside both the work dir and /tmp, so the hook (not the sandbox's private /tmp) must
    # stop it: the repository itself, unless it was cloned under /tmp (as CI may do).
    tmp_root = Path(tempfile.gettempdir()).resolve()
    base = Path("/opt") if REPO.is_relative_to(tmp_root) else REPO
    outside = base / f"escaped-{os.getpid()}.txt"
    try:
        res = run_job(f"{HERE}:job_escape", {"outside": str(outside), "secret": str(secret),
                                             "deny_read": [str(secret)]},
                      limits=SandboxLimits(timeout_s=60))
        assert not outside.exists()
    finally:
        outside.unlink(missing_ok=True)
    assert res.ok, (res.error, res.stderr_tail)
    # Each attempt is stopped by the audit hook itself, with its own reason.
    reasons = {
        "write_outside": f"writing outside the work dir is denied: {outside}",
        "read_denied": f"reading {secret.resolve()} is denied",
        "spawn": "subprocess.Popen is denied",
        "system": "os.system is denied",
        "socket": "network access (socket.__new__) is denied",
        "forge_result": "writing of result.json is denied",
        "parent_environ": "reading another process's /proc/",
    }
    assert set(res.result) == set(reasons)
    for name, reason in reasons.items():
        outcome = res.result[name]
        assert outcome.startswith("denied: PermissionError: sandbox: "), (name, outcome)
        assert reason in outcome, (name, outcome)
    assert "LABELS-SECRET-7731" not in json.dumps(res.model_dump())


def test_tampering_is_detected() -> None:
    res = run_job(f"{HERE}:job_tamper", {}, limits=SandboxLimits(timeout_s=60))
    assert not res.ok and res.error_kind == "tamper"
    assert "cross_entropy" in res.error


def test_missing_or_bad_results(tmp_path: Path) -> None:
    res = run_job(f"{HERE}:job_exit", {}, limits=SandboxLimits(timeout_s=60))
    assert not res.ok and res.error_kind == "invalid-result"
    res = run_job(f"{HERE}:job_nan", {}, limits=SandboxLimits(timeout_s=60))
    assert not res.ok and res.error_kind == "invalid-result"
    for text in ["not json", "[1, 2]", '{"result": 1}', '{"ok": "yes"}']:
        (tmp_path / "r.json").write_text(text)
        data, problem = read_result(tmp_path / "r.json", 1)
        assert data is None and problem
    (tmp_path / "r.json").write_text('{"ok": true, "pad": "' + "x" * (2 << 20) + '"}')
    assert read_result(tmp_path / "r.json", 1)[0] is None


def job_pid_then_loop(payload: dict, workdir: Path) -> dict:
    emit({"event": "pid", "workdir": str(workdir)})
    while True:
        pass


def _processes_naming(text: str) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and text in Path(f"/proc/{pid}/cmdline").read_bytes().decode(
                    errors="replace"):
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                        pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_worker_dies_with_a_killed_parent(tmp_path: Path) -> None:
    marker = tmp_path / "workdir"
    script = (
        "from pathlib import Path\n"
        "from tools.sandbox import run_job, SandboxLimits\n"
        f"out = Path({str(marker)!r})\n"
        f"run_job({HERE + ':job_pid_then_loop'!r}, {{}}, limits=SandboxLimits(timeout_s=120),"
        " on_event=lambda ev: out.write_text(ev.get('workdir', '')))\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), "the worker never started"
    workdir = marker.read_text()
    assert _processes_naming(workdir), "the worker is not visible from outside"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _processes_naming(workdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _processes_naming(workdir)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "the worker outlived its killed parent"
