"""LangSmith-ready runs: node and LLM runs carry the run id, round, role and candidate.

Checked offline with a LangChain callback handler (what LangSmith's tracer is): the real
critic node, wrapped as the builder wraps it, asks the real ChatOpenAI client over HTTP
(a local fake server) inside a one-node graph.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langgraph.graph import END, START, StateGraph

from agents.registry import create_role, load_roles
from agents.settings import Settings
from graph.builder import role_node, traced
from graph.services import ServicesFor
from graph.state import State
from graph.trace import langsmith_tags, load_trace
from tests.fakes.openai_server import FakeOpenAIServer, Reply

CRITIQUE = {"summary": "fine", "violated_budgets": [], "lagging_groups": [],
            "priorities": ["raise balanced accuracy"], "suggestions": ["widen"],
            "converged": False}


class Recorder(BaseCallbackHandler):
    """Keeps the name, tags and metadata of every chain and chat-model run."""

    def __init__(self) -> None:
        self.chains: list[dict[str, Any]] = []
        self.llms: list[dict[str, Any]] = []

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, tags=None,
                       metadata=None, **kw):
        self.chains.append({"name": kw.get("name"), "tags": list(tags or []),
                            "metadata": dict(metadata or {})})

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None,
                            tags=None, metadata=None, **kw):
        self.llms.append({"tags": list(tags or []), "metadata": dict(metadata or {})})


def test_langsmith_tags_name_every_join_key():
    md, tags = langsmith_tags("r9", round_=3, role="designer", candidate="c003")
    assert md == {"flnas_run_id": "r9", "flnas_round": 3, "flnas_role": "designer",
                  "flnas_candidate": "c003"}
    assert tags == ["flnas", "flnas:run:r9", "flnas:round:3", "flnas:role:designer",
                    "flnas:candidate:c003"]
    assert "flnas:candidate:None" not in langsmith_tags("r9", round_=0, role="prepare",
                                                        candidate=None)[1]


def test_node_and_llm_runs_carry_run_round_role_candidate(tmp_path, monkeypatch):
    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGSMITH_API_KEY"):
        monkeypatch.delenv(var, raising=False)  # offline: only our handler listens
    load_roles()
    g = StateGraph(State, context_schema=Settings)
    services = ServicesFor()
    g.add_node("critic", traced("critic", role_node(create_role("critic")), services))
    g.add_edge(START, "critic")
    g.add_edge("critic", END)
    app = g.compile()
    rec = Recorder()
    with FakeOpenAIServer(default=lambda req: Reply.json(CRITIQUE), models=["m"]) as server:
        ctx = Settings(llm="local", base_url=server.base_url, model="m",
                      run_dir=str(tmp_path / "run"), run_id="ls1")
        try:
            out = app.invoke({"round": 2, "current": "c002", "candidates": {}, "order": []},
                             {"callbacks": [rec]}, context=ctx)
        finally:
            services.close()
    assert out["critiques"][-1]["summary"] == "fine"
    want_md = {"flnas_run_id": "ls1", "flnas_round": 2, "flnas_role": "critic",
               "flnas_candidate": "c002"}
    want_tags = {"flnas", "flnas:run:ls1", "flnas:round:2", "flnas:role:critic",
                 "flnas:candidate:c002"}
    node_runs = [c for c in rec.chains if c["name"] == "critic"
                 and c["metadata"].get("flnas_role") == "critic"]
    assert node_runs, [c["name"] for c in rec.chains]
    assert all(want_md.items() <= c["metadata"].items() for c in node_runs)
    assert all(want_tags <= set(c["tags"]) for c in node_runs)
    assert rec.llms, "the critic never reached the chat model"
    for llm in rec.llms:
        assert want_md.items() <= llm["metadata"].items()
        assert want_tags <= set(llm["tags"])
    # ... and the same keys are in trace.jsonl, so the two join.
    calls = [e for e in load_trace(tmp_path / "run") if e["event"] == "llm_call"]
    assert calls and all(e["run_id"] == "ls1" and e["role"] == "critic" for e in calls)
    crit = [e for e in load_trace(tmp_path / "run") if e["event"] == "critique"]
    assert crit[0]["round"] == 2 and crit[0]["run_id"] == "ls1"
    assert crit[0]["brain"].endswith(":m") and crit[0]["summary"] == "fine"
