"""The FL-NAS graph: nodes and all the wiring (docs/design.md#architecture-and-data-flow).

    START -> prepare -> critic -> designer -> gate -> evaluate -> critic -> ... -> finalize
                                               |  ^
                                               v  |
                                            code_fixer

``prepare`` evaluates the Template (and optional baselines); ``gate`` and ``evaluate``
are tool nodes (sandboxed, cached); ``critic``/``designer``/``code_fixer`` are roles from
the registry. Extension roles declare a hook (``after_prepare``, ``before_design``,
``after_evaluate``, ``before_finalize``) and are chained in there by name, so adding a
role never edits this file. Routers are typed ``-> Literal[...]`` and map onto the hook
chains with ``path_map``, so the graph can be drawn.

``graph`` (module level) is compiled without a checkpointer for ``langgraph.json`` /
Studio; the CLI compiles its own with a SqliteSaver (``build_graph(checkpointer)``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents import heuristic
from agents.records import headline, is_ok, new_record, select_best
from agents.registry import HOOKS, RoleSpec, create_role, list_roles, load_roles
from agents.settings import Settings
from evaluation.pareto import ParetoArchive, objectives, reference_point
from evaluation.report import Budgets
from graph.finalize import finalize_node
from graph.services import Services, services_for
from graph.state import State
from graph.trace import langsmith_scope

TEMPLATE_ID = "c000"
HV_EPS = 1e-9  # hypervolume gains below this are noise, not progress


# ------------------------------------------------------------------------- helpers


def context_of(runtime: Runtime[Settings]) -> Settings:
    """Return the run's Settings (Studio may pass a plain dict)."""
    return Settings.of(runtime.context)


def finish(svc: Services, rec: dict[str, Any]) -> None:
    """Record a candidate's final outcome: files, trace event, display."""
    svc.persist(rec)
    h = headline(rec) or {}
    if is_ok(rec):
        line = (f"bal.acc {h['balanced_accuracy']:.3f} gap {h.get('max_gap') or 0:.3f} "
                f"{h['params']:,} params {h['latency_ms']:.2f} ms"
                + (f" VIOLATES {'; '.join(h['violations'])}" if h["violations"] else ""))
        svc.display.stage(rec["id"], "done", line)
    else:
        line = str(rec.get("failure"))[:200]
        svc.display.stage(rec["id"], "failed", line)
    svc.tracer.event("candidate", candidate=rec["id"], outcome="ok" if is_ok(rec) else "failed",
                     origin=rec["origin"], parent=rec.get("parent"), round=rec.get("round"),
                     brain=rec.get("brain"), code_hash=rec["code_hash"], headline=line,
                     metrics={k: h.get(k) for k in ("balanced_accuracy", "accuracy", "max_gap",
                                                    "params", "latency_ms", "memory_mb")},
                     failure=rec.get("failure"), fixes=rec.get("fixes"))


def conclude(state: dict[str, Any], ctx: Settings, svc: Services,
             updated: dict[str, dict[str, Any]], *, count_round: bool = True) -> dict[str, Any]:
    """State update closing a round: Pareto archive, hypervolume, patience, best design."""
    cands = {**(state.get("candidates") or {}), **updated}
    archive = ParetoArchive(reference=list(reference_point(ctx.budgets)))
    for cid, rec in cands.items():
        if is_ok(rec) and rec["origin"] != "baseline":
            try:
                archive.add(cid, objectives(rec["report"]),
                            feasible=not rec["report"].get("violations"))
            except ValueError:
                continue
    hv = archive.hypervolume()
    prev = (state.get("hv_history") or [None])[-1]
    stale = state.get("stale_rounds", 0)
    if count_round and prev is not None:
        stale = 0 if hv > prev + HV_EPS else stale + 1
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


def gate_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Keep the part of a GateReport kept in the record (first failed check and message)."""
    failed = [c for c in report.get("checks") or [] if not c.get("ok", True)]
    return {"ok": bool(report.get("ok")), "stage": failed[0]["name"] if failed else None,
            "message": report.get("message") or (failed[0].get("detail") if failed else None),
            "params": report.get("params"), "flops": report.get("flops"),
            "isolation": report.get("isolation")}


def stop_reason(state: dict[str, Any], ctx: Settings) -> str | None:
    """Why the search should stop now, or None to continue.

    In order: every target met by the best design (``targets_met``) or the Critic
    declared convergence (``converged``); IterMax rounds done (``iter_max``); no
    hypervolume gain for ``patience`` rounds (``patience``); LLM token budget spent
    (``llm_budget``); the LLM circuit breaker opened with action ``stop``
    (``llm_unavailable``); wall-time budget spent (``wall_time``).
    """
    crit = (state.get("critiques") or [None])[-1]
    cands = state.get("candidates") or {}
    best = headline(cands.get(state.get("best_id") or "")) if state.get("best_id") else None
    targets = {"balanced_accuracy": ctx.target_balanced_accuracy, "max_gap": ctx.target_max_gap}
    if best and heuristic._targets_met(best, targets):
        return "targets_met"
    if crit and crit.get("converged") and state.get("round", 0) > 0:
        return "converged"
    if state.get("round", 0) >= ctx.iter_max:
        return "iter_max"
    if state.get("stale_rounds", 0) >= ctx.patience:
        return "patience"
    tokens = state.get("tokens") or {}
    if ctx.max_llm_tokens is not None and \
            tokens.get("input", 0) + tokens.get("output", 0) >= ctx.max_llm_tokens:
        return "llm_budget"
    if tokens.get("breaker_stop"):
        return "llm_unavailable"
    if ctx.max_wall_s is not None and state.get("started_at") and \
            time.time() - state["started_at"] >= ctx.max_wall_s:
        return "wall_time"
    return None


# --------------------------------------------------------------------------- nodes


def prepare_node(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
    """Load the task data, evaluate the Template (and baselines) into the history."""
    ctx = context_of(runtime)
    svc = services_for(ctx)
    data = svc.data()
    from tasks.models import baseline_sources, template_source

    todo = [(TEMPLATE_ID, template_source(), "template")]
    if ctx.baselines:
        todo += [(f"b-{name}", src, "baseline") for name, src in baseline_sources().items()]
    updated: dict[str, dict[str, Any]] = {}
    for cid, code, origin in todo:
        rec = new_record(cid, code=code, origin=origin, parent=None, round_=0,
                         brain="reference")
        svc.display.stage(cid, f"origin:{origin}")
        svc.display.stage(cid, "training")
        # Baselines are references: evaluate them unconstrained (their gate would reject
        # ResNet-18 on parameters), then name their violations of the run's budgets.
        report = svc.evaluate(code, cid, budgets=Budgets() if origin == "baseline" else None)
        rec.update(report=report, status="evaluated" if report["status"] == "ok" else "failed",
                   failure=None if report["status"] == "ok" else
                   f"{report['failure_stage']}: {report['failure_reason']}")
        finish(svc, rec)
        if cid == TEMPLATE_ID and not is_ok(rec):
            raise RuntimeError(f"the Template failed to evaluate ({rec['failure']}); "
                               "check the installation with `python -m tools.evaluate`")
        updated[cid] = rec
    out = conclude(state, ctx, svc, updated, count_round=False)
    out.update(order=[cid for cid in updated if cid not in (state.get("order") or [])],
               round=state.get("round", 0), stale_rounds=0, current=None,
               started_at=state.get("started_at") or time.time(),
               notes=[{"role": "prepare", "round": 0,
                       "payload": {"data_fingerprint": data.fingerprint, "n": data.n,
                                   "image_size": data.image_size}}])
    return out


def gate_node(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
    """Run static check + dry build + dummy forward + budget check of the current candidate."""
    ctx = context_of(runtime)
    svc = services_for(ctx)
    rec = dict(state["candidates"][state["current"]])
    svc.display.stage(rec["id"], "gating")
    report = svc.gate(rec["code"], rec["id"])
    summary = gate_summary(report)
    rec["gate"] = summary
    svc.tracer.event("gate", candidate=rec["id"], round=rec.get("round"), ok=summary["ok"],
                     stage=summary["stage"], message=summary["message"],
                     params=summary["params"], flops=summary["flops"],
                     attempt=rec.get("attempt", 0))
    if summary["ok"]:
        rec["status"] = "gated"
        svc.persist(rec)
        return {"candidates": {rec["id"]: rec}}
    rec.update(status="failed", failure=f"gate {summary['stage']}: {summary['message']}")
    if rec.get("attempt", 0) < ctx.max_fix_attempts:
        svc.persist(rec)
        return {"candidates": {rec["id"]: rec}}
    finish(svc, rec)  # out of fix attempts: the round ends with this failure
    return conclude(state, ctx, svc, {rec["id"]: rec})


def evaluate_node(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
    """Train with the fixed recipe and measure on the validation split (sandboxed, cached)."""
    ctx = context_of(runtime)
    svc = services_for(ctx)
    rec = dict(state["candidates"][state["current"]])
    svc.display.stage(rec["id"], "training")
    report = svc.evaluate(rec["code"], rec["id"])
    rec["report"] = report
    if report["status"] == "ok":
        rec.update(status="evaluated", failure=None, needs_fix=False)
    else:
        rec.update(status="failed", failure=f"{report['failure_stage']}: "
                                            f"{report['failure_reason']}",
                   needs_fix=rec.get("attempt", 0) < ctx.max_fix_attempts)
    if rec["needs_fix"]:
        svc.persist(rec)
        return {"candidates": {rec["id"]: rec}}
    finish(svc, rec)
    return conclude(state, ctx, svc, {rec["id"]: rec})


# ------------------------------------------------------------------------- routers


def route_after_critic(state: State, runtime: Runtime[Settings]) -> Literal["designer",
                                                                           "finalize"]:
    """Finalize when a stop condition holds (see :func:`stop_reason`), else design."""
    return "finalize" if stop_reason(state, context_of(runtime)) else "designer"


def route_after_gate(state: State, runtime: Runtime[Settings]) -> Literal["evaluate",
                                                                         "code_fixer", "critic"]:
    """Evaluate a passing candidate; fix a failing one while attempts remain."""
    rec = state["candidates"][state["current"]]
    if (rec.get("gate") or {}).get("ok"):
        return "evaluate"
    if rec.get("attempt", 0) < context_of(runtime).max_fix_attempts:
        return "code_fixer"
    return "critic"


def route_after_evaluate(state: State, runtime: Runtime[Settings]) -> Literal["code_fixer",
                                                                             "critic"]:
    """Send a crashed candidate to the Code-Fixer while attempts remain."""
    rec = state["candidates"][state["current"]]
    return "code_fixer" if rec.get("needs_fix") else "critic"


# -------------------------------------------------------------------------- wiring


def node_subject(name: str, state: dict[str, Any]) -> tuple[int, str | None]:
    """(round, candidate) a node works on: the designer opens the next round's candidate."""
    if name == "designer":
        from agents.designer import candidate_id

        return state.get("round", 0) + 1, candidate_id(state.get("round", 0) + 1)
    return state.get("round", 0), state.get("current")


def traced(name: str, fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Wrap a node so its start, end (with duration), notes and errors are traced.

    The node body runs as a LangChain child run carrying the run id, round, role and
    candidate as metadata and tags (:func:`graph.trace.langsmith_scope`), so a LangSmith
    trace joins ``trace.jsonl`` on those keys.
    """

    def node(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
        ctx = context_of(runtime)
        svc = services_for(ctx)
        t0 = time.monotonic()
        round_, cand = node_subject(name, state)
        svc.tracer.event("node_start", node=name, round=round_, candidate=cand)
        try:
            out = langsmith_scope(name, lambda: fn(state, runtime), run_id=ctx.run_id,
                                  round_=round_, role=name, candidate=cand)
        except Exception as exc:
            svc.tracer.event("node_error", node=name, error=f"{type(exc).__name__}: {exc}",
                             duration_s=round(time.monotonic() - t0, 4))
            raise
        out = out or {}
        if out.get("round", state.get("round", 0)) != state.get("round", 0):
            svc.round_t0 = t0  # this node opened a round: its duration counts from here
        for note in out.get("notes") or []:
            svc.tracer.event("note", role=note.get("role", name), round=note.get("round"),
                             payload=note.get("payload"))
        svc.tracer.event("node_end", node=name, round=out.get("round", state.get("round", 0)),
                         candidate=out.get("current", state.get("current")),
                         duration_s=round(time.monotonic() - t0, 4), updated=sorted(out))
        return out

    node.__name__ = f"{name}_node"
    node.__doc__ = fn.__doc__
    return node


def extension_roles(roles: Iterable[str] = ()) -> dict[str, list[RoleSpec]]:
    """Load role modules and group every registered extension role by hook (by name)."""
    load_roles(roles)
    return {hook: [create_role(n) for n in list_roles(hook=hook)] for hook in HOOKS}


def build_graph(checkpointer: Any = None, roles: Iterable[str] = ()) -> Any:
    """Build and compile the FL-NAS graph.

    Args:
        checkpointer: A LangGraph checkpointer (the CLI passes a SqliteSaver); None for
            Studio, which brings its own.
        roles: Extra role modules to import (``--roles``); extension roles they register
            are wired at their hook.

    Returns:
        The compiled graph (``invoke(input, config, context=Settings(...))``).
    """
    ext = extension_roles(roles)
    g = StateGraph(State, context_schema=Settings)
    g.add_node("prepare", traced("prepare", prepare_node))
    for role in ("critic", "designer", "code_fixer"):
        g.add_node(role, traced(role, create_role(role).node))
    g.add_node("gate", traced("gate", gate_node))
    g.add_node("evaluate", traced("evaluate", evaluate_node))
    g.add_node("finalize", traced("finalize", finalize_node))
    for specs in ext.values():
        for spec in specs:
            g.add_node(spec.name, traced(spec.name, spec.node))

    def chain(hook: str, then: str) -> str:
        """Wire the hook's roles one after another into ``then``; return the entry node."""
        names = [s.name for s in ext[hook]]
        if not names:
            return then
        for a, b in zip(names, [*names[1:], then], strict=True):
            g.add_edge(a, b)
        return names[0]

    g.add_edge(START, "prepare")
    g.add_edge("prepare", chain("after_prepare", "critic"))
    to_critic = chain("after_evaluate", "critic")
    g.add_conditional_edges("critic", route_after_critic,
                            {"designer": chain("before_design", "designer"),
                             "finalize": chain("before_finalize", "finalize")})
    g.add_edge("designer", "gate")
    g.add_conditional_edges("gate", route_after_gate,
                            {"evaluate": "evaluate", "code_fixer": "code_fixer",
                             "critic": to_critic})
    g.add_edge("code_fixer", "gate")
    g.add_conditional_edges("evaluate", route_after_evaluate,
                            {"code_fixer": "code_fixer", "critic": to_critic})
    g.add_edge("finalize", END)
    return g.compile(checkpointer=checkpointer, name="fl-nas")


def _env_roles() -> list[str]:
    raw = os.environ.get("FLNAS_ROLES", "")
    return [r.strip() for r in raw.split(",") if r.strip()]


#: For ``langgraph.json`` / Studio (no checkpointer; Studio provides persistence).
graph = build_graph(roles=_env_roles())
