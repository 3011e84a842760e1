"""Hand-built EvaluationReport dicts and Candidate records for graph/agent unit tests."""

from __future__ import annotations

from typing import Any

from agents.records import Candidate, new_record
from evaluation.report import (
    AttributeFairness,
    Budgets,
    ClassificationMetrics,
    EvaluationReport,
    GroupMetric,
    HardwareReport,
    budget_violations,
)
from tasks.genome import TEMPLATE_GENOME, Genome, render


def attribute(name: str, overall: float, groups: dict[str, float]) -> AttributeFairness:
    accs = list(groups.values())
    worst = min(groups, key=groups.get)
    return AttributeFairness(
        attribute=name,
        groups=[GroupMetric(group=g, count=50, accuracy=a) for g, a in groups.items()],
        worst_group=worst, worst_group_accuracy=groups[worst],
        unfairness=sum(abs(a - overall) for a in accs) / len(accs),
        max_gap=max(accs) - min(accs), eopp0=0.0, eopp1=0.0, eodd=0.0,
        demographic_parity_difference=0.0, equalized_odds_difference=0.0,
    )


def make_report(*, bal: float = 0.5, acc: float = 0.6, sex: dict[str, float] | None = None,
                age: dict[str, float] | None = None, params: int = 100_000,
                latency: float = 1.0, budgets: Budgets | None = None,
                cid: str = "c", failed: str | None = None) -> dict[str, Any]:
    budgets = budgets or Budgets()
    if failed:
        return EvaluationReport(candidate_id=cid, code_hash="x", status="failed",
                                failure_stage=failed, failure_reason=f"{failed} broke",
                                budgets=budgets).model_dump(mode="json")
    hw = HardwareReport(params=params, size_mb=params * 4 / 1e6, flops=params * 100,
                        macs=params * 50, peak_activation_mb=0.5, latency_ms_median=latency,
                        latency_ms_p90=latency * 1.1, latency_device="cpu", threads=1,
                        input_shape=[1, 3, 32, 32])
    sex = sex or {"female": acc, "male": acc}
    age = age or {"<40": acc, "40-59": acc, ">=60": acc}
    rep = EvaluationReport(
        candidate_id=cid, code_hash="x", status="ok",
        metrics=ClassificationMetrics(n=300, accuracy=acc, balanced_accuracy=bal,
                                      per_class_recall={}, confusion=[]),
        fairness={"sex": attribute("sex", acc, sex), "age": attribute("age", acc, age)},
        hardware=hw, budgets=budgets, violations=budget_violations(hw, budgets),
    )
    return rep.model_dump(mode="json")


def make_record(cid: str, report: dict[str, Any] | None, *, genome: Genome = TEMPLATE_GENOME,
                origin: str = "designer", parent: str | None = None,
                round_: int = 0) -> Candidate:
    rec = new_record(cid, code=render(genome), origin=origin, parent=parent, round_=round_)
    ok = report is not None and report["status"] == "ok"
    return rec.model_copy(update={
        "report": EvaluationReport.model_validate(report) if report is not None else None,
        "status": "evaluated" if ok else "failed"})
