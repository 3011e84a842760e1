"""Trace writing, reading (torn last line) and the outside-the-worker time split."""

from __future__ import annotations

import io

from graph.trace import Tracer, load_trace, render, time_split
from prompts import load_prompt


def test_tracer_appends_json_lines_and_survives_torn_line(tmp_path):
    tr = Tracer(tmp_path / "trace.jsonl", "r1")
    tr.event("run_start")
    tr.event("tool_call", tool="gate", duration_s=0.5, candidate="c000", ok=True, cached=False)
    tr.close()
    with (tmp_path / "trace.jsonl").open("a") as f:
        f.write('{"event": "node_st')  # a kill -9 mid-line
    tr2 = Tracer(tmp_path / "trace.jsonl", "r1")
    tr2.event("run_resume")
    tr2.close()
    evs = load_trace(tmp_path)
    assert [e["event"] for e in evs] == ["run_start", "tool_call", "run_resume"]
    assert all(e["run_id"] == "r1" and "timestamp" in e for e in evs)
    out = io.StringIO()
    render(tmp_path, out=out)
    assert "gate c000 ok=True" in out.getvalue()


def test_time_split_sums_sessions_without_the_downtime():
    evs = [
        {"event": "run_start", "t": 0.0},
        {"event": "tool_call", "t": 9.0, "duration_s": 8.0},
        {"event": "node_end", "t": 10.0},
        {"event": "run_resume", "t": 0.0},  # new process, clock restarts
        {"event": "tool_call", "t": 4.0, "duration_s": 3.5},
        {"event": "run_end", "t": 5.0},
    ]
    s = time_split(evs)
    assert s["wall_s"] == 15.0 and s["tools_s"] == 11.5
    assert abs(s["outside_frac"] - 3.5 / 15.0) < 1e-9


def test_prompts_are_versioned_and_hashed():
    for name in ("designer.md", "critic.md", "code_fixer.md"):
        p = load_prompt(name)
        assert p.version >= 1 and len(p.sha256) == 16 and p.system and p.user
    system, user = load_prompt("designer.md").render(best_code="x = {'a': 1}")
    assert "x = {'a': 1}" in user and "$budgets" in user


def test_tracer_ignores_a_host_applications_structlog_configuration(tmp_path):
    import structlog

    # What LangGraph's dev server does: a stdlib-bound wrapper (no ``msg`` method).
    structlog.configure(wrapper_class=structlog.stdlib.BoundLogger,
                        logger_factory=structlog.stdlib.LoggerFactory())
    try:
        tracer = Tracer(tmp_path / "trace.jsonl", "r1")
        tracer.event("node_start", node="prepare")
        tracer.close()
    finally:
        structlog.reset_defaults()
    (line,) = load_trace(tmp_path)
    assert line["event"] == "node_start" and line["run_id"] == "r1"
