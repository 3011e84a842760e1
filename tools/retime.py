"""Latencies of many exported graphs timed side by side, in one sandboxed job.

``run_job(RETIME_JOB, {"graphs": [...], "image_size": S}, read_only=graphs)``

Each evaluation measures its design's latency inside its own measure job
(:mod:`tools.measure`), under whatever load the machine had at that moment: the other
searches of a benchmark, their trainings, anything else running. In the search suite
the same design measured in three evaluations spread by a median of 14 % (sd / mean),
and the load differed between strategies, so one strategy's designs could look
faster than another's for no reason of their own. This job times every given graph in
one process, in interleaved rounds (each round a fresh random order; a round times
``iters`` batch-1 runs of each graph after one untimed run), so every graph sees the same
conditions. A graph's figure is the median over rounds of its per-round medians.

The graphs came from candidate code, so this job runs in the sandbox like the measure
job; it loads no torch (``TORCH_FREE``). Settings as the measure job's latency session:
one intra-op thread, sequential execution, every graph optimisation, a batch of one.
The parent runs it with :func:`tools.side_by_side.sandboxed_timer`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

# At import, before the worker's integrity snapshot: onnx patches typing internals.
from tools.measure import session
from tools.side_by_side import BUDGET_S, RETIME_JOB

TORCH_FREE = True  # tools.worker skips importing torch for this module's jobs
__all__ = ["BUDGET_S", "RETIME_JOB", "TORCH_FREE", "retime_job"]


def retime_job(payload: dict, workdir: Path | str) -> dict:
    """Time the graphs side by side (see the module docstring).

    Args:
        payload: ``graphs`` (paths, mapped read-only), ``image_size``; optional
            ``rounds`` (15), ``iters`` (20 runs per graph and round; fewer, down to 3,
            when the rounds would take longer than ``budget_s``, default
            :data:`BUDGET_S`), ``warmup`` (5), ``seed`` (0: the round orders and the
            input image).
        workdir: The job's private folder (unused).

    Returns:
        ``{"latency_ms": [...], "round_cv": [...], "errors": [...]}`` in the order of
        ``graphs`` (a graph ONNX Runtime cannot load or run gets None and its error), and
        ``iters``, the runs per graph and round used.
    """
    size = int(payload["image_size"])
    rounds, iters = max(1, int(payload.get("rounds", 15))), max(1, int(payload.get("iters", 20)))
    rng = np.random.default_rng(int(payload.get("seed", 0)))
    x = rng.random((1, 3, size, size), dtype=np.float32)
    runs: list = []
    errors: list[str | None] = []
    warmup = max(1, int(payload.get("warmup", 5)))
    run_s = 0.0  # one run of every graph, from the warm-up
    for path in payload["graphs"]:
        try:
            sess = session(Path(path).read_bytes(), 1)
            feed = {sess.get_inputs()[0].name: x}
            t0 = time.perf_counter()
            for _ in range(warmup):
                sess.run(None, feed)
            run_s += (time.perf_counter() - t0) / warmup
            runs.append((sess, feed))
            errors.append(None)
        except Exception as e:  # noqa: BLE001 - ORT's own errors: this graph has no figure
            runs.append(None)
            errors.append(f"{type(e).__name__}: {str(e)[:300]}")
    # Fewer runs per round (at least 3) when the rounds would outlast the time budget.
    budget_s = float(payload.get("budget_s", BUDGET_S))
    iters = max(3, min(iters, int(budget_s / max(rounds * run_s, 1e-9)) - 1))
    per_round: list[list[float]] = [[] for _ in runs]
    live = [i for i, r in enumerate(runs) if r is not None]
    for _ in range(rounds):
        for i in rng.permutation(live):
            sess, feed = runs[i]
            sess.run(None, feed)  # untimed: the graph before this one left the caches cold
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                sess.run(None, feed)
                times.append(time.perf_counter() - t0)
            per_round[i].append(statistics.median(times) * 1e3)
    return {"latency_ms": [statistics.median(r) if r else None for r in per_round],
            "round_cv": [statistics.pstdev(r) / statistics.fmean(r) if r else None
                         for r in per_round],
            "errors": errors, "iters": iters}
