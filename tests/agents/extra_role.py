"""An extension role defined outside the product (loaded with --roles).

The auditor runs after every evaluation round (hook ``after_evaluate``): it reads the
newest candidate and notes whether it improved on its parent. Registered with one
decorator; the graph builder wires it in.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agents.records import headline
from agents.registry import register_role
from graph.services import services_for


class Audit(BaseModel):
    candidate: str | None
    improved: bool | None


def audit(state: dict[str, Any]) -> Audit:
    cands = state.get("candidates") or {}
    cur = headline(cands.get(state.get("current") or ""))
    if not cur or cur.get("balanced_accuracy") is None:
        return Audit(candidate=(cur or {}).get("id"), improved=None)
    parent = headline(cands.get(cur.get("parent") or ""))
    base = (parent or {}).get("balanced_accuracy")
    return Audit(candidate=cur["id"],
                 improved=None if base is None else cur["balanced_accuracy"] > base)


@register_role("auditor", schema=Audit, hook="after_evaluate", fallback=audit,
               description="notes whether each candidate beat its parent")
def auditor_node(state: dict[str, Any], runtime: Any) -> dict[str, Any]:
    """Audit the newest candidate."""
    result = audit(state)
    services_for(runtime.context).tracer.event("role_event", role="auditor",
                                               **result.model_dump())
    return {"notes": [{"role": "auditor", "round": state.get("round", 0),
                       "payload": result.model_dump()}]}
