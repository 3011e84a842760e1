"""Hostile LLM answers through the real CLI: nothing reaches the host or the provider.

The local OpenAI-compatible server answers the Designer and the Code-Fixer with attack
code (``tests/graph/attacks/``): a ``match`` pattern that walks into ``__globals__`` to
reach ``open`` and ``__import__``, then reads ``/etc/shadow`` and the parent's
environment, connects to a listener on the host's loopback and writes a marker file; and
a format string that walks into globals. Checked from outside: no marker, no
connection, and neither the canary API key nor any host secret in the run folder or in
any request the provider received (failure messages are sent back to the LLM). Run with the
local pool and, when Ray is installed, inside Ray tasks.
"""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import pytest

from tests.fakes.openai_server import ChatRequest, FakeOpenAIServer, Reply
from tests.graph.cli_helpers import TINY, cli_env, events, run_cli
from tools import sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    sandbox.isolation_problem() is not None, reason="no OS sandbox here")]

ATTACKS = Path(__file__).parent / "attacks"
CANARY = "sk-canary-cli-0042"
CRITIQUE = {"summary": "add capacity", "violated_budgets": [], "lagging_groups": [],
            "priorities": ["raise balanced accuracy"], "suggestions": ["widen"],
            "converged": False}


@pytest.mark.parametrize("executor", [
    "local", pytest.param("ray", marks=pytest.mark.skipif(
        importlib.util.find_spec("ray") is None, reason="Ray not installed"))])
def test_hostile_designs_are_contained(tmp_path: Path, executor: str) -> None:
    # The same attacks whether the candidate runs in the local pool or inside a Ray task.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    marker = tmp_path / "marker"
    escape = (ATTACKS / "match_escape.py").read_text().replace(
        "PORT = 0", f"PORT = {srv.getsockname()[1]}").replace(
        'MARKER = "marker"', f"MARKER = {str(marker)!r}")
    walk = (ATTACKS / "format_walk.py").read_text()

    def answer(request: ChatRequest) -> Reply:
        if request.schema_name == "Design":
            return Reply.json({"rationale": "faster", "code": escape})
        if request.schema_name == "Fix":
            return Reply.json({"explanation": "fixed", "code": walk})
        return Reply.json(CRITIQUE)

    with FakeOpenAIServer(default=answer, models=["test-model"]) as server:
        env = cli_env(tmp_path / "cache", OPENAI_API_KEY=CANARY)
        proc = run_cli([*TINY, "--executor", executor, "--iter-max", "1", "--llm", "local",
                        "--base-url",
                        server.base_url, "--model", "test-model", "--run-dir",
                        str(tmp_path / "runs"), "--run-id", "atk"], env)
        sent = " ".join(r.all_text for r in server.chat_requests)
    try:
        with pytest.raises(TimeoutError):
            srv.accept()
    finally:
        srv.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not marker.exists()
    run_dir = tmp_path / "runs" / "atk"
    evs = events(run_dir)
    failed = [e for e in evs if e["event"] == "candidate" and e["outcome"] == "failed"]
    assert failed, "the hostile candidates should fail"
    assert any(r.schema_name == "Fix" for r in server.chat_requests)
    # The gate, a filter in front of the sandbox, names each attack for the Code-Fixer.
    rec = json.loads((run_dir / "candidates" / "c001" / "report.json").read_text())
    assert rec["gate"]["ok"] is False and "match class pattern" in rec["gate"]["message"]
    assert "'.format' on something other than a string constant" in sent
    files = " ".join(p.read_text(errors="replace") for p in run_dir.rglob("*")
                     if p.is_file() and p.suffix in (".json", ".jsonl", ".py", ".md"))
    for text in (files, sent):
        assert CANARY not in text
        assert "root:" not in text  # no /etc/shadow line
