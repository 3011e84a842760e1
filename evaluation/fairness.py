"""Classification and group-fairness metrics (DESIGN.md §7).

Per-group numbers are computed with fairlearn's :class:`~fairlearn.metrics.MetricFrame`.
Its rate functions are binary, so every rate-based metric is computed one-vs-rest per
class (class ``c`` is the positive label, every other class negative) and then averaged
over classes. ``demographic_parity_difference`` is binarised too: on multiclass labels it
would silently report the gap for label 1 only (see /work/shared/API-FACTS.md).

The equal-opportunity / equalised-odds gaps follow the Notre Dame group's FairPrune and
FairQuantize code (the definitions FL-NAS reports as EOPP/EODD), generalised from two
groups to many by taking ``max over groups - min over groups``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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

    Formulas (DESIGN.md §7), with ``C[t, p]`` the number of samples of true class ``t``
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


def _rate_gaps(
    yt: np.ndarray, yp: np.ndarray, names: np.ndarray, num_classes: int
) -> dict[str, float | None]:
    """One-vs-rest rate gaps per class, averaged over the classes where they are defined.

    For class ``c`` and group ``g`` (positives: ``y == c``)::

        TPR_g = TP / (TP + FN)   TNR_g = TN / (TN + FP)   FPR_g = 1 - TNR_g
        gap(rate) = max_g rate_g - min_g rate_g

    ``eopp1 = mean_c gap(TPR)``, ``eopp0 = mean_c gap(TNR)``,
    ``eodd = mean_c (gap(TPR) + gap(FPR)) / 2``. A class is skipped for TPR when some
    group has no positive of it, for TNR/FPR when some group has no negative, and for
    EODD (and fairlearn's equalised-odds difference) unless both rates are defined: an
    undefined rate is not zero (fairlearn silently reports 0.0 there). When no class
    qualifies the gap is ``None`` (undefined, not "perfectly fair"), which only happens
    with fewer than two groups or degenerate data.

    fairlearn's metrics are macro-averaged the same way: ``demographic_parity_difference``
    (selection-rate gap, defined for every class) and ``equalized_odds_difference``
    (``max(gap(TPR), gap(FPR))``, over the EODD classes).
    """
    groups = np.unique(names)
    tpr, tnr, eodd, dpd, eod = [], [], [], [], []
    for c in range(num_classes):
        t = (yt == c).astype(np.int64)
        p = (yp == c).astype(np.int64)
        has_pos = all(t[names == g].any() for g in groups)
        has_neg = all((t[names == g] == 0).any() for g in groups)
        dpd.append(float(demographic_parity_difference(t, p, sensitive_features=names)))
        if not (has_pos or has_neg):
            continue
        gaps = MetricFrame(
            metrics={"tpr": _tpr, "tnr": _tnr}, y_true=t, y_pred=p, sensitive_features=names
        ).difference(method="between_groups")
        if has_pos:
            tpr.append(float(gaps["tpr"]))
        if has_neg:
            tnr.append(float(gaps["tnr"]))
        if has_pos and has_neg:
            # gap(FPR) == gap(TNR) because FPR = 1 - TNR.
            eodd.append((float(gaps["tpr"]) + float(gaps["tnr"])) / 2)
            eod.append(float(equalized_odds_difference(t, p, sensitive_features=names)))

    def mean(xs: list[float]) -> float | None:
        return float(np.mean(xs)) if xs else None

    return {
        "eopp1": mean(tpr),
        "eopp0": mean(tnr),
        "eodd": mean(eodd),
        "demographic_parity_difference": mean(dpd) or 0.0,  # defined for every class
        "equalized_odds_difference": mean(eod),
    }


def _intervals(
    yt: np.ndarray, yp: np.ndarray, names: np.ndarray, order: list[str], n_boot: int, seed: int
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals (MetricFrame ``n_boot``) of accuracy-based metrics.

    Keys: ``accuracy`` (overall, non-missing samples), ``accuracy[g]``,
    ``balanced_accuracy[g]``, ``worst_group_accuracy`` and ``max_gap``. Resampling is
    over samples, not within groups; an interval that is undefined (a group vanished
    from a resample) is left out.
    """
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
    """Fairness of one sensitive attribute (DESIGN.md §7).

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
    groups to many. Classes where a rate is undefined for some group are skipped for
    that rate (see ``_rate_gaps``).

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
        ValueError: On mismatched lengths, out-of-range codes or labels, or when no
            sample has the attribute.
    """
    yt, yp = _pair(y_true, y_pred, num_classes)
    code = np.asarray(codes).astype(np.int64)
    if code.shape != yt.shape:
        raise ValueError(f"{attribute}: {code.size} group codes for {yt.size} samples")
    if code.size and (code.min() < -1 or code.max() >= len(group_names)):
        raise ValueError(
            f"{attribute}: group codes must be -1 (missing) or in [0, {len(group_names)})"
        )
    keep = code >= 0
    if not keep.any():
        raise ValueError(f"{attribute}: no sample has this attribute (all codes are -1)")
    yt, yp, code = yt[keep], yp[keep], code[keep]
    names = np.asarray(group_names, dtype=object)[code].astype(str)

    mf = MetricFrame(
        metrics={"accuracy": _accuracy, "balanced_accuracy": _balanced_accuracy, "count": _count},
        y_true=yt,
        y_pred=yp,
        sensitive_features=names,
    )
    by = mf.by_group
    order = [g for g in group_names if g in by.index]  # keep the caller's group order
    groups = [
        GroupMetric(
            group=g,
            count=int(by.loc[g, "count"]),
            accuracy=float(by.loc[g, "accuracy"]),
            balanced_accuracy=float(by.loc[g, "balanced_accuracy"]),
        )
        for g in order
    ]
    overall = float(mf.overall["accuracy"])
    accs = np.array([g.accuracy for g in groups])
    worst = groups[int(np.argmin(accs))]
    return AttributeFairness(
        attribute=attribute,
        groups=groups,
        n_missing=int((~keep).sum()),
        worst_group=worst.group,
        worst_group_accuracy=worst.accuracy,
        unfairness=float(np.mean(np.abs(accs - overall))),
        max_gap=float(accs.max() - accs.min()),
        **_rate_gaps(yt, yp, names, num_classes),
        intervals=_intervals(yt, yp, names, order, n_boot, seed) if n_boot > 0 else None,
    )


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
