"""The offline brains: a real search policy over the Template's Choices.

They read the same briefs (reports, critique, history) the LLM prompts are built from and
are deterministic for a seed. Role modules wrap their plain-dict answers in the roles'
schemas, so this module depends on no role.

* :func:`critique` - rule-based Critic: budgets first (in priority order), then groups
  that lag the overall accuracy, then accuracy against the best design.
* :func:`design` - a learning searcher: draws a parent from the Pareto front as the
  critique asks (:mod:`agents.policy`) and a move by Thompson sampling over the run's
  per-move statistics (:mod:`agents.move_stats`), starting from each move's measured
  effect on the Template (:mod:`agents.move_prior`), with a bonus for the moves the
  critique's plan names (over budget -> shrink / depthwise-separable / downsample; lagging
  group -> wider early layers / BatchNorm / SE / shortcuts); never re-proposes a genome
  already tried. Without a budget or group problem the evidence alone ranks the moves.
* :func:`fix` - re-renders code from its parsed genome (shrinking it on a budget
  failure), else falls back to a mutation of the parent's design.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from typing import Any

from agents.move_prior import MovePrior, load_prior
from agents.move_stats import DEFAULT_NOISE_SD, move_stats
from agents.policy import PlanKind, choose_parent, evidence, rank_moves
from tasks.genome import TEMPLATE_GENOME, Genome, genome_summary, parse_genome, render
from tasks.mutations import MUTATIONS

#: Draws of one move on one parent (moves that pick a stage at random may hit a tried one).
MOVE_DRAWS = 3

#: Groups whose accuracy is this far below the overall accuracy count as lagging.
LAG_THRESHOLD = 0.03
#: Groups smaller than this are too noisy to act on; larger ones are ignored too when the
#: interval of their gap (``gap_interval``) includes zero.
MIN_GROUP_COUNT = 5

# Moves per problem, best first. Why: depthwise-separable convs cut MACs ~k*k with a
# small accuracy cost; earlier downsampling cuts activation memory and latency ~4x.
COST_MOVES: dict[str, tuple[str, ...]] = {
    "latency": ("depthwise_separable", "more_downsampling", "shrink_width", "shallower",
                "smaller_kernel"),
    "memory": ("more_downsampling", "shrink_width", "depthwise_separable", "shallower"),
    "params": ("shrink_width", "depthwise_separable", "shallower", "smaller_kernel"),
    "flops": ("depthwise_separable", "more_downsampling", "shrink_width", "smaller_kernel"),
}
# Lagging groups: more low-level capacity and better-conditioned features help the
# under-represented groups first (FaHaNa / FL-NAS observations on ISIC).
FAIRNESS_MOVES = ("widen_early", "to_batchnorm", "add_se", "add_residual", "less_downsampling")
BUDGET_NAMES = ("latency", "memory", "params", "flops")


def genome_key(genome: Genome) -> str:
    """Canonical JSON of a genome: equal architectures give equal keys."""
    return json.dumps(genome.model_dump(mode="json"), sort_keys=True)


def violated_names(violations: Iterable[str]) -> list[str]:
    """Budget names (latency, memory, params, flops) named by violation texts, in order."""
    out: list[str] = []
    for text in violations:
        head = text.strip().split(" ")[0].lower() if text.strip() else ""
        for name in BUDGET_NAMES:
            if head.startswith(name) and name not in out:
                out.append(name)
    return out


# ------------------------------------------------------------------------- critic


def critique(brief: dict[str, Any]) -> dict[str, Any]:
    """Rule-based critique of the newest report.

    Args:
        brief: ``latest`` (headline of the newest candidate or None), ``best`` (headline
            of the best design or None), ``budgets`` (dict, priority order), ``targets``
            (``balanced_accuracy``/``max_gap``, None when unset), ``notes`` (other
            roles' note lines, passed on as suggestions).

    Returns:
        A dict valid for the ``Critique`` schema.
    """
    latest = brief.get("latest") or {}
    best = brief.get("best") or {}
    targets = brief.get("targets") or {}
    violated: list[str] = list(latest.get("violations") or [])
    priorities: list[str] = []
    suggestions: list[str] = []
    summary: list[str] = []

    if latest.get("status") == "failed":
        summary.append(f"{latest.get('id')} failed at {latest.get('failure_stage')}: "
                       f"{str(latest.get('failure_reason'))[:200]}")
        priorities.append("produce a design that builds and trains")
        suggestions.append("stay close to the best design; change one Choice at a time")
    _collapsed(latest, summary, priorities, suggestions)
    for name in violated_names(violated):
        priorities.append(f"meet the {name} budget")
        suggestions.append(f"{name} over budget: try {', '.join(COST_MOVES[name][:3])}")
    if violated:
        summary.append("violates " + "; ".join(violated))
    lagging = lagging_groups(latest)
    _lagging(lagging, summary, priorities, suggestions)
    summary += _below_best(latest, best)
    priorities.append("raise balanced accuracy")
    if not violated and not lagging:
        suggestions.append("within budget and balanced: add capacity (widen, residual, SE)")
    # Other roles' notes reach the Designer through the critique (after the rules above,
    # so they never reorder what the rules asked for).
    suggestions += [f"note from {line}" for line in brief.get("notes") or []]

    converged = targets_met(best, targets)
    if converged:
        summary.append("every target met by the best design")
    return {
        "summary": "; ".join(summary) or "no problems found in the newest report",
        "violated_budgets": violated,
        "lagging_groups": lagging,
        "priorities": priorities,
        "suggestions": suggestions,
        "converged": converged,
    }


def _collapsed(latest: dict[str, Any], summary: list[str], priorities: list[str],
               suggestions: list[str]) -> None:
    """Say so when the newest design's training collapsed to one predicted class."""
    if latest.get("collapsed"):
        summary.append(f"{latest.get('id')} collapsed to chance (one predicted class): "
                       "it is not ranked")
        priorities.append("produce a design that trains")
        suggestions.append("revert to a design that trained; avoid the move that collapsed")


def _lagging(lagging: list[dict[str, Any]], summary: list[str], priorities: list[str],
             suggestions: list[str]) -> None:
    """Name the worst lagging group, with the part of its lag its class mix gives."""
    if not lagging:
        return
    worst = lagging[0]
    priorities.append("close the accuracy gap of lagging groups")
    mix = worst.get("from_class_mix")
    suggestions.append(
        f"group {worst['attribute']}={worst['group']} lags by {worst['gap']:.3f} "
        f"(acc {worst['accuracy']:.3f}"
        + (f"; {mix:.3f} of it from its class mix" if mix is not None else "")
        + "): widen early layers, change normalisation, add SE")
    summary.append(f"{len(lagging)} lagging group(s), worst {worst['attribute']}="
                   f"{worst['group']} -{worst['gap']:.3f}")


def _below_best(latest: dict[str, Any], best: dict[str, Any]) -> list[str]:
    """Say so when the newest design is clearly worse than the best one."""
    bal, best_bal = latest.get("balanced_accuracy"), best.get("balanced_accuracy")
    if bal is None or best_bal is None or latest.get("id") == best.get("id") \
            or bal >= best_bal - 0.01:
        return []
    return [f"balanced accuracy {bal:.3f} below best {best_bal:.3f} ({best.get('id')}): "
            "revert this direction"]


def lagging_groups(latest: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the groups whose accuracy lags the overall one beyond noise, worst first."""
    acc = latest.get("accuracy")
    lagging: list[dict[str, Any]] = []
    for attr, info in (latest.get("groups") or {}).items():
        for g in info:
            if acc is None or g["count"] < MIN_GROUP_COUNT:
                continue
            interval = g.get("gap_interval")
            if interval is not None and interval[0] <= 0:
                continue  # the lag is within noise: its interval includes zero
            gap = acc - g["accuracy"]
            if gap > LAG_THRESHOLD:
                lag = {"attribute": attr, "group": g["group"],
                       "accuracy": round(g["accuracy"], 4), "gap": round(gap, 4)}
                if g.get("expected_accuracy") is not None:  # the lag its classes give
                    lag["from_class_mix"] = round(acc - g["expected_accuracy"], 4)
                lagging.append(lag)
    lagging.sort(key=lambda x: -x["gap"])
    return lagging


def targets_met(best: dict[str, Any] | None, targets: dict[str, Any]) -> bool:
    """Tell whether at least one target is set and the feasible best meets all of them."""
    set_targets = {k: v for k, v in targets.items() if v is not None}
    if not best or not set_targets or best.get("violations"):
        return False
    ok = True
    if "balanced_accuracy" in set_targets:
        ok &= (best.get("balanced_accuracy") or 0.0) >= set_targets["balanced_accuracy"]
    if "max_gap" in set_targets:
        ok &= (best.get("max_gap") if best.get("max_gap") is not None else 1.0) \
            <= set_targets["max_gap"]
    return bool(ok)


# ----------------------------------------------------------------------- designer


def plan_moves(critique_: dict[str, Any] | None) -> list[str]:
    """Order the moves the critique's problems call for, most urgent first.

    Violated budgets name cost moves, lagging groups fairness moves. Raising accuracy is
    every critique's standing priority and names no moves: the measured prior and the
    run's own statistics know better which moves raise it (docs/metrics.md#move-prior).
    """
    crit = critique_ or {}
    order: list[str] = []
    for name in violated_names(crit.get("violated_budgets") or []):
        order += COST_MOVES[name]
    if crit.get("lagging_groups"):
        order += FAIRNESS_MOVES
    return [m for m in dict.fromkeys(order) if m in MUTATIONS]  # first mention wins


def plan_kind(critique_: dict[str, Any] | None) -> PlanKind:
    """Return what the plan answers (:func:`agents.policy.rank_moves`): budget or fairness."""
    crit = critique_ or {}
    return "budget" if violated_names(crit.get("violated_budgets") or []) else "fairness"


def design(brief: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Propose a new, untried design: a parent from the Pareto front, a move by a bandit.

    The parent is the front member the critique asks for (see
    :func:`agents.policy.choose_parent`); the move is drawn by Thompson sampling over the
    per-move statistics of the run (:func:`agents.move_stats.move_stats`), with the
    critique's plan (:func:`plan_moves`) as the prior (:func:`agents.policy.rank_moves`).
    One move at a time keeps the credit assignment clear; when every single move from
    every front member is tried, two and three moves, then random walks.

    Args:
        brief: ``best`` (dict with ``code``), ``best_id``, ``critique`` (dict or None),
            ``tried`` (genome keys already proposed), ``notes`` (other roles' note
            lines, cited in the rationale), ``history`` (the run's Candidate records by
            id; empty: the best design is the parent and the prior alone ranks moves),
            ``archive`` (ids of the Pareto front), ``noise_sd`` (std of the selection
            score over training seeds, default
            :data:`agents.move_stats.DEFAULT_NOISE_SD`), ``unfairness_weight``.
        rng: Seeded generator (deterministic per run, round and seed).

    Returns:
        ``{"rationale": str, "code": str, "genome": dict, "moves": [...],
        "parent": str | None}``.
    """
    crit = brief.get("critique") or {}
    history = brief.get("history") or {}
    noise_sd = float(brief.get("noise_sd") or DEFAULT_NOISE_SD)
    weight = float(brief.get("unfairness_weight", 1.0))
    tried = set(brief.get("tried") or ())
    stats = move_stats(history, weight, noise_sd)
    planned, kind, prior = plan_moves(crit), plan_kind(crit), load_prior()
    parents = _parents(brief, crit, history, weight, rng)
    for _, base, _ in parents:
        tried.add(genome_key(base))
    for pid, base, reason in parents:
        for move in rank_moves(stats, planned, noise_sd, rng, prior, kind):
            for _ in range(MOVE_DRAWS):  # a move may pick its stage at random
                genome = MUTATIONS[move](base, rng)
                if genome != base and genome_key(genome) not in tried:
                    return _answer(genome, [move], (pid, base, reason), stats, prior,
                                   noise_sd, brief)
    pid, base, reason = parents[0]
    for n_moves in (2, 3):
        order = rank_moves(stats, planned, noise_sd, rng, prior, kind)
        for first in order:
            genome, moves = _apply(base, [first], rng)
            for _ in range(n_moves - 1):
                genome, moves = _apply(genome, [rng.choice(order[:6])], rng, moves)
            if moves and genome_key(genome) not in tried:
                return _answer(genome, moves, parents[0], stats, prior, noise_sd, brief)
    # Everything near is tried: random walks from the parent.
    for _ in range(200):
        genome, moves = base, []
        for _ in range(rng.randint(2, 5)):
            genome, moves = _apply(genome, [rng.choice(sorted(MUTATIONS))], rng, moves)
        if moves and genome_key(genome) not in tried:
            return _answer(genome, moves, parents[0], stats, prior, noise_sd, brief)
    raise RuntimeError("heuristic designer found no untried genome near the Pareto front")


def _parents(brief: dict[str, Any], crit: dict[str, Any], history: dict[str, Any],
             weight: float, rng: random.Random) -> list[tuple[str | None, Genome, str]]:
    """Parents to try, in order: the chosen one, then the other front members, then best."""
    budgets = violated_names(crit.get("violated_budgets") or [])
    focus = "budget" if budgets else "fairness" if crit.get("lagging_groups") else "accuracy"
    best_id = brief.get("best_id")
    front = [*(brief.get("archive") or []), *([best_id] if best_id else [])]
    choice = choose_parent(front, history, focus, budgets[0] if budgets else "latency",
                           weight, rng)
    out: list[tuple[str | None, Genome, str]] = []
    if choice is not None:
        ordered = [choice.id] + [c for c in dict.fromkeys(front) if c != choice.id]
        for cid in ordered:
            rec = history.get(cid)
            g = parse_genome(rec.code) if rec is not None and rec.ok else None
            if g is not None:
                out.append((cid, g, choice.reason if cid == choice.id
                            else "another front member (every move from the first was tried)"))
    best = parse_genome((brief.get("best") or {}).get("code") or "")
    out.append((best_id, best or TEMPLATE_GENOME,
                "the best design" if best else "the Template"))
    return out


def _apply(genome: Genome, names: Sequence[str], rng: random.Random,
           moves: list[str] | None = None) -> tuple[Genome, list[str]]:
    moves = list(moves or [])
    for name in names:
        new = MUTATIONS[name](genome, rng)
        if new != genome:
            genome = new
            moves.append(name)
    return genome, moves


def _answer(genome: Genome, moves: list[str], parent: tuple[str | None, Genome, str],
            stats: dict[str, Any], prior: dict[str, MovePrior], noise_sd: float,
            brief: dict[str, Any]) -> dict[str, Any]:
    pid, base, reason = parent
    why = (brief.get("critique") or {}).get("priorities") or ["explore"]
    evid = "; ".join(f"{m}: {evidence(stats.get(m), noise_sd, prior.get(m))}"
                     for m in dict.fromkeys(moves))
    rationale = (f"parent {pid or 'best'} ({reason}; {genome_summary(base)}), moves "
                 f"{' + '.join(moves)}. Evidence: {evid}. The critique prioritises: "
                 f"{'; '.join(why[:3])}. New design: {genome_summary(genome)}")
    notes = brief.get("notes") or ()
    if notes:
        rationale += f". Role notes read: {' | '.join(notes[-3:])}"
    return {"rationale": rationale, "code": render(genome), "parent": pid,
            "genome": genome.model_dump(mode="json"), "moves": moves}


# -------------------------------------------------------------------------- fixer


def fix(brief: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Repair code that failed the gate or crashed in the worker.

    Args:
        brief: ``code``, ``error``, ``stage`` (the failed gate check or worker stage),
            ``parent_code`` (the design it was derived from), ``tried`` (genome keys).
        rng: Seeded generator.

    Returns:
        ``{"explanation": str, "code": str}``.
    """
    code = brief.get("code") or ""
    error = (brief.get("error") or "").lower()
    tried = set(brief.get("tried") or ())
    genome = parse_genome(code)
    over_budget = brief.get("stage") == "budget" or "budget" in error or " > " in error
    if genome is not None:
        if over_budget:
            # Too slow: fewer pixels cut latency most; else fewer channels cut parameters.
            order = ("more_downsampling", "shrink_width", "depthwise_separable", "shallower") \
                if "latency" in error else \
                ("shrink_width", "depthwise_separable", "more_downsampling", "shallower")
            for name in order:
                new = MUTATIONS[name](genome, rng)
                if new != genome and genome_key(new) not in tried:
                    return {"explanation": f"over budget: applied {name} to the parsed genome",
                            "code": render(new)}
        rendered = render(genome)
        if rendered != code:
            return {"explanation": "re-rendered the code from its GENOME literal "
                                   "(the hand edits outside it were invalid)", "code": rendered}
    parent = parse_genome(brief.get("parent_code") or "") or TEMPLATE_GENOME
    for _ in range(50):
        name = rng.choice(sorted(MUTATIONS))
        new = MUTATIONS[name](parent, rng)
        if new != parent and genome_key(new) not in tried:
            return {"explanation": f"could not repair the code; fell back to the parent design "
                                   f"with {name}", "code": render(new)}
    return {"explanation": "could not repair the code; fell back to the parent design",
            "code": render(parent)}
