"""Classification and group-fairness metrics (docs/metrics.md).

Per-group numbers are computed directly (numpy; the tests check them against fairlearn's
:class:`~fairlearn.metrics.MetricFrame`, which raises on a split where one sample has
the attribute). Rate functions are binary, so every rate-based metric is computed
one-vs-rest per class (class ``c`` is the positive label, every other class negative)
and then averaged over one **class set** (see :func:`rate_classes`), the same for every
rate metric. ``demographic_parity_difference`` is binarised too: on multiclass labels
fairlearn would silently report the gap for label 1 only (see docs/metrics.md).

Undefined is never 0: with fewer than two groups every gap is ``None``; with an empty
class set every rate gap is ``None``. Each group carries its size and a 95 % interval
of its accuracy gap, and ``max_gap`` its interval, so small groups (a few samples) are
not read as measured lags.

The equal-opportunity / equalised-odds gaps follow the Notre Dame group's FairPrune and
FairQuantize code (the definitions FL-NAS reports as EOPP/EODD), generalised from two
groups to many by taking ``max over groups - min over groups``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
)

from evaluation.report import AttributeFairness, ClassificationMetrics, GroupMetric

__all__ = ["classification_metrics", "attribute_fairness", "fairness_report"]

#: Two-sided 95 % percentile bootstrap interval.
CI_QUANTILES = [0.025, 0.975]


def _labels(y: np.ndarray | Sequence[int], name: str, num_classes: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{name} holds class indices outside [0, {num_classes}): "
            f"min {arr.min()}, max {arr.max()}"
        )
    return arr


def _pair(y_true, y_pred, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    yt = _labels(y_true, "y_true", num_classes)
    yp = _labels(y_pred, "y_pred", num_classes)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true has {yt.size} samples but y_pred has {yp.size}")
    return yt, yp


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy: acc = (1/n) * sum_i [y_pred_i == y_true_i]."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Balanced accuracy: mean over classes c in y_true of recall_c = TP_c / (TP_c + FN_c).

    Classes absent from ``y_true`` are skipped (their recall is undefined); unlike
    scikit-learn this does not warn when ``y_pred`` holds such classes.
    """
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    recalls = [float(np.mean(yp[yt == c] == c)) for c in np.unique(yt)]
    return float(np.mean(recalls))


def _tpr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """TPR = TP / (TP + FN) on binary labels; NaN when there is no positive."""
    pos = np.asarray(y_true) == 1
    return float(np.mean(np.asarray(y_pred)[pos] == 1)) if pos.any() else float("nan")


def _tnr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """TNR = TN / (TN + FP) on binary labels; NaN when there is no negative."""
    neg = np.asarray(y_true) == 0
    return float(np.mean(np.asarray(y_pred)[neg] == 0)) if neg.any() else float("nan")


def _count(y_true: np.ndarray, y_pred: np.ndarray) -> int:
    return int(len(y_true))


def classification_metrics(
    y_true: np.ndarray | Sequence[int],
    y_pred: np.ndarray | Sequence[int],
    class_names: Sequence[str],
) -> ClassificationMetrics:
    """Overall accuracy, balanced accuracy, per-class recall and confusion matrix.

    Formulas (docs/metrics.md), with ``C[t, p]`` the number of samples of true class ``t``
    predicted as ``p``:

    * ``accuracy = sum_c C[c, c] / n``
    * ``recall_c = C[c, c] / sum_p C[c, p]`` for every class with at least one sample
    * ``balanced_accuracy = mean_c recall_c`` over the classes present in ``y_true``
      (the ISIC challenge metric).

    Args:
        y_true: True class indices in ``[0, len(class_names))``.
        y_pred: Predicted class indices, same length.
        class_names: Class names, index ``i`` names class ``i``.

    Returns:
        The metrics. ``per_class_recall`` omits classes with no true sample (their
        recall is undefined, and NaN would not survive a JSON round trip);
        ``confusion[t][p]`` counts true ``t`` predicted ``p``.

    Raises:
        ValueError: On empty input, length mismatch or out-of-range labels.
    """
    k = len(class_names)
    yt, yp = _pair(y_true, y_pred, k)
    if yt.size == 0:
        raise ValueError("classification_metrics needs at least one sample")
    confusion = np.bincount(yt * k + yp, minlength=k * k).reshape(k, k)
    support = confusion.sum(axis=1)
    per_class = {
        class_names[c]: float(confusion[c, c] / support[c]) for c in range(k) if support[c] > 0
    }
    return ClassificationMetrics(
        n=int(yt.size),
        accuracy=float(np.trace(confusion) / yt.size),
        balanced_accuracy=float(np.mean(list(per_class.values()))),
        per_class_recall=per_class,
        confusion=confusion.tolist(),
    )


def rate_classes(yt: np.ndarray, names: np.ndarray, num_classes: int) -> list[int]:
    """Return the class set every rate metric averages over.

    Class ``c`` is in the set when every group has at least one sample of true class
    ``c`` (a positive) and at least one of another class (a negative), i.e. when TPR,
    TNR, FPR and the selection rate are all defined for ``c`` in every group. Classes
    absent from a group (or from the split) are left out, so they neither add a 0 gap
    ("fair") nor drop out of one metric but not another.
    """
    groups = np.unique(names)
    out = []
    for c in range(num_classes):
        pos = yt == c
        if all(pos[names == g].any() and (~pos[names == g]).any() for g in groups):
            out.append(c)
    return out


def _rate_gaps(
    yt: np.ndarray, yp: np.ndarray, names: np.ndarray, num_classes: int
) -> dict[str, Any]:
    """One-vs-rest rate gaps per class, averaged over :func:`rate_classes`.

    For class ``c`` and group ``g`` (positives: ``y == c``)::

        TPR_g = TP / (TP + FN)   TNR_g = TN / (TN + FP)   FPR_g = 1 - TNR_g
        SR_g = (TP + FP) / n_g   gap(rate) = max_g rate_g - min_g rate_g

    ``eopp1 = mean_c gap(TPR)``, ``eopp0 = mean_c gap(TNR)``,
    ``eodd = mean_c (gap(TPR) + gap(FPR)) / 2``; fairlearn's
    ``demographic_parity_difference`` (``gap(SR)``) and ``equalized_odds_difference``
    (``max(gap(TPR), gap(FPR))``) are macro-averaged over the same classes. Every value
    is ``None`` with fewer than two groups or an empty class set.
    """
    groups = np.unique(names)
    classes = rate_classes(yt, names, num_classes) if len(groups) >= 2 else []
    tpr, tnr, dpd, eod = [], [], [], []
    for c in classes:
        t = (yt == c).astype(np.int64)
        p = (yp == c).astype(np.int64)
        tprs = [_tpr(t[names == g], p[names == g]) for g in groups]
        tnrs = [_tnr(t[names == g], p[names == g]) for g in groups]
        tpr.append(max(tprs) - min(tprs))
        tnr.append(max(tnrs) - min(tnrs))
        dpd.append(float(demographic_parity_difference(t, p, sensitive_features=names)))
        eod.append(float(equalized_odds_difference(t, p, sensitive_features=names)))

    def mean(xs: list[float]) -> float | None:
        return float(np.mean(xs)) if xs else None

    return {
        "eopp1": mean(tpr),
        "eopp0": mean(tnr),
        # gap(FPR) == gap(TNR) because FPR = 1 - TNR.
        "eodd": mean([(a + b) / 2 for a, b in zip(tpr, tnr, strict=True)]),
        "demographic_parity_difference": mean(dpd),
        "equalized_odds_difference": mean(eod),
        "rate_classes": classes if len(groups) >= 2 else None,
    }


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

    Returns:
        The per-group gap intervals (in input order) and the ``max_gap`` interval.
    """
    k = np.asarray(correct, dtype=float)
    n = np.asarray(total, dtype=float)
    rng = np.random.default_rng(seed)
    acc = rng.beta(k[:, None] + 0.5, n[:, None] - k[:, None] + 0.5, size=(len(k), draws))
    overall = (n[:, None] * acc).sum(axis=0) / n.sum()
    q = [100 * x for x in CI_QUANTILES]
    per_group = [tuple(float(v) for v in np.percentile(overall - a, q)) for a in acc]
    spread = np.percentile(acc.max(axis=0) - acc.min(axis=0), q)
    return per_group, (float(spread[0]), float(spread[1]))  # type: ignore[return-value]


def _intervals(
    yt: np.ndarray, yp: np.ndarray, names: np.ndarray, order: list[str], n_boot: int, seed: int
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals (MetricFrame ``n_boot``) of accuracy-based metrics.

    Keys: ``accuracy`` (overall, non-missing samples), ``accuracy[g]``,
    ``balanced_accuracy[g]``, ``worst_group_accuracy`` and ``max_gap``. Resampling is
    over samples, not within groups; an interval that is undefined (a group vanished
    from a resample) is left out. Splits with fewer than two samples have none.
    """
    if yt.size < 2:
        return {}
    mf = MetricFrame(
        metrics={"accuracy": _accuracy, "balanced_accuracy": _balanced_accuracy},
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


def attribute_fairness(
    y_true: np.ndarray | Sequence[int],
    y_pred: np.ndarray | Sequence[int],
    codes: np.ndarray | Sequence[int],
    group_names: Sequence[str],
    attribute: str,
    num_classes: int,
    n_boot: int = 0,
    seed: int = 0,
) -> AttributeFairness:
    """Fairness of one sensitive attribute (docs/metrics.md).

    Samples with ``code == -1`` (attribute missing) are excluded here only; groups with
    no sample are omitted. With ``acc_g`` the accuracy of group ``g`` and ``acc`` the
    accuracy over all non-missing samples:

    * ``unfairness = (1/G) * sum_g |acc_g - acc|`` (our definition; FaHaNa's exact
      formula was not retrievable)
    * ``max_gap = max_g acc_g - min_g acc_g``; ``worst_group = argmin_g acc_g``
    * ``eopp1 = mean_c [max_g TPR_{g,c} - min_g TPR_{g,c}]`` (one-vs-rest for class c)
    * ``eopp0 = mean_c [max_g TNR_{g,c} - min_g TNR_{g,c}]``
    * ``eodd = mean_c ([TPR gap]_c + [FPR gap]_c) / 2``
    * ``demographic_parity_difference`` / ``equalized_odds_difference``: fairlearn's
      functions on the one-vs-rest labels of each class, macro-averaged over classes.

    These are the Notre Dame FairPrune / FairQuantize definitions generalised from two
    groups to many, averaged over one class set for every rate metric (classes with a
    positive and a negative in every group, :func:`rate_classes`). With one group every
    gap is ``None``. Every group has its size and ``gap_interval``; ``max_gap`` has
    ``max_gap_interval`` (:func:`gap_intervals`, seeded by ``seed``).

    Args:
        y_true: True class indices.
        y_pred: Predicted class indices.
        codes: Group code per sample, ``-1`` = missing, ``i`` = ``group_names[i]``.
        group_names: Group names indexed by code.
        attribute: Attribute name stored in the result (``sex``, ``age``, ...).
        num_classes: Number of classes.
        n_boot: Bootstrap resamples for the ``intervals`` (0 = none).
        seed: Bootstrap random seed.

    Returns:
        The attribute's fairness metrics.

    Raises:
        ValueError: On mismatched lengths, codes that are not integers (``None``, text),
            out-of-range codes or labels, or when no sample has the attribute.
    """
    yt, yp = _pair(y_true, y_pred, num_classes)
    code = _codes(codes, attribute, len(group_names))
    if code.shape != yt.shape:
        raise ValueError(f"{attribute}: {code.size} group codes for {yt.size} samples")
    keep = code >= 0
    if not keep.any():
        raise ValueError(f"{attribute}: no sample has this attribute (all codes are -1)")
    yt, yp, code = yt[keep], yp[keep], code[keep]
    names = np.asarray(group_names, dtype=object)[code].astype(str)

    order = [g for g in group_names if (names == g).any()]  # the caller's group order
    hits = yt == yp
    correct = [int(hits[names == g].sum()) for g in order]
    counts = [int((names == g).sum()) for g in order]
    several = len(order) >= 2
    per_gap, spread = gap_intervals(correct, counts, seed) if several else ([None] * len(order),
                                                                            None)
    groups = [
        GroupMetric(
            group=g,
            count=n_g,
            accuracy=k_g / n_g,
            balanced_accuracy=_balanced_accuracy(yt[names == g], yp[names == g]),
            gap_interval=gi,
        )
        for g, k_g, n_g, gi in zip(order, correct, counts, per_gap, strict=True)
    ]
    overall = float(hits.mean())
    accs = np.array([g.accuracy for g in groups])
    worst = groups[int(np.argmin(accs))]
    return AttributeFairness(
        attribute=attribute,
        groups=groups,
        n_missing=int((~keep).sum()),
        worst_group=worst.group,
        worst_group_accuracy=worst.accuracy,
        unfairness=float(np.mean(np.abs(accs - overall))) if several else None,
        max_gap=float(accs.max() - accs.min()) if several else None,
        max_gap_interval=spread,
        **_rate_gaps(yt, yp, names, num_classes),
        intervals=_intervals(yt, yp, names, order, n_boot, seed) if n_boot > 0 and several
        else None,
    )


def _codes(codes: Any, attribute: str, n_groups: int) -> np.ndarray:
    """Group codes as int64, or one clear ValueError (None, text, fractions, range)."""
    arr = np.asarray(codes)
    if arr.dtype.kind not in "iu":
        try:
            as_float = arr.astype(np.float64)  # None becomes NaN, text raises
        except (TypeError, ValueError):
            as_float = None
        if as_float is None or not np.isfinite(as_float).all() or \
                (as_float != np.round(as_float)).any():
            bad = next((c for c in arr.ravel().tolist() if not isinstance(c, int) and not
                        (isinstance(c, float) and c.is_integer())), None)
            raise ValueError(f"{attribute}: group codes must be integers, -1 for a missing "
                             f"value; got {bad!r}")
        arr = as_float
    code = arr.astype(np.int64)
    if code.size and (code.min() < -1 or code.max() >= n_groups):
        raise ValueError(
            f"{attribute}: group codes must be -1 (missing) or in [0, {n_groups})"
        )
    return code


def fairness_report(
    y_true: np.ndarray | Sequence[int],
    y_pred: np.ndarray | Sequence[int],
    groups: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    num_classes: int,
    n_boot: int = 0,
    seed: int = 0,
) -> dict[str, AttributeFairness]:
    """Run :func:`attribute_fairness` for every sensitive attribute.

    Args:
        y_true: True class indices.
        y_pred: Predicted class indices.
        groups: ``{attribute: (codes, group_names)}`` as returned by
            ``tasks.attributes.sensitive_groups`` (``-1`` = missing).
        num_classes: Number of classes.
        n_boot: Bootstrap resamples for intervals (0 = none).
        seed: Bootstrap random seed.

    Returns:
        ``{attribute: AttributeFairness}`` in the input order. An attribute that no
        sample has (every code ``-1``) is left out rather than reported as fair.
    """
    out: dict[str, AttributeFairness] = {}
    for attribute, (codes, names) in groups.items():
        if not (np.asarray(codes) >= 0).any():
            continue
        out[attribute] = attribute_fairness(
            y_true, y_pred, codes, names, attribute, num_classes, n_boot=n_boot, seed=seed
        )
    return out
