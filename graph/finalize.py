"""The ``finalize`` node: pick the best design, test it once, export it, write the report.

Selection rule (:func:`agents.records.select_best`): feasible designs (no budget
violation) first; among them the highest ``balanced_accuracy - w * unfairness`` on the
validation split (unfairness = mean over sex and age of the max group-accuracy gap,
``w = Settings.unfairness_weight``); ties to fewer parameters. Only the chosen design is
evaluated on the held-out test split, and test numbers never reach an agent.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from langgraph.runtime import Runtime

from agents.records import headline, is_ok, select_best
from agents.settings import Settings
from evaluation.pareto import objective_names, objectives
from graph.report import write_run_report
from graph.services import Services, atomic_write, services_for
from graph.state import State
from tasks.cache import skip_summary


def _plots(svc: Services, cands: dict[str, dict[str, Any]], archive: list[str],
           best_report: dict[str, Any] | None) -> list[str]:
    """pareto.png and group_accuracy.png (best design, test split when available)."""
    from evaluation.plots import plot_group_accuracy, plot_pareto

    ids, points = [], []
    for cid, rec in cands.items():
        if is_ok(rec):
            try:
                points.append(objectives(rec["report"]))
                ids.append(cid)
            except ValueError:
                continue
    front = [ids.index(c) for c in archive if c in ids]
    out = [str(plot_pareto(points, ids, front, svc.run_dir / "pareto.png",
                           axes_names=objective_names()))]
    if best_report and best_report.get("fairness"):
        out.append(str(plot_group_accuracy(best_report["fairness"],
                                           svc.run_dir / "group_accuracy.png")))
    return out


def _test_headline(report: dict[str, Any]) -> dict[str, Any]:
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


def finalize_node(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
    """Choose the best feasible design, test it, export code (+ ONNX), write summary.json."""
    from graph.builder import context_of, stop_reason

    ctx = context_of(runtime)
    svc = services_for(ctx)
    cands = state.get("candidates") or {}
    reason = stop_reason(state, ctx) or "completed"
    best_id = select_best(cands, ctx.unfairness_weight)
    svc.tracer.event("stop", reason=reason, round=state.get("round", 0), best=best_id)
    svc.display.message(f"stopping: {reason}; best design {best_id}")
    test_report: dict[str, Any] | None = None
    exported: dict[str, Any] = {}
    if best_id:
        best = cands[best_id]
        svc.display.stage(best_id, "testing")
        test_report = svc.evaluate(best["code"], best_id, split="test")
        atomic_write(svc.run_dir / "best_model.py", best["code"])
        exported = svc.export(best_id)
        svc.display.stage(best_id, "done", "test bal.acc "
                          + (f"{test_report['metrics']['balanced_accuracy']:.3f}"
                             if test_report.get("metrics") else "failed"))
    plots = _plots(svc, cands, state.get("archive") or [], test_report or
                   (cands[best_id]["report"] if best_id else None))
    origins = Counter((r["origin"], "ok" if is_ok(r) else "failed") for r in cands.values())
    summary = {
        "run_id": ctx.run_id,
        "task": ctx.task,
        "stop_reason": reason,
        "rounds": state.get("round", 0),
        "selection_rule": "feasible first; max balanced_accuracy - "
                          f"{ctx.unfairness_weight:g} * mean(max_gap sex, age) on val; "
                          "ties: fewer params",
        "best": None if not best_id else {
            "id": best_id,
            "origin": cands[best_id]["origin"],
            "parent": cands[best_id].get("parent"),
            "rationale": cands[best_id].get("rationale"),
            "val": headline(cands[best_id]),
            "code_file": "best_model.py",
        },
        "test": _test_headline(test_report) if test_report else None,
        "export": exported,
        "pareto": {
            "objectives": list(objective_names()),
            "front": [{"id": cid, "objectives": list(objectives(cands[cid]["report"]))}
                      for cid in state.get("archive") or [] if cid in cands],
            "hv_history": state.get("hv_history") or [],
        },
        "candidates": {
            "total": len(cands),
            "by_origin": {f"{o}/{s}": n for (o, s), n in sorted(origins.items())},
            "list": [headline(cands[c]) for c in state.get("order") or [] if c in cands],
        },
        "tokens": state.get("tokens") or {},
        "llm": {"designer": svc.spec("designer").label, "critic": svc.spec("critic").label,
                "code_fixer": svc.spec("code_fixer").label,
                "breaker": {**svc.llm_breaker().report(),
                            "opened_in_run": int((state.get("tokens") or {}).get(
                                "breaker_open", 0))}},
        "timings": {"search_wall_s": round(time.time() - (state.get("started_at") or
                                                          time.time()), 2)},
        "plots": plots,
        "budgets": ctx.budgets.model_dump(),
        "data": skip_summary(svc.data()),
    }
    atomic_write(svc.run_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    write_run_report(svc)  # report.html + report.md (graph.report)
    return {"stop_reason": reason, "summary": {k: summary[k] for k in
                                               ("stop_reason", "best", "test", "rounds")},
            "best_id": best_id}
