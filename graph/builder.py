"""The FL-NAS graph: every node made from its spec, and all the wiring (docs/architecture.md).

    START -> prepare -> critic -> designer =Send x K=> candidate -> merge -> critic -> ...
                                -> confirm -> finalize

    candidate (one branch per proposal):  gate -> evaluate -> end
                                           |  ^       |
                                           v  |       v
                                          code_fixer <-

``prepare``, ``gate``, ``evaluate`` and ``merge`` are tool nodes (graph/nodes.py); the
Designer opens ``--proposals`` K candidates a round and each runs its gate / fix /
evaluate loop in its own concurrent branch (graph/fanout.py), merged in a deterministic
order before the round closes; ``confirm`` re-evaluates the finalists on more training
seeds (graph/confirm.py);
``critic``/``designer``/``code_fixer`` and every extension role are made from their
registered spec by one generic node (:func:`agents.step.run_role`: view -> think ->
trace -> update). Extension roles declare a hook (``after_prepare``, ``before_design``,
``after_evaluate``, ``before_finalize``) and are chained in there by name, so adding a
role never edits this file. Routers are typed ``-> Literal[...]`` and map onto the hook
chains with ``path_map``, so the graph can be drawn. The run's resources reach every
node through this builder's closure (``build_graph(services=...)``).

``graph`` (module level) is compiled without a checkpointer for ``langgraph.json`` /
Studio; the CLI compiles its own with the run's checkpointer (graph/checkpoint.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.registry import CORE_ROLES, HOOKS, RoleSpec, create_role, list_roles, load_roles
from agents.settings import Settings
from agents.step import run_role
from graph.confirm import confirm_node
from graph.fanout import candidate_branch, design_round, fan_out
from graph.finalize import finalize_node
from graph.nodes import evaluate_node, gate_node, merge_node, prepare_node
from graph.services import Services, ServicesFor
from graph.state import State
from graph.stop import stop_reason
from graph.trace import langsmith_scope
from prompts import load_prompt

#: A node body: ``(state, settings, services) -> state update``.
NodeBody = Callable[[Mapping[str, Any], Settings, Services], dict[str, Any]]

# ------------------------------------------------------------------------- routers


def route_after_critic(state: State, runtime: Runtime[Settings]) -> Literal["designer",
                                                                           "confirm"]:
    """Confirm and finalize when a stop condition holds (:func:`graph.stop.stop_reason`)."""
    return "confirm" if stop_reason(state, Settings.of(runtime.context)) else "designer"


def route_after_gate(state: State, runtime: Runtime[Settings]) -> Literal["evaluate",
                                                                         "code_fixer", "critic"]:
    """Evaluate a passing candidate; fix a failing one while attempts remain."""
    rec = state["candidates"][str(state["current"])]
    if rec.gate is not None and rec.gate.ok:
        return "evaluate"
    if rec.needs_fix(Settings.of(runtime.context).max_fix_attempts):
        return "code_fixer"
    return "critic"


def route_after_evaluate(state: State, runtime: Runtime[Settings]) -> Literal["code_fixer",
                                                                             "critic"]:
    """Send a crashed candidate to the Code-Fixer while attempts remain."""
    rec = state["candidates"][str(state["current"])]
    return "code_fixer" if rec.needs_fix(Settings.of(runtime.context).max_fix_attempts) \
        else "critic"


# --------------------------------------------------------------------------- nodes


def node_subject(name: str, state: Mapping[str, Any],
                 per_round: int = 1) -> tuple[int, str | None]:
    """(round, candidate) a node works on: the designer opens the next round's (first) one."""
    if name == "designer":
        from agents.designer import candidate_id

        return state.get("round", 0) + 1, candidate_id(state.get("round", 0) + 1, 0, per_round)
    return state.get("round", 0), state.get("current")


def role_node(spec: RoleSpec) -> NodeBody:
    """Return the node body of a registered role (one generic step for every role)."""

    def body(state: Mapping[str, Any], ctx: Settings, svc: Services) -> dict[str, Any]:
        return run_role(spec, state, ctx, svc)

    body.__doc__ = spec.description
    return body


def traced(name: str, fn: NodeBody, services: ServicesFor) -> Callable[..., dict[str, Any]]:
    """Wrap a node body so its start, end (with duration), notes and errors are traced.

    The body runs as a LangChain child run carrying the run id, round, role and
    candidate as metadata and tags (:func:`graph.trace.langsmith_scope`), so a LangSmith
    trace joins ``trace.jsonl`` on those keys. ``services`` gives it the run's resources.
    """

    def node(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
        ctx = Settings.of(runtime.context)
        svc = services(runtime.context)
        t0 = time.monotonic()
        round_, cand = node_subject(name, state, ctx.proposals)
        svc.tracer.event("node_start", node=name, round=round_, candidate=cand)
        try:
            out = langsmith_scope(name, lambda: fn(state, ctx, svc), run_id=ctx.run_id,
                                  round_=round_, role=name, candidate=cand)
        except Exception as exc:
            svc.tracer.event("node_error", node=name, error=f"{type(exc).__name__}: {exc}",
                             duration_s=round(time.monotonic() - t0, 4))
            raise
        out = out or {}
        if out.get("round", state.get("round", 0)) != state.get("round", 0):
            svc.round_t0 = t0  # this node opened a round: its duration counts from here
        for note in out.get("notes") or []:
            svc.tracer.event("note", role=note.role or name, round=note.round, text=note.text,
                             candidate=note.candidate, payload=note.payload)
        svc.tracer.event("node_end", node=name, round=out.get("round", state.get("round", 0)),
                         candidate=out.get("current", state.get("current")),
                         duration_s=round(time.monotonic() - t0, 4), updated=sorted(out))
        return out

    node.__name__ = f"{name}_node"
    node.__doc__ = fn.__doc__
    return node


# -------------------------------------------------------------------------- wiring


def extension_roles(roles: Iterable[str] = ()) -> dict[str, list[RoleSpec]]:
    """Load role modules and group every registered extension role by hook (by name).

    Every role's prompt file is read here, so a missing or malformed one stops the
    build (offline runs included) with a message naming it.
    """
    load_roles(roles)
    for name in list_roles():
        spec = create_role(name)
        if spec.prompt is not None:
            load_prompt(spec.prompt)
    return {hook: [create_role(n) for n in list_roles(hook=hook)] for hook in HOOKS}


def build_graph(checkpointer: Any = None, roles: Iterable[str] = (),
                services: Services | None = None) -> Any:
    """Build and compile the FL-NAS graph.

    Args:
        checkpointer: A LangGraph checkpointer (the CLI passes
            :func:`graph.checkpoint.make_checkpointer`); None for Studio, which brings
            its own.
        roles: Extra role modules to import (``--roles``); extension roles they register
            are wired at their hook.
        services: The run's resources; None: built per run folder from each node's
            context on first use (Studio).

    Returns:
        The compiled graph (``invoke(input, config, context=Settings(...))``).
    """
    ext = extension_roles(roles)
    provider = ServicesFor(services)
    g = StateGraph(State, context_schema=Settings)
    bodies: dict[str, NodeBody] = {"prepare": prepare_node, "merge": merge_node,
                                   "confirm": confirm_node, "finalize": finalize_node}
    bodies.update({r: role_node(create_role(r)) for r in CORE_ROLES})
    bodies["designer"] = design_round(create_role("designer"))
    bodies.update({s.name: role_node(s) for specs in ext.values() for s in specs})
    branch = {name: traced(name, body, provider) for name, body in
              (("gate", gate_node), ("evaluate", evaluate_node),
               ("code_fixer", bodies.pop("code_fixer")))}
    for name, body in bodies.items():
        g.add_node(name, traced(name, body, provider))
    g.add_node("candidate", candidate_branch(branch, {
        "gate": route_after_gate, "evaluate": route_after_evaluate,
        "code_fixer": lambda state, runtime: "gate"}))

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
                             "confirm": "confirm"})
    g.add_edge("confirm", chain("before_finalize", "finalize"))
    g.add_conditional_edges("designer", fan_out, ["candidate"])
    g.add_edge("candidate", "merge")
    g.add_edge("merge", to_critic)
    g.add_edge("finalize", END)
    return g.compile(checkpointer=checkpointer, name="fl-nas")


def _env_roles() -> list[str]:
    raw = os.environ.get("FLNAS_ROLES", "")
    return [r.strip() for r in raw.split(",") if r.strip()]


#: For ``langgraph.json`` / Studio (no checkpointer; Studio provides persistence).
graph = build_graph(roles=_env_roles())
