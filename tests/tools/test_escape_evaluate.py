"""A gate bypass, end to end through ``tools.evaluate``: the OS layers still hold.

The static gate is switched off here (as if an attacker had found a hole in it), so the
hostile candidate's ``build_model`` runs inside the real evaluation job. What it tries
is checked from outside: marker files, the canary key, the label files' bytes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

import tools.gate
from tasks.data_args import add_data_args, prepare_from_args
from tools import sandbox
from tools.evaluate import evaluate_candidate
from tools.payloads import label_files
from tools.train import Recipe

CANARY = "sk-canary-evaluate-42"
HOSTILE = '''
import ctypes, gc, os

def _read(libc, path):
    fd = libc.open(path.encode(), 0)
    if fd < 0:
        return "denied:" + os.strerror(ctypes.get_errno())
    buf = ctypes.create_string_buffer(4096)
    n = libc.read(fd, buf, 4096)
    return "READ:" + buf.raw[:max(n, 0)].hex()

def build_model(num_classes):
    for obj in gc.get_objects():
        if type(obj).__name__ == "AuditState":
            obj.armed = False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.open(MARKER.encode(), 0o101, 0o644)
    found = [_read(libc, p) for p in PATHS]
    raise RuntimeError(" ".join(found))
'''

pytestmark = pytest.mark.skipif(sandbox.isolation_problem() is not None,
                                reason=f"no OS sandbox here: {sandbox.isolation_problem()}")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("escape-cache")
    args = add_data_args(argparse.ArgumentParser()).parse_args(
        ["--synthetic", "--synthetic-n", "160", "--image-size", "32", "--seed", "0",
         "--cache-dir", str(root)])
    return prepare_from_args(args, progress=False)


def test_gate_bypass_cannot_read_labels_or_secrets(data, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setattr(tools.gate, "static_check", lambda code, **kw: tools.gate.GateReport(
        ok=True, checks=[]))
    marker = tmp_path / "evaluate-marker"
    secrets = [*label_files(data), "/etc/shadow", f"/proc/{os.getpid()}/environ",
               "/proc/1/environ"]
    code = f"MARKER = {str(marker)!r}\nPATHS = {secrets!r}\n" + HOSTILE
    report = evaluate_candidate(code, data, recipe=Recipe(epochs=1, batch_size=32),
                                gate_report=tools.gate.GateReport(ok=True))
    assert report.status == "failed" and report.failure_stage == "crash"
    reason = report.failure_reason or ""
    assert reason.count("denied:") >= len(secrets) - 1, reason[:500]  # the attack did run
    assert "READ:" not in reason.replace(_proc1_env_read(reason), ""), reason[:500]
    assert CANARY not in report.model_dump_json()
    assert not marker.exists()
    for layer in ("bubblewrap", "seccomp", "netns", "mntns", "pidns", "no-caps"):
        assert layer in report.isolation, (layer, report.isolation)


def _proc1_env_read(reason: str) -> str:
    """The sandbox's own init may be readable: its environment is the minimal one."""
    parts = reason.split()
    last = parts[-1] if parts else ""
    if last.startswith("READ:"):
        env = bytes.fromhex(last[5:]).decode(errors="replace")
        assert CANARY not in env and "OPENAI" not in env, env
        return last
    return ""
