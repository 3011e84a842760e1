"""Run trace: one structlog JSON line per event in ``runs/<id>/trace.jsonl``.

Events (field ``event``), every one with ``run_id``, ``timestamp`` and ``t`` (seconds
since the process opened the trace):

* ``run_start`` / ``run_resume`` / ``run_end`` / ``run_error`` / ``run_interrupted``
* ``node_start`` / ``node_end`` (node, round, candidate, duration_s, updated keys),
  ``node_error``
* ``critique`` (Critic: summary, violated_budgets, lagging_groups, priorities,
  suggestions, converged, brain), ``design`` (Designer: rationale, design summary,
  parent, the critique it acted on, brain), ``fix`` (Code-Fixer: the error it fixed,
  stage, diagnosis, brain) - whatever the brain, heuristic runs included
* ``gate`` (ok, failed stage and message), ``tool_call`` (tool, key, cached,
  duration_s, candidate; evaluations add split and fidelity), ``candidate`` (outcome,
  metrics or failure), ``round_end`` (duration_s, hypervolume, best)
* ``llm_call`` (role, model, prompt, response, tokens, cost_usd, latency, retries,
  reasks), ``llm_fallback``, ``note`` (a role's notes), ``role_event`` (extension
  roles), ``stop`` (reason)

The file is appended on resume and flushed per line, so a ``kill -9`` loses at most the
line being written.

Read it with ``python -m graph.trace RUN_DIR``: a timeline by round of who decided what
and why, with numbers. ``--role``, ``--candidate`` and ``--round`` filter it; ``--call N``
prints one LLM call's full prompt and answer; ``RUN_DIR diff A B`` shows two candidates'
code; ``--follow`` tails a running search; ``--json`` prints events for scripts.

LangSmith: with ``LANGSMITH_TRACING=true`` (and ``LANGSMITH_API_KEY``) LangChain traces
every node and LLM call; :func:`langsmith_scope` gives them the run id, round, role and
candidate as metadata (``flnas_*``) and tags (``flnas:<key>:<value>``) so a hosted trace
joins this file on ``run_id`` / ``round`` / ``node`` or ``role`` / ``candidate``.

Modules: :mod:`~graph.trace.tracer` (writing), :mod:`~graph.trace.ledger` (reading,
tailing, token and time totals), :mod:`~graph.trace.costs`, :mod:`~graph.trace.langsmith`,
:mod:`~graph.trace.describe` (one event as lines), :mod:`~graph.trace.timeline` and
:mod:`~graph.trace.cli`.
"""

from graph.trace.cli import code_diff, main
from graph.trace.costs import PRICES_PER_MTOK, estimate_cost, price_of
from graph.trace.describe import call_lines, describe
from graph.trace.langsmith import langsmith_scope, langsmith_tags
from graph.trace.ledger import (
    END_EVENTS,
    follow,
    load_trace,
    parse_lines,
    time_ledger,
    time_split,
    token_ledger,
)
from graph.trace.timeline import Annotator, Timeline, annotate, matches, render, summary_lines
from graph.trace.tracer import Tracer

__all__ = [
    "END_EVENTS",
    "PRICES_PER_MTOK",
    "Annotator",
    "Timeline",
    "Tracer",
    "annotate",
    "call_lines",
    "code_diff",
    "describe",
    "estimate_cost",
    "follow",
    "langsmith_scope",
    "langsmith_tags",
    "load_trace",
    "main",
    "matches",
    "parse_lines",
    "price_of",
    "render",
    "summary_lines",
    "time_ledger",
    "time_split",
    "token_ledger",
]
