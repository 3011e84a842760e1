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
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

import structlog

R = TypeVar("R")

#: Events that end a run's process: ``--follow`` stops after one of them.
END_EVENTS = ("run_end", "run_error", "run_interrupted")

#: List prices in USD per million tokens (input, output) of OpenAI API models, 2025.
#: Used for cost estimates only; ``FLNAS_LLM_PRICES='{"model": [in, out]}'`` adds or
#: overrides entries (e.g. for a paid OpenAI-compatible endpoint).
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.0),
    "gpt-4o-mini": (0.15, 0.60),
    "o3": (2.0, 8.0),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}


class Tracer:
    """Append-only JSON-lines trace of one run."""

    def __init__(self, path: Path, run_id: str) -> None:
        """Open ``path`` for appending.

        Args:
            path: The ``trace.jsonl`` file.
            run_id: Bound into every line.
        """
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        torn = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
        self._file: TextIO = path.open("a", encoding="utf-8")
        if torn:  # a kill -9 mid-line: start on a fresh line so the next event parses
            self._file.write("\n")
        # A private logger (not structlog.configure) so the library's global
        # configuration of a host application is left alone; every part is explicit,
        # because wrap_logger falls back to that global configuration (LangGraph's
        # server, for one, installs a stdlib-bound wrapper without ``msg``).
        self._log = structlog.wrap_logger(
            structlog.WriteLogger(self._file),
            wrapper_class=structlog.BoundLogger,
            context_class=dict,
            cache_logger_on_first_use=False,
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.dict_tracebacks,
                structlog.processors.JSONRenderer(default=_json_default, sort_keys=False),
            ],
        ).bind(run_id=run_id)
        self._t0 = time.monotonic()

    def event(self, name: str, **fields: Any) -> None:
        """Write one event line (``t`` = seconds since this tracer opened)."""
        self._log.msg(name, t=round(time.monotonic() - self._t0, 4), **fields)

    def close(self) -> None:
        """Close the file."""
        if not self._file.closed:
            self._file.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


# ------------------------------------------------------------------ costs, LangSmith


def _prices() -> dict[str, tuple[float, float]]:
    prices = dict(PRICES_PER_MTOK)
    raw = os.environ.get("FLNAS_LLM_PRICES")
    if raw:
        try:
            prices.update({k: (float(v[0]), float(v[1])) for k, v in json.loads(raw).items()})
        except (ValueError, TypeError, IndexError, AttributeError):
            pass  # a malformed override only loses the estimate, never the run
    return prices


def price_of(model: str | None) -> tuple[float, float] | None:
    """Return the (input, output) USD price per million tokens of a model label, if known.

    ``openai:gpt-4.1`` and dated snapshots (``gpt-4.1-2025-04-14``) match ``gpt-4.1``;
    other labels (``URL:model``) match only entries of ``FLNAS_LLM_PRICES``.
    """
    if not model:
        return None
    prices = _prices()
    name = model[len("openai:"):] if model.startswith("openai:") else model
    if name in prices:
        return prices[name]
    if model.startswith("openai:"):
        # Longest matching prefix, so gpt-4.1-mini-2025-04-14 is not priced as gpt-4.1.
        hits = [k for k in prices if name.startswith(k + "-")]
        if hits:
            return prices[max(hits, key=len)]
    return None


def estimate_cost(model: str | None, input_tokens: int, output_tokens: int) -> float | None:
    """Estimated USD cost of one request, or None when the model's price is unknown."""
    price = price_of(model)
    if price is None:
        return None
    return round((input_tokens * price[0] + output_tokens * price[1]) / 1e6, 6)


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
    runnable = RunnableLambda(lambda _: fn(), name=name)
    return runnable.invoke(None, config={"run_name": name, "metadata": metadata, "tags": tags})


# ------------------------------------------------------------------------ reading


def parse_lines(text: str) -> list[dict[str, Any]]:
    """Parse trace lines, skipping blank and torn ones."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ev, dict):
            out.append(ev)
    return out


def load_trace(run_dir: Path) -> list[dict[str, Any]]:
    """Read every event of a run (a torn last line after a kill is skipped)."""
    path = Path(run_dir) / "trace.jsonl"
    if not path.exists():
        return []
    return parse_lines(path.read_text(encoding="utf-8", errors="replace"))


def time_split(events: list[dict[str, Any]]) -> dict[str, float]:
    """Wall time of the search vs time inside tool calls (gate/evaluate/export jobs).

    The search wall is summed per session (``run_start``/``run_resume`` to the session's
    last event) so the pause between a kill and a resume is not counted.

    Returns:
        ``wall_s``, ``tools_s``, ``outside_s`` and ``outside_frac``.
    """
    wall = 0.0
    session_start: float | None = None
    last_t = 0.0
    tools = 0.0
    for ev in events:
        t = float(ev.get("t", 0.0))
        if ev.get("event") in ("run_start", "run_resume"):
            if session_start is not None:
                wall += last_t - session_start
            session_start = t
        last_t = t
        if ev.get("event") == "tool_call":
            tools += float(ev.get("duration_s", 0.0))
    if session_start is not None:
        wall += last_t - session_start
    outside = max(wall - tools, 0.0)
    return {
        "wall_s": wall,
        "tools_s": tools,
        "outside_s": outside,
        "outside_frac": outside / wall if wall > 0 else 0.0,
    }


def token_ledger(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """LLM use per role: calls, input/output tokens, latency, estimated cost, fallbacks.

    ``cost_usd`` is None for a role when no call of it had a known price; the ``total``
    row sums every role.
    """
    rows: dict[str, dict[str, Any]] = {}

    def row(role: str) -> dict[str, Any]:
        return rows.setdefault(role, {"calls": 0, "input_tokens": 0, "output_tokens": 0,
                                      "latency_s": 0.0, "cost_usd": None, "fallbacks": 0,
                                      "errors": 0, "models": []})

    for e in events:
        if e.get("event") not in ("llm_call", "llm_fallback"):
            continue
        for r in (row(str(e.get("role"))), row("total")):
            if e["event"] == "llm_fallback":
                r["fallbacks"] += 1
                continue
            r["calls"] += 1
            r["input_tokens"] += int(e.get("input_tokens") or 0)
            r["output_tokens"] += int(e.get("output_tokens") or 0)
            r["latency_s"] += float(e.get("latency_s") or 0.0)
            r["errors"] += 1 if e.get("error") else 0
            cost = e.get("cost_usd")
            if cost is None:
                cost = estimate_cost(e.get("model"), int(e.get("input_tokens") or 0),
                                     int(e.get("output_tokens") or 0))
            if cost is not None:
                r["cost_usd"] = (r["cost_usd"] or 0.0) + cost
            if e.get("model") and e["model"] not in r["models"]:
                r["models"].append(e["model"])
    if "total" in rows:  # keep the total last
        rows["total"] = rows.pop("total")
    return rows


def time_ledger(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the time went: per node, per round, per tool, and outside the tools.

    Returns:
        ``nodes`` ({node: {calls, seconds}}), ``rounds`` ({round: seconds} from
        ``round_end``), ``tools`` ({tool: {calls, cached, seconds}}), and the
        :func:`time_split` keys.
    """
    nodes: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "seconds": 0.0})
    tools: dict[str, dict[str, float]] = defaultdict(
        lambda: {"calls": 0, "cached": 0, "seconds": 0.0})
    rounds: dict[int, float] = {}
    for e in events:
        kind = e.get("event")
        if kind == "node_end":
            n = nodes[str(e.get("node"))]
            n["calls"] += 1
            n["seconds"] += float(e.get("duration_s") or 0.0)
        elif kind == "tool_call":
            t = tools[str(e.get("tool"))]
            t["calls"] += 1
            t["cached"] += 1 if e.get("cached") else 0
            t["seconds"] += float(e.get("duration_s") or 0.0)
        elif kind == "round_end" and e.get("duration_s") is not None:
            rounds[int(e.get("round") or 0)] = float(e["duration_s"])
    return {"nodes": dict(nodes), "tools": dict(tools), "rounds": rounds, **time_split(events)}


# ----------------------------------------------------------------------- timeline


class Annotator:
    """Attaches ``_round`` and ``_call`` to events one at a time (see :func:`annotate`)."""

    def __init__(self) -> None:
        """Start before the first event."""
        self.round = 0
        self.calls = 0

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        """Return a copy of ``event`` with ``_round`` (and ``_call`` for LLM calls)."""
        e = dict(event)
        r = e.get("round")
        if isinstance(r, int) and not isinstance(r, bool):
            if e.get("event") == "node_start":
                self.round = r  # a node opens its round (the designer the next one)
            e["_round"] = r
        else:
            e["_round"] = self.round
        if e.get("event") == "llm_call":
            self.calls += 1
            e["_call"] = self.calls
        return e


def annotate(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Attach ``_round`` (the round an event belongs to) and ``_call`` (LLM call number).

    Events without a ``round`` field belong to the round of the node in progress; LLM
    calls are numbered 1, 2, ... in file order (the numbers ``--call N`` takes).
    """
    note = Annotator()
    return [note(e) for e in events]


def _names(e: dict[str, Any]) -> set[str]:
    """Candidate ids an event is about."""
    out = set()
    for k in ("candidate", "parent", "fixes", "fixed_by", "best", "critique_about"):
        v = e.get(k)
        if isinstance(v, str) and v:
            out.add(v)
    return out


def matches(e: dict[str, Any], *, roles: Iterable[str] = (), candidates: Iterable[str] = (),
            rounds: Iterable[int] = ()) -> bool:
    """Tell whether an annotated event passes the timeline filters.

    Args:
        e: An event from :func:`annotate`.
        roles: Role, node or tool names (``critic``, ``designer``, ``code_fixer``,
            ``gate``, ``evaluate``, ``auditor``, ...); ``fixer`` is short for code_fixer.
        candidates: Candidate ids; ``c002`` also matches its fixes ``c002-fix1``, ...
        rounds: Round numbers.
    """
    roles = {"code_fixer" if r == "fixer" else r for r in roles}
    if roles:
        own = {e.get("role"), e.get("node"), e.get("tool")}
        if e.get("event") in ("gate", "stop", "critique", "design", "fix"):
            own.add({"critique": "critic", "design": "designer",
                     "fix": "code_fixer"}.get(e["event"], e["event"]))
        if not roles & {x for x in own if x}:
            return False
    cands = set(candidates)
    if cands:
        names = _names(e)
        if not any(n == c or n.startswith(c + "-") for n in names for c in cands):
            return False
    rounds = set(rounds)
    return not rounds or e.get("_round") in rounds


def _fmt(x: Any, spec: str = ".3f") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return format(x, spec)
    if isinstance(x, int) and not isinstance(x, bool) and abs(x) >= 10_000:
        return f"{x:,}"
    return str(x)


def _metrics_line(m: dict[str, Any] | None) -> str:
    if not m:
        return ""
    parts = [f"bal.acc {_fmt(m.get('balanced_accuracy'))}", f"gap {_fmt(m.get('max_gap'))}"]
    if m.get("params") is not None:
        parts.append(f"{_fmt(m.get('params'))} params")
    if m.get("latency_ms") is not None:
        parts.append(f"{_fmt(m.get('latency_ms'), '.2f')} ms")
    return ", ".join(parts)


#: Fields every event has (left out when an event is printed as its fields).
_META = ("event", "run_id", "timestamp", "t", "_round", "_call", "level")


def describe(e: dict[str, Any], *, show_llm: bool = False,
             show_nodes: bool = False) -> list[tuple[str, str]] | None:
    """Lines ``(style, text)`` for one event of the timeline, or None to leave it out.

    The first line is the headline; indented lines give the reasons and numbers.
    """
    kind = e.get("event")
    cand = e.get("candidate") or "-"
    brain = f" [{e['brain']}]" if e.get("brain") else ""
    if kind == "run_start":
        s = e.get("settings") or {}
        b = {k: v for k, v in s.items() if k.startswith("max_") and v is not None
             and k not in ("max_fix_attempts",)}
        return [("bold", f"run {e.get('run_id')} started: llm {s.get('llm', '?')}, "
                         f"{e.get('n_images')} images at {s.get('image_size')} px, "
                         f"{s.get('epochs')} epoch(s), iter_max {s.get('iter_max')}"),
                ("dim", "  budgets: " + (", ".join(f"{k}={v}" for k, v in b.items())
                                         or "none"))]
    if kind == "run_resume":
        return [("bold", f"run {e.get('run_id')} resumed"
                         + (" (already finished)" if e.get("finished") else
                            f" at {', '.join(e.get('next') or [])}"))]
    if kind in END_EVENTS:
        style = "bold" if kind == "run_end" else "bold red"
        return [(style, kind.replace("_", " ") + (f": {e['error']}" if e.get("error") else ""))]
    if kind in ("node_start", "node_end"):
        if not show_nodes or kind == "node_start":
            return None
        return [("dim", f"node {e.get('node')} {float(e.get('duration_s') or 0):.2f}s "
                        f"(updated {', '.join(e.get('updated') or []) or 'nothing'})")]
    if kind == "node_error":
        return [("red", f"node {e.get('node')} raised {e.get('error')}")]
    if kind == "critique":
        lines = [("cyan", f"critic{brain} on {cand}: {e.get('summary')}")]
        if e.get("violated_budgets"):
            lines.append(("", "  over budget: " + "; ".join(e["violated_budgets"])))
        for g in e.get("lagging_groups") or []:
            lines.append(("", f"  lagging: {g.get('attribute')}={g.get('group')} acc "
                              f"{_fmt(g.get('accuracy'))} (-{_fmt(g.get('gap'))})"))
        if e.get("priorities"):
            lines.append(("", "  priorities: " + "; ".join(e["priorities"])))
        if e.get("suggestions"):
            lines.append(("", "  suggestions: " + "; ".join(e["suggestions"])))
        if e.get("converged"):
            lines.append(("green", "  converged: every target met"))
        return lines
    if kind == "design":
        lines = [("magenta", f"designer{brain} -> {cand} from {e.get('parent')}: "
                             f"{e.get('design')}"),
                 ("", f"  why: {e.get('rationale')}")]
        if e.get("critique"):
            lines.append(("dim", f"  acting on the critique of {e.get('critique_about')}: "
                                 f"{e['critique']}"))
        return lines
    if kind == "fix":
        return [("yellow", f"code_fixer{brain} -> {cand} repairs {e.get('fixes')} "
                           f"(attempt {e.get('attempt')}, {e.get('stage')} failure)"),
                ("", f"  error: {str(e.get('error') or '').strip()[-300:]}"),
                ("", f"  diagnosis: {e.get('diagnosis')}")]
    if kind == "gate":
        if e.get("ok"):
            return [("dim", f"gate {cand} ok ({_fmt(e.get('params'))} params, "
                            f"{_fmt(e.get('flops'))} FLOPs)")]
        return [("red", f"gate {cand} FAILED at {e.get('stage')}: {e.get('message')}")]
    if kind == "tool_call":
        tool = e.get("tool")
        took = f"{float(e.get('duration_s') or 0):.2f}s" + (" cached" if e.get("cached") else "")
        if tool == "evaluate":
            f = e.get("fidelity") or {}
            fid = (f" ({f.get('epochs')} ep, {f.get('image_size')} px, n={f.get('n_images')})"
                   if f else "")
            status = "ok" if e.get("ok") else f"failed at {e.get('failure_stage')}"
            return [("dim", f"evaluate {cand} on {e.get('split', 'val')}{fid}: {status}, {took}")]
        return [("dim", f"{tool} {cand}: {'ok' if e.get('ok') else 'failed'}, {took}"
                        + (f" ({e['error']})" if e.get("error") else ""))]
    if kind == "candidate":
        if e.get("outcome") == "ok":
            return [("green", f"{cand} ok ({e.get('origin')} <- {e.get('parent') or '-'}): "
                              f"{_metrics_line(e.get('metrics'))}")]
        why = str(e.get("failure") or e.get("headline") or "").strip().split("\n")[0]
        return [("red", f"{cand} failed ({e.get('origin')} <- {e.get('parent') or '-'}): "
                        f"{why[:300]}"
                        + (f" -> fixed by {e['fixed_by']}" if e.get("fixed_by") else ""))]
    if kind == "llm_call":
        cost = f" ${e['cost_usd']:.4f}" if e.get("cost_usd") is not None else ""
        lines = [("blue", f"[call {e.get('_call')}] {e.get('role')} {e.get('model')}: "
                          f"{e.get('input_tokens')} in / {e.get('output_tokens')} out tokens"
                          f"{cost}, {float(e.get('latency_s') or 0):.2f}s, retries "
                          f"{e.get('retries')}, re-asks {e.get('reasks')}"
                          + (f", error: {e['error']}" if e.get("error") else ""))]
        if show_llm:
            lines += call_lines(e)
        return lines
    if kind == "llm_fallback":
        return [("red", f"{e.get('role')}: LLM {e.get('model')} failed, heuristic brain used "
                        f"({str(e.get('error'))[:300]})")]
    if kind == "note":
        return [("dim", f"note from {e.get('role')}: {json.dumps(e.get('payload'))[:300]}")]
    if kind == "role_event":
        rest = {k: v for k, v in e.items() if k not in _META and k != "role"}
        return [("", f"{e.get('role')}: {json.dumps(rest)[:300]}")]
    if kind == "round_end":
        took = f" in {e['duration_s']:.1f}s" if e.get("duration_s") is not None else ""
        return [("bold", f"round {e.get('round')} done{took}: hypervolume "
                         f"{_fmt(e.get('hv'), '.4f')}, best {e.get('best')}, "
                         f"{e.get('stale_rounds')} round(s) without gain")]
    if kind == "report":
        return [("dim", f"report written: {e.get('html')}")]
    if kind == "report_error":
        return [("red", f"report failed: {e.get('error')}")]
    if kind == "stop":
        return [("bold", f"stop: {e.get('reason')} after round {e.get('round')}, "
                         f"best {e.get('best')}")]
    rest = {k: v for k, v in e.items() if k not in _META}
    return [("dim", f"{kind}: {json.dumps(rest, default=str)[:300]}")]


def call_lines(e: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the full prompt and answer of one ``llm_call`` event as lines."""
    lines: list[tuple[str, str]] = []
    for m in e.get("prompt") or []:
        lines.append(("bold", f"--- {m.get('role')} ---"))
        lines.append(("", str(m.get("content"))))
    lines.append(("bold", "--- answer ---"))
    lines.append(("", str(e.get("response"))))
    return lines


def _console(out: TextIO) -> Any:
    from rich.console import Console

    tty = hasattr(out, "isatty") and out.isatty()
    return Console(file=out, highlight=False, width=None if tty else 120,
                   force_terminal=tty or None, no_color=not tty)


def _print(console: Any, lines: list[tuple[str, str]], t: float | None = None) -> None:
    from rich.text import Text

    for i, (style, text) in enumerate(lines):
        stamp = f"{t:8.1f}s  " if (t is not None and i == 0) else " " * 11
        # Continuation lines of a multi-line message keep the message's indentation.
        indent = " " * (11 + len(text) - len(text.lstrip(" ")) + 2)
        body = text.rstrip("\n").replace("\n", "\n" + indent)
        console.print(Text(stamp, style="dim") + Text(body, style=style or ""))


class Timeline:
    """Prints annotated events as a timeline with round headers (used by ``--follow``)."""

    def __init__(self, out: TextIO, *, show_llm: bool = False, show_nodes: bool = False,
                 filters: dict[str, Any] | None = None) -> None:
        """Set up printing to ``out`` with the given filters (see :func:`matches`)."""
        self.console = _console(out)
        self.show_llm, self.show_nodes = show_llm, show_nodes
        self.filters = filters or {}
        self.round: int | None = None
        self.finalizing = False
        self._last_role_event: tuple[Any, Any] | None = None
        self.gate_events = False
        """True once the trace has ``gate`` events: they say more than the gate tool calls."""

    def feed(self, e: dict[str, Any]) -> None:
        """Print one annotated event if it passes the filters."""
        if e.get("event") == "gate":
            self.gate_events = True
        if not matches(e, **self.filters) or (self.gate_events and e.get("event") == "tool_call"
                                              and e.get("tool") == "gate"):
            return
        lines = describe(e, show_llm=self.show_llm, show_nodes=self.show_nodes)
        if lines is None:
            return
        if e.get("event") == "role_event":
            payload = {k: v for k, v in e.items() if k not in _META and k != "role"}
            self._last_role_event = (e.get("role"), payload)
        elif e.get("event") == "note" and self._last_role_event == (e.get("role"),
                                                                   e.get("payload")):
            return  # an extension role's note that repeats its role_event
        if e.get("event") == "node_start" and e.get("node") == "finalize" or \
                e.get("event") == "stop":
            if not self.finalizing:
                self.finalizing = True
                self.console.rule("finalize", style="dim")
        elif e["_round"] != self.round and not self.finalizing and \
                e.get("event") not in ("run_start", "run_resume", *END_EVENTS):
            self.round = e["_round"]
            self.console.rule(f"round {self.round}", style="dim")
        _print(self.console, lines, e.get("t"))


def summary_lines(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Return the closing totals: candidates, LLM tokens and cost per role, time."""
    lines: list[tuple[str, str]] = []
    outcomes = {e.get("candidate"): e for e in events if e.get("event") == "candidate"}
    ok = sum(1 for o in outcomes.values() if o.get("outcome") == "ok")
    lines.append(("bold", f"candidates: {len(outcomes)} ({ok} ok, {len(outcomes) - ok} failed)"))
    for role, r in token_ledger(events).items():
        cost = f", ${r['cost_usd']:.4f}" if r["cost_usd"] is not None else ", price unknown"
        lines.append(("", f"llm {role}: {r['calls']} calls, {r['input_tokens']} in / "
                          f"{r['output_tokens']} out tokens{cost}, {r['fallbacks']} fallbacks"))
    tl = time_ledger(events)
    lines.append(("", "time per node: " + ", ".join(
        f"{k} {v['seconds']:.1f}s" for k, v in tl["nodes"].items())))
    if tl["rounds"]:
        lines.append(("", "time per round: " + ", ".join(
            f"{k}: {v:.1f}s" for k, v in sorted(tl["rounds"].items()))))
    lines.append(("", f"wall {tl['wall_s']:.1f}s, inside tools {tl['tools_s']:.1f}s, "
                      f"outside {100 * tl['outside_frac']:.1f}%"))
    return lines


def render(run_dir: Path, *, show_llm: bool = False, show_nodes: bool = False,
           roles: Iterable[str] = (), candidates: Iterable[str] = (),
           rounds: Iterable[int] = (), out: TextIO = sys.stdout) -> None:
    """Print the timeline of a run's trace, then its totals."""
    events = annotate(load_trace(run_dir))
    if not events:
        print(f"no trace events in {run_dir}", file=out)
        return
    tl = Timeline(out, show_llm=show_llm, show_nodes=show_nodes,
                  filters={"roles": list(roles), "candidates": list(candidates),
                           "rounds": list(rounds)})
    tl.gate_events = any(e.get("event") == "gate" for e in events)
    for e in events:
        tl.feed(e)
    if any(tl.filters.values()):
        return  # the totals are the whole run's; a filtered view leaves them out
    tl.console.rule("totals", style="dim")
    _print(tl.console, summary_lines(events))


def follow(path: Path, *, poll_s: float = 0.5, timeout_s: float | None = None
           ) -> Iterator[dict[str, Any]]:
    """Yield the events of a trace file as they are written, until the run ends.

    Complete lines only (a line being written is held back until its newline); stops
    after an event of :data:`END_EVENTS` or after ``timeout_s`` without a new line.
    """
    pos, buf = 0, b""
    idle_since = time.monotonic()
    while True:
        if path.exists():
            with path.open("rb") as f:
                f.seek(pos)
                chunk = f.read()
            pos += len(chunk)
            buf += chunk
            *complete, buf = buf.split(b"\n")
            for raw in complete:
                for ev in parse_lines(raw.decode("utf-8", errors="replace")):
                    idle_since = time.monotonic()
                    yield ev
                    if ev.get("event") in END_EVENTS:
                        return
        if timeout_s is not None and time.monotonic() - idle_since > timeout_s:
            return
        time.sleep(poll_s)


def code_diff(run_dir: Path, a: str, b: str) -> str:
    """Unified diff of two candidates' ``model.py`` (``best`` names the chosen design).

    Raises:
        FileNotFoundError: A candidate has no code in this run (the message lists the ids).
    """
    texts = []
    for cid in (a, b):
        path = (run_dir / "best_model.py" if cid == "best"
                else run_dir / "candidates" / cid / "model.py")
        if not path.is_file():
            have = sorted(p.name for p in (run_dir / "candidates").glob("*")) \
                if (run_dir / "candidates").is_dir() else []
            raise FileNotFoundError(f"no code for candidate {cid!r} in {run_dir} "
                                    f"(candidates: {', '.join(have) or 'none'})")
        texts.append(path.read_text(encoding="utf-8").splitlines(keepends=True))
    return "".join(difflib.unified_diff(texts[0], texts[1], fromfile=f"{a}/model.py",
                                        tofile=f"{b}/model.py"))


def _clean(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if not k.startswith("_")} | (
        {"round": e["_round"]} if "round" not in e and "_round" in e else {})


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m graph.trace RUN_DIR [diff A B] [filters] [--call N] [--follow]``."""
    p = argparse.ArgumentParser(
        prog="python -m graph.trace", description=__doc__.split("\n")[0],
        epilog="examples: RUN_DIR --role critic --round 2 | RUN_DIR --candidate c003 | "
               "RUN_DIR --call 4 | RUN_DIR diff c001 c002 | RUN_DIR --follow | RUN_DIR --json")
    p.add_argument("run_dir", type=Path)
    p.add_argument("command", nargs="*", metavar="diff A B",
                   help="show the code diff between candidates A and B ('best' allowed)")
    p.add_argument("--role", action="append", default=[],
                   help="only this role / node / tool (critic, designer, code_fixer, gate, "
                        "evaluate, ...); repeatable")
    p.add_argument("--candidate", action="append", default=[],
                   help="only events about this candidate (and its fixes); repeatable")
    p.add_argument("--round", action="append", type=int, default=[], help="only this round")
    p.add_argument("--call", type=int, metavar="N", help="print LLM call N (prompt + answer)")
    p.add_argument("--llm", action="store_true", help="print prompts and answers inline")
    p.add_argument("--nodes", action="store_true", help="also print node timings")
    p.add_argument("--follow", action="store_true", help="keep printing while the run goes on")
    p.add_argument("--json", action="store_true", help="JSON lines for scripts")
    args = p.parse_args(argv)
    run_dir: Path = args.run_dir
    out = sys.stdout
    if args.command:
        if args.command[0] != "diff" or len(args.command) != 3:
            p.error("the only command is: RUN_DIR diff A B")
        try:
            diff = code_diff(run_dir, args.command[1], args.command[2])
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps({"a": args.command[1], "b": args.command[2], "diff": diff}))
        elif not diff:
            print(f"{args.command[1]} and {args.command[2]} have the same code", file=out)
        else:
            from rich.syntax import Syntax

            _console(out).print(Syntax(diff, "diff", theme="ansi_dark", background_color=None))
        return 0
    trace = run_dir / "trace.jsonl"
    if not trace.exists() and not args.follow:
        print(f"error: {trace} not found (is {run_dir} a run folder?)", file=sys.stderr)
        return 2
    filters = {"roles": args.role, "candidates": args.candidate, "rounds": args.round}
    if args.call is not None:
        calls = [e for e in annotate(load_trace(run_dir)) if e.get("event") == "llm_call"]
        if not 1 <= args.call <= len(calls):
            print(f"error: no LLM call {args.call} in {trace} ({len(calls)} calls"
                  + (", the run used the heuristic brains)" if not calls else ")"),
                  file=sys.stderr)
            return 2
        e = calls[args.call - 1]
        if args.json:
            print(json.dumps(_clean(e)))
        else:
            console = _console(out)
            _print(console, describe(e) or [], e.get("t"))
            _print(console, call_lines(e))
        return 0
    if args.follow:
        tl = Timeline(out, show_llm=args.llm, show_nodes=args.nodes, filters=filters)
        note = Annotator()
        try:
            for ev in follow(trace):
                e = note(ev)
                if args.json:
                    if matches(e, **filters):
                        print(json.dumps(_clean(e)), file=out, flush=True)
                else:
                    tl.feed(e)
                    out.flush()
        except KeyboardInterrupt:
            return 0
        return 0
    events = annotate(load_trace(run_dir))
    if args.json:
        for e in events:
            if matches(e, **filters):
                print(json.dumps(_clean(e)), file=out)
        return 0
    render(run_dir, show_llm=args.llm, show_nodes=args.nodes, roles=args.role,
           candidates=args.candidate, rounds=args.round, out=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
