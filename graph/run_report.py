"""The closing lines of a run: stop reason, best design, test metrics with intervals, LLM use."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from graph.report.content import chosen_accuracy

EXIT_OK, EXIT_ERROR = 0, 1


def print_report(run_dir: Path) -> int:
    """Print the closing lines of a finished run from its ``summary.json``; return the exit code."""
    path = run_dir / "summary.json"
    if not path.exists():
        print(f"error: {path} missing", file=sys.stderr, flush=True)
        return EXIT_ERROR
    s = json.loads(path.read_text())
    best, test = s.get("best") or {}, s.get("test") or {}
    lines = [f"stop: {s['stop_reason']} after {s['rounds']} rounds, "
             f"{s['candidates']['total']} candidates"]
    if best:
        v = best.get("val") or {}
        lines.append(f"best {best['id']} ({best['origin']}): val bal.acc "
                     f"{chosen_accuracy(s, v.get('balanced_accuracy'))}, "
                     f"{v.get('params')} params, {v.get('latency_ms')} ms")
    if test.get("status") == "ok":
        fair = test.get("fairness") or {}
        gaps = ", ".join(f"{a} gap {gap_text(f)}" for a, f in fair.items())
        lines.append(f"test: bal.acc {test['balanced_accuracy']:.3f} acc "
                     f"{test['accuracy']:.3f}; {gaps}")
    skipped = s.get("data") or {}
    if skipped.get("n_skipped") or skipped.get("n_duplicates"):
        lines.append(f"data: {skipped.get('n_skipped', 0)} image(s) skipped, "
                     f"{skipped.get('n_duplicates', 0)} in two formats; list: "
                     f"{skipped.get('list')}")
    tokens, llm = s.get("tokens") or {}, s.get("llm") or {}
    if tokens.get("calls") or tokens.get("fallbacks"):
        lines.append(f"llm: {tokens.get('calls', 0)} requests, "
                     f"{tokens.get('input', 0) + tokens.get('output', 0)} tokens, "
                     f"{tokens.get('fallbacks', 0)} steps on the heuristic fallback")
    breaker = llm.get("breaker") or {}
    if breaker.get("opened_in_run") or breaker.get("open"):
        lines.append("warning: " + (breaker.get("message") or
                                    "the LLM circuit breaker opened during this run "
                                    "(see llm_breaker_open in the trace)"))
    lines.append(f"results in {run_dir} (inspect: python -m graph.trace {run_dir})")
    print("\n".join(lines), flush=True)
    return EXIT_OK


def gap_text(fair: dict[str, Any]) -> str:
    """Return ``0.120 [0.05, 0.21] (n 40/12)``: a gap with its interval and the group sizes."""
    gap = fair.get("max_gap")
    if gap is None:
        return "n/a (one group)"
    text = f"{gap:.3f}"
    if fair.get("max_gap_interval"):
        lo, hi = fair["max_gap_interval"]
        text += f" [{lo:.2f}, {hi:.2f}]"
    if fair.get("group_sizes"):
        text += f" (n {'/'.join(str(n) for n in fair['group_sizes'].values())})"
    return text
