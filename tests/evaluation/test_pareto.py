"""Objectives, Pareto front, hypervolume and archive on hand-worked points."""

import json

import numpy as np
import pytest

from evaluation.pareto import (
    ParetoArchive,
    hypervolume,
    objective_names,
    objectives,
    pareto_front,
    reference_point,
)
from evaluation.report import (
    AttributeFairness,
    Budgets,
    ClassificationMetrics,
    EvaluationReport,
    GroupMetric,
    HardwareReport,
)


def _fair(attr: str, accs: dict[str, float], intervals=None) -> AttributeFairness:
    vals = list(accs.values())
    worst = min(accs, key=accs.get)
    return AttributeFairness(
        attribute=attr,
        groups=[
            GroupMetric(group=g, count=10 + i, accuracy=a) for i, (g, a) in enumerate(accs.items())
        ],
        worst_group=worst,
        worst_group_accuracy=accs[worst],
        unfairness=float(np.mean(np.abs(np.array(vals) - np.mean(vals)))),
        max_gap=max(vals) - min(vals),
        eopp0=0.0,
        eopp1=0.0,
        eodd=0.0,
        demographic_parity_difference=0.0,
        equalized_odds_difference=0.0,
        intervals=intervals,
    )


def _report(bacc=0.7, latency=2.5) -> EvaluationReport:
    return EvaluationReport(
        candidate_id="c1",
        code_hash="abc",
        status="ok",
        metrics=ClassificationMetrics(
            n=10, accuracy=0.8, balanced_accuracy=bacc, per_class_recall={}, confusion=[]
        ),
        fairness={
            "sex": _fair("sex", {"female": 0.8, "male": 0.7}),  # gap 0.1
            "age": _fair("age", {"<40": 0.9, "40-59": 0.75, ">=60": 0.6}),  # gap 0.3
            "sex_x_age": _fair("sex_x_age", {"a": 1.0, "b": 0.0}),  # ignored by default
        },
        hardware=HardwareReport(
            params=1000,
            size_mb=1.0,
            flops=5000,
            macs=2500,
            peak_activation_mb=0.5,
            latency_ms_median=latency,
            latency_ms_p90=3.0,
            latency_device="cpu",
            threads=1,
            input_shape=[1, 3, 64, 64],
        ),  # fmt: skip
    )


def test_objectives_from_report_and_dict():
    r = _report()
    # (1 - 0.7, mean(0.1, 0.3), latency)
    assert objectives(r) == pytest.approx((0.3, 0.2, 2.5))
    assert objectives(r.model_dump(), cost="params") == pytest.approx((0.3, 0.2, 1000.0))
    assert objectives(r, cost="memory")[2] == pytest.approx(1.5)
    assert objectives(r, cost="flops", attributes=["sex"]) == pytest.approx((0.3, 0.1, 5000))
    assert len(objective_names("params")) == 3


def test_objectives_reject_failed_or_unfair_less_reports():
    failed = EvaluationReport(code_hash="x", status="failed", failure_stage="gate")
    with pytest.raises(ValueError, match="failed"):
        objectives(failed)
    with pytest.raises(ValueError, match="none of the attributes"):
        objectives(_report(), attributes=["site"])


def test_pareto_front_2d_hand_worked():
    pts = [[1, 4], [2, 2], [4, 1], [3, 3], [2, 2], [5, 5]]
    # [3,3] and [5,5] dominated by [2,2]; index 4 duplicates index 1
    assert pareto_front(pts) == [0, 1, 2]
    assert pareto_front(pts, keep_duplicates=True) == [0, 1, 2, 4]
    assert pareto_front([]) == [] and pareto_front(np.empty((0, 3))) == []
    assert pareto_front([[0.5, 0.5, 0.5]]) == [0]
    with pytest.raises(ValueError, match="finite"):
        pareto_front([[np.nan, 1.0]])


def test_hypervolume_2d_hand_worked():
    pts = [[1, 4], [2, 2], [4, 1], [3, 3]]
    # staircase with ref (5,5): (5-1)*(5-4) + (5-2)*(4-2) + (5-4)*(2-1) = 4 + 6 + 1
    assert hypervolume(pts, (5, 5)) == pytest.approx(11.0)
    assert hypervolume([], (5, 5)) == 0.0
    assert hypervolume([[6, 0]], (5, 5)) == 0.0  # outside the reference box
    with pytest.raises(ValueError, match="coordinates"):
        hypervolume(pts, (5, 5, 5))


def test_pareto_3d_hand_worked():
    pts = [[0, 1, 1], [1, 0, 1], [1, 1, 1], [3, 0, 0]]
    assert pareto_front(pts) == [0, 1, 3]
    # boxes to ref (2,2,2): 2*1*1 + 1*2*1 - overlap 1*1*1 = 3; [3,0,0] lies outside
    assert hypervolume(pts, (2, 2, 2)) == pytest.approx(3.0)
    assert hypervolume([[1, 1, 1]], (2, 2, 2)) == pytest.approx(1.0)


def test_reference_point():
    assert reference_point() == (1.0, 1.0, 100.0)
    assert reference_point(Budgets(max_latency_ms=5.0)) == (1.0, 1.0, 10.0)
    assert reference_point(Budgets(max_params=1000), cost="params") == (1.0, 1.0, 2000.0)
    assert reference_point(Budgets(max_latency_ms=5.0), cost="params")[2] == 20e6


def test_archive_front_hypervolume_and_round_trip():
    arc = ParetoArchive(reference=[1.0, 1.0, 10.0])
    assert arc.front() == [] and arc.hypervolume() == 0.0
    arc.add("a", (0.2, 0.1, 3.0))
    assert [e.candidate_id for e in arc.front()] == ["a"]
    assert arc.hypervolume() == pytest.approx(0.8 * 0.9 * 7)
    arc.add("b", (0.3, 0.05, 2.0))
    arc.add("c", (0.5, 0.5, 5.0))  # dominated by a
    arc.add("d", None, feasible=False)  # failed candidate
    arc.add("e", (0.0, 0.0, 0.0), feasible=False)  # over budget: never on the front
    arc.add("f", (0.2, 0.1, 3.0))  # duplicate of a
    assert [e.candidate_id for e in arc.front()] == ["a", "b"]
    # a: .8*.9*7 = 5.04, b: .7*.95*8 = 5.32, overlap .7*.9*7 = 4.41 -> 5.95
    assert arc.hypervolume() == pytest.approx(5.95)
    arc.add("c", (0.1, 0.05, 1.0))  # re-evaluated: replaces and now dominates everything
    assert [e.candidate_id for e in arc.front()] == ["c"]
    assert len(arc.entries) == 6
    restored = ParetoArchive.model_validate(json.loads(json.dumps(arc.model_dump())))
    assert restored == arc
    with pytest.raises(ValueError, match="objectives"):
        arc.add("g", (0.1, 0.2))
    with pytest.raises(ValueError, match="non-finite"):
        arc.add("h", (0.1, float("nan"), 1.0))
    with pytest.raises(ValueError, match="reference"):
        ParetoArchive().hypervolume()
