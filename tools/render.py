"""Console rendering of an evaluation report (``python -m tools.evaluate``): rich tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from evaluation.report import EvaluationReport, HardwareReport, TrainingStats

_GAP_ROWS = (("unfairness", "unfairness"), ("max gap", "max_gap"),
             ("max gap from class mix", "class_mix_gap"),
             ("max gap within classes", "within_class_gap"), ("EOpp0", "eopp0"),
             ("EOpp1", "eopp1"), ("EOdd", "eodd"),
             ("DP difference", "demographic_parity_difference"),
             ("EO difference", "equalized_odds_difference"))


def _fairness_tables(report: EvaluationReport) -> tuple[Table, Table]:
    """Per-group accuracy (with 95 % intervals when bootstrapped) and the fairness gaps."""
    groups = Table(title="Per-group accuracy")
    for col in ("attribute", "group", "n", "accuracy", "from class mix"):
        groups.add_column(col, justify="left" if col in ("attribute", "group") else "right")
    gaps = Table(title="Fairness (gaps: lower is fairer)")
    gaps.add_column("metric")
    for name, fa in report.fairness.items():
        gaps.add_column(name, justify="right")
        for g in fa.groups:
            ci = (fa.intervals or {}).get(f"accuracy[{g.group}]")
            acc = f"{g.accuracy:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            expected = "n/a" if g.expected_accuracy is None else f"{g.expected_accuracy:.3f}"
            groups.add_row(name, g.group, str(g.count), acc, expected)
    fas = list(report.fairness.values())
    gaps.add_row("worst group", *(f"{fa.worst_group} {fa.worst_group_accuracy:.3f}" for fa in fas))
    for label, key in _GAP_ROWS:
        gaps.add_row(label, *("n/a" if getattr(fa, key) is None else f"{getattr(fa, key):.3f}"
                              for fa in fas))
    gaps.add_row("max gap 95% interval", *(
        f"[{fa.max_gap_interval[0]:.3f}, {fa.max_gap_interval[1]:.3f}]"
        if fa.max_gap_interval else "n/a" for fa in fas))
    gaps.add_row("missing", *(str(fa.n_missing) for fa in fas))
    return groups, gaps


def _hardware_table(report: EvaluationReport, hw: HardwareReport, tr: TrainingStats) -> Table:
    """Batch-1 cost of the measured graph, how it was measured, and the training run."""
    hwt = Table(title="Hardware (batch 1)")
    hwt.add_column("measure")
    hwt.add_column("value", justify="right")
    agree = ("n/a" if report.prediction_agreement is None
             else f"{report.prediction_agreement:.1%} ({report.exporter} exporter)")
    for k, v in (("params", f"{hw.params:,}"), ("size", f"{hw.size_mb:.2f} MB"),
                 ("FLOPs", f"{hw.flops:,}"),
                 ("peak activations", f"{hw.peak_activation_mb:.2f} MB (graph, batch 1)"),
                 ("runtime peak", "n/a" if hw.runtime_peak_mb is None
                  else f"{hw.runtime_peak_mb:.2f} MB (ONNX Runtime resident, batch 1)"),
                 ("latency median / p90", f"{hw.latency_ms_median:.2f} / "
                  f"{hw.latency_ms_p90:.2f} ms ({hw.latency_device})"),
                 ("measured by", hw.measured_by or "n/a"),
                 ("ONNX vs PyTorch predictions", agree),
                 ("training", f"{tr.epochs} ep, {tr.steps} steps, {tr.images_per_s:.0f} img/s, "
                  f"amp {tr.amp}" + (" (stopped early)" if tr.stopped_early else ""))):
        hwt.add_row(k, v)
    return hwt


def render_report(report: EvaluationReport, console: Console | None = None) -> None:
    """Print a report as rich tables: overall, per-group accuracy, fairness, hardware.

    Args:
        report: The evaluation report (a failed one prints its stage and reason).
        console: Where to print (default: a new stdout console).
    """
    console = console or Console()
    head = f"[bold]{report.candidate_id or report.code_hash[:12]}[/] on {report.split}: "
    if not report.ok:
        console.print(head + f"[red]failed at {report.failure_stage}[/]: {report.failure_reason}")
        return
    m, hw, tr = report.metrics, report.hardware, report.training
    assert m is not None and hw is not None and tr is not None
    console.print(head + f"accuracy [bold]{m.accuracy:.3f}[/], balanced accuracy "
                  f"[bold]{m.balanced_accuracy:.3f}[/] (n={m.n}), {report.wall_s:.1f} s")
    console.print(*_fairness_tables(report))
    console.print(_hardware_table(report, hw, tr))
    if report.violations:
        console.print("[red]Budget violations:[/] " + "; ".join(report.violations))
    else:
        console.print("[green]All budgets met.[/]")
    if report.isolation:
        console.print("isolation: " + ", ".join(report.isolation))
