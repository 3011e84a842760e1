"""The latency screen: no training for a design whose graph is already too slow.

A design's batch-1 latency follows from its architecture, not its weights, so it can be
measured before training. With a screen of ``L`` ms (``--latency-screen-ms``), the gate
exports the freshly built model to ONNX in its sandboxed job
(:func:`tools.jobs.gate_export_job`) and this module times that graph in a second job that
runs no candidate code (:mod:`tools.retime`, one thread, batch 1, the measure job's
session settings). A design slower than ``L`` fails the gate's "budget" stage: it is not
trained, and the Code-Fixer is asked to make it cheaper, as for a parameter budget.

The screen is a schedule setting, not a budget: a design under it is trained and
measured as before, and its trusted post-training latency is the one every objective,
budget and report uses. Set it with a margin above the latency that matters (the search
suite uses 1.5x the hypervolume's reference latency; one design's latency varies by
about 10-15 % between measurements, docs/metrics.md#noise), so noise does not screen out
a design that would have counted.

The candidate's own process wrote the graph, so it could make its gate graph faster than
the model it trains; that only buys it a training, whose trusted measurement then
records the real latency. The screen saves time; it is not a security boundary.
"""

from __future__ import annotations

from pathlib import Path

from tools.gate import GateCheck, GateReport, fixer_message

SCREEN_JOB = "tools.jobs:gate_export_job"
# Timing rounds of the screen: a few, since only a clear excess screens a design out.
ROUNDS, ITERS, BUDGET_S = 5, 10, 3.0


def screen_latency(report: GateReport, graph: Path, image_size: int,
                   limit_ms: float) -> GateReport:
    """Time the untrained ``graph`` (trusted job) and fail ``report`` when it is too slow.

    Args:
        report: A passing gate report of the design.
        graph: Its untrained ONNX graph (from :func:`tools.jobs.gate_export_job`); when it
            is missing the design could not be exported and the report is returned as is.
        image_size: Side of the square input.
        limit_ms: The screen (ms, batch 1, one thread).

    Returns:
        ``report`` with ``latency_ms`` set; ``ok`` False and a failed "budget" check when
        the latency exceeds ``limit_ms``.
    """
    from tools.side_by_side import RetimeFailed, sandboxed_timer

    if not graph.is_file():
        return report
    try:
        latency = sandboxed_timer([str(graph)], image_size, budget_s=BUDGET_S, rounds=ROUNDS,
                                  iters=ITERS)[0][0]
    except RetimeFailed:
        latency = None
    if latency is None:  # ONNX Runtime could not run it: the evaluation's measure job says why
        return report
    report = report.model_copy(update={"latency_ms": float(latency)})
    if latency <= limit_ms:
        return report
    detail = (f"latency {latency:.2f} ms > screen {limit_ms:g} ms (batch 1, one thread, "
              "the untrained graph timed in ONNX Runtime)")
    hints = [detail + ": the design is not trained",
             "make the forward cheaper: downsample earlier, fewer channels at high "
             "resolution, depthwise-separable convolutions, fewer blocks"]
    return report.model_copy(update={
        "ok": False, "checks": [*report.checks, GateCheck(name="budget", ok=False, detail=detail)],
        "message": fixer_message("budget", "the model is too slow for the latency screen.",
                                 hints)})
