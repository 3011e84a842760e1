"""Classification and group-fairness metrics (docs/metrics.md).

Per-group numbers are computed directly (numpy; the tests check them against fairlearn's
:class:`~fairlearn.metrics.MetricFrame`, which raises on a split where one sample has
the attribute). The rate gaps are one-vs-rest per class, averaged over one class set
(:mod:`evaluation.rates`); the intervals come from :mod:`evaluation.intervals`.

Undefined is never 0: with fewer than two groups every gap is ``None``; with an empty
class set every rate gap is ``None``. Each group carries its size and a 95 % interval
of its accuracy gap, and ``max_gap`` its interval, so small groups (a few samples) are
not read as measured lags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evaluation.intervals import bootstrap_intervals, gap_intervals
from evaluation.rates import balanced_accuracy, rate_gaps
from evaluation.report import AttributeFairness, ClassificationMetrics, GroupMetric

__all__ = ["classification_metrics", "attribute_fairness", "fairness_report"]


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


def _pair(y_true: np.ndarray | Sequence[int], y_pred: np.ndarray | Sequence[int],
          num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    yt = _labels(y_true, "y_true", num_classes)
    yp = _labels(y_pred, "y_pred", num_classes)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true has {yt.size} samples but y_pred has {yp.size}")
    return yt, yp


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


def _present(
    y_true: np.ndarray | Sequence[int],
    y_pred: np.ndarray | Sequence[int],
    codes: np.ndarray | Sequence[int],
    group_names: Sequence[str],
    attribute: str,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], int]:
    """Check the inputs and keep the samples that have the attribute.

    Returns:
        Their labels, predictions and group names, the groups present (in the caller's
        order) and how many samples lack the attribute.
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
    order = [g for g in group_names if (names == g).any()]
    return yt, yp, names, order, int((~keep).sum())


def expected_accuracies(yt: np.ndarray, hits: np.ndarray, names: np.ndarray,
                        order: list[str]) -> list[float]:
    """Each group's accuracy from its class mix alone (indirect standardisation).

    ``e_g = (1/n_g) * sum_{i in g} r_{y_i}``, with ``r_c`` the recall of class ``c`` over
    all groups: what group ``g`` would score if the model recognised every class equally
    well in every group. Groups whose classes differ in difficulty differ in ``e_g`` even
    for such a model (docs/metrics.md#class-mix).

    Args:
        yt: True classes of the samples that have the attribute.
        hits: Whether each of them was predicted correctly.
        names: Their group names.
        order: The groups present.
    """
    counts = np.bincount(yt)
    recall = np.bincount(yt, weights=hits, minlength=len(counts)) / np.maximum(counts, 1)
    return [float(recall[yt[names == g]].mean()) for g in order]


def class_mix_gaps(groups: Sequence[GroupMetric]) -> dict[str, float | None]:
    """Split a max_gap into the part the groups' class mix gives and the rest.

    ``class_mix_gap = max_g e_g - min_g e_g`` and
    ``within_class_gap = max_g (acc_g - e_g) - min_g (acc_g - e_g)``, with ``e_g`` the
    group's ``expected_accuracy`` (:func:`expected_accuracies`). Both None with fewer
    than two groups.
    """
    if len(groups) < 2 or any(g.expected_accuracy is None for g in groups):
        return {"class_mix_gap": None, "within_class_gap": None}
    expected = np.array([g.expected_accuracy for g in groups], dtype=float)
    accs = np.array([g.accuracy for g in groups])
    return {"class_mix_gap": float(np.ptp(expected)),
            "within_class_gap": float(np.ptp(accs - expected))}


def _group_metrics(
    yt: np.ndarray, yp: np.ndarray, names: np.ndarray, order: list[str], seed: int
) -> tuple[list[GroupMetric], tuple[float, float] | None]:
    """Per-group accuracy, balanced and expected accuracy, gap interval; the max_gap interval."""
    hits = yt == yp
    expected = expected_accuracies(yt, hits, names, order)
    correct = [int(hits[names == g].sum()) for g in order]
    counts = [int((names == g).sum()) for g in order]
    per_gap: list[tuple[float, float]] | list[None] = [None] * len(order)
    spread = None
    if len(order) >= 2:
        per_gap, spread = gap_intervals(correct, counts, seed)
    groups = [
        GroupMetric(
            group=g,
            count=n_g,
            accuracy=k_g / n_g,
            balanced_accuracy=balanced_accuracy(yt[names == g], yp[names == g]),
            gap_interval=gi,
            expected_accuracy=e_g,
        )
        for g, k_g, n_g, gi, e_g in zip(order, correct, counts, per_gap, expected, strict=True)
    ]
    return groups, spread


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

    * ``unfairness = (1/G) * sum_g |acc_g - acc|`` (ours; FaHaNa's was not retrievable)
    * ``max_gap = max_g acc_g - min_g acc_g``, split by :func:`class_mix_gaps`
    * ``worst_group = argmin_g acc_g``
    * the rate gaps (``eopp1``, ``eopp0``, ``eodd``, ...): :func:`evaluation.rates.rate_gaps`

    With one group every gap is ``None``. Every group has its size and ``gap_interval``,
    ``max_gap`` its ``max_gap_interval`` (:func:`evaluation.intervals.gap_intervals`).

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
        ValueError: Mismatched lengths, bad codes or labels, or no sample with the attribute.
    """
    yt, yp, names, order, n_missing = _present(y_true, y_pred, codes, group_names,
                                               attribute, num_classes)
    several = len(order) >= 2
    groups, spread = _group_metrics(yt, yp, names, order, seed)
    accs, overall = np.array([g.accuracy for g in groups]), float((yt == yp).mean())
    worst = groups[int(np.argmin(accs))]
    return AttributeFairness(
        attribute=attribute,
        groups=groups,
        n_missing=n_missing,
        worst_group=worst.group,
        worst_group_accuracy=worst.accuracy,
        unfairness=float(np.mean(np.abs(accs - overall))) if several else None,
        max_gap=float(accs.max() - accs.min()) if several else None,
        max_gap_interval=spread,
        **class_mix_gaps(groups),
        **rate_gaps(yt, yp, names, num_classes),
        intervals=bootstrap_intervals(yt, yp, names, order, n_boot, seed)
        if n_boot > 0 and several else None,
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
