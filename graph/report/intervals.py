"""95 % intervals of the headline metrics (docs/metrics.md).

Accuracies use the Wilson score interval of a binomial proportion; balanced accuracy a
normal approximation from the per-class recalls of the confusion matrix
(``var = sum_c r~_c (1 - r~_c) / (n_c + 4) / K**2`` with Agresti-Coull adjusted recalls
``r~_c``); bootstrap intervals computed by the evaluation
(``AttributeFairness.intervals``) are shown instead when present.
"""

from __future__ import annotations

import math
from typing import Any

Z95 = 1.959964


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``p`` observed on ``n`` samples."""
    if n <= 0:
        return None
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def balanced_accuracy_interval(confusion: list[list[int]], z: float = Z95
                               ) -> tuple[float, float] | None:
    """Normal-approximation interval of balanced accuracy from a confusion matrix.

    Rows are true classes; classes without samples are left out, as in the metric. Each
    recall's variance uses the Agresti-Coull adjustment (two successes and two failures
    added), so a recall of exactly 0 or 1 on a few samples still counts as uncertain.
    """
    recalls, var = [], 0.0
    for i, row in enumerate(confusion):
        n = sum(row)
        if n == 0:
            continue
        recalls.append(row[i] / n)
        adj = (row[i] + 2) / (n + 4)
        var += adj * (1 - adj) / (n + 4)
    if not recalls:
        return None
    k = len(recalls)
    mean, half = sum(recalls) / k, z * math.sqrt(var) / k
    return max(0.0, mean - half), min(1.0, mean + half)


def metric_rows(report: dict[str, Any] | None) -> dict[str, tuple[float | None, Any]]:
    """Headline metrics of an EvaluationReport dump with their 95 % intervals.

    Returns:
        ``{label: (value, (lo, hi) or None)}`` in display order.
    """
    if not report or report.get("status") != "ok" or not report.get("metrics"):
        return {}
    m = report["metrics"]
    rows: dict[str, tuple[float | None, Any]] = {
        "accuracy": (m["accuracy"], wilson(m["accuracy"], m["n"])),
        "balanced accuracy": (m["balanced_accuracy"],
                              balanced_accuracy_interval(m.get("confusion") or [])),
    }
    for attr, f in (report.get("fairness") or {}).items():
        iv = f.get("intervals") or {}
        worst = next((g for g in f["groups"] if g["group"] == f["worst_group"]), None)
        rows[f"{attr}: worst group ({f['worst_group']})"] = (
            f["worst_group_accuracy"],
            iv.get("worst_group_accuracy") or (wilson(worst["accuracy"], worst["count"])
                                               if worst else None))
        rows[f"{attr}: max gap"] = (f["max_gap"], iv.get("max_gap"))
        rows[f"{attr}: max gap from class mix"] = (f.get("class_mix_gap"), None)
        rows[f"{attr}: unfairness"] = (f["unfairness"], None)
        rows[f"{attr}: EOdd"] = (f.get("eodd"), None)
    return rows

