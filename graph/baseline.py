"""Baselines (ResNet-18, MobileNetV2) are references, not designs.

They are evaluated without the run's budgets (their gate would reject ResNet-18 on
parameters) and then told which of the run's budgets they violate, so the report and
the Critic can compare like with like (docs/architecture.md).
"""

from __future__ import annotations

from evaluation.report import Budgets, EvaluationReport, HardwareReport, budget_violations

#: Budgets a baseline is evaluated under: none (every field defaults to unset).
UNCONSTRAINED = Budgets.model_validate({})


def name_violations(report: EvaluationReport, budgets: Budgets) -> EvaluationReport:
    """Return ``report`` judged against the run's ``budgets`` (unchanged when it failed)."""
    if not report.ok or report.hardware is None:
        return report
    judged = Budgets.model_validate(budgets.model_dump())
    hardware = HardwareReport.model_validate(report.hardware.model_dump())
    return report.model_copy(update={"budgets": judged,
                                     "violations": budget_violations(hardware, judged)})
