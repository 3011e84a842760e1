"""A short loop per search strategy: the proposals come from the strategy, never twice.

The graph, roles and finalize run for real; the sandboxed tools are stubbed (canned
reports whose balanced accuracy depends on the code, so evolution's tournaments have
something to rank), so each run takes seconds. The evolution run uses an LLM backend
(a fake OpenAI server) to show that its Designer asks no LLM.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.settings import Settings
from graph.run_data import RunData
from tasks.genome import parse_genome
from tests.fakes.openai_server import ChatRequest, FakeOpenAIServer, Reply
from tests.fakes.services import StubServices, run_stubbed

CRITIQUE = {"summary": "fine", "violated_budgets": [], "lagging_groups": [],
            "priorities": ["raise balanced accuracy"], "suggestions": [], "converged": False}


class ScoredServices(StubServices):
    """Canned evaluations whose score depends on the code (so designs rank differently)."""

    def score(self, code: str, candidate: str) -> float:
        return 0.3 + (sum(map(ord, code)) % 97) / 200


def _run(ctx: Settings, run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return run_stubbed(ScoredServices, ctx, run_dir)


def _designs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "design"]


@pytest.mark.parametrize("strategy", ["random", "evolution"])
def test_a_strategy_run_records_its_brain_and_never_repeats_a_genome(strategy, tmp_path):
    ctx = Settings(strategy=strategy, population=3, sample_size=2, iter_max=6, patience=99,
                   train_seed=7, run_dir=str(tmp_path), run_id="s1")
    summary, events = _run(ctx, tmp_path)
    designs = _designs(events)
    assert len(designs) == 6 and {d["brain"] for d in designs} == {strategy}
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("candidates/*/report.json"))]
    keys = [json.dumps(r["genome"], sort_keys=True) for r in records if r["origin"] != "baseline"]
    assert len(keys) == 7 and len(set(keys)) == 7  # the Template and 6 distinct proposals
    assert all(parse_genome((tmp_path / "candidates" / r["id"] / "model.py").read_text())
               for r in records)
    assert {r["fidelity"]["seed"] for r in records} == {7}  # the training seed
    if strategy == "random":
        assert all(d["parent"] is None and "uniform draw" in d["rationale"] for d in designs)
    else:
        # c000..c002 fill the population of 3; from round 3 on a parent is sampled.
        assert [d["parent"] is None for d in designs][:2] == [True, True]
        bred = [d for d in designs if d["parent"] is not None]
        assert bred and all(f"parent {d['parent']} (best of the sample)" in d["rationale"]
                            for d in bred)
    assert summary["best"]["id"]


def test_evolution_asks_no_llm_for_its_proposals(tmp_path):
    def answer(request: ChatRequest) -> Reply:
        assert request.schema_name == "Critique", "only the Critic may ask the LLM"
        return Reply.json(CRITIQUE)

    with FakeOpenAIServer(default=answer, models=["m"]) as server:
        ctx = Settings(strategy="evolution", llm="local", base_url=server.base_url, model="m",
                       iter_max=2, run_dir=str(tmp_path), run_id="s2", require_isolation=False)
        _, events = _run(ctx, tmp_path)
        asked = [r.schema_name for r in server.chat_requests]
    assert "Design" not in asked and "Critique" in asked
    assert [d["brain"] for d in _designs(events)] == ["evolution", "evolution"]


def test_train_seed_sets_only_the_recipe_and_search_seed_leaves_it_alone():
    def recipe(**kw: Any) -> Any:
        return RunData(Settings(**kw)).recipe()

    assert recipe().seed == 0 and recipe(seed=3).seed == 3  # default: today's recipe
    assert recipe(seed=3, train_seed=7).seed == 7
    assert recipe(seed=3, search_seed=7) == recipe(seed=3)
    assert RunData(Settings(seed=3, train_seed=7)).fidelity()["seed"] == 7
