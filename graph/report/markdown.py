"""The report as Markdown (``report.md``); its images are the run's PNG files beside it."""

from __future__ import annotations

from typing import Any

from graph.report.content import (
    CONFIRMATION_NOTE,
    SIDE_BY_SIDE_NOTE,
    children,
    confirmation_table,
    failures,
    fmt,
    front_table,
    hardware_rows,
    ledger,
    metrics_table,
    outcome,
    outcome_text,
    round_rows,
    why,
)
from graph.report.data import RunData
from graph.report.figures import GROUPS_PNG, PARETO_PNG


def _md_table(head: list[str], rows: list[list[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _final_design(data: RunData) -> list[str]:
    best = data.records.get(data.best_id or "") or {}
    if not best:
        return []
    reason = why(data, best)[1]
    head, rows = metrics_table(data)
    return [f"`{best['id']}` ({best.get('origin')}, parent {best.get('parent') or '-'}): "
            f"{reason}\n",
            _md_table(head, rows),
            _md_table(["measure", "value"],
                      hardware_rows(data.test_report or best.get("report"))),
            "```python\n" + (best.get("code") or "").rstrip() + "\n```\n"]


def _lineage(data: RunData) -> list[str]:
    """Return the lineage as a nested list: each candidate, what led to it and why."""
    out: list[str] = []
    roots, kids = children(data)

    def walk(cid: str, depth: int) -> None:
        rec = data.records[cid]
        cause, reason = why(data, rec)
        mark = " (chosen)" if cid == data.best_id else ""
        out.append(f"{'  ' * depth}- **{cid}**{mark} [{rec.get('origin')}, round "
                   f"{rec.get('round')}]: {outcome_text(outcome(data, rec))}")
        if cause:
            out.append(f"{'  ' * depth}  - led by: {cause}")
        if reason:
            out.append(f"{'  ' * depth}  - reason: {reason}")
        for k in kids.get(cid, []):
            walk(k, depth + 1)

    for r in roots:
        walk(r, 0)
    return out


def _failures(data: RunData) -> str:
    fails = failures(data)
    if not fails:
        return "No candidate failed.\n"
    return _md_table(["candidate", "stage", "error", "fixed by", "diagnosis", "outcome"],
                     [[f["id"], f["stage"], f["error"][:300], x["by"], x.get("diagnosis"),
                       x.get("outcome")] for f in fails for x in
                      (f["fixes"] or [{"by": "-", "diagnosis": "", "outcome": ""}])])


def _confirmation(data: RunData) -> list[str]:
    table = confirmation_table(data)
    if table is None:
        return []
    seeds = ((data.summary or {}).get("confirmation") or {}).get("train_seeds")
    return ["## Confirmation on training seeds\n", CONFIRMATION_NOTE.format(seeds=seeds) + "\n",
            _md_table(*table)]


def _front(data: RunData) -> list[str]:
    head, rows, line = front_table(data)
    if not rows:
        return []
    return [_md_table(head, rows), SIDE_BY_SIDE_NOTE + (f" {line}" if line else "") + "\n"]


def render_markdown(data: RunData) -> str:
    """Render the report as Markdown (images are the PNG files written beside it)."""
    s = data.settings
    tok, nodes, tools, tl = ledger(data)
    out = [f"# FL-NAS run {data.run_id}\n",
           f"Status: **{data.status}**. Stop: {data.stop}.\n",
           f"Task {s.get('task')}, {s.get('image_size')} px, {s.get('epochs')} epoch(s), "
           f"iter_max {s.get('iter_max')}; {len(data.records)} candidates; chosen "
           f"**{data.best_id}**.\n", "## Final design\n", *_final_design(data),
           *_confirmation(data),
           "## Pareto front\n", f"![Pareto front]({PARETO_PNG})\n", *_front(data),
           "## Per-group accuracy\n", f"![per-group accuracy]({GROUPS_PNG})\n", "## Lineage\n",
           *_lineage(data), "\n## Rounds\n"]
    out.append(_md_table(["round", "candidates", "critique", "seconds", "hypervolume"],
                         [[r["round"], ", ".join(r["candidates"]), r["critique"] or "",
                           fmt(r["seconds"], ".1f"), fmt(r["hv"], ".4f")]
                          for r in round_rows(data)]))
    out += ["## Failures and fixes\n", _failures(data), "## Token and time ledger\n"]
    out.append(_md_table(["role", "calls", "in", "out", "LLM s", "cost", "fallbacks", "models"],
                         tok) if tok else "No LLM calls (heuristic brains).\n")
    out.append(f"Wall {tl['wall_s']:.1f} s, inside tools {tl['tools_s']:.1f} s, outside "
               f"{100 * tl['outside_frac']:.1f} %.\n")
    out.append(_md_table(["node", "calls", "seconds"], nodes))
    out.append(_md_table(["tool", "calls", "cached", "seconds"], tools))
    return "\n".join(out)
