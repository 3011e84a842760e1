"""The candidate record (AIDE-journal style) and the views the roles read from it.

One :class:`Candidate` per design holds its whole story (docs/architecture.md, "Candidate
record"): parent, origin, code, the gate's verdict, fix attempts, the validation
:class:`~evaluation.report.EvaluationReport`, outcome and the notes roles wrote about it.
The same object sits in the graph state, in trace events, in
``candidates/<id>/report.json`` and in ``summary.json``. Briefs for prompts and
heuristics, the summary and the display are views of these records.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from evaluation.pareto import objectives
from evaluation.report import EvaluationReport
from tasks.genome import genome_summary, parse_genome

Status = Literal["pending", "gated", "evaluated", "failed"]


class GateSummary(BaseModel):
    """What a record keeps of a gate report: the verdict and the first failed check."""

    ok: bool
    stage: str | None = None
    message: str | None = None
    params: int | None = None
    flops: int | None = None
    latency_ms: float | None = None  # the latency screen's figure (tools/screen.py), if any
    isolation: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, report: Any) -> GateSummary:
        """Summarise a ``tools.gate.GateReport`` (or its JSON dump)."""
        data = report if isinstance(report, dict) else report.model_dump(mode="json")
        failed = [c for c in data.get("checks") or [] if not c.get("ok", True)]
        return cls(ok=bool(data.get("ok")), stage=failed[0]["name"] if failed else None,
                   message=data.get("message") or (failed[0].get("detail") if failed else None),
                   params=data.get("params"), flops=data.get("flops"),
                   latency_ms=data.get("latency_ms"), isolation=list(data.get("isolation") or []))


class FixAttempt(BaseModel):
    """One hand-over of a broken candidate to the Code-Fixer."""

    attempt: int
    stage: str
    error: str
    fixed_by: str
    brain: str


class Fidelity(BaseModel):
    """How much an evaluation cost and saw: its training budget and its data.

    Reports compare like with like only at equal fidelity (docs/metrics.md#noise).
    """

    epochs: int
    batch_size: int
    seed: int
    """Training seed."""
    image_size: int
    n_images: int | None = None
    """Images in the prepared dataset (all splits)."""


class Evaluation(BaseModel):
    """One more evaluation of a design, at another training seed (the confirmation rung)."""

    fidelity: Fidelity
    report: EvaluationReport


class Note(BaseModel):
    """What a role tells the others (the Critic's and Designer's briefs include notes)."""

    role: str
    round: int = 0
    text: str = ""
    """One line the agents read."""
    candidate: str | None = None
    """The candidate the note is about, if any (it is also kept on that record)."""
    payload: dict[str, Any] = Field(default_factory=dict)


class Candidate(BaseModel):
    """One candidate design and everything that happened to it."""

    id: str
    origin: str
    """template | designer | fixer | baseline | an extension role's name."""
    parent: str | None = None
    round: int = 0
    code: str
    code_hash: str
    genome: dict[str, Any] | None = None
    rationale: str = ""
    brain: str = ""
    status: Status = "pending"
    gate: GateSummary | None = None
    attempt: int = 0
    """Fix attempt that produced this code (0: not a fix)."""
    fixes: list[FixAttempt] = Field(default_factory=list)
    report: EvaluationReport | None = None
    """The validation evaluation (``None`` until evaluated)."""
    fidelity: Fidelity | None = None
    """What the report was measured at (``None`` until evaluated)."""
    confirmations: list[Evaluation] = Field(default_factory=list)
    """Re-evaluations on other training seeds before the final choice (graph ``confirm``)."""
    failure: str | None = None
    notes: list[Note] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the candidate was evaluated successfully."""
        return self.status == "evaluated" and self.report is not None and self.report.ok

    @property
    def usable(self) -> bool:
        """Whether it is a design to rank: evaluated, and its training did not collapse.

        A collapsed training (one predicted class, chance balanced accuracy) has no group
        gap, so it would rank above every design that learned something.
        """
        return self.ok and self.report is not None and self.report.metrics is not None \
            and not self.report.metrics.collapsed

    def needs_fix(self, max_attempts: int) -> bool:
        """Whether a failed candidate goes to the Code-Fixer (attempts remain)."""
        return self.status == "failed" and self.attempt < max_attempts

    def record_json(self) -> str:
        """``candidates/<id>/report.json``: the record without its code (``model.py``)."""
        return self.model_dump_json(exclude={"code"}, indent=1)


def as_candidate(rec: Candidate | Mapping[str, Any]) -> Candidate:
    """Return ``rec`` as a Candidate (``report.json`` files read back from disk are dicts)."""
    return rec if isinstance(rec, Candidate) else Candidate.model_validate(dict(rec))


def code_hash(code: str) -> str:
    """Return the short form (16 hex digits) of the evaluation's code hash.

    One hash for records, traces, reports and cache keys: comments and layout aside,
    the same code has the same name everywhere.
    """
    from tools.evaluate import code_hash as full_hash  # lazy: tools.evaluate imports torch

    return full_hash(code)[:16]


def new_record(cid: str, *, code: str, origin: str, parent: str | None, round_: int,
               rationale: str = "", brain: str = "", attempt: int = 0) -> Candidate:
    """Create a fresh pending candidate."""
    genome = parse_genome(code)
    return Candidate(id=cid, parent=parent, origin=origin, round=round_, code=code,
                     code_hash=code_hash(code),
                     genome=genome.model_dump(mode="json") if genome else None,
                     rationale=rationale, brain=brain, attempt=attempt)


def is_ok(rec: Candidate | None) -> bool:
    """Tell whether the candidate was evaluated successfully."""
    return rec is not None and rec.ok


def _groups(rep: EvaluationReport) -> dict[str, list[dict[str, Any]]]:
    return {
        attr: [{"group": g.group, "count": g.count, "accuracy": round(g.accuracy, 4),
                **({"gap_interval": [round(x, 3) for x in g.gap_interval]}
                   if g.gap_interval else {}),
                **({"expected_accuracy": round(g.expected_accuracy, 4)}
                   if g.expected_accuracy is not None else {})}
               for g in fair.groups]
        for attr, fair in rep.fairness.items() if attr != "sex_x_age"
    }


def headline(rec: Candidate | None) -> dict[str, Any] | None:
    """Compact numbers of one candidate (what prompts, critic and display show)."""
    if rec is None:
        return None
    rep = rec.report
    out: dict[str, Any] = {
        "id": rec.id, "origin": rec.origin, "parent": rec.parent,
        "status": "ok" if rec.ok else rec.status,
        "design": genome_summary(g) if (g := parse_genome(rec.code or "")) else "custom",
    }
    if rec.status == "failed" or (rep is not None and rep.status == "failed"):
        out["failure_stage"] = (rep.failure_stage if rep else None) or \
            (rec.gate.stage if rec.gate else None)
        out["failure_reason"] = rec.failure or (rep.failure_reason if rep else None)
    if not rec.ok or rep is None or rep.metrics is None or rep.hardware is None:
        return out
    m, hw = rep.metrics, rep.hardware
    out.update(
        balanced_accuracy=round(m.balanced_accuracy, 4), accuracy=round(m.accuracy, 4),
        violations=list(rep.violations), params=hw.params, flops=hw.flops,
        collapsed=m.collapsed,
        latency_ms=round(hw.latency_ms_median, 3),
        memory_mb=round(hw.size_mb + hw.peak_activation_mb, 3),
        groups=_groups(rep),
        gap_intervals={attr: [round(x, 3) for x in fair.max_gap_interval]
                       for attr, fair in rep.fairness.items()
                       if attr != "sex_x_age" and fair.max_gap_interval},
    )
    try:
        out["max_gap"] = round(objectives(rep)[1], 4)
    except ValueError:
        out["max_gap"] = None
    return out


def score(rec: Candidate, unfairness_weight: float) -> float:
    """Compute the selection score ``balanced_accuracy - w * mean_attr max_gap`` (higher wins).

    Raises:
        ValueError: The candidate has no successful report.
    """
    rep = rec.report
    if rep is None or rep.metrics is None:
        raise ValueError(f"candidate {rec.id} has no metrics")
    _, unfair, _ = objectives(rep)
    return rep.metrics.balanced_accuracy - unfairness_weight * unfair


def seed_reports(rec: Candidate) -> list[EvaluationReport]:
    """Return every evaluation at the confirmation fidelity, failed ones included.

    The search's own report counts as one seed when its epochs equal the confirmations'
    (the rungs then differ only in the training seed).
    """
    runs = [e.report for e in rec.confirmations]
    if rec.report is not None and (rec.fidelity is None or all(
            e.fidelity.epochs == rec.fidelity.epochs for e in rec.confirmations)):
        runs.insert(0, rec.report)
    return runs


def seed_scores(rec: Candidate, unfairness_weight: float) -> list[float]:
    """Return the selection scores of the successful runs of :func:`seed_reports`."""
    return [rep.metrics.balanced_accuracy - unfairness_weight * objectives(rep)[1]
            for rep in seed_reports(rec) if rep.ok and rep.metrics is not None]


def estimate(rec: Candidate, unfairness_weight: float) -> float:
    """Return the selection score at the best available fidelity (seed mean if promoted).

    A design evaluated once is scored on that evaluation (:func:`score`); one promoted or
    confirmed on more training seeds (``confirmations``) on the mean of
    :func:`seed_scores`, which spreads by about ``1 / sqrt(seeds)`` as much.

    Raises:
        ValueError: The candidate has no successful report.
    """
    scores = seed_scores(rec, unfairness_weight) if rec.confirmations else []
    return statistics.fmean(scores) if len(scores) > 1 else score(rec, unfairness_weight)


def estimated_objectives(rec: Candidate) -> tuple[float, float, float]:
    """Return :func:`evaluation.pareto.objectives` at the best available fidelity.

    ``1 - balanced accuracy`` and unfairness are means over the successful runs of
    :func:`seed_reports` when there are several. Latency does not depend on the training
    seed, but each measurement does depend on the machine's load at that moment (within
    one design the jobs' medians spread by about 14 %, docs/metrics.md#noise), so a
    promoted design's latency is the median over every successful evaluation of it.

    Raises:
        ValueError: The candidate has no successful report.
    """
    if rec.report is None:
        raise ValueError(f"candidate {rec.id} has no report")
    err, unfair, cost = objectives(rec.report)
    if not rec.confirmations:
        return err, unfair, cost
    runs = [objectives(r)[:2] for r in seed_reports(rec) if r.ok]
    if len(runs) > 1:
        err = statistics.fmean(r[0] for r in runs)
        unfair = statistics.fmean(r[1] for r in runs)
    done = [e.report for e in rec.confirmations if e.report.ok and e.report.hardware]
    cost = statistics.median([cost, *(objectives(r)[2] for r in done)])
    return err, unfair, cost


def seeds_measured(rec: Candidate) -> int:
    """Successful training runs behind the candidate's estimates (1 when screened only)."""
    return max(1, sum(r.ok for r in seed_reports(rec)))


def select_best(candidates: Mapping[str, Candidate | Mapping[str, Any]],
                unfairness_weight: float = 1.0, *, include_baselines: bool = False
                ) -> str | None:
    """Return the best design by the documented rule (docs/metrics.md).

    Rule: among successfully evaluated candidates, feasible ones (no budget violation)
    come first; within a class the highest ``balanced_accuracy - w * unfairness`` wins
    (unfairness = mean over sex and age of the max group-accuracy gap; the mean over
    training seeds for a promoted design, :func:`estimate`); ties go to fewer
    parameters, then the earlier candidate. Infeasible candidates rank by fewer
    violations first. Collapsed trainings (``Candidate.usable``) rank after every design
    that learned something: their zero group gap says nothing. Baselines are references,
    not designs, unless included. Records read back from ``report.json`` (dicts) are
    accepted too.
    """
    ranked = []
    for i, (cid, raw) in enumerate(candidates.items()):
        try:
            rec = as_candidate(raw)
        except ValidationError:
            continue  # a report.json torn by a kill, or not a record at all
        if not rec.ok or (rec.origin == "baseline" and not include_baselines):
            continue
        try:
            s = estimate(rec, unfairness_weight)
        except ValueError:
            continue
        assert rec.report is not None and rec.report.hardware is not None  # ok implies both
        n_viol = len(rec.report.violations)
        ranked.append(((not rec.usable, n_viol > 0, n_viol, -s, rec.report.hardware.params, i),
                       cid))
    return min(ranked)[1] if ranked else None


def history(candidates: Mapping[str, Candidate], order: list[str],
            limit: int = 12) -> list[dict[str, Any]]:
    """Compact history of the newest ``limit`` candidates (tried designs and failures)."""
    rows = []
    for cid in order[-limit:]:
        h = headline(candidates[cid]) or {}
        h.pop("groups", None)
        rows.append(h)
    return rows


def tried_keys(candidates: Mapping[str, Candidate]) -> list[str]:
    """Genome keys of every candidate so far (the heuristic never re-proposes one)."""
    from agents.heuristic import genome_key

    out = []
    for rec in candidates.values():
        g = parse_genome(rec.code or "")
        if g is not None:
            out.append(genome_key(g))
    return out


def recent_notes(notes: list[Note] | None, limit: int = 6) -> list[str]:
    """Return the newest role notes as lines for briefs and prompts (``[round N] role: text``).

    Only notes with text are for the agents; payload-only notes (``prepare``'s data
    fingerprint) are for the trace and the summary.
    """
    said = [n for n in notes or [] if n.text]
    return [f"[round {n.round}] {n.role}" + (f" on {n.candidate}" if n.candidate else "")
            + f": {n.text}" for n in said[-limit:]]


#: Types the checkpointer may revive from msgpack (see graph.checkpoint).
RECORD_TYPES: tuple[type[BaseModel], ...] = (Candidate, Note)
