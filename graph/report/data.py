"""Read a run folder, finished or not, into :class:`RunData` (what every view shows).

Everything is read from what is on disk - ``settings.json``, ``candidates/*/``,
``trace.jsonl`` and ``summary.json`` when the run finished - so a partial or killed run
can be reported too (its status says so).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph.trace import load_trace


@dataclass
class RunData:
    """Everything a report shows, read from a run folder."""

    run_dir: Path
    run_id: str
    settings: dict[str, Any]
    summary: dict[str, Any] | None
    records: dict[str, dict[str, Any]]
    """Candidate records by id (``report.json`` with ``code`` from ``model.py``)."""
    events: list[dict[str, Any]]
    best_id: str | None
    test_report: dict[str, Any] | None
    """The chosen design's full test-split EvaluationReport, when it was tested."""
    status: str
    """``finished`` or ``partial``."""
    stop: str
    """Why the search stopped, or what is known about an unfinished run."""
    front: list[str] = field(default_factory=list)
    designs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``design`` events by candidate (the critique and rationale behind each)."""
    fixes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``fix`` events by the fixer's candidate id."""
    critiques: list[dict[str, Any]] = field(default_factory=list)
    rounds: dict[int, dict[str, Any]] = field(default_factory=dict)
    """``round_end`` events by round."""


def read_json(path: Path) -> Any:
    """Return the JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_ok(rec: dict[str, Any]) -> bool:
    """Tell whether a candidate record was evaluated successfully."""
    rep = rec.get("report") or {}
    return rec.get("status") == "evaluated" and rep.get("status") == "ok"


def objectives_of(rec: dict[str, Any]) -> tuple[float, float, float] | None:
    """Return a successful candidate's objectives at its best fidelity (None otherwise)."""
    from agents.records import as_candidate, estimated_objectives

    if not is_ok(rec):
        return None
    try:
        return estimated_objectives(as_candidate({"code": "", **rec}))
    except ValueError:
        return None


def _front(records: dict[str, dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    """Return the archive's front as the graph computes it (feasible designs only)."""
    from evaluation.pareto import ParetoArchive, reference_point
    from evaluation.report import Budgets

    budgets = Budgets.model_validate({k: settings.get(k) for k in Budgets.model_fields})
    archive = ParetoArchive(reference=list(reference_point(budgets)))
    for cid, rec in records.items():
        obj = objectives_of(rec)
        if obj is not None and rec.get("origin") != "baseline":
            archive.add(cid, obj, feasible=not rec["report"].get("violations"))
    return [e.candidate_id for e in archive.front()]


def _stop_of(summary: dict[str, Any] | None, events: list[dict[str, Any]],
             run_id: str, run_dir: Path) -> tuple[str, str]:
    """(status, stop text) from the summary, else from the trace's last events."""
    if summary:
        return "finished", str(summary.get("stop_reason"))
    resume = f"continue it with `python -m graph.run --resume {run_id} --run-dir " \
             f"{run_dir.parent}`"
    last = {e.get("event"): e for e in events}
    if "run_error" in last:
        return "partial", f"crashed: {last['run_error'].get('error')}; {resume}"
    if "run_interrupted" in last:
        return "partial", f"interrupted (Ctrl-C); {resume}"
    if "stop" in last:
        return "partial", (f"stopped ({last['stop'].get('reason')}) but finalize did not "
                           f"finish; {resume}")
    when = events[-1].get("timestamp", "?") if events else "never"
    return "partial", (f"no end recorded (killed, or still running; last event {when}); "
                       f"{resume}")


def load_run(run_dir: Path) -> RunData:
    """Read a run folder, finished or not.

    Raises:
        FileNotFoundError: ``run_dir`` holds neither a trace, settings nor candidates.
    """
    run_dir = Path(run_dir)
    settings = read_json(run_dir / "settings.json") or {}
    events = load_trace(run_dir)
    cand_dir = run_dir / "candidates"
    if not settings and not events and not cand_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no settings.json, "
                                "trace.jsonl or candidates/)")
    if not settings:  # the run_start event carries the settings too
        settings = next((e.get("settings") for e in events if e.get("settings")), {}) or {}
    records: dict[str, dict[str, Any]] = {}
    for folder in sorted(cand_dir.glob("*")) if cand_dir.is_dir() else []:
        rec = read_json(folder / "report.json")
        if not isinstance(rec, dict) or "id" not in rec:
            continue  # a candidate killed before its first write
        code = folder / "model.py"
        rec["code"] = code.read_text(encoding="utf-8") if code.is_file() else ""
        records[rec["id"]] = rec
    records = dict(sorted(records.items(), key=lambda kv: (kv[1].get("round") or 0, kv[0])))
    summary = read_json(run_dir / "summary.json")
    run_id = str((summary or {}).get("run_id") or settings.get("run_id") or
                 next((e.get("run_id") for e in events if e.get("run_id")), run_dir.name))
    if summary and (summary.get("best") or {}).get("id") in records:
        best_id = summary["best"]["id"]
    else:
        from agents.records import select_best

        best_id = select_best(records, float(settings.get("unfairness_weight", 1.0)))
    test = read_json(run_dir / "candidates" / best_id / "test" / "report.json") \
        if best_id else None
    status, stop = _stop_of(summary, events, run_id, run_dir)
    data = RunData(run_dir=run_dir, run_id=run_id, settings=settings, summary=summary,
                   records=records, events=events, best_id=best_id,
                   test_report=test if isinstance(test, dict) else None,
                   status=status, stop=stop, front=_front(records, settings))
    _index_events(data)
    return data


def _index_events(data: RunData) -> None:
    """Fill the decision events by candidate and by round (the lineage's reasons)."""
    for e in data.events:
        kind = e.get("event")
        if kind == "design" and e.get("candidate"):
            data.designs[e["candidate"]] = e
        elif kind == "fix" and e.get("candidate"):
            data.fixes[e["candidate"]] = e
        elif kind == "critique":
            data.critiques.append(e)
        elif kind == "round_end" and isinstance(e.get("round"), int):
            data.rounds[e["round"]] = e

