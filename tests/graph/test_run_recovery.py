"""Resume's safety nets without a search: damaged checkpoints, moved folders, stale temp dirs.

A real LangGraph ``SqliteSaver`` writes a real checkpoint; ``graph.run.settle`` then reads
a run folder whose ``checkpoints.sqlite`` was truncated, emptied or deleted. Stale
temporary folders are owned by a real child process that has exited.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from agents.settings import Settings
from graph.config import ConfigError
from graph.run import build_parser, checkpoint_problem, settle
from tools.tmpdirs import OWNER_FILE, clean_stale_temp_dirs, make_temp_dir


class _S(TypedDict):
    n: int


def _checkpointed_run(root: Path, name: str = "r1", *, work: bool = True) -> Path:
    """A run folder with settings.json, a real checkpoint of thread ``name`` and work."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    Settings(run_dir=str(run_dir), run_id=name, iter_max=3).save(run_dir / "settings.json")
    g = StateGraph(_S)
    g.add_node("step", lambda s: {"n": s["n"] + 1})
    g.add_edge(START, "step")
    g.add_edge("step", END)
    with sqlite3.connect(run_dir / "checkpoints.sqlite", check_same_thread=False) as conn:
        app = g.compile(checkpointer=SqliteSaver(conn))
        app.invoke({"n": 0}, {"configurable": {"thread_id": name}})
    conn.close()
    if work:
        (run_dir / "cache" / "evaluate").mkdir(parents=True)
        (run_dir / "cache" / "evaluate" / "k.json").write_text("{}")
        (run_dir / "candidates" / "c000").mkdir(parents=True)
    return run_dir


def _resume(root: Path, name: str, *extra: str):
    return settle(build_parser().parse_args(["--resume", name, "--run-dir", str(root), *extra]))


def test_healthy_checkpoint_resumes(tmp_path: Path) -> None:
    run_dir = _checkpointed_run(tmp_path)
    assert checkpoint_problem(run_dir, "r1") is None
    ctx, resuming = _resume(tmp_path, "r1")
    assert resuming and ctx.run_id == "r1"


@pytest.mark.parametrize(("damage", "needle"), [
    ("truncate", "is damaged"),
    ("overwrite", "is damaged"),
    ("empty", "holds no checkpoint"),
    ("delete", "is missing"),
])
def test_damaged_checkpoints_say_what_is_intact(tmp_path: Path, damage: str, needle: str) -> None:
    run_dir = _checkpointed_run(tmp_path)
    db = run_dir / "checkpoints.sqlite"
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    if damage == "truncate":
        data = db.read_bytes()
        db.write_bytes(data[:50])
    elif damage == "overwrite":
        db.write_bytes(b"not a database at all " * 100)
    elif damage == "empty":
        db.write_bytes(b"")
    else:
        db.unlink()
    size = db.stat().st_size if db.exists() else None
    with pytest.raises(ConfigError) as info:
        _resume(tmp_path, "r1")
    msg = str(info.value)
    assert needle in msg and "1 finished evaluation(s)" in msg and "1 candidate folder" in msg
    assert "--resume r1" in msg and "--recover" in msg and "nothing is retrained" in msg
    # Nothing was touched: no new database created where one was missing.
    assert (db.stat().st_size if db.exists() else None) == size
    # On purpose, the recovery goes ahead (graph.run sets the file aside and says so).
    ctx, resuming = _resume(tmp_path, "r1", "--recover")
    assert resuming and ctx.run_id == "r1"


def test_empty_run_without_work_just_starts(tmp_path: Path) -> None:
    run_dir = _checkpointed_run(tmp_path, work=False)
    (run_dir / "checkpoints.sqlite").unlink()
    _, resuming = _resume(tmp_path, "r1")  # a kill before the first checkpoint: no loss
    assert resuming


def test_recover_needs_resume() -> None:
    with pytest.raises(ConfigError, match="--recover goes with --resume"):
        settle(build_parser().parse_args(["--recover"]))


def test_moved_folder_resumes_where_it_is(tmp_path: Path, capsys) -> None:
    old = _checkpointed_run(tmp_path / "before")
    new_root = tmp_path / "after"
    new_root.mkdir()
    old.rename(new_root / "renamed")
    ctx, _ = _resume(new_root, "renamed")
    assert Path(ctx.run_dir) == new_root / "renamed" and ctx.run_id == "r1"  # same thread
    assert checkpoint_problem(Path(ctx.run_dir), ctx.run_id) is None
    assert "moved or copied" in capsys.readouterr().err


# -- stale temporary folders ---------------------------------------------------------------
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temp_dirs_of_dead_owners_are_removed(tmp_path: Path) -> None:
    live = make_temp_dir("flnas-job-", dir=tmp_path)  # this (live) process owns it
    owner = json.loads((live / OWNER_FILE).read_text())
    assert owner["pid"] == os.getpid()
    dead = []
    for prefix in ("flnas-job-", "flnas-eval-", "flnas-export-"):
        d = make_temp_dir(prefix, dir=tmp_path)
        (d / "work").mkdir()
        (d / "work" / "weights.pt").write_bytes(b"x" * 1000)
        (d / OWNER_FILE).write_text(json.dumps({"pid": _dead_pid(), "start": None}))
        dead.append(d)
    recycled = make_temp_dir("flnas-eval-", dir=tmp_path)  # our pid, another start time
    (recycled / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "start": "1"}))
    young = tmp_path / "flnas-job-unowned-young"
    young.mkdir()
    old = tmp_path / "flnas-job-unowned-old"
    old.mkdir()
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    other = tmp_path / "not-ours"
    other.mkdir()

    result = clean_stale_temp_dirs(tmp_path)
    removed = set(result.removed)
    expected = {*dead, old}
    if sys.platform.startswith("linux"):
        expected.add(recycled)
    assert removed == expected
    assert live.exists() and young.exists() and other.exists()
    assert result.kept_live >= 1 and result.bytes_freed >= 3000
    assert "removed" in (result.message() or "") and clean_stale_temp_dirs(tmp_path).removed == []


# -- closing lines ---------------------------------------------------------------------------
def test_closing_lines_say_breaker_fallbacks_skips_and_gap_intervals(tmp_path: Path,
                                                                     capsys) -> None:
    from graph.run_report import print_report

    summary = {
        "stop_reason": "llm_unavailable", "rounds": 2, "candidates": {"total": 3},
        "best": None,
        "test": {"status": "ok", "balanced_accuracy": 0.5, "accuracy": 0.6, "fairness": {
            "sex": {"max_gap": 0.12, "max_gap_interval": [0.03, 0.25],
                    "group_sizes": {"female": 40, "male": 12}},
            "age": {"max_gap": None, "max_gap_interval": None, "group_sizes": {"<40": 5}}}},
        "tokens": {"calls": 4, "input": 100, "output": 20, "fallbacks": 3, "breaker_open": 1},
        "llm": {"breaker": {"open": True, "opened_in_run": 1, "message":
                            "LLM circuit breaker opened after 3 consecutive failed calls"}},
        "data": {"n_skipped": 7, "n_duplicates": 1, "list": "/c/skipped.json"},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert print_report(tmp_path) == 0
    out = capsys.readouterr().out
    assert "sex gap 0.120 [0.03, 0.25] (n 40/12), age gap n/a (one group)" in out
    assert "llm: 4 requests, 120 tokens, 3 steps on the heuristic fallback" in out
    assert "warning: LLM circuit breaker opened after 3 consecutive failed calls" in out
    assert "data: 7 image(s) skipped, 1 in two formats; list: /c/skipped.json" in out


def test_closing_line_gives_the_chosen_designs_seed_mean_not_its_screen(tmp_path: Path,
                                                                        capsys) -> None:
    from graph.run_report import print_report

    best = {"id": "c007", "origin": "designer",
            "val": {"balanced_accuracy": 0.6749, "params": 166008, "latency_ms": 0.132}}
    summary = {"stop_reason": "iter_max", "rounds": 5, "candidates": {"total": 13},
               "best": best, "confirmation": {"train_seeds": [0, 1, 2], "finalists": {
                   "c007": {"seeds": 3, "failed": 0, "balanced_accuracy": {
                       "mean": 0.634, "interval": [0.5451, 0.7229],
                       "values": [0.6749, 0.6081, 0.619]}}}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert print_report(tmp_path) == 0
    assert ("best c007 (designer): val bal.acc 0.634 [0.545, 0.723] over 3 training seeds "
            "(screen 0.675), 166008 params, 0.132 ms") in capsys.readouterr().out
    del summary["confirmation"]  # --confirm-top 0: the one evaluation, marked as such
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert print_report(tmp_path) == 0
    assert "val bal.acc 0.675 (one training seed)," in capsys.readouterr().out
