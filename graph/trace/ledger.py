"""The reading side of the trace: parse it (a torn last line is skipped), tail it, total it.

:func:`time_ledger` is the one place where node, tool and round times are summed; the
timeline's totals, the run report and the loop benchmark read it.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from graph.trace.costs import estimate_cost

#: Events that end a run's process: ``--follow`` stops after one of them.
END_EVENTS = ("run_end", "run_error", "run_interrupted")


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

