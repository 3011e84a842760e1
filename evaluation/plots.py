"""PNG plots of the search results (matplotlib, Agg canvas: no display, no pyplot state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evaluation.pareto import objective_names
from evaluation.report import AttributeFairness, EvaluationReport

__all__ = ["plot_pareto", "plot_group_accuracy"]


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # attaches an Agg canvas: no GUI backend is ever selected
    fig.savefig(out, dpi=120)
    return out


def plot_pareto(
    points: Any,
    labels: Sequence[str] | None,
    front_idx: Sequence[int],
    path: str | Path,
    axes_names: Sequence[str] = objective_names(),
) -> Path:
    """Plot the candidates in objective space, highlighting the Pareto front.

    ``points`` are objective vectors as returned by :func:`evaluation.pareto.objectives`:
    ``(1 - balanced accuracy, unfairness[, cost])``. The plot shows balanced accuracy
    (``1 - points[:, 0]``) against the cost coloured by unfairness, and against unfairness
    coloured by the cost; with two objectives only the second panel is drawn.

    Args:
        points: ``(n, 2)`` or ``(n, 3)`` array-like; ``n`` may be 0.
        labels: One label per point (e.g. candidate ids), written next to front points.
        front_idx: Indices of the front points (circled and labelled).
        path: Output PNG path (parent folders are created).
        axes_names: Names of the objectives, in order (the first is shown as balanced
            accuracy).

    Returns:
        The written path.
    """
    arr = np.asarray(points, dtype=float)
    arr = arr.reshape(0, len(axes_names)) if arr.size == 0 else arr
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise ValueError(f"points must have shape (n, 2) or (n, 3), got {arr.shape}")
    front = np.zeros(len(arr), dtype=bool)
    front[list(front_idx)] = True
    bacc = 1.0 - arr[:, 0]
    panels = [(1, 2)] if arr.shape[1] == 2 else [(2, 1), (1, 2)]  # (x column, colour column)

    fig = Figure(figsize=(6.0 * len(panels), 4.8), layout="constrained")
    for k, (xcol, ccol) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.set_xlabel(axes_names[xcol])
        ax.set_ylabel("balanced accuracy")
        ax.grid(alpha=0.3)
        if len(arr) == 0:
            ax.text(0.5, 0.5, "no evaluated candidates", ha="center", transform=ax.transAxes)
            continue
        colour = {"c": arr[:, ccol], "cmap": "viridis_r"} if ccol < arr.shape[1] else {}
        sc = ax.scatter(arr[:, xcol], bacc, s=36, zorder=2, **colour)
        ax.scatter(
            arr[front, xcol], bacc[front], s=140, facecolors="none", edgecolors="crimson",
            linewidths=1.5, label="Pareto front", zorder=3,
        )  # fmt: skip
        if colour:
            fig.colorbar(sc, ax=ax, label=axes_names[ccol])
        for i in np.flatnonzero(front):
            if labels is not None and i < len(labels):
                ax.annotate(labels[i], (arr[i, xcol], bacc[i]), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")  # fmt: skip
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_group_accuracy(
    report: EvaluationReport | Mapping[str, AttributeFairness | Mapping[str, Any]],
    path: str | Path,
) -> Path:
    """Bar chart of accuracy per group, one panel per sensitive attribute.

    Bars carry the group's sample count; bootstrap intervals, when present, are drawn
    as error bars; the dashed line is the attribute's mean group accuracy, and the
    title gives ``max_gap`` and ``unfairness``.

    Args:
        report: An :class:`EvaluationReport` or its ``fairness`` dict.
        path: Output PNG path.

    Returns:
        The written path.
    """
    raw = report.fairness if isinstance(report, EvaluationReport) else report
    fair = {k: AttributeFairness.model_validate(v) for k, v in raw.items()}
    n = max(1, len(fair))
    fig = Figure(figsize=(max(4.0, 3.2 * n), 4.2), layout="constrained")
    if not fair:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no fairness results", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
    for k, (attr, af) in enumerate(fair.items()):
        ax = fig.add_subplot(1, n, k + 1)
        names = [g.group for g in af.groups]
        acc = np.array([g.accuracy for g in af.groups])
        err = None
        iv = af.intervals or {}
        if all(f"accuracy[{g}]" in iv for g in names) and names:
            lo = np.array([iv[f"accuracy[{g}]"][0] for g in names])
            hi = np.array([iv[f"accuracy[{g}]"][1] for g in names])
            err = np.clip(np.vstack([acc - lo, hi - acc]), 0, None)
        colours = ["crimson" if g == af.worst_group else "steelblue" for g in names]
        bars = ax.bar(range(len(names)), acc, yerr=err, color=colours, capsize=3)
        ax.bar_label(bars, labels=[f"n={g.count}" for g in af.groups], fontsize=7)
        ax.axhline(float(acc.mean()) if len(acc) else 0.0, ls="--", c="grey", lw=1)
        ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 3 else 0,
                      ha="right" if len(names) > 3 else "center", fontsize=8)  # fmt: skip
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy")
        gap = "n/a (one group)" if af.max_gap is None else f"{af.max_gap:.3f}"
        if af.max_gap_interval:
            gap += f" [{af.max_gap_interval[0]:.2f}, {af.max_gap_interval[1]:.2f}]"
        unfair = "n/a" if af.unfairness is None else f"{af.unfairness:.3f}"
        ax.set_title(f"{attr}: gap {gap}, unfair {unfair}", fontsize=9)
    return _save(fig, path)
