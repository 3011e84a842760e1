"""The run's two images, drawn from a :class:`RunData` through :mod:`evaluation.plots`.

``pareto.png``: balanced accuracy against unfairness for every evaluated candidate,
coloured by the batch-1 latency, with the latency budget on the colour bar, over-budget
designs as crosses, the front circled and joined, targets dashed, the chosen design a
star and baselines grey diamonds. ``group_accuracy.png``: the chosen design's accuracy per
group (test split when it was tested), with intervals (bootstrap, else Wilson).
"""

from __future__ import annotations

from typing import Any

from graph.report.data import RunData, objectives_of
from graph.report.intervals import wilson

#: The file names of the two images in a run folder (``finalize`` writes the same ones).
PARETO_PNG, GROUPS_PNG = "pareto.png", "group_accuracy.png"


def pareto_png(data: RunData) -> bytes:
    """Draw the Pareto image of a run (see the module docstring) as PNG bytes."""
    # matplotlib is imported on first use: importing graph.report (finalize does) stays quick.
    from evaluation.pareto import objective_names
    from evaluation.plots import ParetoMarks, pareto_figure, png_bytes

    s = data.settings
    ids: list[str] = []
    points: list[tuple[float, float, float]] = []
    over: list[int] = []
    baselines: list[int] = []
    for cid, rec in data.records.items():
        obj = objectives_of(rec)
        if obj is None:
            continue
        if rec["report"].get("violations"):
            over.append(len(ids))
        if rec.get("origin") == "baseline":
            baselines.append(len(ids))
        ids.append(cid)
        points.append(obj)
    other = [f"{k.removeprefix('max_')} <= {s[k]:,}"
             for k in ("max_memory_mb", "max_params", "max_flops") if s.get(k) is not None]
    marks = ParetoMarks(
        infeasible=over, baselines=baselines,
        chosen=ids.index(data.best_id) if data.best_id in ids else None,
        cost_budget=s.get("max_latency_ms"),
        target_balanced_accuracy=s.get("target_balanced_accuracy"),
        target_gap=s.get("target_max_gap"),
        note="other budgets: " + ", ".join(other) if other else None)
    front = [ids.index(c) for c in data.front if c in ids]
    return png_bytes(pareto_figure(points, ids, front, objective_names(), marks))


def groups_png(report: dict[str, Any] | None, split: str) -> bytes:
    """Draw the per-group accuracy of one EvaluationReport dump as PNG bytes."""
    from evaluation.plots import group_accuracy_figure, png_bytes

    fair = (report or {}).get("fairness") or {}
    overall = ((report or {}).get("metrics") or {}).get("accuracy")
    return png_bytes(group_accuracy_figure(fair, split=split, overall_accuracy=overall,
                                           fallback_interval=wilson))
