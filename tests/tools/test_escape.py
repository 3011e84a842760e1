"""The OS sandbox, attacked from inside and checked from outside.

Each hostile job (``tests/tools/hostile.py``) runs as candidate code would after a gate
bypass: with the audit-hook tripwire switched off, straight through libc. The assertions
look at the host: marker files, a loopback listener, a victim process, the canary key,
surviving processes. The reports of the hostile code are only a second opinion.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools import sandbox
from tools.sandbox import SandboxLimits, run_job

HOSTILE = "tests.tools.hostile"
REPO = Path(__file__).resolve().parents[2]
CANARY = "sk-canary-0123456789"

pytestmark = pytest.mark.skipif(sandbox.isolation_problem() is not None,
                                reason=f"no OS sandbox here: {sandbox.isolation_problem()}")


def _survivors(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmd:
            found.append(f"{pid}: {cmd[:200]}")
    return found


@pytest.fixture()
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    yield srv
    srv.close()


def test_escape_attempts_leave_no_trace_on_the_host(tmp_path: Path, listener: socket.socket,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    data = tmp_path / "cache" / "isic-64"
    data.mkdir(parents=True)
    (data / "images.npy").write_bytes(b"images")
    sibling = tmp_path / "cache" / "isic-32" / "labels.npy"
    sibling.parent.mkdir()
    sibling.write_text("LABELS-OF-ANOTHER-SIZE")
    secret = tmp_path / "secret.txt"
    secret.write_text("HOST-SECRET")
    host_files = [str(tmp_path / "marker"), "/tmp/flnas-escape-marker",
                  "/dev/shm/flnas-escape-marker"]
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    repo_file = REPO / "tools" / "pwned.py"
    try:
        res = run_job(f"{HOSTILE}:job_escape", {
            "host_files": host_files, "repo_file": str(repo_file), "secret": str(secret),
            "sibling_labels": str(sibling), "parent_pid": os.getpid(), "port":
            listener.getsockname()[1], "victim_pid": victim.pid},
            read_only=[data / "images.npy"], limits=SandboxLimits(timeout_s=120))
        assert res.ok, (res.error, res.stderr_tail)
        # From outside: nothing written, nobody connected, the victim lives.
        for path in host_files:
            assert not Path(path).exists(), path
        assert not repo_file.exists()
        with pytest.raises(TimeoutError):
            listener.accept()
        assert victim.poll() is None
    finally:
        victim.kill()
        for path in host_files:
            Path(path).unlink(missing_ok=True)
        repo_file.unlink(missing_ok=True)
    everything = json.dumps(res.model_dump())
    for leaked in (CANARY, "HOST-SECRET", "LABELS-OF-ANOTHER-SIZE", "root:"):
        assert leaked not in everything, leaked
    # The hostile code's own view agrees: the kernel said no to each step.
    out = res.result
    eperm = "failed: " + os.strerror(errno.EPERM)  # what the seccomp filter answers
    for name in ("unshare_user", "unshare_net", "setns", "remount_root_rw", "mount_tmpfs",
                 "chroot", "ptrace_init", "fork", "execve", "io_uring", "bpf"):
        assert out[name] == eperm, (name, out[name])
    assert out["tcp_loopback"] == "socket " + eperm, out["tcp_loopback"]
    # The project's code is bound read-only; host files outside the job are not mounted.
    assert out["write_repo"] == "failed: " + os.strerror(errno.EROFS), out["write_repo"]
    for name in ("read_shadow", "read_host_secret", "read_sibling_labels"):
        assert out[name] == "failed: " + os.strerror(errno.ENOENT), (name, out[name])
    assert out["uid"] == "65534"
    for layer in ("bubblewrap", "userns", "pidns", "netns", "mntns", "ipcns", "no-caps",
                  "no-new-privs", "seccomp", "uid-65534", "fs-readonly"):
        assert layer in res.isolation, (layer, res.isolation)


def test_c_level_spawn_and_torch_file_io_are_stopped(tmp_path: Path) -> None:
    marker = tmp_path / "spawned"
    res = run_job(f"{HOSTILE}:job_posixsubprocess", {"marker": str(marker)},
                  limits=SandboxLimits(timeout_s=60))
    assert res.ok, (res.error, res.stderr_tail)
    # The seccomp filter refuses the process creation itself (EPERM).
    assert res.result["spawn"] == "failed: " + os.strerror(errno.EPERM), res.result
    assert not marker.exists()
    secret = tmp_path / "labels.npy"
    secret.write_text("labels")
    outside = tmp_path / "native.pt"
    res = run_job(f"{HOSTILE}:job_torch_native", {"outside": str(outside),
                                                  "secret": str(secret)},
                  limits=SandboxLimits(timeout_s=60))
    assert res.ok, (res.error, res.stderr_tail)
    assert not outside.exists() and res.result["native_read"] != "labels"


def test_no_process_outlives_the_job(tmp_path: Path) -> None:
    marker = tmp_path / "daemon"
    res = run_job(f"{HOSTILE}:job_daemon", {"marker": str(marker)},
                  limits=SandboxLimits(timeout_s=60))
    assert res.ok, (res.error, res.stderr_tail)
    assert res.result["threads"] == "ok"
    assert res.result["fork"] == "failed: " + os.strerror(errno.EPERM), res.result["fork"]
    time.sleep(1.5)
    assert not marker.exists()
    assert not _survivors(res.result["workdir"]), _survivors(res.result["workdir"])


def test_parent_survives_what_the_job_leaves_behind(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("HOST-SECRET")
    keep = tmp_path / "kept"
    res = run_job(f"{HOSTILE}:job_leave_traps", {"host_secret": str(secret)},
                  limits=SandboxLimits(timeout_s=60), keep_workdir=keep)
    assert not res.ok and res.error_kind == "invalid-result", (res.error_kind, res.error)
    assert "HOST-SECRET" not in json.dumps(res.model_dump())
    kept = sorted(p.name for p in keep.iterdir())
    assert "job.json" in kept
    traps = {"libshm.sock", "pipe", "weights.pt", "secret-link", "result.json",
             "result.json.tmp"}
    assert not traps & set(kept)
    assert set(res.skipped_outputs) == traps  # they were there, and left behind
    t0 = time.monotonic()
    res = run_job(f"{HOSTILE}:job_fifo_result", {}, limits=SandboxLimits(timeout_s=60))
    assert not res.ok and res.error_kind == "invalid-result" and time.monotonic() - t0 < 30
    res = run_job(f"{HOSTILE}:job_huge_event", {}, limits=SandboxLimits(timeout_s=60),
                  on_event=lambda e: None)
    assert res.ok and res.result == {"survived": True}


def test_require_isolation_refuses_without_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.iso, "bwrap_path", lambda: None)
    res = run_job("tests.tools.test_sandbox:job_echo", {},
                  limits=SandboxLimits(timeout_s=60, require_isolation=True))
    assert not res.ok and res.error_kind == "isolation"
    assert "bubblewrap" in res.error and "--no-require-isolation" in res.error
    res = run_job("tests.tools.test_sandbox:job_echo", {},
                  limits=SandboxLimits(timeout_s=60, require_isolation=False))
    assert res.ok and "bubblewrap" not in res.isolation and "seccomp" in res.isolation


@pytest.mark.parametrize(("mb_per_file", "limits"), [
    (1, {"max_output_mb": 24}), (0, {"max_output_files": 300})])
def test_filling_the_disk_stops_the_job(mb_per_file: int, limits: dict) -> None:
    res = run_job(f"{HOSTILE}:job_fill_disk", {"mb_per_file": mb_per_file},
                  limits=SandboxLimits(timeout_s=120, **limits))
    assert not res.ok and res.error_kind == "killed", (res.error_kind, res.error)
    assert "work dir past the limit" in res.error
    assert res.wall_s < 60


def test_worker_refuses_without_seccomp_when_isolation_is_required(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import pyseccomp

    real = sandbox.iso.bwrap_command

    def without_seccomp(*args, **kwargs):  # hide libseccomp's bindings inside the sandbox
        cmd = real(*args, **kwargs)
        at = cmd.index("--")
        return [*cmd[:at], "--ro-bind", "/dev/null", pyseccomp.__file__, *cmd[at:]]

    monkeypatch.setattr(sandbox.iso, "bwrap_command", without_seccomp)
    res = run_job("tests.tools.test_sandbox:job_echo", {},
                  limits=SandboxLimits(timeout_s=60, require_isolation=True))
    assert not res.ok and res.error_kind == "isolation", (res.error_kind, res.error)
    assert "seccomp" in res.error and "seccomp" not in res.isolation
    res = run_job("tests.tools.test_sandbox:job_echo", {},
                  limits=SandboxLimits(timeout_s=60, require_isolation=False))
    assert res.ok and "seccomp" not in res.isolation and "bubblewrap" in res.isolation
