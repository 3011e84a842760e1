"""The search suite's start order: seed-major, each seed's costliest strategy first."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from graph.bench.order import CostliestFirst, run_in_order


@dataclass(frozen=True)
class _Spec:
    strategy: str
    seed: int


PLAN = [_Spec(s, seed) for seed in (1, 2, 3) for s in ("agents", "random", "evolution")]


def test_plan_order_until_costs_are_known_then_costliest_first_within_each_seed() -> None:
    order = CostliestFirst(PLAN)
    first = [order.take() for _ in range(3)]
    assert first == PLAN[:3]  # nothing finished: plan order
    for spec, wall in zip(first, (10.0, 30.0, 20.0), strict=True):
        order.done(spec, wall)
    second = [order.take() for _ in range(3)]
    assert [(s.strategy, s.seed) for s in second] == [
        ("random", 2), ("evolution", 2), ("agents", 2)]
    order.done(second[0], 100.0)  # random: mean 65
    order.done(second[2], 200.0)  # agents: mean 105
    assert order.cost("agents") == 105.0
    assert [order.take().strategy for _ in range(3)] == [
        "agents", "random", "evolution"]
    assert order.take() is None


def test_a_seed_starts_only_after_every_search_of_the_seed_before() -> None:
    order = CostliestFirst(PLAN)
    order.done(PLAN[3], 1e9)  # a huge cost for a strategy seen on seed 2 changes nothing on 1
    assert [order.take().seed for _ in range(len(PLAN))] == [1] * 3 + [2] * 3 + [3] * 3


def test_run_in_order_returns_results_in_plan_order_and_runs_jobs_at_once() -> None:
    running, peak, lock = 0, 0, threading.Lock()
    gate = threading.Barrier(2)

    def task(spec: _Spec) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        if spec.seed == 1 and spec.strategy != "evolution":
            gate.wait(timeout=10)  # the first two searches are running at the same time
        with lock:
            running -= 1
        return f"{spec.strategy}-s{spec.seed}"

    assert run_in_order(PLAN, task, jobs=2) == [f"{s.strategy}-s{s.seed}" for s in PLAN]
    assert peak == 2


def test_a_failed_search_fails_the_suite_and_starts_no_other() -> None:
    started: list[_Spec] = []

    def task(spec: _Spec) -> None:
        started.append(spec)
        if spec == PLAN[1]:
            raise RuntimeError("search random-s1 failed")

    with pytest.raises(RuntimeError, match="random-s1 failed"):
        run_in_order(PLAN, task, jobs=1)
    assert started == PLAN[:2]
