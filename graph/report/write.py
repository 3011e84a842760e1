"""Write the report files of a run folder, at the end of a run or from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from graph.report.data import load_run
from graph.report.figures import GROUPS_PNG, PARETO_PNG, groups_png, pareto_png
from graph.report.html import render_html
from graph.report.markdown import render_markdown
from tasks.io import atomic_write

HTML_NAME, MD_NAME = "report.html", "report.md"


def write_report(run_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Write ``report.html``, ``report.md`` and the run's two images for a run folder.

    The images are ``pareto.png`` and ``group_accuracy.png`` (drawn by
    :mod:`evaluation.plots`); the page inlines them and the Markdown links them.

    Args:
        run_dir: The run folder (finished, partial or killed).
        out_dir: Where to write (default: ``run_dir``).

    Returns:
        ``{"html": path, "markdown": path, "pareto": path, "groups": path}``.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder.
    """
    data = load_run(Path(run_dir))
    out = Path(out_dir) if out_dir else data.run_dir
    best = data.records.get(data.best_id or "") or {}
    pareto = pareto_png(data)
    groups = groups_png(data.test_report or best.get("report"),
                        "test" if data.test_report else "validation")
    paths = {"html": out / HTML_NAME, "markdown": out / MD_NAME, "pareto": out / PARETO_PNG,
             "groups": out / GROUPS_PNG}
    atomic_write(paths["pareto"], pareto)
    atomic_write(paths["groups"], groups)
    atomic_write(paths["html"], render_html(data, pareto, groups))
    atomic_write(paths["markdown"], render_markdown(data))
    return paths


def write_run_report(svc: Any) -> None:
    """Write the report at the end of a run; a failure is traced, never fatal.

    Args:
        svc: The run's services (``run_dir``, ``tracer``, ``display``).
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
