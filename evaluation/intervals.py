"""95 % intervals of the fairness numbers: per-group accuracy gaps and bootstrap intervals.

Each group carries a 95 % interval of its accuracy gap and ``max_gap`` its interval
(:func:`gap_intervals`), so small groups (a few samples) are not read as measured lags;
on request, percentile bootstrap intervals of the accuracy-based metrics are added
(:func:`bootstrap_intervals`). Formulas: docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from fairlearn.metrics import MetricFrame

from evaluation.rates import accuracy, balanced_accuracy

#: Two-sided 95 % percentile bootstrap interval.
CI_QUANTILES = [0.025, 0.975]
#: Draws of the gap intervals every report carries (cheap: one Beta draw per group).
GAP_DRAWS = 2000


def gap_intervals(
    correct: Sequence[int], total: Sequence[int], seed: int = 0, draws: int = GAP_DRAWS
) -> tuple[list[tuple[float, float]], tuple[float, float]]:
    """95 % intervals of each group's accuracy gap and of ``max_gap``.

    A Bayesian bootstrap within groups: each draw takes group ``g``'s accuracy from its
    Jeffreys posterior ``Beta(k_g + 1/2, n_g - k_g + 1/2)`` (``k_g`` correct of
    ``n_g``), the overall accuracy as the size-weighted mean, and records
    ``overall - acc_g`` and ``max_g acc_g - min_g acc_g``. Unlike resampling samples,
    a group of 3 with 3 correct gets a wide interval, not ``[1, 1]``.

    Args:
        correct: Correct predictions per group.
        total: Samples per group.
        seed: Random seed of the draws.
        draws: Number of draws.

    Returns:
        The per-group gap intervals (in input order) and the ``max_gap`` interval.
    """
    k = np.asarray(correct, dtype=float)
    n = np.asarray(total, dtype=float)
    rng = np.random.default_rng(seed)
    acc = rng.beta(k[:, None] + 0.5, n[:, None] - k[:, None] + 0.5, size=(len(k), draws))
    overall = (n[:, None] * acc).sum(axis=0) / n.sum()
    q = [100 * x for x in CI_QUANTILES]
    per_group = []
    for a in acc:
        lo, hi = np.percentile(overall - a, q)
        per_group.append((float(lo), float(hi)))
    spread = np.percentile(acc.max(axis=0) - acc.min(axis=0), q)
    return per_group, (float(spread[0]), float(spread[1]))


def bootstrap_intervals(
    yt: np.ndarray, yp: np.ndarray, names: np.ndarray, order: list[str], n_boot: int, seed: int
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals (MetricFrame ``n_boot``) of accuracy-based metrics.

    Keys: ``accuracy`` (overall, non-missing samples), ``accuracy[g]``,
    ``balanced_accuracy[g]``, ``worst_group_accuracy`` and ``max_gap``. Resampling is
    over samples, not within groups; an interval that is undefined (a group vanished
    from a resample) is left out. Splits with fewer than two samples have none.

    Args:
        yt: True class indices.
        yp: Predicted class indices.
        names: Group name per sample.
        order: Group names in report order.
        n_boot: Bootstrap resamples.
        seed: Bootstrap random seed.

    Returns:
        ``{key: (low, high)}`` for every defined interval.
    """
    if yt.size < 2:
        return {}
    mf = MetricFrame(
        metrics={"accuracy": accuracy, "balanced_accuracy": balanced_accuracy},
        y_true=yt,
        y_pred=yp,
        sensitive_features=names,
        n_boot=n_boot,
        ci_quantiles=CI_QUANTILES,
        random_state=seed,
    )
    lo, hi = mf.by_group_ci
    raw: dict[str, tuple[float, float]] = {
        "accuracy": (mf.overall_ci[0]["accuracy"], mf.overall_ci[1]["accuracy"]),
        "worst_group_accuracy": (
            mf.group_min_ci()[0]["accuracy"],
            mf.group_min_ci()[1]["accuracy"],
        ),
        "max_gap": tuple(d["accuracy"] for d in mf.difference_ci(method="between_groups")),
    }
    for g in order:
        for metric in ("accuracy", "balanced_accuracy"):
            raw[f"{metric}[{g}]"] = (lo.loc[g, metric], hi.loc[g, metric])
    return {k: (float(a), float(b)) for k, (a, b) in raw.items() if np.isfinite([a, b]).all()}


def mean_interval(values: Sequence[float], confidence: float = 0.95
                  ) -> tuple[float, float, float]:
    """Mean and Student-t interval of the mean of a few runs (e.g. training seeds).

    Args:
        values: One number per run.
        confidence: Two-sided level.

    Returns:
        ``(mean, low, high)``; NaN bounds with fewer than two values (no spread is known),
        and all NaN with none.
    """
    from scipy import stats

    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, arr.size - 1) * arr.std(ddof=1)
                 / np.sqrt(arr.size))
    return mean, mean - half, mean + half
