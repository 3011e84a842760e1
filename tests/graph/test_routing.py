"""Stop conditions, routers and the round bookkeeping (no training)."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

from agents.records import GateSummary
from agents.settings import Settings
from evaluation.report import Budgets
from graph.builder import (
    build_graph,
    route_after_critic,
    route_after_evaluate,
    route_after_gate,
)
from graph.display import PlainDisplay
from graph.nodes import conclude
from graph.stop import stop_reason
from tests.fakes.reports import make_record, make_report


def _rt(ctx: Settings) -> SimpleNamespace:
    return SimpleNamespace(context=ctx)


def _state(**kw):
    base = {"round": 1, "candidates": {"c000": make_record("c000", make_report())},
            "critiques": [], "stale_rounds": 0, "tokens": {}, "best_id": "c000",
            "started_at": time.time()}
    base.update(kw)
    return base


def test_stop_on_iter_max():
    ctx = Settings(iter_max=3)
    assert stop_reason(_state(round=2), ctx) is None
    assert stop_reason(_state(round=3), ctx) == "iter_max"
    assert route_after_critic(_state(round=3), _rt(ctx)) == "confirm"
    assert route_after_critic(_state(round=1), _rt(ctx)) == "designer"


def test_stop_on_patience():
    ctx = Settings(iter_max=10, patience=2)
    assert stop_reason(_state(stale_rounds=1), ctx) is None
    assert stop_reason(_state(stale_rounds=2), ctx) == "patience"


def test_stop_on_targets_met_and_converged_critique():
    rep = make_report(bal=0.8)
    st = _state(candidates={"c000": make_record("c000", rep)})
    assert stop_reason(st, Settings(target_balanced_accuracy=0.7)) == "targets_met"
    assert stop_reason(st, Settings(target_balanced_accuracy=0.9)) is None
    st["critiques"] = [{"converged": True}]
    assert stop_reason(st, Settings()) == "converged"


def test_stop_on_llm_tokens_and_wall_time():
    st = _state(tokens={"input": 900, "output": 200})
    assert stop_reason(st, Settings(max_llm_tokens=1000)) == "llm_budget"
    assert stop_reason(st, Settings(max_llm_tokens=5000)) is None
    st = _state(started_at=time.time() - 100)
    assert stop_reason(st, Settings(max_wall_s=50)) == "wall_time"


def test_gate_and_evaluate_routers():
    ctx = Settings(max_fix_attempts=2)

    def route(router, **fields):
        rec = make_record("c001", None).model_copy(update=fields)
        return router({"candidates": {"c001": rec}, "current": "c001"}, _rt(ctx))

    assert route(route_after_gate, gate=GateSummary(ok=True), status="gated") == "evaluate"
    failed = GateSummary(ok=False, stage="budget")
    assert route(route_after_gate, gate=failed, status="failed", attempt=1) == "code_fixer"
    assert route(route_after_gate, gate=failed, status="failed", attempt=2) == "critic"
    # A crash in the worker: fixed while attempts remain, then the round ends.
    assert route(route_after_evaluate, status="failed", attempt=1) == "code_fixer"
    assert route(route_after_evaluate, status="failed", attempt=2) == "critic"
    assert route(route_after_evaluate, status="evaluated", attempt=0) == "critic"


class _Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    def event(self, name: str, **fields) -> None:
        self.seen.append((name, fields))


def test_conclude_counts_stale_rounds_on_hypervolume():
    ctx = Settings(max_params=None)
    svc = SimpleNamespace(display=PlainDisplay(out=io.StringIO()), tracer=_Events(),
                          round_t0=None)
    c0 = make_record("c000", make_report(bal=0.5, latency=2.0))
    st = {"candidates": {}, "hv_history": [], "stale_rounds": 0}
    up = conclude(st, ctx, svc, {"c000": c0}, count_round=False)
    assert up["best_id"] == "c000" and up["archive"] == ["c000"]
    st = {"candidates": {"c000": c0}, "hv_history": up["hv_history"], "stale_rounds": 0}
    worse = make_record("c001", make_report(bal=0.4, latency=3.0))
    up2 = conclude(st, ctx, svc, {"c001": worse})
    assert up2["stale_rounds"] == 1 and up2["hv_history"][0] == up["hv_history"][0]
    st["stale_rounds"] = 1
    better = make_record("c002", make_report(bal=0.7, latency=1.0))
    up3 = conclude(st, ctx, svc, {"c002": better})
    assert up3["stale_rounds"] == 0 and up3["hv_history"][0] > up["hv_history"][0]
    assert up3["best_id"] == "c002"
    failed = make_record("c003", make_report(failed="gate"))
    assert conclude(st, ctx, svc, {"c003": failed})["stale_rounds"] == 2
    # A twin measured 5 % faster (latency noise) adds a sliver of volume: not progress.
    twin = make_record("c004", make_report(bal=0.5, latency=1.9))
    up4 = conclude(st, ctx, svc, {"c004": twin})
    assert up4["hv_history"][0] > up["hv_history"][0] and up4["stale_rounds"] == 2
    # Each counted round is traced with its hypervolume and best design (not prepare's).
    ends = [f for name, f in svc.tracer.seen if name == "round_end"]
    assert len(ends) == 4 and ends[1]["best"] == "c002" and ends[1]["stale_rounds"] == 0
    assert ends[0]["hv"] == up2["hv_history"][0] and ends[0]["duration_s"] is None


def test_infeasible_candidates_do_not_enter_archive():
    ctx = Settings(max_params=50_000)
    svc = SimpleNamespace(display=PlainDisplay(out=io.StringIO()), tracer=_Events(),
                          round_t0=None)
    rep = make_report(params=100_000, budgets=Budgets(max_params=50_000))
    up = conclude({"candidates": {}}, ctx, svc, {"c000": make_record("c000", rep)},
                  count_round=False)
    assert up["archive"] == [] and up["hv_history"] == [0.0]


def test_graph_draws_with_typed_routers():
    mermaid = build_graph().get_graph().draw_mermaid()
    # The gate / fix / evaluate loop runs inside each candidate branch (graph/fanout.py).
    for edge in ("critic -.-> designer", "critic -.-> confirm", "designer -.-> candidate",
                 "candidate --> merge", "merge --> critic", "confirm --> finalize"):
        assert edge in mermaid
