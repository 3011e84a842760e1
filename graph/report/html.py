"""The report page: one self-contained HTML file (inline CSS, base64 images, no script).

Sections: summary and stop reason, the final design (code, metrics with intervals,
hardware), the Pareto front, per-group accuracy, the lineage tree, rounds, failures and
fixes, and the token and time ledger.
"""

from __future__ import annotations

import base64
import html
from typing import Any

from graph.report.content import (
    CONFIRMATION_NOTE,
    SIDE_BY_SIDE_NOTE,
    balanced_accuracy_of,
    children,
    chosen_accuracy,
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
    test_headline,
    why,
)
from graph.report.data import RunData, is_ok
from graph.trace import token_ledger

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
    """Escape text for HTML."""
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



def _cards(data: RunData) -> list[tuple[str, Any]]:
    """Return the headline cards: status, stop, rounds, candidates, scores, time, tokens."""
    summ = data.summary or {}
    best = data.records.get(data.best_id or "") or {}
    test = test_headline(data) or {}
    tested = test.get("status") == "ok"
    ok = sum(1 for r in data.records.values() if is_ok(r))
    failed = sum(1 for r in data.records.values() if r.get("status") == "failed")
    tl = ledger(data)[3]
    total = token_ledger(data.events).get("total") or {}
    rounds = max([int(r.get("round") or 0) for r in data.records.values()] or [0])
    tokens = total.get("input_tokens", 0) + total.get("output_tokens", 0)
    return [("status", data.status), ("stop", summ.get("stop_reason") or "unfinished"),
            ("rounds", summ.get("rounds", rounds)),
            ("candidates", f"{len(data.records)} ({ok} ok, {failed} failed)"),
            ("chosen", data.best_id or "none"),
            ("val bal.acc", chosen_accuracy(summ, balanced_accuracy_of(best))),
            ("test bal.acc", fmt((test.get("metrics") or test).get("balanced_accuracy"))
             if tested else "not tested"),
            ("wall time", f"{tl['wall_s']:.0f} s"),
            ("LLM tokens", f"{tokens:,}")]


def _header(data: RunData) -> list[str]:
    """Return the title, settings line, stop reason (or partial-run notice) and cards."""
    s, summ = data.settings, data.summary or {}
    budgets = ", ".join(f"{k.removeprefix('max_')} <= {v}" for k, v in s.items()
                        if k in ("max_latency_ms", "max_memory_mb", "max_params", "max_flops")
                        and v is not None) or "none"
    llm: dict[str, Any] = summ.get("llm") or {}
    brains = str(", ".join(f"{k} {v}" for k, v in llm.items()
                           if isinstance(v, str)) or s.get("llm", "heuristic"))
    breaker: dict[str, Any] = llm["breaker"] if isinstance(llm.get("breaker"), dict) else {}
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
        f"<div class='card'><span>{_e(k)}</span><b>{_e(v)}</b></div>"
        for k, v in _cards(data)) + "</div>")
    return parts


def _final_design(data: RunData) -> list[str]:
    parts = ["<h2 id='final'>Final design</h2>"]
    best = data.records.get(data.best_id or "") or {}
    if not best:
        return [*parts, "<p class='muted'>no candidate evaluated successfully yet</p>"]
    reason = why(data, best)[1]
    parts.append(f"<p><b>{_e(best['id'])}</b> ({_e(best.get('origin'))}, parent "
                 f"{_e(best.get('parent') or '-')}, brain {_e(best.get('brain') or '-')})"
                 f"{': ' + _e(reason) if reason else ''}</p>")
    head, rows = metrics_table(data)
    parts.append(_table(head, rows, numeric={1, 3}))
    parts.append("<p class='muted'>Intervals: 95 %; Wilson for accuracies, normal "
                 "approximation from the confusion matrix for balanced accuracy, "
                 "bootstrap where the evaluation computed it. Test numbers are measured "
                 "once, on the held-out split, and never shown to the agents.</p>")
    table = confirmation_table(data)
    if table is not None:
        seeds = ((data.summary or {}).get("confirmation") or {}).get("train_seeds")
        parts.append("<h3>Confirmation on training seeds</h3>" + _table(*table, numeric={1})
                     + f"<p class='muted'>{_e(CONFIRMATION_NOTE.format(seeds=seeds))}</p>")
    hw_rep = data.test_report if data.test_report else best.get("report")
    parts.append("<h3>Hardware</h3>" + _table(["measure", "value"], hardware_rows(hw_rep)))
    parts.append("<details><summary>code (best_model.py)</summary>"
                 f"{_code_html(best.get('code') or '')}</details>")
    return parts


def _front_and_groups(data: RunData, pareto: bytes, groups: bytes) -> list[str]:
    parts = ["<h2 id='pareto'>Pareto front</h2>",
             _img(pareto, "Pareto front: balanced accuracy against unfairness, "
                          "coloured by latency")]
    head, rows, line = front_table(data)
    parts.append(_table(head, rows, numeric={1, 2, 3, 4, 5}))
    parts.append(f"<p>{_e(SIDE_BY_SIDE_NOTE + (' ' + line if line else ''))}</p>")
    split = "test" if data.test_report else "validation"
    parts.append(f"<h2 id='groups'>Per-group accuracy ({_e(split)}, {_e(data.best_id)})</h2>")
    parts.append(_img(groups, "per-group accuracy of the chosen design"))
    return parts


def _history(data: RunData) -> list[str]:
    """Return the lineage, the rounds, and the failures with their fixes."""
    parts = ["<h2 id='lineage'>Lineage</h2><p class='muted'>parent -> child; each child "
             "with what led to it (the critique, or the failure it repairs), the agent's "
             "reason and its outcome. Gold outline: the chosen design.</p>",
             _lineage_html(data), "<h2 id='rounds'>Rounds</h2>"]
    parts.append(_table(["round", "candidates", "critique after it", "seconds", "hypervolume",
                         "best"],
                        [[r["round"], ", ".join(r["candidates"]),
                          (r["critique"] or "") + (f" [{r['brain']}]" if r["brain"] else ""),
                          fmt(r["seconds"], ".1f"), fmt(r["hv"], ".4f"), r["best"] or ""]
                         for r in round_rows(data)], numeric={3, 4}))
    parts.append("<h2 id='failures'>Failures and fixes</h2>")
    fails = failures(data)
    if not fails:
        return [*parts, "<p class='ok'>no candidate failed</p>"]
    rows = []
    for f in fails:
        fx = f["fixes"] or [{"by": "-", "diagnosis": "no fix attempted", "outcome": ""}]
        for x in fx:
            rows.append([f["id"], f["round"], f["stage"], f["error"][:400], x["by"] or "-",
                         x.get("diagnosis") or "", x.get("outcome") or ""])
    parts.append(_table(["candidate", "round", "stage", "error", "fixed by", "diagnosis",
                         "fix outcome"], rows))
    return parts


def _ledger_section(data: RunData) -> list[str]:
    tok, nodes, tools, tl = ledger(data)
    parts = ["<h2 id='ledger'>Token and time ledger</h2>"]
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
    return parts


def render_html(data: RunData, pareto: bytes, groups: bytes) -> str:
    """Render the report page (self-contained: inline CSS, base64 images, no script)."""
    parts = [*_header(data), *_final_design(data), *_front_and_groups(data, pareto, groups),
             *_history(data), *_ledger_section(data), "</main></body></html>"]
    return "\n".join(parts)
