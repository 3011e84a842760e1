"""Run report: one self-contained HTML page and a Markdown twin, for any run folder.

``python -m graph.report RUN_DIR`` writes ``RUN_DIR/report.html`` and ``report.md``, and
the run's two images ``pareto.png`` and ``group_accuracy.png`` (drawn by
:mod:`evaluation.plots`, the one plotting path; the page inlines them, the Markdown links
them); ``finalize`` writes them at the end of every run. Everything is read from what is on
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

Modules: :mod:`~graph.report.data` (reading a run folder), :mod:`~graph.report.intervals`,
:mod:`~graph.report.content` (what both renderings say), :mod:`~graph.report.figures`,
:mod:`~graph.report.html`, :mod:`~graph.report.markdown` and :mod:`~graph.report.write`
(files and CLI).
"""

from graph.report.content import (
    children,
    failures,
    outcome,
    outcome_text,
    round_rows,
    test_headline,
    why,
)
from graph.report.data import RunData, load_run
from graph.report.figures import GROUPS_PNG, PARETO_PNG, groups_png, pareto_png
from graph.report.html import render_html
from graph.report.intervals import Z95, balanced_accuracy_interval, metric_rows, wilson
from graph.report.markdown import render_markdown
from graph.report.write import HTML_NAME, MD_NAME, main, write_report, write_run_report

__all__ = [
    "GROUPS_PNG",
    "HTML_NAME",
    "MD_NAME",
    "PARETO_PNG",
    "Z95",
    "RunData",
    "balanced_accuracy_interval",
    "children",
    "failures",
    "groups_png",
    "load_run",
    "main",
    "metric_rows",
    "outcome",
    "outcome_text",
    "pareto_png",
    "render_html",
    "render_markdown",
    "round_rows",
    "test_headline",
    "why",
    "wilson",
    "write_report",
    "write_run_report",
]
