"""The graph's tool nodes (prepare, gate, evaluate) and the round bookkeeping.

Each node takes ``(state, settings, services)``; the builder (graph/builder.py) wraps
it with tracing and hands it the run's services. ``gate`` and ``evaluate`` run
candidate code only in the sandboxed worker, through the cached tool calls of
:class:`graph.services.Services` (docs/architecture.md, docs/security.md).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any

from agents.records import (
    Candidate,
    Fidelity,
    GateSummary,
    Note,
    estimated_objectives,
    headline,
    new_record,
    seed_scores,
    select_best,
)
from agents.settings import Settings
from evaluation.pareto import ParetoArchive, reference_point
from graph.confirm import TEMPLATE_ID, promote, seed_runs
from graph.services import Services

#: A round counts as progress only when the archive's hypervolume grows by more than this
#: share. One design's latency varies by about 10 % between measurements, which moves the
#: volume by well under 1 % (docs/metrics.md#noise): such gains must not reset patience.
HV_REL_GAIN = 0.01


def finish(svc: Services, rec: Candidate) -> None:
    """Record a candidate's final outcome: files, trace event, display."""
    svc.persist(rec)
    h = headline(rec) or {}
    if rec.ok:
        line = (f"bal.acc {h['balanced_accuracy']:.3f} gap {h.get('max_gap') or 0:.3f} "
                f"{h['params']:,} params {h['latency_ms']:.2f} ms"
                + (f" VIOLATES {'; '.join(h['violations'])}" if h["violations"] else ""))
        svc.display.stage(rec.id, "done", line)
    else:
        line = str(rec.failure)[:200]
        svc.display.stage(rec.id, "failed", line)
    svc.tracer.event("candidate", candidate=rec.id, outcome="ok" if rec.ok else "failed",
                     origin=rec.origin, parent=rec.parent, round=rec.round, brain=rec.brain,
                     code_hash=rec.code_hash, headline=line,
                     metrics={k: h.get(k) for k in ("balanced_accuracy", "accuracy", "max_gap",
                                                    "params", "latency_ms", "memory_mb")},
                     failure=rec.failure,
                     fixes=[f.model_dump(mode="json") for f in rec.fixes])


def pareto_archive(cands: Mapping[str, Candidate], ctx: Settings) -> ParetoArchive:
    """Build the Pareto archive of the evaluated designs (baselines are left out).

    Each design enters at its best available fidelity: a promoted one with its means over
    training seeds (:func:`agents.records.estimated_objectives`).
    """
    archive = ParetoArchive(reference=list(reference_point(ctx.budgets)))
    for cid, rec in cands.items():
        if rec.usable and rec.origin != "baseline" and rec.report is not None:
            try:
                archive.add(cid, estimated_objectives(rec), feasible=not rec.report.violations)
            except ValueError:
                continue
    return archive


def conclude(state: Mapping[str, Any], ctx: Settings, svc: Any,
             updated: dict[str, Candidate], *, count_round: bool = True) -> dict[str, Any]:
    """State update closing a round: Pareto archive, hypervolume, patience, best design."""
    cands = {**(state.get("candidates") or {}), **updated}
    archive = pareto_archive(cands, ctx)
    hv = archive.hypervolume()
    prev = (state.get("hv_history") or [None])[-1]
    stale = state.get("stale_rounds", 0)
    if count_round and prev is not None:
        stale = 0 if hv > prev * (1 + HV_REL_GAIN) else stale + 1
    best_id = select_best(cands, ctx.unfairness_weight)
    if count_round:
        t0 = svc.round_t0
        svc.tracer.event("round_end", round=state.get("round", 0), candidate=state.get("current"),
                         hv=hv, best=best_id, stale_rounds=stale,
                         duration_s=None if t0 is None else round(time.monotonic() - t0, 4))
    if best_id and best_id != state.get("best_id"):
        h = headline(cands[best_id]) or {}
        svc.display.best(f"{best_id} bal.acc {h.get('balanced_accuracy')} gap {h.get('max_gap')} "
                         f"{h.get('params'):,} params {h.get('latency_ms')} ms")
    return {"candidates": updated, "archive": [e.candidate_id for e in archive.front()],
            "hv_history": [hv], "stale_rounds": stale, "best_id": best_id}


def _evaluated(rec: Candidate, report: Any, svc: Services) -> Candidate:
    """``rec`` with its validation report, the fidelity it was measured at, and the outcome."""
    ok = report.status == "ok"
    return rec.model_copy(update={
        "report": report, "fidelity": Fidelity.model_validate(svc.fidelity()),
        "status": "evaluated" if ok else "failed",
        "failure": None if ok else f"{report.failure_stage}: {report.failure_reason}"})


def prepare_node(state: Mapping[str, Any], ctx: Settings, svc: Services) -> dict[str, Any]:
    """Load the task data, evaluate the Template (and baselines) into the history."""
    data = svc.data()
    from tasks.models import baseline_sources, template_source

    todo = [(TEMPLATE_ID, template_source(), "template")]
    if ctx.baselines:
        todo += [(f"b-{name}", src, "baseline") for name, src in baseline_sources().items()]
    updated: dict[str, Candidate] = {}
    for cid, code, origin in todo:
        rec = new_record(cid, code=code, origin=origin, parent=None, round_=0,
                         brain="reference")
        svc.display.stage(cid, f"origin:{origin}")
        svc.display.stage(cid, "training")
        rec = _evaluated(rec, svc.evaluate(code, cid, baseline=origin == "baseline"), svc)
        finish(svc, rec)
        if cid == TEMPLATE_ID and not rec.ok:
            raise RuntimeError(f"the Template failed to evaluate ({rec.failure}); "
                               "check the installation with `python -m tools.evaluate`")
        if cid == TEMPLATE_ID and (ctx.confirm_top > 0 or ctx.promote_top > 0):
            # Measured early: the run's noise level (promotion's bar, the policy's unit),
            # and the Template at the fidelity promoted designs are compared at; confirm
            # finds these runs in the cache.
            rec = seed_runs([rec], ctx, svc)[0]
        updated[cid] = rec
    out = conclude(state, ctx, svc, updated, count_round=False)
    scores = seed_scores(updated[TEMPLATE_ID], ctx.unfairness_weight)
    noise = statistics.stdev(scores) if len(scores) > 1 else None
    out.update(order=[cid for cid in updated if cid not in (state.get("order") or [])],
               noise_sd=noise,
               round=state.get("round", 0), stale_rounds=0, current=None,
               started_at=state.get("started_at") or time.time(),
               notes=[Note(role="prepare", round=0,
                           payload={"data_fingerprint": data.fingerprint, "n": data.n,
                                    "image_size": data.image_size, "noise_sd": noise,
                                    "template_scores": scores})])
    return out


def gate_node(state: Mapping[str, Any], ctx: Settings, svc: Services) -> dict[str, Any]:
    """Run static check + dry build + dummy forward + budget check of the current candidate."""
    rec: Candidate = state["candidates"][state["current"]]
    svc.display.stage(rec.id, "gating")
    summary = GateSummary.of(svc.gate(rec.code, rec.id))
    svc.tracer.event("gate", candidate=rec.id, round=rec.round, ok=summary.ok,
                     stage=summary.stage, message=summary.message, params=summary.params,
                     flops=summary.flops, latency_ms=summary.latency_ms, attempt=rec.attempt)
    if summary.ok:
        rec = rec.model_copy(update={"gate": summary, "status": "gated"})
        svc.persist(rec)
        return {"candidates": {rec.id: rec}}
    rec = rec.model_copy(update={"gate": summary, "status": "failed",
                                 "failure": f"gate {summary.stage}: {summary.message}"})
    if rec.needs_fix(ctx.max_fix_attempts):
        svc.persist(rec)
    else:
        finish(svc, rec)  # out of fix attempts: the branch ends with this failure
    return {"candidates": {rec.id: rec}}


def evaluate_node(state: Mapping[str, Any], ctx: Settings, svc: Services) -> dict[str, Any]:
    """Train with the fixed recipe and measure on the validation split (sandboxed, cached)."""
    rec: Candidate = state["candidates"][state["current"]]
    svc.display.stage(rec.id, "training")
    rec = _evaluated(rec, svc.evaluate(rec.code, rec.id), svc)
    if rec.needs_fix(ctx.max_fix_attempts):
        svc.persist(rec)
    else:
        finish(svc, rec)
    return {"candidates": {rec.id: rec}}


def round_pick(state: Mapping[str, Any], ctx: Settings) -> str | None:
    """Return the round's candidate the Critic reads as the latest: its best final one.

    Each proposal ends as itself or as its last fix (``c004-fix1``); a round whose every
    branch failed gives its last one.
    """
    cands = state.get("candidates") or {}
    finals = round_finals(state)
    best = select_best({cid: cands[cid] for cid in finals}, ctx.unfairness_weight)
    return best or (finals[-1] if finals else state.get("current"))


def round_finals(state: Mapping[str, Any]) -> list[str]:
    """Return the round's final candidates: each proposal as itself or as its last fix."""
    cands, order = state.get("candidates") or {}, state.get("order") or []
    finals = [next((c for c in reversed(order) if c == cid or c.startswith(f"{cid}-fix")), cid)
              for cid in state.get("batch") or []]
    return [cid for cid in finals if cid in cands]


def merge_node(state: Mapping[str, Any], ctx: Settings, svc: Services) -> dict[str, Any]:
    """Close a round once every branch is merged: promotion, archive, hypervolume, best.

    Runs after all of the round's candidate branches, on the merged state, so the result
    does not depend on which branch finished first. The round's promising designs are
    promoted first (:func:`graph.confirm.promote`), so the archive, the hypervolume, the
    patience counter and the best design see their means over seeds.
    """
    promoted = promote(state, round_finals(state), ctx, svc)
    merged = {**state, "candidates": {**(state.get("candidates") or {}), **promoted}}
    pick = round_pick(merged, ctx)
    out = conclude({**merged, "current": pick}, ctx, svc, promoted)
    out["current"] = pick
    return out
