"""What the report says, shared by its HTML and Markdown renderings.

Each candidate's outcome (numbers and change from its parent, or its failure), why it
exists (the critique or failure that led to it, the agent's reason), the lineage tree,
failures with their fixes, one row per round, the final design's metric and hardware
tables and the token and time ledger (from :func:`graph.trace.time_ledger`, the one
place the node, tool and round times are summed).
"""

from __future__ import annotations

from typing import Any

from graph.report.data import RunData, is_ok, objectives_of
from graph.report.intervals import metric_rows
from graph.trace import time_ledger, token_ledger

Rows = list[list[Any]]


def fmt(x: Any, spec: str = ".3f") -> str:
    """Format a value for a table cell (``n/a`` for None, thousands separators)."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def fmt_interval(iv: Any) -> str:
    """Format an interval as ``[lo, hi]`` (empty when there is none)."""
    return f"[{iv[0]:.3f}, {iv[1]:.3f}]" if iv and None not in iv else ""


def chosen_accuracy(summary: dict[str, Any], screen: float | None) -> str:
    """Return the chosen design's validation balanced accuracy as the choice was made.

    Confirmed on several training seeds (``summary["confirmation"]``): the mean with its
    95 % t-interval, the number of seeds and the search's single screen beside it, e.g.
    ``0.634 [0.545, 0.723] over 3 training seeds (screen 0.675)``. Otherwise the one
    evaluation, marked as such: a single seed of a lucky design reads high.
    """
    best_id = (summary.get("best") or {}).get("id")
    conf = ((summary.get("confirmation") or {}).get("finalists") or {}).get(best_id) or {}
    bal = conf.get("balanced_accuracy") or {}
    if (conf.get("seeds") or 0) > 1 and bal.get("mean") is not None:
        return (f"{bal['mean']:.3f} {fmt_interval(bal.get('interval'))} over "
                f"{conf['seeds']} training seeds (screen {fmt(screen)})").replace("  ", " ")
    return f"{fmt(screen)} (one training seed)"


def balanced_accuracy_of(rec: dict[str, Any] | None) -> float | None:
    """Return a successful candidate's validation balanced accuracy."""
    if not rec or not is_ok(rec):
        return None
    return rec["report"]["metrics"]["balanced_accuracy"]


def _gap(rec: dict[str, Any] | None) -> float | None:
    obj = objectives_of(rec) if rec else None
    return None if obj is None else obj[1]


def outcome(data: RunData, rec: dict[str, Any]) -> dict[str, Any]:
    """Return a candidate's outcome: ok with numbers (and change from its parent) or failed."""
    if is_ok(rec):
        hw = rec["report"]["hardware"]
        parent = data.records.get(rec.get("parent") or "")
        out = {"ok": True, "balanced_accuracy": balanced_accuracy_of(rec), "gap": _gap(rec),
               "params": hw["params"], "latency_ms": hw["latency_ms_median"],
               "violations": rec["report"].get("violations") or []}
        # Promoted or confirmed on more training seeds: the mean the search ranked it by.
        from agents.records import as_candidate, estimated_objectives, seeds_measured

        seeds = seeds_measured(cand := as_candidate({"code": "", **rec}))
        if seeds > 1:
            out["seed_mean"] = (1 - estimated_objectives(cand)[0], seeds)
        if balanced_accuracy_of(parent) is not None:
            out["d_bal"] = out["balanced_accuracy"] - balanced_accuracy_of(parent)
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
    line = (f"bal.acc {o['balanced_accuracy']:.3f}, gap {fmt(o['gap'])}, "
            f"{o['params']:,} params, {o['latency_ms']:.2f} ms")
    if "d_bal" in o:
        line += f" (vs parent: bal.acc {o['d_bal']:+.3f}"
        line += f", gap {o['d_gap']:+.3f})" if o.get("d_gap") is not None else ")"
    if "seed_mean" in o:
        line += f"; mean over {o['seed_mean'][1]} training seeds: bal.acc {o['seed_mean'][0]:.3f}"
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


def metrics_table(data: RunData) -> tuple[list[str], list[list[str]]]:
    """Return the final design's metrics on validation and test, with 95 % intervals."""
    best = data.records.get(data.best_id or "") or {}
    val = metric_rows(best.get("report"))
    test = metric_rows(data.test_report) if data.test_report else {}
    head = ["metric", "validation", "95 % interval", "test", "95 % interval"]
    rows = []
    for label in list(dict.fromkeys([*val, *test])):
        v, t = val.get(label, (None, None)), test.get(label, (None, None))
        rows.append([label, fmt(v[0]), fmt_interval(v[1]), fmt(t[0]) if test else "not tested",
                     fmt_interval(t[1])])
    return head, rows


def hardware_rows(rep: dict[str, Any] | None) -> list[list[str]]:
    """Return the hardware table of an EvaluationReport dump (and whether budgets hold)."""
    hw = (rep or {}).get("hardware") or {}
    if not hw:
        return []
    rows = [["parameters", fmt(hw.get("params"))], ["size", f"{fmt(hw.get('size_mb'))} MB"],
            ["FLOPs", fmt(hw.get("flops"))],
            ["peak activations", f"{fmt(hw.get('peak_activation_mb'))} MB"],
            ["latency median / p90", f"{fmt(hw.get('latency_ms_median'), '.2f')} / "
                                     f"{fmt(hw.get('latency_ms_p90'), '.2f')} ms "
                                     f"({hw.get('latency_device')}, {hw.get('threads')} thr)"]]
    if hw.get("onnx_latency_ms_median") is not None:
        rows.append(["ONNX Runtime latency median / p90",
                     f"{fmt(hw.get('onnx_latency_ms_median'), '.2f')} / "
                     f"{fmt(hw.get('onnx_latency_ms_p90'), '.2f')} ms"])
    viol = (rep or {}).get("violations") or []
    rows.append(["budgets", "; ".join(viol) if viol else "all met"])
    return rows


SIDE_BY_SIDE_NOTE = (
    "\"in run\": each evaluation's own latency, measured under the load of its moment. "
    "\"side by side\": the front, the Template and the chosen design timed again after "
    "the search in one sandboxed job, in interleaved rounds (batch 1, one thread, median "
    "over rounds), so these compare with each other (docs/metrics.md#promotion).")


def front_table(data: RunData) -> tuple[list[str], list[list[str]], str | None]:
    """Return the front (and the Template) with both latencies, and a Template comparison.

    The comparison line says how the chosen design's side-by-side latency relates to the
    Template's (None without side-by-side figures for both).
    """
    from graph.confirm import TEMPLATE_ID

    side = ((data.summary or {}).get("latency_side_by_side") or {}).get("latency_ms") or {}
    rows = []
    for cid in dict.fromkeys([*data.front, TEMPLATE_ID]):
        rec = data.records.get(cid)
        obj = objectives_of(rec) if rec else None
        if rec is None or obj is None:
            continue
        label = cid + (" (Template)" if cid == TEMPLATE_ID else "") + \
            ("" if cid in data.front else ", off the front")
        rows.append([label, f"{1 - obj[0]:.3f}", f"{obj[1]:.3f}", f"{obj[2]:.3f}",
                     fmt(side.get(cid), ".3f"), f"{rec['report']['hardware']['params']:,}"])
    head = ["candidate", "bal.acc", "unfairness", "latency ms in run",
            "latency ms side by side", "params"]
    best, tmpl = side.get(data.best_id or ""), side.get(TEMPLATE_ID)
    if best is None or tmpl is None or data.best_id == TEMPLATE_ID:
        return head, rows, None
    ratio, word = (tmpl / best, "faster") if best <= tmpl else (best / tmpl, "slower")
    machine = (data.summary or {})["latency_side_by_side"].get("machine")
    return head, rows, (f"Side by side, {data.best_id} runs in {best:.3f} ms against the "
                        f"Template's {tmpl:.3f} ms ({ratio:.2f}x {word}) on {machine}.")


def ledger(data: RunData) -> tuple[Rows, Rows, Rows, dict[str, Any]]:
    """Return the token rows per role, node and tool time rows, and the time ledger."""
    tok = [[role, r["calls"], r["input_tokens"], r["output_tokens"],
            f"{r['latency_s']:.1f}", "unknown" if r["cost_usd"] is None else
            f"${r['cost_usd']:.4f}", r["fallbacks"], ", ".join(r["models"])]
           for role, r in token_ledger(data.events).items()]
    tl = time_ledger(data.events)
    nodes = [[k, int(v["calls"]), f"{v['seconds']:.1f}"] for k, v in tl["nodes"].items()]
    tools = [[k, int(v["calls"]), int(v["cached"]), f"{v['seconds']:.1f}"]
             for k, v in tl["tools"].items()]
    return tok, nodes, tools, tl



def confirmation_table(data: RunData) -> tuple[list[str], list[list[str]]] | None:
    """Finalists' means over training seeds with 95 % t-intervals (``confirm``), or None."""
    conf = (data.summary or {}).get("confirmation") or {}
    if not conf.get("finalists"):
        return None
    head = ["finalist", "seeds", "balanced accuracy", "unfairness", "score"]
    rows = []
    for cid, s in conf["finalists"].items():
        cells = [f"{fmt(s[k]['mean'])} {fmt_interval(s[k]['interval'])}"
                 for k in ("balanced_accuracy", "unfairness", "score")]
        mark = " (chosen)" if cid == data.best_id else ""
        rows.append([cid + mark, f"{s['seeds']}" + (f" (+{s['failed']} failed)"
                                                    if s.get("failed") else ""), *cells])
    return head, rows


CONFIRMATION_NOTE = ("Finalists re-trained on training seeds {seeds} (same data, epochs and "
                     "recipe); mean and 95 % t-interval over the seeds. The choice is the "
                     "feasible finalist with the highest mean score.")
