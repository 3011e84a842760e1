"""Parent side of the side-by-side timing job (:mod:`tools.retime`): run it, sandboxed.

Kept apart from the job's module so the parent (the finalize node, the benchmark suites)
does not import ONNX and ONNX Runtime, which only the sandboxed job needs.
"""

from __future__ import annotations

from typing import Any

RETIME_JOB = "tools.retime:retime_job"
BUDGET_S = 120.0  # timed rounds; the parent's wall-clock limit adds set-up time per graph


class RetimeFailed(RuntimeError):
    """The side-by-side timing job failed; callers keep the latencies measured in the runs."""


def sandboxed_timer(paths: list[str], image_size: int, *, budget_s: float = BUDGET_S,
                    **timing: int) -> tuple[list[float | None], dict[str, Any]]:
    """Time the ONNX graphs ``paths`` side by side in one sandboxed job (one thread).

    Args:
        paths: The graphs.
        image_size: Side of the square input.
        budget_s: Seconds the timed rounds may take (:func:`tools.retime.retime_job`).
        **timing: ``rounds``, ``iters``, ``warmup`` of the job (its defaults otherwise).

    Returns:
        The latency (ms) of each path, None for a graph ONNX Runtime cannot load, and the
        job's ``round_cv`` and ``errors`` per path.

    Raises:
        RetimeFailed: The job failed or ran out of time.
    """
    from pathlib import Path

    from tools.sandbox import SandboxLimits, run_job

    # The job runs in its own working folder: a path relative to ours would not resolve.
    paths = [str(Path(p).resolve()) for p in paths]
    # The job fits its timed rounds into budget_s; loading and warming up take the rest.
    res = run_job(RETIME_JOB, {"graphs": paths, "image_size": image_size,
                               "budget_s": budget_s, **timing},
                  limits=SandboxLimits(timeout_s=60 + budget_s + 5.0 * len(paths)),
                  read_only=paths)
    if not res.ok or res.result is None:
        raise RetimeFailed(f"re-timing failed ({res.error_kind}): {res.error}")
    out = res.result
    return out["latency_ms"], {"round_cv": out["round_cv"], "errors": out["errors"]}
