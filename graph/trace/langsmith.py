"""LangSmith: join hosted traces with ``trace.jsonl`` through metadata and tags.

With ``LANGSMITH_TRACING=true`` (and ``LANGSMITH_API_KEY``) LangChain traces every node
and LLM call; :func:`langsmith_scope` gives them the run id, round, role and candidate as
metadata (``flnas_*``) and tags (``flnas:<key>:<value>``) so a hosted trace joins the
trace file on ``run_id`` / ``round`` / ``node`` or ``role`` / ``candidate``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")


def langsmith_tags(run_id: str, *, round_: int | None, role: str,
                   candidate: str | None) -> tuple[dict[str, Any], list[str]]:
    """Metadata and tags that join a LangSmith run with ``trace.jsonl``.

    Returns:
        ``({"flnas_run_id", "flnas_round", "flnas_role", "flnas_candidate"}, tags)``; the
        tags are ``flnas``, ``flnas:run:<id>``, ``flnas:round:<n>``, ``flnas:role:<role>``
        and ``flnas:candidate:<id>`` (when a candidate is known).
    """
    metadata = {"flnas_run_id": run_id, "flnas_round": round_, "flnas_role": role,
                "flnas_candidate": candidate}
    tags = ["flnas", f"flnas:run:{run_id}", f"flnas:round:{round_}", f"flnas:role:{role}"]
    if candidate:
        tags.append(f"flnas:candidate:{candidate}")
    return metadata, tags


def langsmith_scope(name: str, fn: Callable[[], R], *, run_id: str, round_: int | None,
                    role: str, candidate: str | None) -> R:
    """Run ``fn`` as a LangChain child run named ``name`` with FL-NAS metadata and tags.

    Inside a LangGraph node the run nests under the node's run; metadata and tags are
    inherited by every run started inside ``fn`` (the role's LLM calls), so LangSmith
    (or any callback handler) sees them on node and LLM runs alike. Without tracing
    callbacks this costs a few microseconds.
    """
    from langchain_core.runnables import RunnableLambda

    metadata, tags = langsmith_tags(run_id, round_=round_, role=role, candidate=candidate)
    runnable: RunnableLambda[None, R] = RunnableLambda(lambda _: fn(), name=name)
    return runnable.invoke(None, config={"run_name": name, "metadata": metadata, "tags": tags})

