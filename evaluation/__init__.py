"""Evaluation: result schemas, fairness metrics, graph cost, Pareto tools, plots.

The report schemas are imported eagerly (pydantic only). The functions are loaded on
first access (PEP 562) so that ``import evaluation`` stays cheap: fairness imports
fairlearn/pandas, plots imports matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from evaluation.report import (
    AttributeFairness,
    Budgets,
    ClassificationMetrics,
    EvaluationReport,
    FailureStage,
    GroupMetric,
    HardwareReport,
    TrainingStats,
    budget_violations,
)

if TYPE_CHECKING:
    from evaluation.fairness import attribute_fairness, classification_metrics, fairness_report
    from evaluation.pareto import (
        ArchiveEntry,
        ParetoArchive,
        hypervolume,
        objective_names,
        objectives,
        pareto_front,
        reference_point,
    )
    from evaluation.plots import plot_group_accuracy, plot_pareto

_LAZY = {
    "classification_metrics": "evaluation.fairness",
    "attribute_fairness": "evaluation.fairness",
    "fairness_report": "evaluation.fairness",
    "ArchiveEntry": "evaluation.pareto",
    "ParetoArchive": "evaluation.pareto",
    "hypervolume": "evaluation.pareto",
    "objective_names": "evaluation.pareto",
    "objectives": "evaluation.pareto",
    "pareto_front": "evaluation.pareto",
    "reference_point": "evaluation.pareto",
    "plot_group_accuracy": "evaluation.plots",
    "plot_pareto": "evaluation.plots",
}

__all__ = [
    # schemas (evaluation.report)
    "AttributeFairness",
    "Budgets",
    "ClassificationMetrics",
    "EvaluationReport",
    "FailureStage",
    "GroupMetric",
    "HardwareReport",
    "TrainingStats",
    "budget_violations",
    # fairness
    "classification_metrics",
    "attribute_fairness",
    "fairness_report",
    # pareto
    "ArchiveEntry",
    "ParetoArchive",
    "hypervolume",
    "objective_names",
    "objectives",
    "pareto_front",
    "reference_point",
    # plots
    "plot_group_accuracy",
    "plot_pareto",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
