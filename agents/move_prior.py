"""A measured prior for the offline Designer: what each move did to the Template before.

A run starts with no history, so the bandit of :mod:`agents.policy` would rank its first
moves on an assumption alone. This module gives it evidence instead: the effect of each
named move (:data:`tasks.mutations.MUTATIONS`) on the Template, measured by training the
Template and its one-move child on the same training seeds (paired, so the seeds' common
luck cancels), stored in ``agents/move_prior.json`` with how it was measured. The policy
uses a move's mean score effect as the mean of its Thompson prior, worth
:data:`PRIOR_WEIGHT_PER_SEED` pseudo-observations per measured seed; the run's own
statistics then take over as they come in. Moves without a measurement keep the
optimistic default prior, so they are still tried.

``python -m agents.move_prior`` measures it again (in-process: the sources are our own
rendered genomes, not candidate code). It trains on a data seed and training seeds that
the benchmarks never use (``--seed 1``, training seeds 201..), so a benchmark on data seed
0 is not scored on the data the prior saw. The prior carries knowledge about this task
family at the quick fidelity; on another task or fidelity measure it again
(``--synthetic-n``, ``--image-size``, ``--epochs``, or ``--data-dir`` for real data) and
point ``FLNAS_MOVE_PRIOR`` at the file, or set it to ``none`` for the flat prior.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

#: The shipped prior (measured with the defaults of :func:`main`).
DEFAULT_PATH = Path(__file__).with_name("move_prior.json")
#: Environment variable naming another prior file, or ``none`` for the flat prior.
PRIOR_ENV = "FLNAS_MOVE_PRIOR"
#: Pseudo-observations a measured seed is worth in the policy's Thompson prior (below 1:
#: a move measured on the Template transfers to other parents only in part).
PRIOR_WEIGHT_PER_SEED = 0.75


class MovePrior(BaseModel):
    """One move's paired effect on the Template (child - Template, same training seeds)."""

    move: str
    seeds: int = Field(ge=1)
    balanced_accuracy: float
    unfairness: float
    score: float
    """Effect on ``balanced_accuracy - unfairness`` (the selection score at weight 1)."""
    score_sd: float | None = None
    """Spread of the paired score effect over seeds (None with one seed)."""
    params: int


class PriorTable(BaseModel):
    """A measured prior and how it was measured."""

    measured: str
    """How: data, recipe, seeds, machine, date."""
    moves: dict[str, MovePrior]


@cache
def _load(path: str) -> PriorTable | None:
    try:
        return PriorTable.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # an unreadable prior is no prior: the flat one still searches


def load_prior(path: str | Path | None = None) -> dict[str, MovePrior]:
    """Return the measured prior by move (empty when switched off or unreadable).

    Args:
        path: A prior file; default ``$FLNAS_MOVE_PRIOR``, else :data:`DEFAULT_PATH`.
            ``none`` switches the prior off.
    """
    chosen = str(path) if path is not None else os.environ.get(PRIOR_ENV) or str(DEFAULT_PATH)
    if chosen.lower() == "none":
        return {}
    table = _load(chosen)
    return dict(table.moves) if table is not None else {}


# --------------------------------------------------------------------- measurement


def _train(job: tuple[str, str, int, dict[str, Any]]) -> tuple[str, int, float, float, int]:
    """Train one genome source on one seed in a pool worker (one torch thread)."""
    name, source, seed, opts = job
    import torch

    torch.set_num_threads(1)
    from evaluation.pareto import mean_max_gap
    from tasks.cache import load_arrays
    from tasks.data_args import DataOptions, prepare_from_args
    from tools.calibrate import run_model
    from tools.train import Recipe

    data = prepare_from_args(DataOptions(**opts["data"]), progress=False)
    r = run_model(source, load_arrays(data), data,
                  Recipe(epochs=opts["epochs"], seed=seed, threads=1))
    unfair = mean_max_gap(r["fair"])
    return name, seed, r["bal_acc"], 0.0 if unfair is None else unfair, r["params"]


def measure(data: dict[str, Any], epochs: int, seeds: list[int],
            workers: int) -> dict[str, MovePrior]:
    """Measure every move's paired effect on the Template (see the module docstring).

    A move that picks a stage at random uses the same draw for every seed, so its seeds
    measure one child. Moves that leave the Template unchanged are not measured.
    """
    from tasks.data_args import DataOptions, prepare_from_args
    from tasks.genome import TEMPLATE_GENOME, render
    from tasks.mutations import MUTATIONS

    prepare_from_args(DataOptions(**data), progress=False)  # once, before the workers race
    sources = {"template": render(TEMPLATE_GENOME)}
    for name, move in MUTATIONS.items():
        child = move(TEMPLATE_GENOME, random.Random(0))
        if child != TEMPLATE_GENOME:
            sources[name] = render(child)
    jobs = [(n, src, s, {"data": data, "epochs": epochs})
            for n, src in sources.items() for s in seeds]
    runs: dict[str, dict[int, tuple[float, float, int]]] = {}
    with ProcessPoolExecutor(workers) as pool:
        for name, seed, bal, unfair, params in pool.map(_train, jobs):
            runs.setdefault(name, {})[seed] = (bal, unfair, params)
            print(f"{name:20s} seed {seed}: balanced accuracy {bal:.3f}, "
                  f"unfairness {unfair:.3f}", flush=True)
    base = runs.pop("template")
    out = {}
    for name, by_seed in runs.items():
        d_bal = [by_seed[s][0] - base[s][0] for s in seeds]
        d_unf = [by_seed[s][1] - base[s][1] for s in seeds]
        d_score = [b - u for b, u in zip(d_bal, d_unf, strict=True)]
        out[name] = MovePrior(
            move=name, seeds=len(seeds), balanced_accuracy=round(statistics.fmean(d_bal), 4),
            unfairness=round(statistics.fmean(d_unf), 4),
            score=round(statistics.fmean(d_score), 4),
            score_sd=round(statistics.stdev(d_score), 4) if len(seeds) > 1 else None,
            params=by_seed[seeds[0]][2])
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: measure the prior and write it (default: the shipped file)."""
    from tools.machine import machine

    ap = argparse.ArgumentParser(prog="python -m agents.move_prior", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_PATH), help="prior file to write")
    ap.add_argument("--seed", type=int, default=1, help="data seed (the benchmarks use 0)")
    ap.add_argument("--synthetic-n", type=int, default=4000)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--data-dir", default=None, help="real ISIC 2019 folder (default: synthetic)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=4, help="training seeds 201, 202, ...")
    ap.add_argument("--workers", type=int, default=2, help="trainings at a time")
    args = ap.parse_args(argv)
    data = {"task": "isic", "synthetic": args.data_dir is None, "data_dir": args.data_dir,
            "synthetic_n": args.synthetic_n, "image_size": args.image_size, "seed": args.seed}
    seeds = list(range(201, 201 + args.seeds))
    moves = measure(data, args.epochs, seeds, args.workers)
    m = machine()
    source = f"data dir {args.data_dir}" if args.data_dir else \
        f"synthetic n={args.synthetic_n}"
    how = (f"python -m agents.move_prior: {source}, {args.image_size} px, data seed "
           f"{args.seed}, {args.epochs} epochs, training seeds {seeds}, one thread each, on "
           f"{m['cpu']} ({'bf16 autocast' if m['cpu_bf16_native'] else 'fp32'}), "
           f"{datetime.now(UTC):%Y-%m-%d}")
    table = PriorTable(measured=how, moves=moves)
    Path(args.out).write_text(table.model_dump_json(indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(moves)} moves; {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
