"""Per-move statistics from the run's own history: what each named move did.

For every designer or fixer candidate whose genome and whose parent's genome parse,
:func:`tasks.mutations.classify_moves` names the moves that turn the parent into the
child (this works for LLM-written designs too). Each named move is credited with the
child's outcome:

* a failure: the gate or the worker failed it, or training collapsed (balanced accuracy
  within :data:`COLLAPSE_TOL` of chance, 1/8 for the 8 ISIC classes or 1 over the classes
  present in a smaller validation split, or one predicted class for every image);
* otherwise, when parent and child were measured at equal fidelity (apart from the
  training seed), the effect child - parent on balanced accuracy, unfairness (mean
  max_gap over sex and age, docs/metrics.md), latency, parameters and the selection
  score, each side at its best available fidelity: the mean over its training seeds
  when it was promoted or confirmed (:func:`agents.records.estimate`,
  :func:`agents.records.estimated_objectives`), else its one search evaluation. So a
  child whose lucky screen got it promoted is re-credited with its mean once the
  promotion has run.

A child of several moves credits each of them with the whole effect (no finer credit
assignment exists without more evaluations). The reference is the nearest evaluated,
non-collapsed ancestor, so a Code-Fixer's repair of a failed design is compared with the
design that design came from. Score effects within +-``noise_sd`` (the spread of the
score over training seeds) between two single evaluations are neutral, not help; the band
narrows with the seeds behind each side (:func:`neutral_band`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from agents.move_prior import MovePrior
from agents.records import Candidate, estimate, estimated_objectives, seeds_measured
from evaluation.report import COLLAPSE_TOL
from tasks.genome import Genome, parse_genome
from tasks.mutations import classify_moves

#: Std of the selection score over training seeds when the run has not measured it: the
#: Template's balanced accuracy spreads by about 0.05 over training seeds at the default
#: fidelity (docs/metrics.md#noise, nine seeds).
DEFAULT_NOISE_SD = 0.05
#: Chance balanced accuracy of the 8 ISIC classes.
CHANCE = 1 / 8
#: Objectives whose effect is kept, in table order.
EFFECTS = ("balanced_accuracy", "unfairness", "latency_ms", "params", "score")
#: Origins whose candidates are proposals (the Template and baselines are not).
PROPOSAL_ORIGINS = ("designer", "fixer")
#: Ancestors followed at most to find an evaluated reference.
MAX_ANCESTORS = 8


@dataclass
class MoveStat:
    """What one named move did in this run so far."""

    move: str
    tries: int = 0
    """Children credited to the move (failed or measured; unequal fidelity not counted)."""
    failures: int = 0
    """Gate or worker failures and collapsed trainings."""
    helped: int = 0
    """Measured children whose score rose by more than the neutral band (:func:`neutral_band`)."""
    neutral: int = 0
    hurt: int = 0
    effects: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in EFFECTS})
    """Per objective, the effects child - parent at equal fidelity."""

    @property
    def successes(self) -> int:
        """Tries that trained (not failed, not collapsed)."""
        return self.tries - self.failures

    def mean(self, objective: str) -> float | None:
        """Mean effect on ``objective`` (None when nothing was measured)."""
        values = self.effects[objective]
        return sum(values) / len(values) if values else None


def collapsed(rec: Candidate) -> bool:
    """Tell whether an evaluated candidate's training collapsed to chance.

    Collapsed: balanced accuracy within ``COLLAPSE_TOL`` of 1/8 or of 1 over the classes
    present, or every prediction in one class (``ClassificationMetrics.collapsed``).
    """
    rep = rec.report
    if rep is None or rep.metrics is None:
        return False
    return rep.metrics.collapsed or abs(rep.metrics.balanced_accuracy - CHANCE) <= COLLAPSE_TOL


def failed(rec: Candidate) -> bool:
    """Tell whether a candidate failed (gate, worker) or its training collapsed."""
    return rec.status == "failed" or (rec.report is not None and not rec.report.ok) \
        or (rec.ok and collapsed(rec))


def same_fidelity(a: Candidate, b: Candidate) -> bool:
    """Tell whether two records were measured alike (the training seed may differ).

    Records without a fidelity (hand-built ones, older runs) compare equal to each other.
    """
    if a.fidelity is None or b.fidelity is None:
        return a.fidelity is None and b.fidelity is None
    return a.fidelity.model_dump(exclude={"seed"}) == b.fidelity.model_dump(exclude={"seed"})


def reference(rec: Candidate, candidates: Mapping[str, Candidate]) -> Candidate | None:
    """Return the nearest ancestor of ``rec`` that trained (evaluated, not collapsed)."""
    cid = rec.parent
    for _ in range(MAX_ANCESTORS):
        anc = candidates.get(cid) if cid else None
        if anc is None:
            return None
        if anc.ok and not collapsed(anc):
            return anc
        cid = anc.parent
    return None


def effects(child: Candidate, parent: Candidate, unfairness_weight: float) -> dict[str, float]:
    """Effects child - parent of two evaluated records, per objective of :data:`EFFECTS`.

    Each side is taken at its best available fidelity: seed means for a promoted or
    confirmed design, its search evaluation otherwise.
    """
    assert child.report is not None and parent.report is not None
    c_obj, p_obj = estimated_objectives(child), estimated_objectives(parent)
    assert child.report.hardware is not None and parent.report.hardware is not None
    return {
        "balanced_accuracy": p_obj[0] - c_obj[0],  # objectives hold 1 - balanced accuracy
        "unfairness": c_obj[1] - p_obj[1],
        "latency_ms": c_obj[2] - p_obj[2],
        "params": float(child.report.hardware.params - parent.report.hardware.params),
        "score": estimate(child, unfairness_weight) - estimate(parent, unfairness_weight),
    }


def neutral_band(child: Candidate, parent: Candidate, noise_sd: float) -> float:
    """Half-width of the neutral score band for a child - parent effect.

    ``noise_sd`` for two single evaluations; the difference of a mean over ``n_c`` seeds
    and one over ``n_p`` seeds spreads by ``sqrt((1/n_c + 1/n_p) / 2)`` times as much, and
    the band narrows alike (two designs promoted to 3 seeds each: ``noise_sd / sqrt(3)``).
    """
    n_c, n_p = seeds_measured(child), seeds_measured(parent)
    return noise_sd * math.sqrt((1 / n_c + 1 / n_p) / 2)


def _genome(rec: Candidate) -> Genome | None:
    return parse_genome(rec.code or "")


def move_stats(candidates: Mapping[str, Candidate], unfairness_weight: float = 1.0,
               noise_sd: float = DEFAULT_NOISE_SD) -> dict[str, MoveStat]:
    """Collect per-move statistics from the run's candidates.

    Args:
        candidates: The run's records by id (the graph state's ``candidates``).
        unfairness_weight: The selection score's weight (``Settings.unfairness_weight``).
        noise_sd: Std of the selection score over training seeds; score effects within
            +-``noise_sd`` count as neutral (narrower for promoted designs,
            :func:`neutral_band`).

    Returns:
        A :class:`MoveStat` per move that was tried at least once, by move name.
    """
    stats: dict[str, MoveStat] = {}
    for rec in candidates.values():
        if rec.origin not in PROPOSAL_ORIGINS or rec.status not in ("evaluated", "failed"):
            continue  # pending: no outcome yet
        parent = reference(rec, candidates)
        child_g = _genome(rec)
        parent_g = _genome(parent) if parent is not None else None
        if parent is None or child_g is None or parent_g is None:
            continue
        moves = classify_moves(parent_g, child_g)
        bad = failed(rec)
        if not moves or (not bad and not same_fidelity(rec, parent)):
            continue
        delta = None if bad else effects(rec, parent, unfairness_weight)
        band = neutral_band(rec, parent, noise_sd)
        for move in moves:
            st = stats.setdefault(move, MoveStat(move))
            st.tries += 1
            if delta is None:
                st.failures += 1
                continue
            for key, value in delta.items():
                st.effects[key].append(value)
            if delta["score"] > band:
                st.helped += 1
            elif delta["score"] < -band:
                st.hurt += 1
            else:
                st.neutral += 1
    return stats


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}"


def prior_table(prior: Mapping[str, MovePrior]) -> str:
    """Render the measured prior (:mod:`agents.move_prior`) for the Designer's prompt."""
    if not prior:
        return ""
    lines = ["Measured before this run, each move applied once to the Template and trained "
             "on the same seeds as it (paired; child - Template):",
             "move | d score | d bal.acc | d unfairness | seeds"]
    for p in sorted(prior.values(), key=lambda p: -p.score):
        lines.append(f"{p.move} | {_fmt(p.score)} | {_fmt(p.balanced_accuracy)} | "
                     f"{_fmt(p.unfairness)} | {p.seeds}")
    return "\n".join(lines)


def effects_table(stats: Mapping[str, MoveStat], noise_sd: float = DEFAULT_NOISE_SD,
                  prior: Mapping[str, MovePrior] | None = None) -> str:
    """Render the move statistics as a compact text table for prompts and rationales.

    Columns: move, tries, failures, helped/neutral/hurt (score effect beyond
    +-``noise_sd``) and the mean effect on balanced accuracy, unfairness, latency (ms) and
    the selection score. Most-tried moves first. With a measured ``prior``, its table
    follows (:func:`prior_table`).
    """
    tail = prior_table(prior or {})
    if not stats:
        return "\n\n".join(filter(None, ["no move has been tried yet in this run", tail]))
    lines = [f"(effects are child - parent at equal fidelity, seed means for promoted "
             f"designs; |score effect| <= {noise_sd:.3f} is neutral, less when promoted)",
             "move | tries | failures | helped/neutral/hurt | d bal.acc | d unfairness | "
             "d latency ms | d score"]
    for st in sorted(stats.values(), key=lambda s: (-s.tries, s.move)):
        lines.append(f"{st.move} | {st.tries} | {st.failures} | {st.helped}/{st.neutral}/"
                     f"{st.hurt} | {_fmt(st.mean('balanced_accuracy'))} | "
                     f"{_fmt(st.mean('unfairness'))} | {_fmt(st.mean('latency_ms'), 2)} | "
                     f"{_fmt(st.mean('score'))}")
    return "\n\n".join(filter(None, ["\n".join(lines), tail]))
