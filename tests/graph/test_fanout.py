"""K proposals per round: concurrent branches, merged in an order that completion cannot change."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agents.designer import candidate_id
from agents.settings import Settings
from evaluation.report import EvaluationReport
from graph.state import apply_update, combine
from tests.fakes.services import StubServices, run_stubbed


class Timed(StubServices):
    """Scores differ per design; one branch of each round is slow (which one: ``SLOW``)."""

    SLOW = 0
    running = 0
    peak = 0
    lock = threading.Lock()

    def score(self, code: str, candidate: str) -> float:
        return 0.5 if candidate == "c000" else 0.5 + (hash(code) % 97) / 1000

    def evaluate(self, code: str, candidate: str, *, split: str = "val",
                 baseline: bool = False, seed: int | None = None) -> EvaluationReport:
        cls = type(self)
        with cls.lock:
            cls.running += 1
            cls.peak = max(cls.peak, cls.running)
        try:
            index = (int(candidate[1:4]) - 1) % self.ctx.proposals if candidate != "c000" else -1
            time.sleep(0.4 if index == cls.SLOW else 0.0)
            return super().evaluate(code, candidate, split=split, baseline=baseline, seed=seed)
        finally:
            with cls.lock:
                cls.running -= 1


def _run(tmp: Path, slow: int) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    cls = type(f"Slow{slow}", (Timed,), {"SLOW": slow, "running": 0, "peak": 0,
                                         "lock": threading.Lock()})
    ctx = Settings(iter_max=2, patience=99, proposals=3, workers=3, confirm_top=2,
                   confirm_seeds=1, run_dir=str(tmp), run_id=f"s{slow}")
    summary, trace = run_stubbed(cls, ctx, tmp)
    return summary, trace, cls.peak


def test_the_same_seed_gives_the_same_run_whichever_branch_finishes_first(tmp_path):
    first, trace_a, peak = _run(tmp_path / "a", slow=0)
    last, trace_b, _ = _run(tmp_path / "b", slow=2)
    assert peak >= 2  # the branches did run at the same time
    designed = [e["candidate"] for e in trace_a if e["event"] == "design"]
    assert designed == [candidate_id(r, i, 3) for r in (1, 2) for i in range(3)] == \
        [f"c00{n}" for n in range(1, 7)]
    assert len({e["code_hash"] for e in trace_a if e["event"] == "design"}) == 6
    # Completion order differs, so the trace's candidate events do; the run does not.
    done_a = [e["candidate"] for e in trace_a if e["event"] == "candidate"]
    done_b = [e["candidate"] for e in trace_b if e["event"] == "candidate"]
    assert sorted(done_a) == sorted(done_b)
    for key in ("best", "pareto_front", "rounds", "stop_reason", "confirmation"):
        assert first.get(key) == last.get(key), key
    hv = [[e["hv"] for e in t if e["event"] == "round_end"] for t in (trace_a, trace_b)]
    assert hv[0] == hv[1] and len(hv[0]) == 2  # one merge per round, not per branch


def test_updates_combine_as_langgraph_applies_them():
    state = {"round": 1, "order": ["c000"], "candidates": {"c000": 0}, "tokens": {"calls": 1}}
    a = {"order": ["c001"], "candidates": {"c001": 1}, "tokens": {"calls": 1}, "current": "c001"}
    b = {"order": ["c002"], "candidates": {"c002": 2}, "tokens": {"calls": 2}, "current": "c002"}
    both = apply_update(apply_update(state, a), b)
    assert apply_update(state, combine(a, b)) == both
    assert both == {"round": 1, "order": ["c000", "c001", "c002"], "current": "c002",
                    "candidates": {"c000": 0, "c001": 1, "c002": 2}, "tokens": {"calls": 4}}


@pytest.mark.parametrize(("round_", "index", "per_round", "cid"),
                         [(1, 0, 1, "c001"), (7, 0, 1, "c007"), (1, 2, 3, "c003"),
                          (2, 0, 3, "c004")])
def test_candidate_ids_number_on_across_rounds(round_, index, per_round, cid):
    assert candidate_id(round_, index, per_round) == cid
