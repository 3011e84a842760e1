"""A role from a package outside the product changes what the Designer is told.

The ``scout`` role lives in a package written into ``tmp_path`` (its module and its
prompt beside it: the two files a new role touches), has its own model, and runs at
``before_design``. The loop runs for real (graph, roles, LLM client over HTTP to a
fake OpenAI server, finalize); only the sandboxed tools are stubbed, so it takes
seconds. The scout's note must reach the Designer's and the Critic's prompts, the
trace and ``summary.json``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agents.registry import unregister_role
from agents.settings import Settings
from graph.builder import build_graph
from graph.display import PlainDisplay
from graph.services import Services
from graph.trace import Tracer, load_trace
from tasks.genome import TEMPLATE_GENOME, render
from tasks.mutations import MUTATIONS
from tests.fakes.openai_server import ChatRequest, FakeOpenAIServer, Reply
from tests.fakes.services import StubServices

SCOUT_PY = '''
from pydantic import BaseModel

from agents.registry import register_role


class Scout(BaseModel):
    """A hint for the Designer."""

    note: str


def offline(view, settings):
    return Scout(note="offline scout")


register_role("scout", schema=Scout, prompt="scout.md", fallback=offline,
              model="scout-default", hook="before_design")
'''
SCOUT_MD = """<!-- prompt: scout, version 1 -->
## system
You scout the search space of FL-NAS.
## user
Newest candidate: $latest
Budgets: $budgets
Notes so far: $notes
Round $round.
"""
HINT = "depthwise-separable blocks halve latency here"
CRITIQUE = {"summary": "fine", "violated_budgets": [], "lagging_groups": [],
            "priorities": ["raise balanced accuracy"], "suggestions": ["widen"],
            "converged": False}


def _answer(request: ChatRequest) -> Reply:
    design = render(MUTATIONS["widen"](TEMPLATE_GENOME, random.Random(0)))
    return Reply.json({"Scout": {"note": HINT}, "Critique": CRITIQUE,
                       "Design": {"rationale": "wider", "code": design}}[request.schema_name])


@pytest.fixture
def scout_package(tmp_path, monkeypatch):
    pkg = tmp_path / "ext" / "scoutpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "scout.py").write_text(SCOUT_PY)
    (pkg / "scout.md").write_text(SCOUT_MD)
    monkeypatch.syspath_prepend(str(tmp_path / "ext"))
    yield "scoutpkg.scout"
    unregister_role("scout")
    for name in ("scoutpkg.scout", "scoutpkg"):
        sys.modules.pop(name, None)


def _settings(server: FakeOpenAIServer, run_dir: Path) -> Settings:
    return Settings(llm="local", base_url=server.base_url, model="shared-model", iter_max=1,
                    run_dir=str(run_dir), run_id="x1", models={"scout": "scout-model"})


def test_an_outside_role_reaches_the_designer(scout_package, tmp_path):
    run_dir = tmp_path / "run"
    with FakeOpenAIServer(default=_answer, models=["shared-model", "scout-model"]) as server:
        ctx = _settings(server, run_dir)
        svc = StubServices(ctx=ctx, tracer=Tracer(run_dir / "trace.jsonl", "x1"),
                           display=PlainDisplay(quiet=True))
        app = build_graph(roles=[scout_package], services=svc)
        app.invoke({"round": 0, "candidates": {}, "order": [], "critiques": [], "tokens": {},
                    "notes": [], "stale_rounds": 0, "hv_history": [], "current": None,
                    "started_at": time.time()}, {"recursion_limit": 100}, context=ctx)
        svc.close()
        asked = {r.schema_name: r for r in server.chat_requests}
        critic_requests = [r for r in server.chat_requests if r.schema_name == "Critique"]
    # Its own model; the core roles keep the shared one.
    assert asked["Scout"].model == "scout-model" and asked["Design"].model == "shared-model"
    # Its note reaches the Designer's prompt in the same round and the Critic's after it.
    assert HINT in asked["Design"].last_user_text
    assert HINT not in critic_requests[0].last_user_text
    assert HINT in critic_requests[-1].last_user_text
    # The trace has the call (with its prompt file beside the module) and the note.
    events = load_trace(run_dir)
    calls = [e for e in events if e["event"] == "llm_call" and e["role"] == "scout"]
    assert calls and calls[0]["prompt_file"] == "scout@v1"
    notes = [e for e in events if e["event"] == "note" and e["role"] == "scout"]
    assert notes and notes[0]["text"] == HINT and notes[0]["round"] == 0
    # summary.json lists the note and the scout's model.
    summary = json.loads((run_dir / "summary.json").read_text())
    assert any(n["role"] == "scout" and n["text"] == HINT for n in summary["notes"])
    assert summary["llm"]["scout"].endswith(":scout-model")
    assert summary["best"]["id"] == "c001"


def test_a_role_model_comes_from_its_setting_then_its_default_then_the_shared_one(
        scout_package, tmp_path):
    from agents.registry import load_roles

    load_roles([scout_package])

    def model(**kw: Any) -> str | None:
        svc = Services(ctx=Settings(llm="local", base_url="http://127.0.0.1:9/v1", **kw),
                       tracer=None, display=None)  # type: ignore[arg-type]
        return svc.spec("scout").model

    assert model() == "scout-default"
    assert model(model="shared") == "scout-default"  # a shared model is meant for the core roles
    assert model(model="shared", models={"scout": "own"}) == "own"
    assert Services(ctx=Settings(llm="local", base_url="http://127.0.0.1:9/v1", model="shared"),
                    tracer=None, display=None).spec("designer").model == "shared"  # type: ignore[arg-type]
