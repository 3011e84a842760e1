"""Kill the CLI (SIGKILL) mid-search, resume it, and check nothing finished is redone.

The killed run proposes two designs a round, evaluated by two workers at once, and is
killed while round 2's branches train: a finished branch's writes survive the kill.

One killed run (module fixture) serves three checks: the resume redoes nothing and
removes the temporary folders the kill left (but not a live process's); a copy of the
finished run, rewound to the window where a node's writes are saved but the next
checkpoint is not, resumes in its new folder; and ``--recover`` after a damaged
checkpoint searches again reusing every cached evaluation.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.graph.cli_helpers import REPO, TINY, cli_env, events, run_cli
from tools.tmpdirs import OWNER_FILE, make_temp_dir

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


def _flnas_dirs(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.iterdir() if p.name.startswith("flnas-"))


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    tmp = root / "tmp"  # the CLI's $TMPDIR: its temp folders are ours to inspect
    tmp.mkdir()
    env = cli_env(root / "cache", TMPDIR=str(tmp))
    runs = root / "runs"
    args = [*TINY, "--iter-max", "2", "--patience", "9", "--proposals", "2", "--workers", "2",
            "--run-dir", str(runs), "--run-id", "k1"]
    trace = runs / "k1" / "trace.jsonl"

    def evaluating_round_2() -> bool:
        if not trace.exists():
            return False
        evs = events(runs / "k1")
        done = [e for e in evs if e["event"] == "tool_call" and e["tool"] == "evaluate"]
        started = [e for e in evs if e["event"] == "node_start" and e["node"] == "evaluate"
                   and e.get("round") == 2]
        jobs = [p for p in tmp.glob("flnas-job-*")]
        return len(done) >= 3 and bool(started) and bool(jobs)  # c000, c001, c002

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
    return {"root": root, "tmp": tmp, "env": env, "runs": runs, "pid": proc.pid,
            "before": events(runs / "k1")}


@pytest.fixture(scope="module")
def resumed(killed):
    tmp = killed["tmp"]
    stale = _flnas_dirs(tmp)
    owners = {json.loads((p / OWNER_FILE).read_text())["pid"] for p in stale}
    # A concurrently running search's folder (this live process) and one being created
    # (no owner file yet) must survive the cleanup.
    live = make_temp_dir("flnas-eval-", dir=tmp)
    fresh = tmp / "flnas-job-just-created"
    fresh.mkdir()
    res = run_cli(["--resume", "k1", "--run-dir", str(killed["runs"]), "--quiet"],
                  killed["env"])
    return {**killed, "res": res, "stale": stale, "owners": owners, "live": live,
            "fresh": fresh}


def test_sigkill_then_resume_redoes_nothing(resumed):
    runs, before, res = resumed["runs"], resumed["before"], resumed["res"]
    assert res.returncode == 0, res.stderr[-3000:]
    finished_before = {e["key"] for e in before if e["event"] == "tool_call"
                       and e["tool"] == "evaluate"}
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


def test_resume_removes_the_temp_folders_the_kill_left(resumed):
    stale, tmp = resumed["stale"], resumed["tmp"]
    # The kill left the round-2 job's folders, owned by the dead CLI.
    assert any(p.name.startswith("flnas-job-") for p in stale), stale
    assert resumed["owners"] == {resumed["pid"]}
    left = _flnas_dirs(tmp)
    assert not set(stale) & set(left), left
    assert resumed["live"].exists() and resumed["fresh"].exists()
    cleanup = [e for e in events(resumed["runs"] / "k1") if e["event"] == "tmp_cleanup"]
    assert len(cleanup) == 1 and sorted(cleanup[0]["removed"]) == [str(p) for p in stale]
    assert f"removed {len(stale)} temporary folder(s)" in resumed["res"].stderr


def _rewind_to_saved_writes(run_dir: Path, thread: str) -> str:
    """Drop every checkpoint after round 2's fan-out, and the writes of one of its branches.

    What a kill leaves when it lands while round 2's two candidate branches run, after
    the first one's writes were saved: the checkpoint, plus that branch's writes.

    Returns:
        The id of the branch's candidate whose writes were dropped.
    """
    from langgraph.checkpoint.sqlite import SqliteSaver

    from graph.builder import build_graph

    config = {"configurable": {"thread_id": thread}}
    with sqlite3.connect(run_dir / "checkpoints.sqlite", check_same_thread=False) as conn:
        app = build_graph(checkpointer=SqliteSaver(conn))
        target = next(s for s in app.get_state_history(config)
                      if s.next == ("candidate", "candidate"))
        cid = target.config["configurable"]["checkpoint_id"]
        conn.execute("delete from checkpoints where thread_id = ? and checkpoint_id > ?",
                     (thread, cid))
        conn.execute("delete from writes where thread_id = ? and checkpoint_id > ?",
                     (thread, cid))
        lost = app.get_state(config).tasks[1]
        conn.execute("delete from writes where thread_id = ? and checkpoint_id = ? and "
                     "task_id = ?", (thread, cid, lost.id))
        conn.commit()
        snap = app.get_state(config)
        assert snap.next == ("candidate",) and [t.name for t in snap.tasks] == ["candidate"] * 2
        assert [t.result is not None for t in snap.tasks] == [True, False]
    conn.close()
    return str(lost.id)


def test_saved_writes_resume_in_a_copied_folder(resumed):
    runs, env = resumed["runs"], resumed["env"]
    assert resumed["res"].returncode == 0
    copy = runs / "k1-copy"
    shutil.copytree(runs / "k1", copy)
    for name in ("summary.json", "best_model.py", "best_model.onnx"):
        (copy / name).unlink(missing_ok=True)
    _rewind_to_saved_writes(copy, "k1")
    original_trace = (runs / "k1" / "trace.jsonl").read_text()
    n_before = len(events(copy))

    res = run_cli(["--resume", "k1-copy", "--run-dir", str(runs), "--quiet"], env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "already finished" not in res.stderr and "moved or copied" in res.stderr
    assert (runs / "k1" / "trace.jsonl").read_text() == original_trace  # old place untouched
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["stop_reason"] == "iter_max" and summary["test"]["status"] == "ok"
    assert summary["candidates"]["total"] >= 5  # c000 + 2 rounds x 2 proposals
    settings = json.loads((copy / "settings.json").read_text())
    assert Path(settings["run_dir"]) == copy and settings["run_id"] == "k1"
    after = events(copy)[n_before:]
    start = next(e for e in after if e["event"] == "run_resume")
    assert start["next"] == ["candidate", "candidate"]
    assert start["done_not_checkpointed"] == ["candidate"]
    # The branch whose writes were saved is not run again; the other one runs again, but
    # finds its evaluation in the cache: nothing is retrained.
    rerun = {e["candidate"].split("-")[0] for e in after
             if e["event"] == "node_start" and e["node"] == "gate"}
    assert len(rerun) == 1 and rerun <= {"c003", "c004"}, rerun
    tools = [e for e in after if e["event"] == "tool_call" and e["tool"] in ("gate", "evaluate")]
    assert tools and all(e["cached"] for e in tools)


def test_recover_after_a_damaged_checkpoint_reuses_evaluations(resumed):
    runs, env = resumed["runs"], resumed["env"]
    assert resumed["res"].returncode == 0
    bad = runs / "k1-bad"
    shutil.copytree(runs / "k1", bad)
    (bad / "summary.json").unlink()
    db = bad / "checkpoints.sqlite"
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    db.write_bytes(db.read_bytes()[:4096])  # truncated
    n_before = len(events(bad))

    # Without --recover the CLI stops with one message (tests/graph/test_run_recovery.py).
    res = run_cli(["--resume", "k1-bad", "--run-dir", str(runs), "--quiet", "--recover"], env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "recovering run k1" in res.stderr and list(bad.glob("checkpoints.sqlite.damaged-*"))
    after = events(bad)[n_before:]
    names = [e["event"] for e in after]
    assert "run_recover" in names and names.index("run_recover") < names.index("run_start")
    evaluations = [e for e in after if e["event"] == "tool_call" and e["tool"] == "evaluate"]
    assert evaluations and all(e["cached"] for e in evaluations)  # nothing retrained
    assert json.loads((bad / "summary.json").read_text())["test"]["status"] == "ok"
