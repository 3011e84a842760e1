"""Uniform draws from the Choices: valid, reproducible per seed, and spread over the space."""

from __future__ import annotations

import random

from tasks.genome import (
    KERNELS,
    MAX_BLOCKS,
    MAX_DOWNSAMPLES,
    MAX_STAGES,
    MAX_STEM_WIDTH,
    MAX_WIDTH,
    parse_genome,
    random_genome,
    render,
)

N = 300


def _draws(seed: int, n: int = N) -> list:
    rng = random.Random(seed)
    return [random_genome(rng) for _ in range(n)]


def test_every_draw_renders_parses_back_and_stays_within_the_choices():
    for g in _draws(0):
        assert parse_genome(render(g)) == g
        assert 1 <= len(g.stages) <= MAX_STAGES and g.stem_width <= MAX_STEM_WIDTH
        assert sum(s.depth for s in g.stages) <= MAX_BLOCKS
        assert (g.stem_stride == 2) + sum(s.stride == 2 for s in g.stages) <= MAX_DOWNSAMPLES
        assert all(s.width % 8 == 0 and s.width <= MAX_WIDTH and s.kernel in KERNELS
                   for s in g.stages)
        assert all(s.expansion == 1 for s in g.stages if s.block != "inverted_residual")


def test_draws_are_deterministic_per_seed_and_differ_between_seeds():
    assert _draws(7, 20) == _draws(7, 20)
    assert _draws(7, 20) != _draws(8, 20)


def test_draws_are_diverse_and_cover_every_categorical_choice():
    draws = _draws(1)
    assert len({render(g) for g in draws}) == N  # no repeats in 300 draws of a huge space
    stages = [s for g in draws for s in g.stages]
    assert {len(g.stages) for g in draws} == set(range(1, MAX_STAGES + 1))
    assert {s.block for s in stages} == {"plain", "residual", "dwsep", "inverted_residual"}
    assert {s.kernel for s in stages} == set(KERNELS) and {s.se for s in stages} == {True, False}
    assert {g.norm for g in draws} == {"batch", "group", "none"}
    assert {g.act for g in draws} == {"relu", "silu", "hardswish", "gelu"}
    assert {g.pool for g in draws} == {"avg", "max"} and {g.stem_stride for g in draws} == {1, 2}
    # Uniform, not clustered near the Template: widths span the range, about evenly.
    widths = [s.width for s in stages]
    assert min(widths) <= 64 and max(widths) >= 448
    assert 0.35 < sum(w > MAX_WIDTH // 2 for w in widths) / len(widths) < 0.65
