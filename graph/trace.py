"""Run trace: one structlog JSON line per event in ``runs/<id>/trace.jsonl``.

Events (field ``event``): ``run_start``/``run_resume``/``run_end``, ``node_start``/
``node_end`` (node, duration_s), ``llm_call`` (role, model, prompt, response, tokens,
latency, retries, reasks), ``llm_fallback``, ``tool_call`` (tool, key, cached,
duration_s, candidate), ``candidate`` (outcome), ``role_event`` (extension roles),
``stop``. The file is appended on resume and flushed per line, so a ``kill -9`` loses at
most the line being written.

Inspect a run with ``python -m graph.trace RUN_DIR`` (add ``--llm`` to print prompts).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, TextIO

import structlog


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


def load_trace(run_dir: Path) -> list[dict[str, Any]]:
    """Read every event of a run (a torn last line after a kill is skipped)."""
    out: list[dict[str, Any]] = []
    path = Path(run_dir) / "trace.jsonl"
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


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


def render(run_dir: Path, *, show_llm: bool = False, out: TextIO = sys.stdout) -> None:
    """Print a human-readable digest of a run's trace."""
    events = load_trace(run_dir)
    if not events:
        print(f"no trace in {run_dir}", file=out)
        return
    kinds = Counter(e.get("event") for e in events)
    print(f"{run_dir}: {len(events)} events " + ", ".join(f"{k}={v}" for k, v in kinds.items()),
          file=out)
    node_time: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("event") == "node_end":
            node_time[e["node"]] += float(e.get("duration_s", 0.0))
    print("time per node: " + ", ".join(f"{k} {v:.1f}s" for k, v in node_time.items()), file=out)
    split = time_split(events)
    print(f"wall {split['wall_s']:.1f}s, inside tools {split['tools_s']:.1f}s, "
          f"outside {100 * split['outside_frac']:.1f}%", file=out)
    print("\ncandidates:", file=out)
    for e in events:
        if e.get("event") == "candidate":
            print(f"  {e.get('candidate')}: {e.get('outcome')} origin={e.get('origin')} "
                  f"parent={e.get('parent')} {e.get('headline', '')}", file=out)
    print("\ntool calls:", file=out)
    for e in events:
        if e.get("event") == "tool_call":
            print(f"  {e.get('tool')} {e.get('candidate')} ok={e.get('ok')} "
                  f"cached={e.get('cached')} {float(e.get('duration_s', 0)):.2f}s", file=out)
    llm = [e for e in events if e.get("event") in ("llm_call", "llm_fallback")]
    if llm:
        print("\nLLM calls:", file=out)
        for e in llm:
            if e["event"] == "llm_fallback":
                print(f"  {e.get('role')}: FALLBACK to heuristic ({e.get('error')})", file=out)
                continue
            print(f"  {e.get('role')} {e.get('model')} in={e.get('input_tokens')} "
                  f"out={e.get('output_tokens')} {float(e.get('latency_s', 0)):.2f}s "
                  f"retries={e.get('retries')} reasks={e.get('reasks')} "
                  f"error={e.get('error')}", file=out)
            if show_llm:
                for m in e.get("prompt") or []:
                    print(f"    [{m.get('role')}] {str(m.get('content'))[:2000]}", file=out)
                print(f"    -> {str(e.get('response'))[:2000]}", file=out)
    for e in events:
        if e.get("event") == "stop":
            print(f"\nstop: {e.get('reason')}", file=out)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m graph.trace RUN_DIR [--llm]``."""
    p = argparse.ArgumentParser(prog="python -m graph.trace", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--llm", action="store_true", help="print LLM prompts and responses")
    args = p.parse_args(argv)
    if not (args.run_dir / "trace.jsonl").exists():
        print(f"error: {args.run_dir}/trace.jsonl not found", file=sys.stderr)
        return 2
    render(args.run_dir, show_llm=args.llm)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
