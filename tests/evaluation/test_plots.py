"""The run's two images, checked by what was drawn: points, labels, front, bars, intervals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from evaluation.pareto import objective_names, pareto_front
from evaluation.plots import (
    DPI,
    ParetoMarks,
    group_accuracy_figure,
    pareto_figure,
    png_bytes,
)
from evaluation.report import (
    AttributeFairness,
    ClassificationMetrics,
    EvaluationReport,
    GroupMetric,
)

# (1 - balanced accuracy, unfairness, latency ms): a and b are on the front, c is dominated
# by a, d is over a budget, e is a baseline.
POINTS = np.array([[0.30, 0.10, 2.0], [0.25, 0.20, 4.0], [0.40, 0.30, 5.0],
                   [0.20, 0.05, 9.0], [0.10, 0.15, 20.0]])
IDS = ["a", "b", "c", "d", "e"]


def _by_label(ax, label):
    found = [c for c in ax.collections if c.get_label() == label]
    assert len(found) == 1, [c.get_label() for c in ax.collections]
    return found[0]


def _xy(collection):
    return sorted(map(tuple, np.round(np.asarray(collection.get_offsets()), 6)))


def _expected(idx):
    return sorted((round(POINTS[i, 1], 6), round(1 - POINTS[i, 0], 6)) for i in idx)


def test_pareto_figure_draws_points_front_chosen_budgets_and_targets():
    front = [0, 1]  # the front among the feasible searched designs a, b, c
    marks = ParetoMarks(infeasible=[3], baselines=[4], chosen=1, cost_budget=8.0,
                        target_balanced_accuracy=0.7, target_gap=0.12,
                        note="other budgets: params <= 150,000")
    fig = pareto_figure(POINTS, IDS, front, objective_names(), marks)
    ax, cbar = fig.axes
    assert ax.get_xlabel() == "unfairness (mean max gap)"
    assert ax.get_ylabel() == "balanced accuracy"
    assert ax.get_title() == "other budgets: params <= 150,000"
    assert _xy(_by_label(ax, "within budgets")) == _expected([0, 1, 2])
    assert _xy(_by_label(ax, "over a budget")) == _expected([3])
    assert _xy(_by_label(ax, "baseline (reference)")) == _expected([4])
    assert _xy(_by_label(ax, "Pareto front")) == _expected([0, 1])
    assert _xy(_by_label(ax, "chosen (b)")) == _expected([1])
    # Every point is labelled with its id; the designs' colours are their latency.
    assert sorted(t.get_text() for t in ax.texts) == IDS
    within = _by_label(ax, "within budgets")
    assert list(within.get_array()) == [2.0, 4.0, 5.0]
    # The colour bar spans the latencies and the budget, which is drawn on it.
    assert cbar.get_ylabel() == "latency (ms, median)"
    assert cbar.get_ylim() == pytest.approx((2.0, 20.0))
    assert [line.get_ydata()[0] for line in cbar.lines] == [8.0]
    # The front is joined as a staircase, and the targets are dashed lines.
    staircase = [line for line in ax.lines if line.get_drawstyle() == "steps-post"]
    assert [list(line.get_xdata()) for line in staircase] == [[0.10, 0.20]]
    assert [list(line.get_ydata()) for line in staircase] == [pytest.approx([0.70, 0.75])]
    targets = {line.get_label(): line for line in ax.lines if line.get_linestyle() == "--"}
    assert targets["target balanced accuracy"].get_ydata()[0] == 0.7
    assert targets["target max gap"].get_xdata()[0] == 0.12
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"Pareto front", "chosen (b)", "over a budget"} <= set(legend)


def test_pareto_figure_without_marks_or_cost():
    fig = pareto_figure(POINTS, IDS, pareto_front(POINTS))
    (ax, _cbar) = fig.axes
    assert _xy(_by_label(ax, "candidates")) == _expected(range(5))
    assert _xy(_by_label(ax, "Pareto front")) == _expected(pareto_front(POINTS))
    two = pareto_figure(POINTS[:, :2], None, [0], objective_names()[:2])
    assert len(two.axes) == 1  # no cost objective: no colour bar
    assert _xy(_by_label(two.axes[0], "Pareto front")) == _expected([0])
    empty = pareto_figure([], [], [])
    assert [t.get_text() for t in empty.axes[0].texts] == ["no evaluated candidates"]
    with pytest.raises(ValueError, match="shape"):
        pareto_figure([[1.0, 2.0, 3.0, 4.0]], None, [])


def _fair(attr, accs, intervals=None):
    worst = min(accs, key=accs.get)
    vals = list(accs.values())
    return AttributeFairness(
        attribute=attr, groups=[GroupMetric(group=g, count=10 + i, accuracy=a)
                                for i, (g, a) in enumerate(accs.items())],
        worst_group=worst, worst_group_accuracy=accs[worst], unfairness=0.05,
        max_gap=max(vals) - min(vals), max_gap_interval=(0.01, 0.2), eopp0=None, eopp1=None,
        eodd=None, demographic_parity_difference=None, equalized_odds_difference=None,
        intervals=intervals)


def _report():
    return EvaluationReport(
        code_hash="x", status="ok",
        metrics=ClassificationMetrics(n=40, accuracy=0.62, balanced_accuracy=0.5,
                                      per_class_recall={}, confusion=[]),
        fairness={"sex": _fair("sex", {"female": 0.8, "male": 0.7},
                               {"accuracy[female]": (0.7, 0.9)}),
                  "age": _fair("age", {"<40": 0.9, "40-59": 0.75, ">=60": 0.6})})


def _errorbars(ax):
    (bars,) = [c for c in ax.containers if hasattr(c, "errorbar")]
    segments = bars.errorbar.lines[2][0].get_segments()
    return [tuple(np.round([s[0][1], s[1][1]], 6)) for s in segments]


def test_group_accuracy_figure_draws_bars_worst_group_intervals_and_overall():
    fig = group_accuracy_figure(_report(), split="test",
                                fallback_interval=lambda acc, n: (acc - 0.1, acc + 0.05))
    sex, age = fig.axes
    assert [p.get_height() for p in sex.patches] == pytest.approx([0.8, 0.7])
    assert [p.get_height() for p in age.patches] == pytest.approx([0.9, 0.75, 0.6])
    assert [t.get_text() for t in sex.get_xticklabels()] == ["female", "male"]
    # The worst group is crimson; the others steelblue.
    assert [p.get_facecolor() for p in age.patches] == [to_rgba("steelblue")] * 2 + [
        to_rgba("crimson")]
    # female has a bootstrap interval; male falls back to the given interval.
    assert _errorbars(sex) == [(0.7, 0.9), (0.6, 0.75)]
    assert [t.get_text() for t in sex.texts] == ["n=10", "n=11"]
    (overall,) = [line for line in sex.lines if line.get_label() == "overall accuracy"]
    assert overall.get_ydata()[0] == 0.62
    assert sex.get_ylabel() == "accuracy (test)"
    assert sex.get_title() == "sex: gap 0.100 [0.01, 0.20], unfair 0.050"


def test_group_accuracy_figure_from_a_fairness_dict_and_when_empty():
    fair = _report().model_dump()["fairness"]
    fig = group_accuracy_figure(fair)
    sex = fig.axes[0]
    assert [p.get_height() for p in sex.patches] == pytest.approx([0.8, 0.7])
    assert _errorbars(sex) == [(0.7, 0.9), (0.7, 0.7)]  # no fallback: no interval for male
    (mean,) = [line for line in sex.lines if line.get_label() == "mean group accuracy"]
    assert mean.get_ydata()[0] == pytest.approx(0.75)
    assert sex.get_ylabel() == "accuracy"
    empty = group_accuracy_figure({})
    assert [t.get_text() for t in empty.axes[0].texts] == ["no fairness results"]


def test_png_bytes_renders_the_figure_at_its_size():
    with Image.open(io.BytesIO(png_bytes(pareto_figure(POINTS, IDS, [0, 1])))) as img:
        assert img.format == "PNG" and img.size == (round(7.6 * DPI), round(4.8 * DPI))
    with Image.open(io.BytesIO(png_bytes(group_accuracy_figure(_report(), split="val")))) as img:
        assert img.size == (round(6.8 * DPI), round(4.2 * DPI))  # two panels, 3.4 in each
