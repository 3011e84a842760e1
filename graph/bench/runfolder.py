"""Read one finished search's run folder into the figures the search suite compares.

From ``candidates/*/report.json`` (``agents.records.Candidate`` without code),
``summary.json``, ``settings.json`` and ``trace.jsonl``: the hypervolume of the
normalised objectives after each evaluation, the run's chosen design (confirmed on several
training seeds; :func:`agents.records.select_best` for runs without a summary), evaluations
(the confirmation rung's included), wall time and LLM tokens.

Normalised objectives of a design: ``(1 - balanced accuracy, unfairness, latency_ms / L)``
(unfairness: mean ``max_gap`` over sex and age, :func:`evaluation.pareto.objectives`).
The hypervolume counts the feasible (no budget violation), successfully evaluated,
non-collapsed, non-baseline designs, against the profile's fixed reference point.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from agents.records import Candidate, as_candidate, estimated_objectives, select_best
from evaluation.pareto import hypervolume
from graph.trace import load_trace, token_ledger


class Remeasure(BaseModel):
    """The best design re-trained with one fresh training seed (product evaluation)."""

    seed: int
    ok: bool
    balanced_accuracy: float | None = None
    unfairness: float | None = None
    failure: str | None = None


class SearchRun(BaseModel):
    """One search (strategy x search seed) as the suite compares it."""

    strategy: str
    seed: int
    run_dir: str
    evaluations: int = 0
    """Training runs: designs that reached training (the Template included; gate failures
    excluded) plus the confirmation rung's re-evaluations."""
    proposals: int = 0
    """Designer rounds run (``summary.json`` ``rounds``)."""
    hv_curve: list[float] = Field(default_factory=list)
    """Hypervolume after each trained design, in evaluation order."""
    hv_trainings: list[float] = Field(default_factory=list)
    """Hypervolume after each training run (promotion seeds included,
    :func:`hv_curves`); its length is ``evaluations``."""
    hv: float = 0.0
    hv_retimed: float | None = None
    """Final hypervolume with the latencies re-timed side by side after every search
    (:mod:`graph.bench.retimed`); None until the suite has re-timed them."""
    best_id: str | None = None
    """Best feasible design (None when no design was feasible)."""
    best_code_file: str | None = None
    search_wall_s: float | None = None
    process_wall_s: float | None = None
    reused: int = 0
    """Trainings this search took from the suite's shared cache (another search ran them,
    ``--shared-cache``): its wall time does not include them."""
    tokens: int = 0
    stop_reason: str | None = None
    remeasured: list[Remeasure] = Field(default_factory=list)

    def remeasured_mean(self, key: str) -> float | None:
        """Mean of ``balanced_accuracy`` or ``unfairness`` over the successful re-measures."""
        vals = [getattr(r, key) for r in self.remeasured if r.ok and getattr(r, key) is not None]
        return sum(vals) / len(vals) if vals else None


def load_records(run_dir: Path) -> list[Candidate]:
    """Return the run's candidate records in evaluation order (round, then id: fixes follow).

    Unreadable or torn ``report.json`` files are skipped.
    """
    out = []
    for path in (run_dir / "candidates").glob("*/report.json"):
        try:
            out.append(as_candidate(json.loads(path.read_text(encoding="utf-8")) | {"code": ""}))
        except (OSError, ValueError, ValidationError):
            continue
    return sorted(out, key=lambda r: (r.round, r.id))


def trained(rec: Candidate) -> bool:
    """Whether a non-baseline record reached training (an evaluation was spent on it)."""
    return (rec.origin != "baseline" and rec.report is not None
            and rec.report.failure_stage != "gate")


def _point(rec: Candidate, latencies: Mapping[str, float] | None
           ) -> tuple[float, float, float] | None:
    """``(1 - balanced accuracy, unfairness, latency ms)`` of a front-eligible design, or None."""
    if not (rec.usable and rec.report is not None and not rec.report.violations):
        return None
    try:
        err, unfair, latency = estimated_objectives(rec)
    except ValueError:
        return None  # no defined unfairness: not a point of the front
    if latencies is not None and rec.code_hash in latencies:
        latency = latencies[rec.code_hash]
    return err, unfair, latency


def hv_points(records: Sequence[Candidate], latencies: Mapping[str, float] | None = None
              ) -> list[tuple[Candidate, tuple[float, float, float]]]:
    """Return the trained designs the hypervolume counts, with their objectives (ms latency).

    Args:
        records: A run's records (:func:`load_records`).
        latencies: Code hash -> latency (ms) replacing the search's own measurement
            (:mod:`graph.bench.retimed`); designs not in it keep theirs.
    """
    out = []
    for rec in records:
        point = _point(rec, latencies) if trained(rec) else None
        if point is not None:
            out.append((rec, point))
    return out


def hv_steps(records: Sequence[Candidate], latency_ref_ms: float,
             reference: Sequence[float], latencies: Mapping[str, float] | None = None
             ) -> list[tuple[int, float]]:
    """Per trained design, in order: (trainings it cost, hypervolume once it is counted).

    A design costs its search evaluation plus its promotion or confirmation seeds
    (``confirmations``); it counts at its best available fidelity (a promoted design at
    its seed means, as the run's own archive), so the curve is the front as finally
    known, drawn against the order in which the designs were found. ``latencies`` as in
    :func:`hv_points`.
    """
    points: list[tuple[float, float, float]] = []
    steps = []
    for rec in records:
        if not trained(rec):
            continue
        point = _point(rec, latencies)
        if point is not None:
            points.append((point[0], point[1], point[2] / latency_ref_ms))
        steps.append((1 + len(rec.confirmations),
                      hypervolume(points, reference) if points else 0.0))
    return steps


def hv_curves(records: Sequence[Candidate], latency_ref_ms: float,
              reference: Sequence[float]) -> tuple[list[float], list[float]]:
    """Hypervolume after each trained design, and after each training run.

    The second list counts promotion seeds too: entry ``t - 1`` is the hypervolume after
    ``t`` trainings, so searches that spent different numbers of trainings can be cut at
    the same compute. Both come from one :func:`hv_steps` pass.
    """
    steps = hv_steps(records, latency_ref_ms, reference)
    return [hv for _, hv in steps], [hv for cost, hv in steps for _ in range(cost)]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_run(run_dir: Path, *, strategy: str, seed: int, latency_ref_ms: float,
             reference: Sequence[float], process_wall_s: float | None = None) -> SearchRun:
    """Read a finished run folder into a :class:`SearchRun` (re-measures left empty)."""
    records = load_records(run_dir)
    settings = _read_json(run_dir / "settings.json")
    summary = _read_json(run_dir / "summary.json")
    curve, per_training = hv_curves(records, latency_ref_ms, reference)
    by_id = {r.id: r for r in records}
    # The run's own choice (confirmed on several training seeds), else the selection rule.
    best = (summary.get("best") or {}).get("id") or \
        select_best(by_id, float(settings.get("unfairness_weight", 1.0)))
    if best not in by_id:
        best = None
    best_report = by_id[best].report if best is not None else None
    if best_report is None or best_report.violations:
        best = None  # select_best falls back to infeasible designs: none was feasible
    events = load_trace(run_dir)
    tokens = token_ledger(events).get("total", {})
    return SearchRun(
        strategy=strategy, seed=seed, run_dir=str(run_dir),
        evaluations=sum(trained(r) + len(r.confirmations) for r in records),
        proposals=int(summary.get("rounds") or max((r.round for r in records), default=0)),
        hv_curve=curve, hv_trainings=per_training,
        hv=curve[-1] if curve else 0.0, best_id=best,
        best_code_file=str(run_dir / "candidates" / best / "model.py") if best else None,
        search_wall_s=(summary.get("timings") or {}).get("search_wall_s"),
        process_wall_s=process_wall_s,
        reused=sum(1 for e in events if e.get("event") == "tool_call"
                   and e.get("tool") == "evaluate" and e.get("shared")),
        tokens=int(tokens.get("input_tokens", 0)) + int(tokens.get("output_tokens", 0)),
        stop_reason=summary.get("stop_reason"))
