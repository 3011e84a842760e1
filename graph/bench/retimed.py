"""The search suite's latencies re-timed side by side once every search has finished.

Each search measured its designs' latencies during the search, each in its own job and
under the load of that moment (the other searches running beside it, their trainings).
Those figures are what each search optimised, but they are not comparable across
strategies: on the 2-core AMD EPYC, fp32, the suite at 416026c measured the random and
evolution designs a median 43-48 % slower during their searches than side by side
afterwards, the agents' designs 14 % slower (docs/metrics.md#promotion). So the suite
also times every distinct design that enters a hypervolume (by code hash: the Template
once, not once per run) in one sandboxed job (:mod:`tools.retime`), interleaved, and
reports the hypervolume with those latencies beside the searches' own.

``retimed.json`` in the results folder keeps the figures with the machine they come from;
a rerun reuses them when they cover every design, else times all of them again (a partial
re-timing would not be side by side).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.records import Candidate, seeds_measured
from evaluation.pareto import hypervolume
from graph.bench.output import machine, write_json
from graph.bench.runfolder import SearchRun, hv_points, hv_steps, load_records
from graph.export import validation_graph
from tools.side_by_side import RetimeFailed, sandboxed_timer

__all__ = ["RetimeFailed", "Timer", "pooled_hv", "retime", "retimed_hv", "run_records",
           "sandboxed_timer", "timed_or_none"]

RETIMED = "retimed.json"

#: Times graphs side by side: (paths, image size) -> (latency ms or None per path, job info).
Timer = Callable[[list[str], int], tuple[list[float | None], dict[str, Any]]]



def timed_or_none(timer: Timer, paths: list[str], image_size: int
                  ) -> tuple[list[float | None], dict[str, Any]] | None:
    """Run ``timer``; on failure say so and return None (the suite's results still count)."""
    try:
        return timer(paths, image_size)
    except RetimeFailed as e:
        print(f"{e}; the results keep the latencies measured during the runs", flush=True)
        return None


def run_records(runs: Sequence[SearchRun]) -> dict[str, list[Candidate]]:
    """Run folder -> its records (:func:`graph.bench.runfolder.load_records`), read once."""
    return {run.run_dir: load_records(Path(run.run_dir)) for run in runs}


def front_graphs(records: Mapping[str, Sequence[Candidate]]) -> dict[str, str]:
    """Code hash -> an exported graph, for every design that enters a run's hypervolume.

    Args:
        records: Run folder -> its records (:func:`run_records`).
    """
    graphs: dict[str, str] = {}
    for run_dir, recs in records.items():
        for rec, _ in hv_points(recs):
            if rec.code_hash in graphs:
                continue
            found = validation_graph(Path(run_dir), rec.id)
            if found is not None:
                graphs[rec.code_hash] = str(found)
    return graphs


def retime(records: Mapping[str, Sequence[Candidate]], out: Path, image_size: int,
           timer: Timer = sandboxed_timer) -> dict[str, float] | None:
    """Return code hash -> latency (ms) timed side by side, reusing ``out/retimed.json``.

    Designs without an exported graph on disk (an evaluation served from the result
    cache) keep their search latency; None when no design has one or the timing failed.

    Args:
        records: Run folder -> its records (:func:`run_records`).
        out: The results folder (``retimed.json``).
        image_size: Side of the square input the graphs take.
        timer: Times the graphs side by side.
    """
    graphs = front_graphs(records)
    if not graphs:
        return None
    path = out / RETIMED
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        if set(graphs) <= set(kept["latency_ms"]) and kept.get("image_size") == image_size:
            return {h: float(v) for h, v in kept["latency_ms"].items() if v is not None}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    hashes = sorted(graphs)
    print(f"re-timing {len(hashes)} designs side by side", flush=True)
    timed = timed_or_none(timer, [graphs[h] for h in hashes], image_size)
    if timed is None:
        return None
    latencies, info = timed
    done = dict(zip(hashes, latencies, strict=True))
    write_json(path, {"machine": machine(), "image_size": image_size, "latency_ms": done,
                      "graphs": graphs, **{k: dict(zip(hashes, v, strict=True))
                                           for k, v in info.items()}})
    return {h: float(v) for h, v in done.items() if v is not None}


def retimed_hv(records: Sequence[Candidate], latencies: Mapping[str, float],
               latency_ref_ms: float, reference: Sequence[float]) -> float:
    """Return a run's final hypervolume with its designs' latencies from ``latencies``."""
    steps = hv_steps(records, latency_ref_ms, reference, latencies)
    return steps[-1][1] if steps else 0.0


def pooled_hv(records: Mapping[str, Sequence[Candidate]], latencies: Mapping[str, float] | None,
              latency_ref_ms: float, reference: Sequence[float]) -> dict[str, Any]:
    """Return the hypervolume of every design any search trained, pooled into one front.

    Not a strategy's score: the front of everything the suite's searches found together,
    which says how much room the Choices, the recipe and the fixed reference point leave
    above each strategy (docs/metrics.md#promotion). A design that several searches
    trained counts once, at the estimate with the most training seeds behind it.

    Args:
        records: Run folder -> its records (:func:`run_records`).
        latencies: Code hash -> latency timed side by side (:func:`retime`), or None for
            the searches' own.
        latency_ref_ms: Latency normalisation ``L``.
        reference: The hypervolume's reference point.

    Returns:
        ``designs`` (distinct designs in the pool), ``hv`` and ``retimed`` (whether the
        latencies are the side-by-side ones).
    """
    best: dict[str, tuple[int, tuple[float, float, float]]] = {}
    for recs in records.values():
        for rec, (err, unfair, latency) in hv_points(recs, latencies):
            seeds = seeds_measured(rec)
            if rec.code_hash not in best or seeds > best[rec.code_hash][0]:
                best[rec.code_hash] = (seeds, (err, unfair, latency / latency_ref_ms))
    points = [p for _, p in best.values()]
    return {"designs": len(points), "hv": hypervolume(points, reference) if points else 0.0,
            "retimed": latencies is not None}
