"""The timeline of a run: events annotated with their round, filtered, printed with rich.

``python -m graph.trace RUN_DIR`` prints it by round, then the run's totals
(:func:`summary_lines`); ``--follow`` feeds a :class:`Timeline` as the run writes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from graph.trace.describe import Lines, describe, own_fields
from graph.trace.ledger import END_EVENTS, load_trace, time_ledger, token_ledger


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


def console_for(out: TextIO) -> Any:
    """Return a rich console for ``out``: colours on a terminal, else plain 120 columns."""
    from rich.console import Console

    tty = hasattr(out, "isatty") and out.isatty()
    return Console(file=out, highlight=False, width=None if tty else 120,
                   force_terminal=tty or None, no_color=not tty)


def print_lines(console: Any, lines: Lines, t: float | None = None) -> None:
    """Print an event's lines, the first one stamped with its time ``t``."""
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
        self.console = console_for(out)
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
            payload = own_fields(e, "role")
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
        print_lines(self.console, lines, e.get("t"))


def summary_lines(events: list[dict[str, Any]]) -> Lines:
    """Return the closing totals: candidates, LLM tokens and cost per role, time."""
    lines: Lines = []
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
    print_lines(tl.console, summary_lines(events))

