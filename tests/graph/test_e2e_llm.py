"""The LLM path through the real CLI and the real ChatOpenAI client over HTTP.

A local OpenAI-compatible server (tests/fakes/openai_server.py) answers per role from
scripted queues: a valid design after a 429; a design that fails the gate, driving the
Code-Fixer, whose first answer is malformed JSON (re-asked); a Critic answer that times
out once (retried); and the last Critic call fails every retry (heuristic fallback), which
opens the circuit breaker (``--llm-breaker-after 1``): the console, the trace and
summary.json say so.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict, deque

import pytest

from tasks.genome import TEMPLATE_GENOME, render
from tasks.mutations import MUTATIONS
from tests.fakes.openai_server import ChatRequest, FakeOpenAIServer, Reply
from tests.graph.cli_helpers import TINY, cli_env, events, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CRITIQUE = {"summary": "template is fine; add capacity", "violated_budgets": [],
            "lagging_groups": [], "priorities": ["raise balanced accuracy"],
            "suggestions": ["widen the network"], "converged": False}
GOOD = render(MUTATIONS["shrink_width"](TEMPLATE_GENOME, random.Random(0)))
BAD = "import os\n" + render(TEMPLATE_GENOME)  # fails the gate's import policy
FIXED = render(MUTATIONS["add_se"](TEMPLATE_GENOME, random.Random(0)))


class Scripted:
    """Per-role queues, picked by the expected schema name of each request."""

    def __init__(self) -> None:
        self.queues: dict[str, deque] = {
            # The last critique (round 2) fails every retry: the breaker opens at the end.
            "Critique": deque([Reply.json(CRITIQUE).delayed(4.0), Reply.json(CRITIQUE),
                               Reply.json(CRITIQUE)] + [Reply.server_error()] * 5),
            "Design": deque([Reply.rate_limited(), Reply.json(
                {"rationale": "narrower to save latency", "code": GOOD}),
                Reply.json({"rationale": "uses os", "code": BAD})]),
            "Fix": deque([Reply.text("Sorry, here is {not json"),
                          Reply.json({"explanation": "removed import os", "code": FIXED})]),
        }
        self.seen: dict[str, int] = defaultdict(int)

    def __call__(self, request: ChatRequest) -> Reply:
        name = request.schema_name or "?"
        self.seen[name] += 1
        queue = self.queues.get(name)
        if queue:
            return queue.popleft()
        if name == "Critique":
            return Reply.json(CRITIQUE)
        return Reply.fail(400, f"unexpected request for {name}")


def test_llm_roles_over_http(tmp_path):
    script = Scripted()
    with FakeOpenAIServer(default=script, models=["test-model"]) as server:
        env = cli_env(tmp_path / "cache", FLNAS_RETRY_WAIT_INITIAL="0.01",
                      FLNAS_RETRY_WAIT_MAX="0.05")
        proc = run_cli([*TINY, "--iter-max", "2", "--patience", "5", "--llm", "local",
                        "--base-url", server.base_url, "--model", "test-model",
                        "--critic-model", "test-model", "--llm-timeout", "2",
                        "--llm-breaker-after", "1",
                        "--run-dir", str(tmp_path / "runs"), "--run-id", "l1"], env)
        requests = server.chat_requests
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "l1"
    evs = events(run_dir)
    calls = [e for e in evs if e["event"] == "llm_call"]
    by_role = defaultdict(list)
    for c in calls:
        by_role[c["role"]].append(c)
    assert {"designer", "critic", "code_fixer"} <= set(by_role)
    for c in calls:
        assert c["model"].endswith(":test-model") and c["prompt_sha256"]
        assert c["prompt"][0]["role"] == "system" and "latency_s" in c
    ok = [c for c in calls if c["error"] is None]
    assert all(c["input_tokens"] > 0 and c["output_tokens"] > 0 for c in ok)

    # 429 then success: one designer record with a transport retry.
    assert by_role["designer"][0]["retries"] == 1 and by_role["designer"][0]["error"] is None
    # Timeout then success on the first critique.
    assert by_role["critic"][0]["retries"] >= 1 and by_role["critic"][0]["error"] is None
    # Malformed JSON from the fixer: the second record is a re-ask that succeeds.
    fixer = by_role["code_fixer"]
    assert fixer[0]["error"] and fixer[-1]["reasks"] >= 1 and fixer[-1]["error"] is None
    # The critic call that failed every retry fell back to the heuristic brain.
    fallbacks = [e for e in evs if e["event"] == "llm_fallback"]
    assert [f["role"] for f in fallbacks] == ["critic"]
    state_critiques = [e for e in evs if e["event"] == "node_end" and e["node"] == "critic"]
    assert len(state_critiques) == 3

    # The bad design failed the gate and the fixer's code became its own candidate.
    outcomes = {e["candidate"]: e for e in evs if e["event"] == "candidate"}
    assert outcomes["c001"]["outcome"] == "ok"
    assert "c002" not in outcomes or outcomes["c002"]["outcome"] == "failed"
    assert outcomes["c002-fix1"]["origin"] == "fixer"
    assert outcomes["c002-fix1"]["parent"] == "c002"
    rec = json.loads((run_dir / "candidates" / "c002" / "report.json").read_text())
    assert rec["gate"]["ok"] is False and rec["fixes"][0]["fixed_by"] == "c002-fix1"
    assert (run_dir / "candidates" / "c002-fix1" / "model.py").read_text() == FIXED

    summary = json.loads((run_dir / "summary.json").read_text())
    tokens = summary["tokens"]
    assert tokens["input"] > 0 and tokens["output"] > 0 and tokens["fallbacks"] == 1
    assert summary["llm"]["designer"].endswith(":test-model")
    # The failed critic call opened the breaker (threshold 1): said in all three places.
    breaker = summary["llm"]["breaker"]
    assert breaker["open"] and breaker["opened_in_run"] == 1 and breaker["action"] == "heuristic"
    assert "circuit breaker opened after 1 consecutive" in breaker["message"]
    opened = [e for e in evs if e["event"] == "llm_breaker_open"]
    assert len(opened) == 1 and opened[0]["role"] == "critic"
    assert "circuit breaker opened" in proc.stdout and "1 steps on the heuristic" in proc.stdout
    # Each attempt of the failed call is traced with its status; attempts count HTTP.
    assert fallbacks[0]["attempts"] == 5 and fallbacks[0]["attempt_kinds"] == ["server_error"] * 5
    failed = [c for c in by_role["critic"] if c["error"]]
    assert failed[-1]["attempts"][-1] == {"kind": "server_error", "error_class": "OpenAIAPIError",
                                          "status": 500}
    assert len(requests) == sum(script.seen.values())
