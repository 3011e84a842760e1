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


def _set(name: str, field: str, value: str, doc: str) -> Mutation:
    """Return the directional move ``name``: set ``field`` to ``value`` (no-op when so).

    One move per target value, not one "change" move drawing the target at random: the
    search's per-move statistics then say which value helped (SiLU and ReLU are not one
    arm), and a move's effect is reproducible from its name.
    """
    def move(g: Genome, rng: random.Random) -> Genome:
        return _replace(g, **{field: value})

    move.__name__ = move.__qualname__ = name
    move.__doc__ = doc
    return move


#: Normalisation -> the move that switches to it.
NORM_MOVES = {"batch": "to_batchnorm", "group": "to_groupnorm", "none": "no_norm"}
#: Activation -> the move that switches to it.
ACT_MOVES = {a: f"to_{a}" for a in ("relu", "silu", "hardswish", "gelu")}
#: Global pooling -> the move that switches to it.
POOL_MOVES = {"avg": "to_avg_pool", "max": "to_max_pool"}

_NORM_DOCS = {"batch": "BatchNorm", "group": "GroupNorm (8 groups, batch-size free)",
              "none": "no normalisation (convs get a bias)"}
_DIRECTIONAL = (
    [_set(m, "norm", n, f"Switch to {_NORM_DOCS[n]}.") for n, m in NORM_MOVES.items()]
    + [_set(m, "act", a, f"Switch every activation to {a}.") for a, m in ACT_MOVES.items()]
    + [_set(m, "pool", p, f"Global {p} pooling before the classifier.")
       for p, m in POOL_MOVES.items()]
)


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
    inverted_residual, add_se, add_residual, bigger_kernel, smaller_kernel, more_dropout,
    less_dropout, more_downsampling, less_downsampling, *_DIRECTIONAL,
)}


# ------------------------------------------------------------------- diff -> moves

# Block a stage was changed *to* -> the move that makes that block (plain has no move).
_BLOCK_MOVES = {"residual": "add_residual", "dwsep": "depthwise_separable",
                "inverted_residual": "inverted_residual"}


def _widths(genome: Genome) -> list[int]:
    """Stem width, then every stage's width."""
    return [genome.stem_width] + [s.width for s in genome.stages]


def _width_moves(parent: Genome, child: Genome) -> list[str]:
    """Width moves explaining the stem and stage widths (common stages only)."""
    n = min(len(parent.stages), len(child.stages))
    pairs = [(parent.stem_width, child.stem_width)] + [
        (p.width, c.width) for p, c in zip(parent.stages[:n], child.stages[:n], strict=True)]
    grown = [i for i, (p, c) in enumerate(pairs) if c > p]
    shrunk = [i for i, (p, c) in enumerate(pairs) if c < p]
    moves: list[str] = []
    if grown:
        child_widths = [c for _, c in pairs]
        # The moves' own results first (clamping can make their diffs look alike), then
        # the shape: widen_early touches only the stem and the first half of the stages.
        if child_widths == _widths(widen_early(parent, random.Random(0)))[:len(pairs)] != \
                _widths(widen(parent, random.Random(0)))[:len(pairs)]:
            moves.append("widen_early")
        elif child_widths == _widths(widen(parent, random.Random(0)))[:len(pairs)]:
            moves.append("widen")
        else:
            early = 1 + math.ceil(len(parent.stages) / 2)  # index 0 is the stem
            moves.append("widen_early" if max(grown) < early and len(grown) < len(pairs)
                         else "widen")
    if shrunk:
        moves.append("shrink_width")
    return moves


def _stage_moves(parent: Genome, child: Genome) -> list[str]:
    """Depth, kernel, stride, block and SE moves of the stages both genomes share."""
    moves: list[str] = []
    if len(child.stages) < len(parent.stages):
        moves.append("shallower")
    elif len(child.stages) > len(parent.stages):
        moves.append("deeper")
    for p, c in zip(parent.stages, child.stages, strict=False):
        if c.depth != p.depth:
            moves.append("deeper" if c.depth > p.depth else "shallower")
        if c.kernel != p.kernel:
            moves.append("bigger_kernel" if c.kernel > p.kernel else "smaller_kernel")
        if c.stride != p.stride:
            moves.append("more_downsampling" if c.stride > p.stride else "less_downsampling")
        if c.block != p.block and c.block in _BLOCK_MOVES:
            moves.append(_BLOCK_MOVES[c.block])
        if c.se and not p.se:
            moves.append("add_se")
    return moves


def classify_moves(parent: Genome, child: Genome) -> list[str]:
    """Name the moves of :data:`MUTATIONS` that turn ``parent`` into ``child``.

    Works on any two genomes (a design an LLM wrote as well as a mutation's result), so
    the search can credit each named move with the effect of a child against its parent.
    Changes no move makes (removing SE, turning a block back to ``plain``, an expansion
    change inside an inverted residual) are not named.

    Args:
        parent: The genome the child was derived from.
        child: The derived genome.

    Returns:
        Move names in :data:`MUTATIONS` order, each at most once; empty when the genomes
        are equal or differ only where no move reaches.
    """
    found = set(_width_moves(parent, child)) | set(_stage_moves(parent, child))
    if child.stem_stride != parent.stem_stride:
        found.add("more_downsampling" if child.stem_stride > parent.stem_stride
                  else "less_downsampling")
    for field, moves in (("norm", NORM_MOVES), ("act", ACT_MOVES), ("pool", POOL_MOVES)):
        if getattr(child, field) != getattr(parent, field):
            found.add(moves[getattr(child, field)])
    if child.dropout != parent.dropout:
        found.add("more_dropout" if child.dropout > parent.dropout else "less_dropout")
    return [name for name in MUTATIONS if name in found]
