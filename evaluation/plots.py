"""The run's two images: the Pareto front and the chosen design's per-group accuracy.

This is the one plotting path: the run report (``graph.report``) draws through it, once
per run, into ``pareto.png`` and ``group_accuracy.png``. The ``*_figure`` functions return
the matplotlib :class:`~matplotlib.figure.Figure` (Agg canvas: no display, no pyplot
state), so what was drawn can be checked; :func:`png_bytes` renders it (the report writes
the bytes and inlines them in its page).
Metric definitions: docs/metrics.md.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from evaluation.pareto import objective_names
from evaluation.report import AttributeFairness, EvaluationReport, GroupMetric

__all__ = [
    "ParetoMarks",
    "group_accuracy_figure",
    "group_interval",
    "pareto_figure",
    "png_bytes",
]

#: Dots per inch of every saved image.
DPI = 120
_CMAP = "viridis"

#: ``(accuracy, count) -> (lo, hi)``: an interval for a group without a bootstrap one.
IntervalFn = Callable[[float, int], tuple[float, float] | None]


@dataclass(frozen=True)
class ParetoMarks:
    """What the search knows about the points beyond their objectives (all optional).

    Attributes:
        infeasible: Indices of designs over a budget (drawn as crosses). ``None`` means
            unknown: every design is drawn alike.
        baselines: Indices of reference designs (grey diamonds, not searched).
        chosen: Index of the selected design (a gold star).
        cost_budget: The budget of the cost objective (a line on the colour bar).
        target_balanced_accuracy: A horizontal dashed line.
        target_gap: A vertical dashed line on the unfairness axis.
        note: A small title (e.g. the other budgets).
    """

    infeasible: Sequence[int] | None = None
    baselines: Sequence[int] = ()
    chosen: int | None = None
    cost_budget: float | None = None
    target_balanced_accuracy: float | None = None
    target_gap: float | None = None
    note: str | None = None


def png_bytes(fig: Figure) -> bytes:
    """Render ``fig`` as PNG bytes."""
    FigureCanvasAgg(fig)  # attaches an Agg canvas: no GUI backend is ever selected
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _points(points: Any, n_names: int) -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    arr = arr.reshape(0, n_names) if arr.size == 0 else arr
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise ValueError(f"points must have shape (n, 2) or (n, 3), got {arr.shape}")
    return arr


def pareto_figure(
    points: Any,
    labels: Sequence[str] | None,
    front_idx: Sequence[int],
    axes_names: Sequence[str] = objective_names(),
    marks: ParetoMarks | None = None,
) -> Figure:
    """Draw balanced accuracy against unfairness, coloured by the cost, front highlighted.

    ``points`` are objective vectors as returned by :func:`evaluation.pareto.objectives`:
    ``(1 - balanced accuracy, unfairness[, cost])``; the y axis is ``1 - points[:, 0]``.
    Searched designs are dots (crosses when over a budget) labelled with their id; the
    front is circled in crimson and joined as a staircase.

    Args:
        points: ``(n, 2)`` or ``(n, 3)`` array-like; ``n`` may be 0.
        labels: One label per point (e.g. candidate ids), or None.
        front_idx: Indices of the front points.
        axes_names: Names of the objectives, in order.
        marks: Budgets, baselines, the chosen design and targets (see :class:`ParetoMarks`).

    Returns:
        The figure (one axes, plus a colour bar when there is a cost objective).
    """
    arr = _points(points, len(axes_names))
    marks = marks or ParetoMarks()
    fig = Figure(figsize=(7.6, 4.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlabel(axes_names[1])
    ax.set_ylabel("balanced accuracy")
    ax.grid(alpha=0.3)
    if marks.note:
        ax.set_title(marks.note, fontsize=8)
    if len(arr) == 0:
        ax.text(0.5, 0.5, "no evaluated candidates", ha="center", transform=ax.transAxes)
        return fig
    x, y = arr[:, 1], 1.0 - arr[:, 0]
    names = list(labels) if labels is not None else [""] * len(arr)
    norm = None
    if arr.shape[1] == 3:
        cost = arr[:, 2]
        top = max(float(cost.max()), marks.cost_budget or float("-inf"))
        norm = Normalize(vmin=float(cost.min()), vmax=top or 1.0)
    _draw_designs(ax, arr, names, marks, norm)
    front = sorted(front_idx, key=lambda i: x[i])
    if front:
        ax.plot(x[front], y[front], color="crimson", lw=1, drawstyle="steps-post", zorder=2)
        ax.scatter(x[front], y[front], s=170, facecolors="none", edgecolors="crimson",
                   linewidths=1.4, zorder=4, label="Pareto front")
    if marks.chosen is not None:
        ax.scatter([x[marks.chosen]], [y[marks.chosen]], marker="*", s=260, c="gold",
                   edgecolors="black", zorder=5, label=f"chosen ({names[marks.chosen]})")
    _targets(ax, marks)
    if norm is not None:
        _cost_bar(fig, ax, norm, axes_names[2], marks.cost_budget)
    ax.legend(loc="best", fontsize=7)
    return fig


def _draw_designs(ax: Axes, arr: np.ndarray, names: list[str], marks: ParetoMarks,
                  norm: Normalize | None) -> None:
    """Draw searched designs (dots, crosses over a budget) and baselines (grey diamonds)."""
    x, y = arr[:, 1], 1.0 - arr[:, 0]
    base = set(marks.baselines)
    over = set(marks.infeasible or ())
    designs = [i for i in range(len(arr)) if i not in base]
    groups = ([(designs, "o", "candidates")] if marks.infeasible is None else
              [([i for i in designs if i not in over], "o", "within budgets"),
               ([i for i in designs if i in over], "X", "over a budget")])
    for sel, marker, label in groups:
        if not sel:
            continue
        colour: dict[str, Any] = ({"c": arr[sel, 2], "cmap": _CMAP, "norm": norm}
                                  if norm is not None else {"c": "steelblue"})
        ax.scatter(x[sel], y[sel], s=60 if marker == "o" else 80, marker=marker,
                   edgecolors="black" if marker == "o" else "crimson", linewidths=0.6,
                   zorder=3, label=label, **colour)
    for i in designs:
        ax.annotate(names[i], (x[i], y[i]), fontsize=7, xytext=(5, 4),
                    textcoords="offset points")
    if base:
        sel = sorted(base)
        ax.scatter(x[sel], y[sel], marker="D", c="lightgrey", edgecolors="grey", s=50,
                   zorder=2, label="baseline (reference)")
        for i in sel:
            ax.annotate(names[i], (x[i], y[i]), fontsize=7, color="grey", xytext=(4, -9),
                        textcoords="offset points")


def _targets(ax: Axes, marks: ParetoMarks) -> None:
    if marks.target_balanced_accuracy is not None:
        ax.axhline(marks.target_balanced_accuracy, ls="--", c="seagreen", lw=1,
                   label="target balanced accuracy")
    if marks.target_gap is not None:
        ax.axvline(marks.target_gap, ls="--", c="seagreen", lw=1, label="target max gap")


def _cost_bar(fig: Figure, ax: Axes, norm: Normalize, label: str,
              budget: float | None) -> None:
    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=_CMAP), ax=ax, label=label)
    if budget:
        cbar.ax.axhline(budget, c="crimson", lw=2)
        cbar.ax.text(0.5, budget, " budget", color="crimson", fontsize=7, va="bottom",
                     transform=cbar.ax.get_yaxis_transform())


def _fairness(report: EvaluationReport | Mapping[str, Any]
              ) -> tuple[dict[str, AttributeFairness], float | None]:
    """Return the per-attribute results and the overall accuracy (when the report has it)."""
    if isinstance(report, EvaluationReport):
        overall = report.metrics.accuracy if report.metrics else None
        return dict(report.fairness), overall
    return {k: AttributeFairness.model_validate(v) for k, v in report.items()}, None


def group_interval(af: AttributeFairness, g: GroupMetric,
                   fallback: IntervalFn | None = None) -> tuple[float, float] | None:
    """Return a group's accuracy interval: the evaluation's bootstrap one, else ``fallback``."""
    iv = (af.intervals or {}).get(f"accuracy[{g.group}]")
    if iv:
        return float(iv[0]), float(iv[1])
    return fallback(g.accuracy, g.count) if fallback else None


def group_accuracy_figure(
    report: EvaluationReport | Mapping[str, AttributeFairness | Mapping[str, Any]],
    *,
    split: str | None = None,
    overall_accuracy: float | None = None,
    fallback_interval: IntervalFn | None = None,
) -> Figure:
    """Draw accuracy per group, one panel per sensitive attribute.

    The worst group's bar is crimson; bars carry the group's sample count; error bars are
    the bootstrap intervals of the evaluation, else ``fallback_interval(acc, n)`` (none
    when neither exists); the dashed line is the overall accuracy when known, else the
    mean group accuracy; each title gives ``max_gap`` (with its interval) and
    ``unfairness``.

    Args:
        report: An :class:`EvaluationReport` (its overall accuracy is used) or its
            ``fairness`` dict.
        split: Shown in the y label (``accuracy (test)``).
        overall_accuracy: The dashed line (overrides the report's).
        fallback_interval: Interval of a group without a bootstrap one.

    Returns:
        The figure.
    """
    fair, overall = _fairness(report)
    overall = overall_accuracy if overall_accuracy is not None else overall
    n = max(1, len(fair))
    fig = Figure(figsize=(max(4.5, 3.4 * n), 4.2), layout="constrained")
    if not fair:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no fairness results", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    for k, (attr, af) in enumerate(fair.items()):
        ax = fig.add_subplot(1, n, k + 1)
        _group_panel(ax, attr, af, overall, fallback_interval)
        ax.set_ylabel(f"accuracy ({split})" if split else "accuracy")
        if k == 0:
            ax.legend(fontsize=7, loc="upper right")
    return fig


def _group_panel(ax: Axes, attr: str, af: AttributeFairness, overall: float | None,
                 fallback: IntervalFn | None) -> None:
    names = [g.group for g in af.groups]
    acc = np.array([g.accuracy for g in af.groups], dtype=float)
    ivs = [group_interval(af, g, fallback) or (a, a) for g, a in zip(af.groups, acc,
                                                                      strict=True)]
    err = np.clip(np.array([[a - lo for a, (lo, _) in zip(acc, ivs, strict=True)],
                            [hi - a for a, (_, hi) in zip(acc, ivs, strict=True)]]), 0, None)
    colours = ["crimson" if g == af.worst_group else "steelblue" for g in names]
    bars = ax.bar(range(len(names)), acc, yerr=err if names else None, color=colours,
                  capsize=3)
    ax.bar_label(bars, labels=[f"n={g.count}" for g in af.groups], fontsize=7,
                 label_type="center", color="white")
    if overall is not None:
        ax.axhline(overall, ls="--", c="grey", lw=1, label="overall accuracy")
    else:
        ax.axhline(float(acc.mean()) if len(acc) else 0.0, ls="--", c="grey", lw=1,
                   label="mean group accuracy")
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 3 else 0,
                  ha="right" if len(names) > 3 else "center", fontsize=8)
    ax.set_ylim(0, 1.05)
    gap = "n/a (one group)" if af.max_gap is None else f"{af.max_gap:.3f}"
    if af.max_gap_interval:
        gap += f" [{af.max_gap_interval[0]:.2f}, {af.max_gap_interval[1]:.2f}]"
    unfair = "n/a" if af.unfairness is None else f"{af.unfairness:.3f}"
    ax.set_title(f"{attr}: gap {gap}, unfair {unfair}", fontsize=9)
