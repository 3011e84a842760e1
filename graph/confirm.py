"""The ``confirm`` node: the final choice is made on means over training seeds.

One training run of a design is one draw from a noisy distribution: on the default
synthetic task the Template's validation balanced accuracy spreads by several points
between training seeds (docs/metrics.md#noise), more than most single moves change it.
So the search's single evaluations only *screen* designs. When the search stops, before
the test split is touched, the top ``confirm_top`` designs by the selection rule
(:func:`agents.records.select_best`, feasible first) and the Template, as the reference,
are re-evaluated on ``confirm_seeds`` more training seeds (same data, epochs and
recipe; only the training seed differs). The final choice is the feasible finalist with
the highest mean selection score over its seeds; each re-evaluation is kept on the
record (``Candidate.confirmations``), traced (``confirm`` events) and reported with its
fidelity.

The evaluations are cached by code and recipe (seed included), so a resumed run retrains
nothing that finished, and the node rebuilds its records from scratch each time it runs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from agents.move_stats import DEFAULT_NOISE_SD, collapsed
from agents.records import (
    Candidate,
    Evaluation,
    Fidelity,
    estimate,
    score,
    seed_reports,
    seed_scores,
    select_best,
)
from agents.settings import Settings
from evaluation.intervals import mean_interval
from evaluation.pareto import objectives
from graph.services import Services

TEMPLATE_ID = "c000"


def finalists(cands: Mapping[str, Candidate], ctx: Settings) -> list[str]:
    """Return the ids to confirm: the top ``confirm_top`` by the selection rule, then c000."""
    pool = {cid: rec for cid, rec in cands.items() if rec.usable and rec.origin != "baseline"}
    out: list[str] = []
    while len(out) < ctx.confirm_top and pool:
        best = select_best(pool, ctx.unfairness_weight)
        if best is None:
            break
        out.append(best)
        pool.pop(best)
    if TEMPLATE_ID in cands and cands[TEMPLATE_ID].ok and TEMPLATE_ID not in out:
        out.append(TEMPLATE_ID)
    return out


def select_confirmed(cands: Mapping[str, Candidate], ids: list[str],
                     unfairness_weight: float) -> str | None:
    """Return the finalist with the highest mean score over its seeds, feasible ones first.

    Ties go to fewer parameters. A finalist whose every run failed is never chosen.
    """
    ranked = []
    for i, cid in enumerate(ids):
        rec = cands[cid]
        scores = seed_scores(rec, unfairness_weight)
        if not scores or rec.report is None or rec.report.hardware is None:
            continue
        infeasible = bool(rec.report.violations)
        ranked.append(((infeasible, -statistics.fmean(scores), rec.report.hardware.params, i),
                       cid))
    return min(ranked)[1] if ranked else None


def seed_summary(rec: Candidate, unfairness_weight: float) -> dict[str, Any]:
    """Mean, spread and 95 % t-interval of the score and its parts over the seeds."""
    runs = seed_reports(rec)
    ok = [r for r in runs if r.ok and r.metrics is not None]
    parts = {"balanced_accuracy": [r.metrics.balanced_accuracy for r in ok if r.metrics],
             "unfairness": [objectives(r)[1] for r in ok],
             "score": seed_scores(rec, unfairness_weight)}
    out: dict[str, Any] = {"seeds": len(ok), "failed": len(runs) - len(ok)}
    for name, values in parts.items():
        mean, lo, hi = mean_interval(values)
        sd = statistics.stdev(values) if len(values) > 1 else math.nan
        out[name] = {"mean": _r(mean), "sd": _r(sd), "interval": [_r(lo), _r(hi)],
                     "values": [_r(v) for v in values]}
    return out


def _r(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 4)


def seed_runs(recs: list[Candidate], ctx: Settings, svc: Services) -> list[Candidate]:
    """Return ``recs`` with their evaluations on every confirmation seed (cached, traced).

    All of them are submitted at once, so ``--workers`` evaluations run concurrently;
    the records and trace events come out in the order of ``recs`` and the seeds.
    """
    jobs = [(rec, seed) for rec in recs for seed in ctx.confirm_train_seeds]
    for rec, seed in jobs:
        svc.display.stage(rec.id, "confirming", f"training seed {seed}")
    reports = svc.evaluate_many([(rec.code, rec.id, seed) for rec, seed in jobs])
    runs: dict[str, list[Evaluation]] = {rec.id: [] for rec in recs}
    for (rec, seed), report in zip(jobs, reports, strict=True):
        runs[rec.id].append(Evaluation(fidelity=Fidelity.model_validate(svc.fidelity(seed)),
                                       report=report))
        svc.tracer.event("confirm", candidate=rec.id, seed=seed, ok=report.ok,
                         balanced_accuracy=report.metrics.balanced_accuracy
                         if report.metrics else None, failure=report.failure_reason)
    return [rec.model_copy(update={"confirmations": runs[rec.id]}) for rec in recs]


def promote(state: Mapping[str, Any], finals: list[str], ctx: Settings,
            svc: Services) -> dict[str, Candidate]:
    """Promote the round's promising designs to the confirmation seeds (successive halving).

    A design is promising when it trained (not collapsed), fits the budgets, was not
    promoted before, and its single evaluation's score is at least the best estimate
    before this round minus the run's noise level (``noise_sd``, the Template's spread
    over seeds): a design further below would need a lucky screen to be better.
    The top ``promote_top`` of them by their screens are re-evaluated on
    ``confirm_train_seeds`` (cached, so the final ``confirm`` retrains nothing) and from
    then on ranked on their means (:func:`agents.records.estimate`).

    Returns:
        The promoted records by id (empty when none qualifies or promotion is off).
    """
    cands: Mapping[str, Candidate] = state.get("candidates") or {}
    if ctx.promote_top <= 0:
        return {}
    w = ctx.unfairness_weight
    noise = float(state.get("noise_sd") or DEFAULT_NOISE_SD)
    before = {cid: rec for cid, rec in cands.items() if cid not in finals}
    incumbent = select_best(before, w)  # the best estimate before this round
    bar = estimate(cands[incumbent], w) - noise if incumbent else -math.inf
    pool = [rec for cid in finals
            if (rec := cands[cid]).usable and rec.origin != "baseline" and
            not rec.confirmations and rec.report is not None and
            not rec.report.violations and not collapsed(rec)]
    ranked = sorted(pool, key=lambda r: -score(r, w))
    chosen = [r for r in ranked if score(r, w) >= bar][:ctx.promote_top]
    if not chosen:
        return {}
    promoted = {rec.id: rec for rec in seed_runs(chosen, ctx, svc)}
    for rec in promoted.values():
        svc.persist(rec)
        svc.tracer.event("promote", candidate=rec.id, round=rec.round, bar=round(bar, 4),
                         screen=round(score(cands[rec.id], w), 4),
                         summary=seed_summary(rec, w))
        svc.display.stage(rec.id, "promoted", f"mean score {estimate(rec, w):.3f} over "
                                              f"{len(seed_scores(rec, w))} seeds")
    return promoted


def confirm_node(state: Mapping[str, Any], ctx: Settings, svc: Services) -> dict[str, Any]:
    """Re-evaluate the finalists on more training seeds and choose on the means."""
    cands: Mapping[str, Candidate] = state.get("candidates") or {}
    if ctx.confirm_top <= 0:
        return {}
    ids = finalists(cands, ctx)
    updated = {rec.id: rec for rec in seed_runs([cands[cid] for cid in ids], ctx, svc)}
    for rec in updated.values():
        svc.persist(rec)
    merged = {**cands, **updated}
    best = select_confirmed(merged, ids, ctx.unfairness_weight)
    svc.tracer.event("confirmed", finalists=ids, best=best,
                     seeds=[ctx.resolved_train_seed, *ctx.confirm_train_seeds],
                     summary={cid: seed_summary(merged[cid], ctx.unfairness_weight)
                              for cid in ids})
    if best is not None:
        svc.display.message(f"confirmed on {1 + ctx.confirm_seeds} training seeds: {best}")
    return {"candidates": updated, "finalists": ids, "best_id": best or state.get("best_id")}
