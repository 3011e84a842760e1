"""One event of the trace as timeline lines: who decided what, why, with numbers.

Each line is ``(style, text)``: a rich style name and the text. The first line of an
event is its headline; indented lines give the reasons and numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from graph.trace.ledger import END_EVENTS

Lines = list[tuple[str, str]]

#: Fields every event has (left out when an event is printed as its fields).
META = ("event", "run_id", "timestamp", "t", "_round", "_call", "level")


def fmt(x: Any, spec: str = ".3f") -> str:
    """Format a number for the timeline (``n/a`` for None, thousands separators above 10k)."""
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
    parts = [f"bal.acc {fmt(m.get('balanced_accuracy'))}", f"gap {fmt(m.get('max_gap'))}"]
    if m.get("params") is not None:
        parts.append(f"{fmt(m.get('params'))} params")
    if m.get("latency_ms") is not None:
        parts.append(f"{fmt(m.get('latency_ms'), '.2f')} ms")
    return ", ".join(parts)


def _cand(e: dict[str, Any]) -> str:
    return e.get("candidate") or "-"


def _brain(e: dict[str, Any]) -> str:
    return f" [{e['brain']}]" if e.get("brain") else ""


def own_fields(e: dict[str, Any], *also: str) -> dict[str, Any]:
    """Return an event's own fields (without :data:`META` and the keys ``also``)."""
    return {k: v for k, v in e.items() if k not in META and k not in also}


def _run_start(e: dict[str, Any]) -> Lines:
    s = e.get("settings") or {}
    b = {k: v for k, v in s.items() if k.startswith("max_") and v is not None
         and k not in ("max_fix_attempts",)}
    return [("bold", f"run {e.get('run_id')} started: llm {s.get('llm', '?')}, "
                     f"{e.get('n_images')} images at {s.get('image_size')} px, "
                     f"{s.get('epochs')} epoch(s), iter_max {s.get('iter_max')}"),
            ("dim", "  budgets: " + (", ".join(f"{k}={v}" for k, v in b.items())
                                     or "none"))]


def _run_resume(e: dict[str, Any]) -> Lines:
    return [("bold", f"run {e.get('run_id')} resumed"
                     + (" (already finished)" if e.get("finished") else
                        f" at {', '.join(e.get('next') or [])}"))]


def _run_end(e: dict[str, Any]) -> Lines:
    kind = str(e.get("event"))
    style = "bold" if kind == "run_end" else "bold red"
    return [(style, kind.replace("_", " ") + (f": {e['error']}" if e.get("error") else ""))]


def _node_end(e: dict[str, Any]) -> Lines:
    return [("dim", f"node {e.get('node')} {float(e.get('duration_s') or 0):.2f}s "
                    f"(updated {', '.join(e.get('updated') or []) or 'nothing'})")]


def _critique(e: dict[str, Any]) -> Lines:
    lines = [("cyan", f"critic{_brain(e)} on {_cand(e)}: {e.get('summary')}")]
    if e.get("violated_budgets"):
        lines.append(("", "  over budget: " + "; ".join(e["violated_budgets"])))
    for g in e.get("lagging_groups") or []:
        lines.append(("", f"  lagging: {g.get('attribute')}={g.get('group')} acc "
                          f"{fmt(g.get('accuracy'))} (-{fmt(g.get('gap'))})"))
    if e.get("priorities"):
        lines.append(("", "  priorities: " + "; ".join(e["priorities"])))
    if e.get("suggestions"):
        lines.append(("", "  suggestions: " + "; ".join(e["suggestions"])))
    if e.get("converged"):
        lines.append(("green", "  converged: every target met"))
    return lines


def _design(e: dict[str, Any]) -> Lines:
    lines = [("magenta", f"designer{_brain(e)} -> {_cand(e)} from {e.get('parent')}: "
                         f"{e.get('design')}"),
             ("", f"  why: {e.get('rationale')}")]
    if e.get("critique"):
        lines.append(("dim", f"  acting on the critique of {e.get('critique_about')}: "
                             f"{e['critique']}"))
    return lines


def _fix(e: dict[str, Any]) -> Lines:
    return [("yellow", f"code_fixer{_brain(e)} -> {_cand(e)} repairs {e.get('fixes')} "
                       f"(attempt {e.get('attempt')}, {e.get('stage')} failure)"),
            ("", f"  error: {str(e.get('error') or '').strip()[-300:]}"),
            ("", f"  diagnosis: {e.get('diagnosis')}")]


def _gate(e: dict[str, Any]) -> Lines:
    if e.get("ok"):
        return [("dim", f"gate {_cand(e)} ok ({fmt(e.get('params'))} params, "
                        f"{fmt(e.get('flops'))} FLOPs)")]
    return [("red", f"gate {_cand(e)} FAILED at {e.get('stage')}: {e.get('message')}")]


def _tool_call(e: dict[str, Any]) -> Lines:
    tool, cand = e.get("tool"), _cand(e)
    took = f"{float(e.get('duration_s') or 0):.2f}s" + (" cached" if e.get("cached") else "")
    if tool == "evaluate":
        f = e.get("fidelity") or {}
        fid = (f" ({f.get('epochs')} ep, {f.get('image_size')} px, n={f.get('n_images')})"
               if f else "")
        status = "ok" if e.get("ok") else f"failed at {e.get('failure_stage')}"
        return [("dim", f"evaluate {cand} on {e.get('split', 'val')}{fid}: {status}, {took}")]
    return [("dim", f"{tool} {cand}: {'ok' if e.get('ok') else 'failed'}, {took}"
                    + (f" ({e['error']})" if e.get("error") else ""))]


def _candidate(e: dict[str, Any]) -> Lines:
    cand = _cand(e)
    if e.get("outcome") == "ok":
        return [("green", f"{cand} ok ({e.get('origin')} <- {e.get('parent') or '-'}): "
                          f"{_metrics_line(e.get('metrics'))}")]
    why = str(e.get("failure") or e.get("headline") or "").strip().split("\n")[0]
    return [("red", f"{cand} failed ({e.get('origin')} <- {e.get('parent') or '-'}): "
                    f"{why[:300]}"
                    + (f" -> fixed by {e['fixed_by']}" if e.get("fixed_by") else ""))]


def _llm_call(e: dict[str, Any]) -> Lines:
    cost = f" ${e['cost_usd']:.4f}" if e.get("cost_usd") is not None else ""
    return [("blue", f"[call {e.get('_call')}] {e.get('role')} {e.get('model')}: "
                     f"{e.get('input_tokens')} in / {e.get('output_tokens')} out tokens"
                     f"{cost}, {float(e.get('latency_s') or 0):.2f}s, retries "
                     f"{e.get('retries')}, re-asks {e.get('reasks')}"
                     + (f", error: {e['error']}" if e.get("error") else ""))]


def _round_end(e: dict[str, Any]) -> Lines:
    took = f" in {e['duration_s']:.1f}s" if e.get("duration_s") is not None else ""
    return [("bold", f"round {e.get('round')} done{took}: hypervolume "
                     f"{fmt(e.get('hv'), '.4f')}, best {e.get('best')}, "
                     f"{e.get('stale_rounds')} round(s) without gain")]


_HANDLERS: dict[str, Callable[[dict[str, Any]], Lines]] = {
    "run_start": _run_start,
    "run_resume": _run_resume,
    **{kind: _run_end for kind in END_EVENTS},
    "node_error": lambda e: [("red", f"node {e.get('node')} raised {e.get('error')}")],
    "critique": _critique,
    "design": _design,
    "fix": _fix,
    "gate": _gate,
    "tool_call": _tool_call,
    "candidate": _candidate,
    "llm_call": _llm_call,
    "llm_fallback": lambda e: [("red", f"{e.get('role')}: LLM {e.get('model')} failed, "
                                       "heuristic brain used "
                                       f"({str(e.get('error'))[:300]})")],
    "note": lambda e: [("dim", f"note from {e.get('role')}: "
                               f"{json.dumps(e.get('payload'))[:300]}")],
    "role_event": lambda e: [("", f"{e.get('role')}: "
                                  f"{json.dumps(own_fields(e, 'role'))[:300]}")],
    "round_end": _round_end,
    "confirm": lambda e: [("", f"confirm {e.get('candidate')} on training seed {e.get('seed')}: "
                               + (f"bal.acc {fmt(e.get('balanced_accuracy'), '.3f')}"
                                  if e.get("ok") else f"failed ({e.get('failure')})"))],
    "confirmed": lambda e: [("bold", f"confirmed {', '.join(e.get('finalists') or [])} on seeds "
                                     f"{e.get('seeds')}: best {e.get('best')} on the mean")],
    "report": lambda e: [("dim", f"report written: {e.get('html')}")],
    "report_error": lambda e: [("red", f"report failed: {e.get('error')}")],
    "stop": lambda e: [("bold", f"stop: {e.get('reason')} after round {e.get('round')}, "
                                f"best {e.get('best')}")],
}


def describe(e: dict[str, Any], *, show_llm: bool = False,
             show_nodes: bool = False) -> Lines | None:
    """Lines ``(style, text)`` for one event of the timeline, or None to leave it out.

    The first line is the headline; indented lines give the reasons and numbers.
    ``show_llm`` adds an LLM call's prompt and answer; ``show_nodes`` the node timings.
    """
    kind = e.get("event")
    if kind in ("node_start", "node_end"):
        return _node_end(e) if show_nodes and kind == "node_end" else None
    handler = _HANDLERS.get(str(kind))
    if handler is None:
        return [("dim", f"{kind}: {json.dumps(own_fields(e), default=str)[:300]}")]
    lines = handler(e)
    if kind == "llm_call" and show_llm:
        lines += call_lines(e)
    return lines


def call_lines(e: dict[str, Any]) -> Lines:
    """Return the full prompt and answer of one ``llm_call`` event as lines."""
    lines: Lines = []
    for m in e.get("prompt") or []:
        lines.append(("bold", f"--- {m.get('role')} ---"))
        lines.append(("", str(m.get("content"))))
    lines.append(("bold", "--- answer ---"))
    lines.append(("", str(e.get("response"))))
    return lines
