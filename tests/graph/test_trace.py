"""Trace writing, reading (torn last line) and the outside-the-worker time split."""

from __future__ import annotations

import io

from graph.trace import Tracer, load_trace, render, time_split


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
    assert "gate c000: ok, 0.50s" in out.getvalue()


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


# ----------------------------------------------------------------- timeline and CLI

import contextlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import pytest  # noqa: E402

from graph.trace import estimate_cost, main, price_of  # noqa: E402
from tests.graph.cli_helpers import REPO  # noqa: E402


def _search_trace(run_dir, *, end: bool = True):
    """A small but complete trace: a critique, a design, a gate failure, a fix, an LLM call."""
    tr = Tracer(run_dir / "trace.jsonl", "t1")
    tr.event("run_start", settings={"llm": "openai:gpt-4.1", "image_size": 32, "epochs": 1,
                                    "iter_max": 1, "max_params": 150000}, n_images=200)
    tr.event("node_start", node="prepare", round=0, candidate=None)
    tr.event("tool_call", tool="evaluate", candidate="c000", split="val", cached=False, ok=True,
             duration_s=1.5, fidelity={"epochs": 1, "image_size": 32, "n_images": 200})
    tr.event("candidate", candidate="c000", outcome="ok", origin="template", parent=None,
             round=0, metrics={"balanced_accuracy": 0.31, "max_gap": 0.2, "params": 147320,
                               "latency_ms": 1.2})
    tr.event("node_end", node="prepare", round=0, candidate=None, duration_s=1.6,
             updated=["candidates"])
    tr.event("llm_call", role="critic", model="openai:gpt-4.1", candidate="c000",
             prompt=[{"role": "system", "content": "You are the Critic."},
                     {"role": "user", "content": "Budgets: PROMPT-MARKER"}],
             response='{"summary": "ANSWER-MARKER"}', input_tokens=1000, output_tokens=100,
             latency_s=0.8, retries=0, reasks=0, error=None, cost_usd=0.0028)
    tr.event("critique", role="critic", round=0, candidate="c000", brain="openai:gpt-4.1",
             summary="age >=60 lags by 0.12", violated_budgets=[],
             lagging_groups=[{"attribute": "age", "group": ">=60", "accuracy": 0.2,
                              "gap": 0.12}],
             priorities=["close the gap"], suggestions=["widen early layers"], converged=False)
    tr.event("node_start", node="designer", round=1, candidate="c001")
    tr.event("design", role="designer", round=1, candidate="c001", parent="c000",
             brain="heuristic", rationale="widen_early because age lags", design="stem 24",
             critique="age >=60 lags by 0.12", critique_about="c000")
    tr.event("gate", candidate="c001", round=1, ok=False, stage="budget",
             message="parameters 177,008 > budget 150,000\n- shrink the model")
    tr.event("fix", role="code_fixer", round=1, candidate="c001-fix1", fixes="c001", attempt=1,
             stage="budget", error="parameters 177,008 > budget 150,000",
             diagnosis="applied shrink_width", brain="heuristic")
    tr.event("gate", candidate="c001-fix1", round=1, ok=True, params=93944, flops=5_000_000)
    tr.event("candidate", candidate="c001-fix1", outcome="ok", origin="fixer", parent="c001",
             round=1, metrics={"balanced_accuracy": 0.33, "max_gap": 0.1, "params": 93944,
                               "latency_ms": 1.0})
    tr.event("round_end", round=1, candidate="c001-fix1", hv=0.5, best="c001-fix1",
             stale_rounds=0, duration_s=4.2)
    tr.event("stop", reason="iter_max", round=1, best="c001-fix1")
    if end:
        tr.event("run_end")
    tr.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m graph.trace ARGS`` in this process (the follow test starts a real one)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as exc:  # argparse errors
            rc = int(exc.code or 0)
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())


def test_timeline_says_who_decided_what_and_why(tmp_path):
    _search_trace(tmp_path)
    out = io.StringIO()
    render(tmp_path, out=out)
    text = out.getvalue()
    for want in ("round 0", "round 1", "critic [openai:gpt-4.1] on c000: age >=60 lags by 0.12",
                 "lagging: age=>=60 acc 0.200", "suggestions: widen early layers",
                 "designer [heuristic] -> c001 from c000: stem 24",
                 "why: widen_early because age lags",
                 "gate c001 FAILED at budget: parameters 177,008 > budget 150,000",
                 "code_fixer [heuristic] -> c001-fix1 repairs c001",
                 "diagnosis: applied shrink_width", "evaluate c000 on val (1 ep, 32 px, n=200)",
                 "[call 1] critic openai:gpt-4.1: 1000 in / 100 out tokens $0.0028",
                 "round 1 done in 4.2s", "stop: iter_max", "llm critic: 1 calls"):
        assert want in text, want
    assert text.index("critic [openai") < text.index("designer [heuristic]") \
        < text.index("gate c001 FAILED") < text.index("code_fixer")
    assert "PROMPT-MARKER" not in text  # prompts only with --llm / --call


def test_filters_by_role_candidate_and_round(tmp_path):
    _search_trace(tmp_path)
    only_critic = _cli(str(tmp_path), "--role", "critic").stdout
    assert "critic [openai" in only_critic and "designer [" not in only_critic
    assert "totals" not in only_critic
    fix = _cli(str(tmp_path), "--candidate", "c001").stdout  # c001 and its fixes
    assert "c001-fix1 ok" in fix and "gate c001 FAILED" in fix and "c000 ok" not in fix
    r0 = _cli(str(tmp_path), "--round", "0").stdout
    assert "c000 ok" in r0 and "designer [" not in r0
    gate = _cli(str(tmp_path), "--role", "gate", "--json").stdout.splitlines()
    rows = [json.loads(line) for line in gate]
    assert {r["event"] for r in rows} == {"gate"} and len(rows) == 2
    assert all("_round" not in r for r in rows)


def test_call_prints_one_llm_call_in_full(tmp_path):
    _search_trace(tmp_path)
    out = _cli(str(tmp_path), "--call", "1")
    assert out.returncode == 0
    assert "You are the Critic." in out.stdout and "PROMPT-MARKER" in out.stdout
    assert "ANSWER-MARKER" in out.stdout
    js = json.loads(_cli(str(tmp_path), "--call", "1", "--json").stdout)
    assert js["role"] == "critic" and js["response"] == '{"summary": "ANSWER-MARKER"}'
    missing = _cli(str(tmp_path), "--call", "7")
    assert missing.returncode == 2 and "no LLM call 7" in missing.stderr


def test_diff_shows_two_candidates_code(tmp_path):
    _search_trace(tmp_path)
    for cid, width in (("c001", 24), ("c001-fix1", 16)):
        (tmp_path / "candidates" / cid).mkdir(parents=True)
        (tmp_path / "candidates" / cid / "model.py").write_text(
            f"STEM = {width}\nDEPTH = 2\n")
    out = _cli(str(tmp_path), "diff", "c001", "c001-fix1")
    assert out.returncode == 0
    assert "-STEM = 24" in out.stdout and "+STEM = 16" in out.stdout
    assert "DEPTH" in out.stdout and "-DEPTH" not in out.stdout
    js = json.loads(_cli(str(tmp_path), "diff", "c001", "c001-fix1", "--json").stdout)
    assert "+STEM = 16" in js["diff"]
    bad = _cli(str(tmp_path), "diff", "c001", "c404")
    assert bad.returncode == 2 and "c404" in bad.stderr and "c001-fix1" in bad.stderr


def test_follow_tails_a_running_search_until_it_ends(tmp_path):
    tr = Tracer(tmp_path / "trace.jsonl", "f1")
    tr.event("run_start", settings={"llm": "heuristic"}, n_images=10)
    proc = subprocess.Popen([sys.executable, "-m", "graph.trace", str(tmp_path), "--follow"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(1.5)
        assert proc.poll() is None  # still following
        tr.event("candidate", candidate="c000", outcome="ok", origin="template", round=0,
                 metrics={"balanced_accuracy": 0.3})
        with (tmp_path / "trace.jsonl").open("a") as f:  # a line being written ...
            f.write('{"event": "stop", "reason": "pat')
            f.flush()
            time.sleep(1.0)
            f.write('ience", "round": 3, "best": "c000"}\n')  # ... completed later
        tr2 = Tracer(tmp_path / "trace.jsonl", "f1")
        tr2.event("run_end")
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "c000 ok (template" in out and "stop: patience" in out and "run end" in out


def test_trace_cli_errors_are_one_line(tmp_path):
    out = _cli(str(tmp_path / "nope"))
    assert out.returncode == 2 and "trace.jsonl not found" in out.stderr
    bad = _cli(str(tmp_path), "frobnicate")
    assert bad.returncode == 2 and "diff A B" in bad.stderr


def test_costs_use_known_prices_only(monkeypatch):
    assert price_of("openai:gpt-4.1") == (2.0, 8.0)
    assert price_of("openai:gpt-4.1-mini-2025-04-14") == (0.40, 1.60)  # not gpt-4.1's
    assert estimate_cost("openai:gpt-4.1", 1_000_000, 100_000) == pytest.approx(2.8)
    assert estimate_cost("http://127.0.0.1:8000/v1:qwen", 10, 10) is None
    assert estimate_cost("heuristic", 0, 0) is None
    monkeypatch.setenv("FLNAS_LLM_PRICES", '{"http://127.0.0.1:8000/v1:qwen": [1, 2]}')
    assert estimate_cost("http://127.0.0.1:8000/v1:qwen", 1_000_000, 1_000_000) == 3.0


# ------------------------------------------------------------ a real heuristic run


@pytest.mark.e2e
def test_every_decision_of_a_heuristic_run_is_in_the_trace(heuristic_run):
    run_dir, _ = heuristic_run
    evs = load_trace(run_dir)
    kinds = Counter(e["event"] for e in evs)
    nodes = Counter(e["node"] for e in evs if e["event"] == "node_end")
    assert kinds["critique"] == nodes["critic"] == 3
    assert kinds["design"] == nodes["designer"] == 2
    assert kinds["fix"] == nodes["code_fixer"] >= 1
    for c in (e for e in evs if e["event"] == "critique"):
        assert c["brain"] == "heuristic" and c["summary"] and c["priorities"]
    for d in (e for e in evs if e["event"] == "design"):
        assert d["rationale"] and d["design"] and d["parent"] and d["critique"]
    fix = next(e for e in evs if e["event"] == "fix")
    assert fix["stage"] == "budget" and "150,000" in fix["error"] and fix["diagnosis"]
    failed = [e for e in evs if e["event"] == "gate" and not e["ok"]]
    assert failed and failed[0]["stage"] == "budget" and "150,000" in failed[0]["message"]
    evals = [e for e in evs if e["event"] == "tool_call" and e["tool"] == "evaluate"]
    assert {e["split"] for e in evals} == {"val", "test"}
    assert all(e["fidelity"]["epochs"] == 3 and e["fidelity"]["image_size"] == 32
               and e["fidelity"]["n_images"] == 200 for e in evals)
    # The confirmation rung differs from the search's only in the training seed.
    assert {e["fidelity"]["seed"] for e in evals} == {0, 1}
    rounds = [e for e in evs if e["event"] == "round_end"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["duration_s"] > 0 and r["hv"] > 0 and r["best"] for r in rounds)
    assert all("candidate" in e for e in evs if e["event"] == "node_end")
    notes = [e for e in evs if e["event"] == "note"]
    assert {n["role"] for n in notes} >= {"prepare", "auditor"}
    out = _cli(str(run_dir)).stdout
    assert "critic [heuristic] on c000" in out and "designer [heuristic] -> c001" in out
    assert "code_fixer [heuristic] -> c001-fix1" in out and "time per round: 1:" in out
