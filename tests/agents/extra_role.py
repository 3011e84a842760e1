"""An extension role defined outside the product (loaded with --roles).

The auditor runs after every evaluation round (hook ``after_evaluate``): it reads the
newest candidate and notes whether it improved on its parent. One ``register_role``
call; the graph builder makes and wires its node, and its note reaches the others.
"""

from __future__ import annotations

from pydantic import BaseModel

from agents.records import headline
from agents.registry import register_role
from agents.step import View


class Audit(BaseModel):
    """Whether the newest candidate beat its parent."""

    candidate: str | None
    improved: bool | None
    note: str = ""


def audit(view: View, settings: object) -> Audit:
    """Compare the newest candidate's balanced accuracy with its parent's."""
    cands = view.state.get("candidates") or {}
    cur = headline(cands.get(view.state.get("current") or ""))
    if not cur or cur.get("balanced_accuracy") is None:
        return Audit(candidate=(cur or {}).get("id"), improved=None)
    parent = headline(cands.get(cur.get("parent") or ""))
    base = (parent or {}).get("balanced_accuracy")
    improved = None if base is None else cur["balanced_accuracy"] > base
    return Audit(candidate=cur["id"], improved=improved,
                 note="" if improved is None else
                 f"{cur['id']} {'beat' if improved else 'did not beat'} its parent")


register_role("auditor", schema=Audit, hook="after_evaluate", fallback=audit,
              description="notes whether each candidate beat its parent")
