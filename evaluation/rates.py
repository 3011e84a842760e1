"""Accuracy and one-vs-rest rate metrics per group, the numbers fairness is built from.

Rate functions are binary, so every rate-based metric is computed one-vs-rest per class
(class ``c`` is the positive label, every other class negative) and then averaged over one
**class set** (:func:`rate_classes`), the same for every rate metric. fairlearn's
``demographic_parity_difference`` is binarised too: on multiclass labels it would
silently report the gap for label 1 only (docs/metrics.md).

The equal-opportunity / equalised-odds gaps follow the Notre Dame group's FairPrune and
FairQuantize code (the definitions FL-NAS reports as EOPP/EODD), generalised from two
groups to many by taking ``max over groups - min over groups``.

fairlearn's two binary summaries, ``demographic_parity_difference`` and
``equalized_odds_difference``, are evaluated from the same per-group rates (their
definitions, ``between_groups``) rather than by calling them 16 times per attribute:
each call builds pandas ``MetricFrame`` objects, which made them nearly all of an
evaluation's fairness time, about 1.2 s per evaluation on a 2-core AMD EPYC
(``python -m evaluation.bench_rates`` times both side by side and checks they agree;
the tests hold them equal to fairlearn's functions).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy: acc = (1/n) * sum_i [y_pred_i == y_true_i]."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
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


def rate_gaps(
    yt: np.ndarray, yp: np.ndarray, names: np.ndarray, num_classes: int
) -> dict[str, Any]:
    """One-vs-rest rate gaps per class, averaged over :func:`rate_classes`.

    For class ``c`` and group ``g`` (positives: ``y == c``)::

        TPR_g = TP / (TP + FN)   TNR_g = TN / (TN + FP)   FPR_g = 1 - TNR_g
        SR_g = (TP + FP) / n_g   gap(rate) = max_g rate_g - min_g rate_g

    ``eopp1 = mean_c gap(TPR)``, ``eopp0 = mean_c gap(TNR)``,
    ``eodd = mean_c (gap(TPR) + gap(FPR)) / 2``; fairlearn's
    ``demographic_parity_difference`` (``gap(SR)``) and ``equalized_odds_difference``
    (``max(gap(TPR), gap(FPR))``) are macro-averaged over the same classes (computed
    from these rates, see the module docstring). Every value is ``None`` with fewer
    than two groups or an empty class set.

    Args:
        yt: True class indices.
        yp: Predicted class indices.
        names: Group name per sample.
        num_classes: Number of classes.

    Returns:
        The fields of the same names of ``AttributeFairness``, plus ``rate_classes``.
    """
    groups = np.unique(names)
    classes = rate_classes(yt, names, num_classes) if len(groups) >= 2 else []
    tpr, tnr, dpd, eod = [], [], [], []
    masks = [names == g for g in groups]
    for c in classes:
        t = (yt == c).astype(np.int64)
        p = (yp == c).astype(np.int64)
        tprs = [_tpr(t[m], p[m]) for m in masks]
        tnrs = [_tnr(t[m], p[m]) for m in masks]
        srs = [float(np.mean(p[m])) for m in masks]  # selection rate (TP + FP) / n_g
        tpr.append(max(tprs) - min(tprs))
        tnr.append(max(tnrs) - min(tnrs))
        dpd.append(max(srs) - min(srs))
        # gap(FPR) == gap(TNR) because FPR = 1 - TNR.
        eod.append(max(tpr[-1], tnr[-1]))

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
