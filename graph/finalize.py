"""The ``finalize`` node: pick the best design, test it once, export it, write the report.

Selection rule (:func:`agents.records.select_best`): feasible designs (no budget
violation) first; among them the highest ``balanced_accuracy - w * unfairness`` on the
validation split (unfairness = mean over sex and age of the max group-accuracy gap,
``w = Settings.unfairness_weight``); ties to fewer parameters. When the ``confirm`` node
re-evaluated finalists (graph/confirm.py), the rule is applied to their means over
training seeds instead. Only the chosen design is evaluated on the held-out test split,
and test numbers never reach an agent.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from agents.records import Candidate, estimated_objectives, headline, seeds_measured, select_best
from agents.settings import Settings
from evaluation.pareto import objective_names
from evaluation.report import EvaluationReport
from graph.confirm import TEMPLATE_ID, seed_summary
from graph.report import GROUPS_PNG, PARETO_PNG, write_run_report
from graph.services import Services
from graph.stop import stop_reason
from tasks.cache import skip_summary
from tasks.io import atomic_write


def _test_headline(rep: EvaluationReport) -> dict[str, Any]:
    report = rep.model_dump(mode="json")
    if report.get("status") != "ok":
        return {"status": "failed", "failure_stage": report.get("failure_stage"),
                "failure_reason": report.get("failure_reason")}
    m = report["metrics"]
    return {
        "status": "ok", "split": report.get("split"), "n": m["n"],
        "accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
        "per_class_recall": m["per_class_recall"],
        "fairness": {a: {**{k: f.get(k) for k in ("worst_group", "worst_group_accuracy",
                                                  "unfairness", "max_gap", "max_gap_interval",
                                                  "eopp0", "eopp1", "eodd")},
                         "group_sizes": {g["group"]: g["count"] for g in f["groups"]}}
                     for a, f in report.get("fairness", {}).items()},
        "hardware": report.get("hardware"),
        "violations": report.get("violations"),
    }


def _summary_best(rec: Candidate) -> dict[str, Any]:
    return {"id": rec.id, "origin": rec.origin, "parent": rec.parent,
            "rationale": rec.rationale, "val": headline(rec), "code_file": "best_model.py"}


def _test_and_export(svc: Services, best: Candidate) -> tuple[EvaluationReport, dict[str, Any]]:
    """Evaluate the chosen design once on the test split; deliver its code and graph."""
    svc.display.stage(best.id, "testing")
    test_report = svc.evaluate(best.code, best.id, split="test")
    atomic_write(svc.run_dir / "best_model.py", best.code)
    exported = svc.export(best.id)
    svc.display.stage(best.id, "done", "test bal.acc "
                      + (f"{test_report.metrics.balanced_accuracy:.3f}"
                         if test_report.metrics else "failed"))
    return test_report, exported


def finalize_node(state: Mapping[str, Any], ctx: Settings, svc: Services) -> dict[str, Any]:
    """Choose the best feasible design, test it, export code (+ ONNX), write summary.json."""
    cands: Mapping[str, Candidate] = state.get("candidates") or {}
    reason = stop_reason(state, ctx) or "completed"
    finalists = [c for c in state.get("finalists") or [] if c in cands]
    best_id = state.get("best_id") if finalists else select_best(cands, ctx.unfairness_weight)
    svc.tracer.event("stop", reason=reason, round=state.get("round", 0), best=best_id)
    svc.display.message(f"stopping: {reason}; best design {best_id}")
    test_report, exported = _test_and_export(svc, cands[best_id]) if best_id else (None, {})
    # After the test evaluation: nothing of this run trains beside the timing.
    side_by_side = _side_by_side(svc, state, cands, best_id)
    origins = Counter((r.origin, "ok" if r.ok else "failed") for r in cands.values())
    tokens = state.get("tokens") or {}
    summary = {
        "run_id": ctx.run_id,
        "task": ctx.task,
        "stop_reason": reason,
        "rounds": state.get("round", 0),
        "selection_rule": "feasible first; max balanced_accuracy - "
                          f"{ctx.unfairness_weight:g} * mean(max_gap sex, age) on val"
                          + (f", mean over {1 + ctx.confirm_seeds} training seeds of the "
                             "finalists" if finalists else "") + "; ties: fewer params",
        "confirmation": _confirmation(cands, finalists, ctx),
        "best": _summary_best(cands[best_id]) if best_id else None,
        "test": _test_headline(test_report) if test_report else None,
        "export": exported,
        "pareto": {
            "objectives": list(objective_names()),
            # One recipe for every design; promoted ones enter with their means over
            # "seeds" training seeds (the best available fidelity, docs/metrics.md).
            "front": [{"id": cid, "objectives": list(estimated_objectives(cands[cid])),
                       "seeds": seeds_measured(cands[cid]),
                       "fidelity": fid.model_dump() if (fid := cands[cid].fidelity) else None}
                      for cid in state.get("archive") or []
                      if cid in cands and cands[cid].report is not None],
            "hv_history": state.get("hv_history") or [],
        },
        "latency_side_by_side": side_by_side,
        "candidates": {
            "total": len(cands),
            "by_origin": {f"{o}/{s}": n for (o, s), n in sorted(origins.items())},
            "list": [headline(cands[c]) for c in state.get("order") or [] if c in cands],
        },
        "notes": [n.model_dump(mode="json") for n in state.get("notes") or []],
        "tokens": tokens,
        "llm": {**{r: svc.spec(r).label for r in _llm_roles(state)},
                "breaker": {**svc.llm_breaker().report(),
                            "opened_in_run": int(tokens.get("breaker_open", 0))}},
        "timings": {"search_wall_s": round(time.time() - (state.get("started_at") or
                                                          time.time()), 2)},
        # Drawn once, by the run report written next (graph.report, evaluation.plots).
        "plots": [str(svc.run_dir / PARETO_PNG), str(svc.run_dir / GROUPS_PNG)],
        "budgets": ctx.budgets.model_dump(),
        "data": skip_summary(svc.data()),
    }
    atomic_write(svc.run_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    write_run_report(svc)  # report.html + report.md (graph.report)
    return {"stop_reason": reason, "summary": {k: summary[k] for k in
                                               ("stop_reason", "best", "test", "rounds")},
            "best_id": best_id}


def _side_by_side(svc: Services, state: Mapping[str, Any], cands: Mapping[str, Candidate],
                  best_id: str | None) -> dict[str, Any] | None:
    """Time the front, the Template and the choice again side by side (docs/metrics.md)."""
    ids = [*(state.get("archive") or []), TEMPLATE_ID, best_id]
    return svc.side_by_side([cid for cid in ids if cid in cands and cands[cid].ok])


def _confirmation(cands: Mapping[str, Candidate], finalists: list[str],
                  ctx: Settings) -> dict[str, Any] | None:
    """Return the finalists' seeds and their means with intervals (``confirm``), or None."""
    if not finalists:
        return None
    return {"train_seeds": [ctx.resolved_train_seed, *ctx.confirm_train_seeds],
            "finalists": {cid: seed_summary(cands[cid], ctx.unfairness_weight)
                          for cid in finalists}}


def _llm_roles(state: Mapping[str, Any]) -> list[str]:
    """List the core roles, then every role that wrote a note (extension roles that ran)."""
    from agents.registry import is_role

    extra = [n.role for n in state.get("notes") or [] if is_role(n.role)]
    return list(dict.fromkeys(["designer", "critic", "code_fixer", *extra]))
