"""Run report: one self-contained HTML page and a Markdown twin, for any run folder.

``python -m graph.report RUN_DIR`` writes ``RUN_DIR/report.html`` and ``report.md``
(with ``report_pareto.png`` and ``report_groups.png`` beside it for the Markdown);
``finalize`` writes them at the end of every run. Everything is read from what is on
disk - ``settings.json``, ``candidates/*/``, ``trace.jsonl`` and ``summary.json`` when
the run finished - so a partial or killed run gets a report too (its status says so).

The page has: the summary and stop reason; the final design's code and metrics
(validation and test, with 95 % intervals); the Pareto front (balanced accuracy against
unfairness, coloured by latency, budgets and targets drawn); per-group accuracy bars per
attribute; the lineage tree (parent -> child, with the critique or failure that led to
each child, the agent's reason and the outcome); failures and their fixes; and the
token and time ledger. Images are base64 PNGs inside the page: no network is needed.

Intervals: accuracies use the Wilson score interval of a binomial proportion; balanced
accuracy a normal approximation from the per-class recalls of the confusion matrix
(``var = sum_c r~_c (1 - r~_c) / (n_c + 4) / K**2`` with Agresti-Coull adjusted recalls
``r~_c``); bootstrap intervals computed by the evaluation
(``AttributeFairness.intervals``) are shown instead when present.

``--check`` also opens the page in headless Chromium (:mod:`graph.browser`) and fails
on console errors, broken images, network requests or an empty lineage.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph.trace import load_trace, time_ledger, token_ledger

Z95 = 1.959964
HTML_NAME, MD_NAME = "report.html", "report.md"
PARETO_PNG, GROUPS_PNG = "report_pareto.png", "report_groups.png"


# ---------------------------------------------------------------------- loading


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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _ok(rec: dict[str, Any]) -> bool:
    rep = rec.get("report") or {}
    return rec.get("status") == "evaluated" and rep.get("status") == "ok"


def _objectives(rec: dict[str, Any]) -> tuple[float, float, float] | None:
    from evaluation.pareto import objectives

    if not _ok(rec):
        return None
    try:
        return objectives(rec["report"])
    except ValueError:
        return None


def _front(records: dict[str, dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    """Return the archive's front as the graph computes it (feasible designs only)."""
    from evaluation.pareto import ParetoArchive, reference_point
    from evaluation.report import Budgets

    budgets = Budgets.model_validate({k: settings.get(k) for k in Budgets.model_fields})
    archive = ParetoArchive(reference=list(reference_point(budgets)))
    for cid, rec in records.items():
        obj = _objectives(rec)
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
    settings = _read_json(run_dir / "settings.json") or {}
    events = load_trace(run_dir)
    cand_dir = run_dir / "candidates"
    if not settings and not events and not cand_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no settings.json, "
                                "trace.jsonl or candidates/)")
    if not settings:  # the run_start event carries the settings too
        settings = next((e.get("settings") for e in events if e.get("settings")), {}) or {}
    records: dict[str, dict[str, Any]] = {}
    for folder in sorted(cand_dir.glob("*")) if cand_dir.is_dir() else []:
        rec = _read_json(folder / "report.json")
        if not isinstance(rec, dict) or "id" not in rec:
            continue  # a candidate killed before its first write
        code = folder / "model.py"
        rec["code"] = code.read_text(encoding="utf-8") if code.is_file() else ""
        records[rec["id"]] = rec
    records = dict(sorted(records.items(), key=lambda kv: (kv[1].get("round") or 0, kv[0])))
    summary = _read_json(run_dir / "summary.json")
    run_id = (summary or {}).get("run_id") or settings.get("run_id") or \
        next((e.get("run_id") for e in events if e.get("run_id")), run_dir.name)
    if summary and (summary.get("best") or {}).get("id") in records:
        best_id = summary["best"]["id"]
    else:
        from agents.records import select_best

        best_id = select_best(records, float(settings.get("unfairness_weight", 1.0)))
    test = _read_json(run_dir / "candidates" / best_id / "test" / "report.json") \
        if best_id else None
    status, stop = _stop_of(summary, events, run_id, run_dir)
    data = RunData(run_dir=run_dir, run_id=run_id, settings=settings, summary=summary,
                   records=records, events=events, best_id=best_id,
                   test_report=test if isinstance(test, dict) else None,
                   status=status, stop=stop, front=_front(records, settings))
    for e in events:
        kind = e.get("event")
        if kind == "design" and e.get("candidate"):
            data.designs[e["candidate"]] = e
        elif kind == "fix" and e.get("candidate"):
            data.fixes[e["candidate"]] = e
        elif kind == "critique":
            data.critiques.append(e)
        elif kind == "round_end" and isinstance(e.get("round"), int):
            data.rounds[e["round"]] = e
    return data


# -------------------------------------------------------------------- intervals


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``p`` observed on ``n`` samples."""
    if n <= 0:
        return None
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def balanced_accuracy_interval(confusion: list[list[int]], z: float = Z95
                               ) -> tuple[float, float] | None:
    """Normal-approximation interval of balanced accuracy from a confusion matrix.

    Rows are true classes; classes without samples are left out, as in the metric. Each
    recall's variance uses the Agresti-Coull adjustment (two successes and two failures
    added), so a recall of exactly 0 or 1 on a few samples still counts as uncertain.
    """
    recalls, var = [], 0.0
    for i, row in enumerate(confusion):
        n = sum(row)
        if n == 0:
            continue
        recalls.append(row[i] / n)
        adj = (row[i] + 2) / (n + 4)
        var += adj * (1 - adj) / (n + 4)
    if not recalls:
        return None
    k = len(recalls)
    mean, half = sum(recalls) / k, z * math.sqrt(var) / k
    return max(0.0, mean - half), min(1.0, mean + half)


def metric_rows(report: dict[str, Any] | None) -> dict[str, tuple[float | None, Any]]:
    """Headline metrics of an EvaluationReport dump with their 95 % intervals.

    Returns:
        ``{label: (value, (lo, hi) or None)}`` in display order.
    """
    if not report or report.get("status") != "ok" or not report.get("metrics"):
        return {}
    m = report["metrics"]
    rows: dict[str, tuple[float | None, Any]] = {
        "accuracy": (m["accuracy"], wilson(m["accuracy"], m["n"])),
        "balanced accuracy": (m["balanced_accuracy"],
                              balanced_accuracy_interval(m.get("confusion") or [])),
    }
    for attr, f in (report.get("fairness") or {}).items():
        iv = f.get("intervals") or {}
        worst = next((g for g in f["groups"] if g["group"] == f["worst_group"]), None)
        rows[f"{attr}: worst group ({f['worst_group']})"] = (
            f["worst_group_accuracy"],
            iv.get("worst_group_accuracy") or (wilson(worst["accuracy"], worst["count"])
                                               if worst else None))
        rows[f"{attr}: max gap"] = (f["max_gap"], iv.get("max_gap"))
        rows[f"{attr}: unfairness"] = (f["unfairness"], None)
        rows[f"{attr}: EOdd"] = (f.get("eodd"), None)
    return rows


def group_interval(f: dict[str, Any], g: dict[str, Any]) -> tuple[float, float] | None:
    """Return a group's accuracy interval: the evaluation's bootstrap one, else Wilson."""
    iv = (f.get("intervals") or {}).get(f"accuracy[{g['group']}]")
    return tuple(iv) if iv else wilson(g["accuracy"], g["count"])  # type: ignore[return-value]


# ------------------------------------------------------------------------ plots


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # an Agg canvas: no display, no pyplot state
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def pareto_png(data: RunData) -> bytes:
    """Balanced accuracy against unfairness for every evaluated candidate.

    Colour is the batch-1 latency; the latency budget is a line on the colour bar and
    over-budget points are crosses; the front is circled and joined; targets are dashed
    lines; the chosen design is a star; baselines are grey diamonds.
    """
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    s = data.settings
    pts = []
    for cid, rec in data.records.items():
        obj = _objectives(rec)
        if obj is not None:
            pts.append((cid, 1 - obj[0], obj[1], obj[2], bool(rec["report"].get("violations")),
                        rec.get("origin") == "baseline"))
    fig = Figure(figsize=(7.6, 4.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlabel("unfairness (mean over sex, age of max group-accuracy gap)")
    ax.set_ylabel("balanced accuracy (validation)")
    ax.grid(alpha=0.3)
    if not pts:
        ax.text(0.5, 0.5, "no evaluated candidate yet", ha="center", transform=ax.transAxes)
        return _png(fig)
    budget = s.get("max_latency_ms")
    lats = [p[3] for p in pts]
    norm = Normalize(vmin=min(lats), vmax=max([*lats, budget] if budget else lats) or 1.0)
    cmap = "viridis"
    designs = [p for p in pts if not p[5]]
    for feasible, marker in ((True, "o"), (False, "X")):
        sel = [p for p in designs if (not p[4]) == feasible]
        if sel:
            ax.scatter([p[2] for p in sel], [p[1] for p in sel], c=[p[3] for p in sel],
                       cmap=cmap, norm=norm, s=60 if feasible else 80, marker=marker,
                       edgecolors="black" if feasible else "crimson", linewidths=0.6,
                       zorder=3, label="within budgets" if feasible else "over a budget")
    base = [p for p in pts if p[5]]
    if base:
        ax.scatter([p[2] for p in base], [p[1] for p in base], marker="D", c="lightgrey",
                   edgecolors="grey", s=50, zorder=2, label="baseline (reference)")
        for p in base:
            ax.annotate(p[0], (p[2], p[1]), fontsize=7, color="grey", xytext=(4, -9),
                        textcoords="offset points")
    front = sorted((p for p in pts if p[0] in data.front), key=lambda p: p[2])
    if front:
        ax.plot([p[2] for p in front], [p[1] for p in front], color="crimson", lw=1,
                drawstyle="steps-post", zorder=2)
        ax.scatter([p[2] for p in front], [p[1] for p in front], s=170, facecolors="none",
                   edgecolors="crimson", linewidths=1.4, zorder=4, label="Pareto front")
    for p in designs:
        ax.annotate(p[0], (p[2], p[1]), fontsize=7, xytext=(5, 4), textcoords="offset points")
    best = next((p for p in pts if p[0] == data.best_id), None)
    if best:
        ax.scatter([best[2]], [best[1]], marker="*", s=260, c="gold", edgecolors="black",
                   zorder=5, label=f"chosen ({best[0]})")
    if s.get("target_balanced_accuracy") is not None:
        ax.axhline(s["target_balanced_accuracy"], ls="--", c="seagreen", lw=1,
                   label="target balanced accuracy")
    if s.get("target_max_gap") is not None:
        ax.axvline(s["target_max_gap"], ls="--", c="seagreen", lw=1, label="target max gap")
    from matplotlib.cm import ScalarMappable

    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax,
                        label="latency, ms (batch 1, median)")
    if budget:
        cbar.ax.axhline(budget, c="crimson", lw=2)
        cbar.ax.text(0.5, budget, " budget", color="crimson", fontsize=7, va="bottom",
                     transform=cbar.ax.get_yaxis_transform())
    other = [f"{k.removeprefix('max_')} <= {s[k]:,}" for k in ("max_memory_mb", "max_params",
                                                                "max_flops")
             if s.get(k) is not None]
    if other:
        ax.set_title("other budgets: " + ", ".join(other), fontsize=8)
    ax.legend(loc="best", fontsize=7)
    return _png(fig)


def groups_png(report: dict[str, Any] | None, split: str) -> bytes:
    """Per-group accuracy of the chosen design, one panel per attribute, with intervals."""
    from matplotlib.figure import Figure

    fair = (report or {}).get("fairness") or {}
    n = max(1, len(fair))
    fig = Figure(figsize=(max(4.5, 3.4 * n), 3.9), layout="constrained")
    if not fair:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no fairness results", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _png(fig)
    overall = (report.get("metrics") or {}).get("accuracy")
    for k, (attr, f) in enumerate(fair.items()):
        ax = fig.add_subplot(1, n, k + 1)
        groups = f["groups"]
        acc = [g["accuracy"] for g in groups]
        ivs = [group_interval(f, g) for g in groups]
        err = [[max(a - (iv or (a, a))[0], 0) for a, iv in zip(acc, ivs, strict=True)],
               [max((iv or (a, a))[1] - a, 0) for a, iv in zip(acc, ivs, strict=True)]]
        colours = ["crimson" if g["group"] == f["worst_group"] else "steelblue" for g in groups]
        bars = ax.bar(range(len(groups)), acc, yerr=err, color=colours, capsize=3)
        ax.bar_label(bars, labels=[f"n={g['count']}" for g in groups], fontsize=7,
                     label_type="center", color="white")
        if overall is not None:
            ax.axhline(overall, ls="--", c="grey", lw=1, label="overall accuracy")
        ax.set_xticks(range(len(groups)), [g["group"] for g in groups],
                      rotation=30 if len(groups) > 3 else 0, fontsize=8,
                      ha="right" if len(groups) > 3 else "center")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"accuracy ({split})")
        ax.set_title(f"{attr}: max gap {f['max_gap']:.3f}", fontsize=9)
        if k == 0 and overall is not None:
            ax.legend(fontsize=7, loc="upper right")
    return _png(fig)


# ------------------------------------------------------------------------ views


def _f(x: Any, spec: str = ".3f") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def _iv(iv: Any) -> str:
    return f"[{iv[0]:.3f}, {iv[1]:.3f}]" if iv else ""


def _bal(rec: dict[str, Any] | None) -> float | None:
    if not rec or not _ok(rec):
        return None
    return rec["report"]["metrics"]["balanced_accuracy"]


def _gap(rec: dict[str, Any] | None) -> float | None:
    obj = _objectives(rec) if rec else None
    return None if obj is None else obj[1]


def outcome(data: RunData, rec: dict[str, Any]) -> dict[str, Any]:
    """Return a candidate's outcome: ok with numbers (and change from its parent) or failed."""
    if _ok(rec):
        hw = rec["report"]["hardware"]
        parent = data.records.get(rec.get("parent") or "")
        out = {"ok": True, "balanced_accuracy": _bal(rec), "gap": _gap(rec),
               "params": hw["params"], "latency_ms": hw["latency_ms_median"],
               "violations": rec["report"].get("violations") or []}
        if _bal(parent) is not None:
            out["d_bal"] = out["balanced_accuracy"] - _bal(parent)
            out["d_gap"] = (out["gap"] - _gap(parent)) if _gap(parent) is not None and \
                out["gap"] is not None else None
        return out
    if rec.get("status") in ("pending", "gated"):
        return {"ok": None, "text": f"not finished ({rec.get('status')})"}
    return {"ok": False, "text": str(rec.get("failure") or "failed")}


def outcome_text(o: dict[str, Any]) -> str:
    """One line for an :func:`outcome`."""
    if o["ok"] is None:
        return o["text"]
    if not o["ok"]:
        return "failed: " + o["text"][:300]
    line = (f"bal.acc {o['balanced_accuracy']:.3f}, gap {_f(o['gap'])}, "
            f"{o['params']:,} params, {o['latency_ms']:.2f} ms")
    if "d_bal" in o:
        line += f" (vs parent: bal.acc {o['d_bal']:+.3f}"
        line += f", gap {o['d_gap']:+.3f})" if o.get("d_gap") is not None else ")"
    if o["violations"]:
        line += "; over budget: " + "; ".join(o["violations"])
    return line


def why(data: RunData, rec: dict[str, Any]) -> tuple[str, str]:
    """Return (what led to this candidate, the agent's reason) for the lineage."""
    cid = rec["id"]
    if rec.get("origin") == "fixer":
        fx = data.fixes.get(cid) or {}
        broken = data.records.get(rec.get("parent") or "") or {}
        cause = f"{fx.get('stage') or 'failure'} of {rec.get('parent')}: " + \
            str(fx.get("error") or broken.get("failure") or "").strip()[-400:]
        return cause, str(fx.get("diagnosis") or rec.get("rationale") or "")
    if rec.get("origin") == "designer":
        d = data.designs.get(cid) or {}
        crit = d.get("critique")
        if crit is None:  # older traces: the last critique before this round
            prior = [c for c in data.critiques if (c.get("round") or 0) < (rec.get("round") or 0)]
            crit = prior[-1].get("summary") if prior else None
        about = d.get("critique_about")
        return (f"critique of {about}: {crit}" if about else str(crit or "")), \
            str(rec.get("rationale") or d.get("rationale") or "")
    return "", f"{rec.get('origin')} (reference point of the search)"


def children(data: RunData) -> tuple[list[str], dict[str, list[str]]]:
    """Lineage roots and children lists (creation order)."""
    kids: dict[str, list[str]] = {}
    roots = []
    for cid, rec in data.records.items():
        parent = rec.get("parent")
        if parent and parent in data.records:
            kids.setdefault(parent, []).append(cid)
        else:
            roots.append(cid)
    return roots, kids


def failures(data: RunData) -> list[dict[str, Any]]:
    """Every failed candidate with its stage, error and what fixed it (if anything)."""
    rows = []
    for cid, rec in data.records.items():
        if rec.get("status") != "failed":
            continue
        gate = rec.get("gate") or {}
        rep = rec.get("report") or {}
        stage = (gate.get("stage") if gate and not gate.get("ok", True)
                 else rep.get("failure_stage")) or "?"
        fixes = []
        for fx in rec.get("fixes") or []:
            child = data.records.get(fx.get("fixed_by") or "")
            ev = data.fixes.get(fx.get("fixed_by") or "") or {}
            fixes.append({"by": fx.get("fixed_by"), "brain": fx.get("brain"),
                          "diagnosis": ev.get("diagnosis") or (child or {}).get("rationale"),
                          "outcome": outcome_text(outcome(data, child)) if child else
                          "not written"})
        rows.append({"id": cid, "round": rec.get("round"), "origin": rec.get("origin"),
                     "stage": stage, "error": str(rec.get("failure") or ""), "fixes": fixes})
    return rows


def test_headline(data: RunData) -> dict[str, Any] | None:
    """The chosen design's test report (full when on disk, else the summary's headline)."""
    if data.test_report:
        return data.test_report
    return (data.summary or {}).get("test")


def round_rows(data: RunData) -> list[dict[str, Any]]:
    """One row per round: its candidates, the critique closing it, timing, hypervolume."""
    by_round: dict[int, list[str]] = {}
    for cid, rec in data.records.items():
        by_round.setdefault(int(rec.get("round") or 0), []).append(cid)
    crit = {int(c.get("round") or 0): c for c in data.critiques}
    rows = []
    for r in sorted(set(by_round) | set(crit) | set(data.rounds)):
        end = data.rounds.get(r) or {}
        rows.append({"round": r, "candidates": by_round.get(r, []),
                     "critique": (crit.get(r) or {}).get("summary"),
                     "brain": (crit.get(r) or {}).get("brain"),
                     "seconds": end.get("duration_s"), "hv": end.get("hv"),
                     "best": end.get("best")})
    return rows


# ------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2433;
background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:24px;margin:6px 0 2px}h2{font-size:18px;margin:30px 0 10px;
border-bottom:1px solid #d8dce3;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.sub{color:#5a6478}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:8px 14px;
min-width:120px}.card b{display:block;font-size:18px}.card span{color:#5a6478;font-size:12px}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #dde1e8;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#17803d}.bad{color:#c0262d}.warn{color:#a15c00}.muted{color:#6b7486}
.status-partial{background:#fff4e0;border:1px solid #f0c36d;padding:8px 12px;border-radius:6px}
img{max-width:100%;background:#fff;border:1px solid #dde1e8;border-radius:6px}
pre{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:10px;overflow:auto;
font-size:12px;line-height:1.35}
ul.tree,ul.tree ul{list-style:none;margin:0;padding-left:22px}
ul.tree{padding-left:0}ul.tree li{position:relative;margin:6px 0}
ul.tree ul li::before{content:'';position:absolute;left:-14px;top:0;height:14px;width:10px;
border-left:1px solid #9aa3b2;border-bottom:1px solid #9aa3b2}
.node{background:#fff;border:1px solid #dde1e8;border-left:4px solid #9aa3b2;border-radius:6px;
padding:6px 10px;display:inline-block;max-width:1000px}
.node.okn{border-left-color:#2e9d57}.node.badn{border-left-color:#d33a41}
.node.best{box-shadow:0 0 0 2px gold}.node .why{color:#3d4759;font-size:12.5px;margin-top:3px}
.tag{display:inline-block;font-size:11px;border-radius:4px;padding:0 5px;background:#eef1f5;
margin-left:4px;color:#3d4759}details summary{cursor:pointer;color:#2b5cab}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(head: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(
            f"<td class='n'>{_e(c)}</td>" if i in numeric else f"<td>{_e(c)}</td>"
            for i, c in enumerate(r)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _code_html(code: str) -> str:
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer

        # Inline styles (noclasses): the page stays self-contained without a stylesheet.
        return highlight(code, PythonLexer(), HtmlFormatter(noclasses=True, nobackground=True))
    except ImportError:
        return f"<pre><code>{_e(code)}</code></pre>"


def _img(png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{b64}'>"


def _metrics_table(data: RunData) -> tuple[list[str], list[list[str]]]:
    best = data.records.get(data.best_id or "") or {}
    val = metric_rows(best.get("report"))
    test = metric_rows(data.test_report) if data.test_report else {}
    head = ["metric", "validation", "95 % interval", "test", "95 % interval"]
    rows = []
    for label in list(dict.fromkeys([*val, *test])):
        v, t = val.get(label, (None, None)), test.get(label, (None, None))
        rows.append([label, _f(v[0]), _iv(v[1]), _f(t[0]) if test else "not tested",
                     _iv(t[1])])
    return head, rows


def _hardware_rows(rep: dict[str, Any] | None) -> list[list[str]]:
    hw = (rep or {}).get("hardware") or {}
    if not hw:
        return []
    rows = [["parameters", _f(hw.get("params"))], ["size", f"{_f(hw.get('size_mb'))} MB"],
            ["FLOPs", _f(hw.get("flops"))],
            ["peak activations", f"{_f(hw.get('peak_activation_mb'))} MB"],
            ["latency median / p90", f"{_f(hw.get('latency_ms_median'), '.2f')} / "
                                     f"{_f(hw.get('latency_ms_p90'), '.2f')} ms "
                                     f"({hw.get('latency_device')}, {hw.get('threads')} thr)"]]
    if hw.get("onnx_latency_ms_median") is not None:
        rows.append(["ONNX Runtime latency median / p90",
                     f"{_f(hw.get('onnx_latency_ms_median'), '.2f')} / "
                     f"{_f(hw.get('onnx_latency_ms_p90'), '.2f')} ms"])
    viol = (rep or {}).get("violations") or []
    rows.append(["budgets", "; ".join(viol) if viol else "all met"])
    return rows


def _lineage_html(data: RunData) -> str:
    roots, kids = children(data)

    def node(cid: str) -> str:
        rec = data.records[cid]
        o = outcome(data, rec)
        cls = "okn" if o["ok"] else ("badn" if o["ok"] is False else "")
        cls += " best" if cid == data.best_id else ""
        cause, reason = why(data, rec)
        tags = [rec.get("origin") or "?", f"round {rec.get('round')}"]
        if rec.get("brain"):
            tags.append(str(rec["brain"]))
        if cid == data.best_id:
            tags.append("chosen")
        if cid in data.front:
            tags.append("Pareto front")
        body = [f"<b>{_e(cid)}</b>" + "".join(f"<span class='tag'>{_e(t)}</span>" for t in tags),
                f"<div class='{'ok' if o['ok'] else 'bad' if o['ok'] is False else 'muted'}'>"
                f"{_e(outcome_text(o))}</div>"]
        if cause:
            label = "failure" if rec.get("origin") == "fixer" else "led by"
            body.append(f"<div class='why'><b>{label}:</b> {_e(cause)}</div>")
        if reason:
            label = "diagnosis" if rec.get("origin") == "fixer" else "reason"
            body.append(f"<div class='why'><b>{label}:</b> {_e(reason)}</div>")
        sub = "".join(node(k) for k in kids.get(cid, []))
        return (f"<li data-lineage-node='{_e(cid)}'><div class='node {cls}'>{''.join(body)}"
                f"</div>{f'<ul>{sub}</ul>' if sub else ''}</li>")

    if not roots:
        return "<p class='muted'>no candidate was written yet</p>"
    return "<ul class='tree'>" + "".join(node(r) for r in roots) + "</ul>"


def _ledger(data: RunData) -> tuple[list[list[Any]], list[list[Any]], list[list[Any]], dict]:
    tok = [[role, r["calls"], r["input_tokens"], r["output_tokens"],
            f"{r['latency_s']:.1f}", "unknown" if r["cost_usd"] is None else
            f"${r['cost_usd']:.4f}", r["fallbacks"], ", ".join(r["models"])]
           for role, r in token_ledger(data.events).items()]
    tl = time_ledger(data.events)
    nodes = [[k, int(v["calls"]), f"{v['seconds']:.1f}"] for k, v in tl["nodes"].items()]
    tools = [[k, int(v["calls"]), int(v["cached"]), f"{v['seconds']:.1f}"]
             for k, v in tl["tools"].items()]
    return tok, nodes, tools, tl


def render_html(data: RunData, pareto: bytes, groups: bytes) -> str:
    """Render the report page (self-contained: inline CSS, base64 images, no script)."""
    s, summ = data.settings, data.summary or {}
    best = data.records.get(data.best_id or "") or {}
    test = test_headline(data)
    tested = bool(test and test.get("status") == "ok")
    ok = sum(1 for r in data.records.values() if _ok(r))
    failed = sum(1 for r in data.records.values() if r.get("status") == "failed")
    tok, nodes, tools, tl = _ledger(data)
    total = token_ledger(data.events).get("total")
    rounds = max([int(r.get("round") or 0) for r in data.records.values()] or [0])
    cards = [("status", data.status), ("stop", summ.get("stop_reason") or "unfinished"),
             ("rounds", summ.get("rounds", rounds)),
             ("candidates", f"{len(data.records)} ({ok} ok, {failed} failed)"),
             ("chosen", data.best_id or "none"),
             ("val bal.acc", _f(_bal(best))),
             ("test bal.acc", _f((test.get("metrics") or test).get("balanced_accuracy"))
              if tested else "not tested"),
             ("wall time", f"{tl['wall_s']:.0f} s"),
             ("LLM tokens", f"{(total or {}).get('input_tokens', 0) + (total or {}).get('output_tokens', 0):,}")]  # noqa: E501
    budgets = ", ".join(f"{k.removeprefix('max_')} <= {v}" for k, v in s.items()
                        if k in ("max_latency_ms", "max_memory_mb", "max_params", "max_flops")
                        and v is not None) or "none"
    llm = summ.get("llm") or {}
    brains = ", ".join(f"{k} {v}" for k, v in llm.items()
                       if isinstance(v, str)) or s.get("llm", "heuristic")
    breaker = llm.get("breaker") if isinstance(llm.get("breaker"), dict) else {}
    if breaker.get("open"):
        brains += f"; LLM circuit breaker opened ({breaker.get('action', '?')})"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>FL-NAS run {_e(data.run_id)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>FL-NAS run {_e(data.run_id)}</h1>",
        f"<div class='sub'>task {_e(s.get('task', '?'))}"
        f"{' (synthetic)' if s.get('synthetic') else ''}; {_e(s.get('image_size'))} px, "
        f"{_e(s.get('epochs'))} epoch(s), iter_max {_e(s.get('iter_max'))}, patience "
        f"{_e(s.get('patience'))}, seed {_e(s.get('seed'))}; budgets {_e(budgets)}; "
        f"brains: {_e(brains)}</div>",
    ]
    if data.status != "finished":
        parts.append(f"<p class='status-partial'><b>Partial run.</b> {_e(data.stop)}. This "
                     "report is built from what is on disk; the choice below is the best "
                     "design so far by the selection rule, not tested.</p>")
    else:
        parts.append(f"<p>Stopped: <b>{_e(data.stop)}</b>. "
                     f"{_e(summ.get('selection_rule', ''))}</p>")
    parts.append("<div class='cards'>" + "".join(
        f"<div class='card'><span>{_e(k)}</span><b>{_e(v)}</b></div>" for k, v in cards)
        + "</div>")

    parts.append("<h2 id='final'>Final design</h2>")
    if best:
        cause, reason = why(data, best)
        parts.append(f"<p><b>{_e(best['id'])}</b> ({_e(best.get('origin'))}, parent "
                     f"{_e(best.get('parent') or '-')}, brain {_e(best.get('brain') or '-')})"
                     f"{': ' + _e(reason) if reason else ''}</p>")
        head, rows = _metrics_table(data)
        parts.append(_table(head, rows, numeric={1, 3}))
        parts.append("<p class='muted'>Intervals: 95 %; Wilson for accuracies, normal "
                     "approximation from the confusion matrix for balanced accuracy, "
                     "bootstrap where the evaluation computed it. Test numbers are measured "
                     "once, on the held-out split, and never shown to the agents.</p>")
        hw_rep = data.test_report if data.test_report else best.get("report")
        parts.append("<h3>Hardware</h3>" + _table(["measure", "value"], _hardware_rows(hw_rep)))
        parts.append("<details><summary>code (best_model.py)</summary>"
                     f"{_code_html(best.get('code') or '')}</details>")
    else:
        parts.append("<p class='muted'>no candidate evaluated successfully yet</p>")

    parts.append("<h2 id='pareto'>Pareto front</h2>")
    parts.append(_img(pareto, "Pareto front: balanced accuracy against unfairness, "
                              "coloured by latency"))
    front_rows = []
    for cid in data.front:
        rec = data.records[cid]
        obj = _objectives(rec)
        if obj:
            front_rows.append([cid, f"{1 - obj[0]:.3f}", f"{obj[1]:.3f}", f"{obj[2]:.2f}",
                               f"{rec['report']['hardware']['params']:,}"])
    parts.append(_table(["candidate", "bal.acc", "unfairness", "latency ms", "params"],
                        front_rows, numeric={1, 2, 3, 4}))

    split = "test" if data.test_report else "validation"
    parts.append(f"<h2 id='groups'>Per-group accuracy ({_e(split)}, {_e(data.best_id)})</h2>")
    parts.append(_img(groups, "per-group accuracy of the chosen design"))

    parts.append("<h2 id='lineage'>Lineage</h2><p class='muted'>parent -> child; each child "
                 "with what led to it (the critique, or the failure it repairs), the agent's "
                 "reason and its outcome. Gold outline: the chosen design.</p>")
    parts.append(_lineage_html(data))

    parts.append("<h2 id='rounds'>Rounds</h2>")
    parts.append(_table(["round", "candidates", "critique after it", "seconds", "hypervolume",
                         "best"],
                        [[r["round"], ", ".join(r["candidates"]),
                          (r["critique"] or "") + (f" [{r['brain']}]" if r["brain"] else ""),
                          _f(r["seconds"], ".1f"), _f(r["hv"], ".4f"), r["best"] or ""]
                         for r in round_rows(data)], numeric={3, 4}))

    parts.append("<h2 id='failures'>Failures and fixes</h2>")
    fails = failures(data)
    if fails:
        rows = []
        for f in fails:
            fx = f["fixes"] or [{"by": "-", "diagnosis": "no fix attempted", "outcome": ""}]
            for x in fx:
                rows.append([f["id"], f["round"], f["stage"], f["error"][:400], x["by"] or "-",
                             x.get("diagnosis") or "", x.get("outcome") or ""])
        parts.append(_table(["candidate", "round", "stage", "error", "fixed by", "diagnosis",
                             "fix outcome"], rows))
    else:
        parts.append("<p class='ok'>no candidate failed</p>")

    parts.append("<h2 id='ledger'>Token and time ledger</h2>")
    if tok:
        parts.append(_table(["role", "calls", "input tokens", "output tokens", "LLM seconds",
                             "est. cost", "fallbacks", "models"], tok, numeric={1, 2, 3, 4}))
    else:
        parts.append("<p class='muted'>no LLM calls (heuristic brains)</p>")
    parts.append(f"<p>wall {tl['wall_s']:.1f} s; inside tools {tl['tools_s']:.1f} s; "
                 f"outside the tools {100 * tl['outside_frac']:.1f} %</p>")
    parts.append("<div style='display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start'>"
                 + _table(["node", "calls", "seconds"], nodes, numeric={1, 2})
                 + _table(["tool", "calls", "cached", "seconds"], tools, numeric={1, 2, 3})
                 + "</div>")
    parts.append(f"<p class='muted'>built from {_e(data.run_dir)}: "
                 f"{len(data.events)} trace events; inspect with "
                 f"<code>python -m graph.trace {_e(data.run_dir)}</code></p>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------- Markdown


def _md_table(head: list[str], rows: list[list[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_markdown(data: RunData) -> str:
    """Render the report as Markdown (images are the PNG files written beside it)."""
    s = data.settings
    best = data.records.get(data.best_id or "") or {}
    tok, nodes, tools, tl = _ledger(data)
    out = [f"# FL-NAS run {data.run_id}\n",
           f"Status: **{data.status}**. Stop: {data.stop}.\n",
           f"Task {s.get('task')}, {s.get('image_size')} px, {s.get('epochs')} epoch(s), "
           f"iter_max {s.get('iter_max')}; {len(data.records)} candidates; chosen "
           f"**{data.best_id}**.\n", "## Final design\n"]
    if best:
        cause, reason = why(data, best)
        out.append(f"`{best['id']}` ({best.get('origin')}, parent {best.get('parent') or '-'}): "
                   f"{reason}\n")
        head, rows = _metrics_table(data)
        out.append(_md_table(head, rows))
        out.append(_md_table(["measure", "value"],
                             _hardware_rows(data.test_report or best.get("report"))))
        out.append("```python\n" + (best.get("code") or "").rstrip() + "\n```\n")
    out += ["## Pareto front\n", f"![Pareto front]({PARETO_PNG})\n",
            "## Per-group accuracy\n", f"![per-group accuracy]({GROUPS_PNG})\n", "## Lineage\n"]
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
    out.append("\n## Rounds\n")
    out.append(_md_table(["round", "candidates", "critique", "seconds", "hypervolume"],
                         [[r["round"], ", ".join(r["candidates"]), r["critique"] or "",
                           _f(r["seconds"], ".1f"), _f(r["hv"], ".4f")]
                          for r in round_rows(data)]))
    out.append("## Failures and fixes\n")
    fails = failures(data)
    out.append(_md_table(["candidate", "stage", "error", "fixed by", "diagnosis", "outcome"],
                         [[f["id"], f["stage"], f["error"][:300], x["by"], x.get("diagnosis"),
                           x.get("outcome")] for f in fails for x in
                          (f["fixes"] or [{"by": "-", "diagnosis": "", "outcome": ""}])])
               if fails else "No candidate failed.\n")
    out.append("## Token and time ledger\n")
    out.append(_md_table(["role", "calls", "in", "out", "LLM s", "cost", "fallbacks", "models"],
                         tok) if tok else "No LLM calls (heuristic brains).\n")
    out.append(f"Wall {tl['wall_s']:.1f} s, inside tools {tl['tools_s']:.1f} s, outside "
               f"{100 * tl['outside_frac']:.1f} %.\n")
    out.append(_md_table(["node", "calls", "seconds"], nodes))
    out.append(_md_table(["tool", "calls", "cached", "seconds"], tools))
    return "\n".join(out)


# -------------------------------------------------------------------------- API


def _atomic_write(path: Path, data: bytes) -> None:
    # Not graph.services.atomic_write: importing services pulls in the LLM clients
    # (seconds), and the report CLI must stay quick.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_report(run_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Write ``report.html``, ``report.md`` and its two PNGs for a run folder.

    Args:
        run_dir: The run folder (finished, partial or killed).
        out_dir: Where to write (default: ``run_dir``).

    Returns:
        ``{"html": path, "markdown": path}``.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder.
    """
    data = load_run(Path(run_dir))
    out = Path(out_dir) if out_dir else data.run_dir
    out.mkdir(parents=True, exist_ok=True)
    best = data.records.get(data.best_id or "") or {}
    pareto = pareto_png(data)
    groups = groups_png(data.test_report or best.get("report"),
                        "test" if data.test_report else "validation")
    _atomic_write(out / PARETO_PNG, pareto)
    _atomic_write(out / GROUPS_PNG, groups)
    _atomic_write(out / HTML_NAME, render_html(data, pareto, groups).encode("utf-8"))
    _atomic_write(out / MD_NAME, render_markdown(data).encode("utf-8"))
    return {"html": out / HTML_NAME, "markdown": out / MD_NAME}


def write_run_report(svc: Any) -> None:
    """Write the report at the end of a run; a failure is traced, never fatal.

    Args:
        svc: The run's :class:`graph.services.Services` (``run_dir``, ``tracer``,
            ``display``).
    """
    try:
        paths = write_report(svc.run_dir)
        svc.tracer.event("report", html=str(paths["html"]), markdown=str(paths["markdown"]))
    except Exception as exc:  # noqa: BLE001 - the search's results matter more than the page
        svc.tracer.event("report_error", error=f"{type(exc).__name__}: {exc}")
        svc.display.message(f"could not write the run report: {exc}")


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m graph.report RUN_DIR [--out DIR] [--check [--screenshot PNG]]``."""
    p = argparse.ArgumentParser(prog="python -m graph.report",
                                description="Write the HTML + Markdown report of a run folder "
                                            "(finished, partial or killed).")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="output folder (default: the run folder)")
    p.add_argument("--check", action="store_true",
                   help="open the page in headless Chromium; fail on console errors, broken "
                        "images, network requests or an empty lineage")
    p.add_argument("--screenshot", type=Path, help="with --check: save a full-page PNG here")
    args = p.parse_args(argv)
    try:
        paths = write_report(args.run_dir, args.out)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {paths['html']} and {paths['markdown']}")
    if args.check:
        from graph.browser import BrowserUnavailable, check_page

        try:
            res = check_page(paths["html"], screenshot=args.screenshot)
        except BrowserUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(res.describe())
        return 0 if res.ok else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
