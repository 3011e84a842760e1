"""Kill the CLI (SIGKILL) mid-search, resume it, and check nothing finished is redone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.graph.cli_helpers import REPO, TINY, cli_env, events, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _wait_for(pred, proc, timeout=180.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def test_sigkill_then_resume_redoes_nothing(tmp_path):
    env = cli_env(tmp_path / "cache")
    runs = tmp_path / "runs"
    args = [*TINY, "--iter-max", "2", "--patience", "9", "--run-dir", str(runs),
            "--run-id", "k1"]
    trace = runs / "k1" / "trace.jsonl"

    def evaluating_round_2() -> bool:
        if not trace.exists():
            return False
        evs = events(runs / "k1")
        done = [e for e in evs if e["event"] == "tool_call" and e["tool"] == "evaluate"]
        started = [e for e in evs if e["event"] == "node_start" and e["node"] == "evaluate"
                   and e.get("round") == 2]
        return len(done) >= 2 and bool(started)

    proc = subprocess.Popen([sys.executable, "-m", "graph.run", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert _wait_for(evaluating_round_2, proc), proc.stderr.read() if proc.stderr else ""
        time.sleep(1.0)  # let the round-2 training get under way
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its sandboxed workers
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (runs / "k1" / "summary.json").exists()
    before = events(runs / "k1")
    finished_before = {e["key"] for e in before if e["event"] == "tool_call"
                       and e["tool"] == "evaluate"}

    res = run_cli(["--resume", "k1", "--run-dir", str(runs), "--quiet"], env)
    assert res.returncode == 0, res.stderr[-3000:]
    evs = events(runs / "k1")
    assert len(evs) > len(before)  # the trace was appended, not replaced
    kinds = Counter(e["event"] for e in evs)
    assert kinds["run_start"] == 1 and kinds["run_resume"] == 1 and kinds["run_end"] == 1

    # No candidate trained twice: every evaluation key ran uncached at most once, and
    # keys finished before the kill were not evaluated again at all.
    fresh = Counter(e["key"] for e in evs if e["event"] == "tool_call"
                    and e["tool"] == "evaluate" and not e["cached"])
    assert fresh and max(fresh.values()) == 1, fresh
    after_resume = evs[len(before):]
    again = {e["key"] for e in after_resume if e["event"] == "tool_call"
             and e["tool"] == "evaluate"}
    assert not (again & finished_before)
    # The designer answers already checkpointed are not asked again.
    designed = Counter(e["round"] for e in evs if e["event"] == "node_end"
                       and e["node"] == "designer")
    assert designed == {1: 1, 2: 1}
    summary = json.loads((runs / "k1" / "summary.json").read_text())
    assert summary["stop_reason"] == "iter_max" and summary["rounds"] == 2
    assert summary["test"]["status"] == "ok"
