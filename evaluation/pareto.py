"""Multi-objective bookkeeping: objectives, Pareto fronts and hypervolume (moocore).

All objectives are minimised. The default triple for a candidate is::

    (1 - balanced_accuracy, unfairness, cost)

* ``1 - balanced_accuracy``: the ISIC error (docs/metrics.md), in [0, 1].
* unfairness: the mean over the attributes ``sex`` and ``age`` of ``max_gap``
  (``max_g acc_g - min_g acc_g``), in [0, 1]. ``max_gap`` rather than the mean absolute
  deviation because it is the gap a user reads off the group-accuracy plot and it does
  not shrink when more groups are added; the intersection ``sex_x_age`` is left out
  because its small cells make it the noisiest of the three.
* cost: batch-1 median latency in ms by default (the first device budget; the edge
  target is latency). It is noisy between runs and machines, so archives that must
  compare across machines should use ``cost="params"`` (deterministic).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import moocore
import numpy as np
from pydantic import BaseModel, Field

from evaluation.report import Budgets, EvaluationReport

__all__ = [
    "Cost",
    "DEFAULT_ATTRIBUTES",
    "DEFAULT_COST_REFERENCE",
    "ArchiveEntry",
    "ParetoArchive",
    "hypervolume",
    "mean_max_gap",
    "objective_names",
    "objectives",
    "pareto_front",
    "reference_point",
]

Cost = Literal["latency", "params", "flops", "memory"]
DEFAULT_ATTRIBUTES: tuple[str, ...] = ("sex", "age")

#: Cost coordinate of the reference point when no budget bounds the cost. Chosen well
#: above the search space's models at 64x64 (ResNet-18 has 11.2M parameters).
DEFAULT_COST_REFERENCE: dict[str, float] = {
    "latency": 100.0,  # ms
    "params": 20e6,
    "flops": 10e9,
    "memory": 500.0,  # MB
}

_COST_LABEL = {
    "latency": "latency (ms, median)",
    "params": "parameters",
    "flops": "FLOPs",
    "memory": "memory (MB)",
}


def objective_names(cost: Cost = "latency") -> tuple[str, str, str]:
    """Human-readable names of the three objectives, in order."""
    return ("1 - balanced accuracy", "unfairness (mean max gap)", _COST_LABEL[cost])


def mean_max_gap(fairness: Mapping[str, Any],
                 attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
                 metric: str = "max_gap") -> float | None:
    """Return the unfairness objective: the mean ``max_gap`` over ``attributes``.

    ``fairness`` maps an attribute to its fairness report (anything with ``max_gap``). An
    attribute with one group present has no gap (None): it is left out, not 0. None when
    no attribute has a gap. ``metric`` averages another gap alike (e.g. ``class_mix_gap``).
    """
    gaps = [g for a in attributes if a in fairness
            if (g := getattr(fairness[a], metric)) is not None]
    return float(np.mean(gaps)) if gaps else None


def objectives(
    report: EvaluationReport | Mapping[str, Any],
    *,
    cost: Cost = "latency",
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
) -> tuple[float, float, float]:
    """Objective vector of one evaluated candidate, all minimised.

    ``(1 - balanced_accuracy, mean_{a in attributes} max_gap_a, cost)`` where cost is
    ``latency_ms_median``, ``params``, ``flops`` or ``memory_mb`` (weights + peak
    activations). Attributes absent from the report (no sample had them) are skipped.

    Args:
        report: An :class:`EvaluationReport` or its ``model_dump()`` dict.
        cost: Which hardware cost is the third objective.
        attributes: Sensitive attributes whose ``max_gap`` is averaged.

    Returns:
        The objective tuple.

    Raises:
        ValueError: When the report failed or lacks metrics, hardware or every attribute.
    """
    r = report if isinstance(report, EvaluationReport) else EvaluationReport.model_validate(report)
    if not r.ok or r.metrics is None or r.hardware is None:
        raise ValueError(
            f"candidate {r.candidate_id or r.code_hash}: no objectives for a report with "
            f"status={r.status!r} (failure: {r.failure_stage or 'missing metrics/hardware'})"
        )
    unfair = mean_max_gap(r.fairness, attributes)
    if unfair is None:
        raise ValueError(
            f"candidate {r.candidate_id or r.code_hash}: none of the attributes "
            f"{list(attributes)} has a defined max_gap in the fairness report "
            f"({sorted(r.fairness)})"
        )
    hw = r.hardware
    value = {
        "latency": hw.latency_ms_median,
        "params": float(hw.params),
        "flops": float(hw.flops),
        "memory": hw.memory_mb,
    }[cost]
    return (1.0 - r.metrics.balanced_accuracy, unfair, float(value))


def _as_points(points: Any) -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    if arr.size == 0:
        return arr.reshape(0, arr.shape[-1] if arr.ndim == 2 else 0)
    if arr.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n, objectives), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("points must be finite (mark a failed candidate infeasible instead)")
    return arr


def pareto_front(points: Any, *, keep_duplicates: bool = False) -> list[int]:
    """Return the indices of the non-dominated points (minimisation).

    ``p`` dominates ``q`` when ``p_i <= q_i`` for all ``i`` and ``p != q``. Identical
    points do not dominate each other; by default only the first of a group of
    duplicates is returned so that the front lists distinct trade-offs.

    Args:
        points: ``(n, m)`` array-like; ``n`` may be 0.
        keep_duplicates: Return every copy of a non-dominated point.

    Returns:
        Sorted indices into ``points``.
    """
    arr = _as_points(points)
    if len(arr) == 0:
        return []
    mask = moocore.is_nondominated(arr, keep_weakly=keep_duplicates)
    return [int(i) for i in np.flatnonzero(mask)]


def hypervolume(points: Any, reference: Sequence[float]) -> float:
    """Hypervolume dominated by ``points`` and bounded by ``reference`` (moocore).

    ``HV = Lebesgue measure of the union over p of the boxes [p, reference]``
    (minimisation). Points that do not strictly dominate the reference add nothing.

    Args:
        points: ``(n, m)`` array-like; ``n`` may be 0 (HV 0).
        reference: ``m`` coordinates, worse than every point that should count.

    Returns:
        The hypervolume.
    """
    arr = _as_points(points)
    ref = np.asarray(reference, dtype=float)
    if len(arr) == 0:
        return 0.0
    if ref.shape != (arr.shape[1],):
        raise ValueError(f"reference has {ref.size} coordinates for {arr.shape[1]} objectives")
    return float(moocore.hypervolume(arr, ref=ref))


def reference_point(budgets: Budgets | None = None, cost: Cost = "latency") -> tuple[float, ...]:
    """Return the fixed reference point ``(1, 1, cost_ref)`` for :func:`hypervolume`.

    Error and unfairness are bounded by 1. ``cost_ref`` is twice the budget for that
    cost when set (so feasible candidates always count), else
    ``DEFAULT_COST_REFERENCE[cost]``. Fixed, so hypervolumes of one search are comparable
    across iterations.
    """
    budget = None
    if budgets is not None:
        budget = {
            "latency": budgets.max_latency_ms,
            "params": budgets.max_params,
            "flops": budgets.max_flops,
            "memory": budgets.max_memory_mb,
        }[cost]
    return (1.0, 1.0, 2.0 * budget if budget is not None else DEFAULT_COST_REFERENCE[cost])


class ArchiveEntry(BaseModel):
    """One evaluated candidate in objective space."""

    candidate_id: str
    objectives: list[float]
    feasible: bool = True


class ParetoArchive(BaseModel):
    """Every evaluated candidate with its objectives; the front is the feasible subset.

    Infeasible candidates (budget violations, failures) are kept for the record but
    never enter the front or the hypervolume. Serialise with ``model_dump()`` and restore
    with ``ParetoArchive.model_validate(d)``.
    """

    objective_names: list[str] = Field(default_factory=lambda: list(objective_names()))
    reference: list[float] | None = Field(
        None, description="Fixed hypervolume reference point (see reference_point)."
    )
    entries: list[ArchiveEntry] = Field(default_factory=list)

    def add(
        self, candidate_id: str, objectives: Sequence[float] | None, feasible: bool = True
    ) -> None:
        """Record a candidate; a candidate id already present is replaced (re-evaluation).

        Args:
            candidate_id: Candidate identifier.
            objectives: Its objective vector; may be ``None``/empty only when infeasible
                (a failed candidate has no measurements).
            feasible: Whether it met every budget and finished.

        Raises:
            ValueError: On a wrong number of objectives or a non-finite value (NaN would
                not survive a JSON round trip).
        """
        values = [float(v) for v in objectives or ()]
        if values or feasible:
            if len(values) != len(self.objective_names):
                raise ValueError(
                    f"{candidate_id}: {len(values)} objectives, "
                    f"expected {len(self.objective_names)} ({self.objective_names})"
                )
            if not np.isfinite(values).all():
                raise ValueError(f"{candidate_id}: non-finite objectives {values}")
        entry = ArchiveEntry(candidate_id=candidate_id, objectives=values, feasible=feasible)
        self.entries = [e for e in self.entries if e.candidate_id != candidate_id] + [entry]

    def feasible(self) -> list[ArchiveEntry]:
        """Return the feasible entries, in insertion order."""
        return [e for e in self.entries if e.feasible]

    def front(self) -> list[ArchiveEntry]:
        """Feasible non-dominated entries (first of identical objective vectors only)."""
        feas = self.feasible()
        return [feas[i] for i in pareto_front([e.objectives for e in feas])]

    def hypervolume(self, reference: Sequence[float] | None = None) -> float:
        """Hypervolume of the feasible entries w.r.t. ``reference`` or ``self.reference``.

        Raises:
            ValueError: When neither reference is set.
        """
        ref = reference if reference is not None else self.reference
        if ref is None:
            raise ValueError("no reference point: pass one or set ParetoArchive.reference")
        return hypervolume([e.objectives for e in self.feasible()], ref)
