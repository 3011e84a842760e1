"""K proposals per round: the Designer opens K candidates, each runs in its own branch.

    designer --Send x K--> candidate (gate -> code_fixer -> gate -> evaluate ...) --> merge

The Designer's node asks its brain ``--proposals`` times (:func:`design_round`); each
answer sees the designs opened before it, so none is proposed twice. :func:`fan_out`
sends every opened candidate to its own ``candidate`` branch (LangGraph ``Send``), and
LangGraph runs the branches concurrently. A branch (:func:`candidate_branch`) runs the
gate, the Code-Fixer and the evaluation of its one candidate, with the same node
bodies, routers and traces as a single candidate always had, and returns only its own
records: the branches write disjoint keys of ``candidates`` and append to the ordered
channels, which LangGraph applies in task order, not completion order. ``merge``
(:func:`graph.nodes.merge_node`) then closes the round on the merged state, so the same
seed gives the same run whichever branch finished first.

How many evaluations really run at once is the executor's business (``--workers``,
graph/services.py), not the graph's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Send

from agents.registry import RoleSpec
from agents.settings import Settings
from agents.step import run_role
from graph.services import Services
from graph.state import REDUCERS, State, apply_update, combine

#: A traced node: ``(state, runtime) -> update`` (graph/builder.py ``traced``).
Node = Callable[..., dict[str, Any]]
#: Where a branch goes after each step; ``None`` ends the branch.
Router = Callable[[Any, Runtime[Settings]], str]


def design_round(spec: RoleSpec) -> Callable[[Mapping[str, Any], Settings, Services],
                                             dict[str, Any]]:
    """Return the Designer's node body: ``proposals`` steps of the role, one update.

    Each step sees the state with the earlier steps' designs applied and
    ``opening`` = the ids opened so far this round (agents/designer.py numbers and
    seeds the proposal by it).
    """

    def body(state: Mapping[str, Any], ctx: Settings, svc: Services) -> dict[str, Any]:
        total: dict[str, Any] = {}
        for _ in range(ctx.proposals):
            seen = apply_update(state, total)
            # Every step opens the same round: the round counter moves once.
            seen.update(round=state.get("round", 0), opening=total.get("batch", []))
            total = combine(total, run_role(spec, seen, ctx, svc))
        return total

    body.__doc__ = spec.description
    return body


def fan_out(state: State) -> list[Send]:
    """Send each candidate the Designer opened this round to its own branch."""
    return [Send("candidate", {**state, "current": cid}) for cid in state.get("batch") or []]


def candidate_branch(steps: Mapping[str, Node], routes: Mapping[str, Router]) -> Node:
    """Return the ``candidate`` node: one candidate's gate / fix / evaluate loop.

    Args:
        steps: The traced nodes by name: ``gate``, ``code_fixer``, ``evaluate``.
        routes: After which step comes which (the graph's own routers); a route to any
            name that is not a step (``critic``) ends the branch.

    Returns:
        A node whose update holds only what the branch's steps wrote to channels with a
        reducer (its candidates, fixes' ids, notes, tokens); ``current`` stays local.
    """

    def node(state: Mapping[str, Any], runtime: Runtime[Settings]) -> dict[str, Any]:
        local: dict[str, Any] = dict(state)
        delta: dict[str, Any] = {}
        step = "gate"
        while step in steps:
            out = steps[step](local, runtime)
            local = apply_update(local, out)
            delta = combine(delta, {k: v for k, v in out.items() if k in REDUCERS})
            route = routes.get(step)
            step = route(local, runtime) if route is not None else ""
        return delta

    node.__name__ = "candidate_node"
    node.__doc__ = "Gate, fix and evaluate one proposal (graph/fanout.py)."
    return node
