"""Named moves along the Template's Choices (the offline designer's vocabulary).

Each mutation takes a `Genome` and a seeded `random.Random` and returns a valid genome:
a different one when the move is possible, else the same one (never an invalid one).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from tasks.genome import (
    DEFAULT_EXPANSION,
    KERNELS,
    MAX_DEPTH,
    MAX_DROPOUT,
    MAX_STEM_WIDTH,
    MAX_WIDTH,
    MIN_WIDTH,
    Genome,
    Stage,
)

Mutation = Callable[[Genome, random.Random], Genome]


def _replace(genome: Genome, **changes: Any) -> Genome:
    """Return a validated copy with `changes`, or `genome` itself if that would be invalid."""
    try:
        return Genome.model_validate({**genome.model_dump(), **changes})
    except ValidationError:
        return genome


def _edit_stage(genome: Genome, rng: random.Random, eligible: Callable[[Stage], bool],
                edit: Callable[[dict[str, Any]], dict[str, Any]]) -> Genome:
    """Apply `edit` to one randomly chosen eligible stage."""
    options = [i for i, s in enumerate(genome.stages) if eligible(s)]
    if not options:
        return genome
    stages = [s.model_dump() for s in genome.stages]
    i = rng.choice(options)
    stages[i] = edit(stages[i])
    return _replace(genome, stages=stages)


def _scale(width: int, factor: float, limit: int) -> int:
    """Scale a width by `factor`, rounded to 8, moving by at least 8, clamped to the range."""
    target = max(8, round(width * factor / 8) * 8)
    target = max(target, width + 8) if factor > 1 else min(target, width - 8)
    return min(max(target, MIN_WIDTH), limit)


def _scale_widths(genome: Genome, factor: float, n_stages: int | None = None) -> Genome:
    stages = [s.model_dump() for s in genome.stages]
    for s in stages[:n_stages]:
        s["width"] = _scale(s["width"], factor, MAX_WIDTH)
    return _replace(genome, stem_width=_scale(genome.stem_width, factor, MAX_STEM_WIDTH),
                    stages=stages)


def shrink_width(g: Genome, rng: random.Random) -> Genome:
    """Every width x0.75 (at least -8): fewer parameters, FLOPs and latency."""
    return _scale_widths(g, 0.75)


def widen(g: Genome, rng: random.Random) -> Genome:
    """Every width x1.25 (at least +8): more capacity."""
    return _scale_widths(g, 1.25)


def widen_early(g: Genome, rng: random.Random) -> Genome:
    """Stem and first half of the stages x1.5: richer low-level features (fairness lever)."""
    return _scale_widths(g, 1.5, n_stages=math.ceil(len(g.stages) / 2))


def deeper(g: Genome, rng: random.Random) -> Genome:
    """One more block in a random stage."""
    return _edit_stage(g, rng, lambda s: s.depth < MAX_DEPTH,
                       lambda s: {**s, "depth": s["depth"] + 1})


def shallower(g: Genome, rng: random.Random) -> Genome:
    """One block fewer in a random stage; drops the last stage when every stage has one."""
    if all(s.depth == 1 for s in g.stages):
        return _replace(g, stages=[s.model_dump() for s in g.stages[:-1]])
    return _edit_stage(g, rng, lambda s: s.depth > 1, lambda s: {**s, "depth": s["depth"] - 1})


def depthwise_separable(g: Genome, rng: random.Random) -> Genome:
    """Make a plain or residual stage depthwise-separable (about k*k fewer MACs)."""
    return _edit_stage(g, rng, lambda s: s.block in ("plain", "residual"),
                       lambda s: {**s, "block": "dwsep"})


def inverted_residual(g: Genome, rng: random.Random) -> Genome:
    """Make a non-MBConv stage inverted residual (MBConv) with expansion 4."""
    return _edit_stage(g, rng, lambda s: s.block != "inverted_residual",
                       lambda s: {**s, "block": "inverted_residual",
                                  "expansion": DEFAULT_EXPANSION})


def add_se(g: Genome, rng: random.Random) -> Genome:
    """Squeeze-excitation in a random stage that has none."""
    return _edit_stage(g, rng, lambda s: not s.se, lambda s: {**s, "se": True})


def add_residual(g: Genome, rng: random.Random) -> Genome:
    """Make a plain stage residual (shortcut connections, easier optimisation)."""
    return _edit_stage(g, rng, lambda s: s.block == "plain", lambda s: {**s, "block": "residual"})


def change_norm(g: Genome, rng: random.Random) -> Genome:
    """Switch to another normalisation (batch, group, none)."""
    return _replace(g, norm=rng.choice([n for n in ("batch", "group", "none") if n != g.norm]))


def change_act(g: Genome, rng: random.Random) -> Genome:
    """Switch to another activation."""
    acts = ("relu", "silu", "hardswish", "gelu")
    return _replace(g, act=rng.choice([a for a in acts if a != g.act]))


def change_pool(g: Genome, rng: random.Random) -> Genome:
    """Swap global average and global max pooling."""
    return _replace(g, pool="max" if g.pool == "avg" else "avg")


def bigger_kernel(g: Genome, rng: random.Random) -> Genome:
    """Grow a random stage's kernel by 2 (larger receptive field)."""
    return _edit_stage(g, rng, lambda s: s.kernel < max(KERNELS),
                       lambda s: {**s, "kernel": s["kernel"] + 2})


def smaller_kernel(g: Genome, rng: random.Random) -> Genome:
    """Shrink a random stage's kernel by 2."""
    return _edit_stage(g, rng, lambda s: s.kernel > min(KERNELS),
                       lambda s: {**s, "kernel": s["kernel"] - 2})


def more_dropout(g: Genome, rng: random.Random) -> Genome:
    """Dropout +0.1 (capped at 0.5): regularise an overfitting net."""
    return _replace(g, dropout=min(MAX_DROPOUT, g.dropout + 0.1))


def less_dropout(g: Genome, rng: random.Random) -> Genome:
    """Dropout -0.1 (floored at 0)."""
    return _replace(g, dropout=max(0.0, g.dropout - 0.1))


def _shift_downsampling(g: Genome, old: int, new: int) -> Genome:
    """Change the stem's stride from ``old`` to ``new``, else the first such stage's."""
    if g.stem_stride == old:
        return _replace(g, stem_stride=new)
    i = next((i for i, s in enumerate(g.stages) if s.stride == old), None)
    if i is None:
        return g
    stages = [s.model_dump() for s in g.stages]
    stages[i]["stride"] = new
    return _replace(g, stages=stages)


def more_downsampling(g: Genome, rng: random.Random) -> Genome:
    """Halve the resolution earlier: stem stride 2, else the first stride-1 stage.

    About 4x fewer FLOPs after that point, less activation memory and latency.
    """
    return _shift_downsampling(g, 1, 2)


def less_downsampling(g: Genome, rng: random.Random) -> Genome:
    """Keep resolution longer (stem stride 1, else the first stride-2 stage gets stride 1)."""
    return _shift_downsampling(g, 2, 1)


MUTATIONS: dict[str, Mutation] = {f.__name__: f for f in (
    shrink_width, widen, widen_early, deeper, shallower, depthwise_separable,
    inverted_residual, add_se, add_residual, change_norm, change_act, change_pool,
    bigger_kernel, smaller_kernel, more_dropout, less_dropout, more_downsampling,
    less_downsampling,
)}
