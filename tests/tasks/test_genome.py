import random

import pytest
import torch
from pydantic import ValidationError

from tasks.genome import (
    CHOICES,
    TEMPLATE_GENOME,
    Genome,
    Stage,
    choices_text,
    estimate_macs,
    estimate_params,
    genome_summary,
    parse_genome,
    render,
)
from tasks.models import build_from_source
from tasks.mutations import ACT_MOVES, MUTATIONS, NORM_MOVES, POOL_MOVES

REQUIRED_MUTATIONS = {
    "shrink_width", "widen", "widen_early", "deeper", "shallower", "depthwise_separable",
    "inverted_residual", "add_se", "add_residual", "to_batchnorm", "to_groupnorm", "no_norm",
    "to_relu", "to_silu", "to_hardswish", "to_gelu", "to_avg_pool", "to_max_pool",
    "bigger_kernel", "smaller_kernel", "more_dropout", "less_dropout",
}
# Caps that keep the random walk's models small enough for a fast test (Template: 12M MACs).
PARAM_CAP, MACS_CAP = 1_000_000, 40_000_000


def random_walk(seed: int, steps: int = 50) -> list[Genome]:
    """Genomes visited by applying random mutations, skipping models over the caps."""
    rng = random.Random(seed)
    genome, seen = TEMPLATE_GENOME, [TEMPLATE_GENOME]
    for _ in range(steps):
        child = MUTATIONS[rng.choice(sorted(MUTATIONS))](genome, rng)
        assert isinstance(child, Genome)
        if estimate_params(child, 8) <= PARAM_CAP and estimate_macs(child) <= MACS_CAP:
            genome = child
            if genome not in seen:
                seen.append(genome)
    return seen


WALK = random_walk(1) + random_walk(2)[1:]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def blocks(g: Genome) -> int:
    return sum(s.depth for s in g.stages)


def count(g: Genome, **attrs: object) -> int:
    return sum(all(getattr(s, k) == v for k, v in attrs.items()) for s in g.stages)


def downsamples(g: Genome) -> int:
    return (g.stem_stride == 2) + count(g, stride=2)


def test_template_is_a_small_plain_cnn():
    g = TEMPLATE_GENOME
    assert [s.width for s in g.stages] == [16, 32, 64, 128]
    assert {s.block for s in g.stages} == {"plain"} and {s.kernel for s in g.stages} == {3}
    assert (g.norm, g.act) == ("batch", "relu")
    assert 100_000 <= estimate_params(g, 8) <= 250_000


def test_walk_explores_the_choices():
    assert len(WALK) > 40
    assert {s.block for g in WALK for s in g.stages} == {
        "plain", "residual", "dwsep", "inverted_residual"}
    assert {g.norm for g in WALK} == {"batch", "group", "none"}
    assert any(s.se for g in WALK for s in g.stages)


def test_walk_genomes_build_run_and_round_trip():
    torch.manual_seed(0)
    for g in WALK:
        source = render(g)
        assert render(g) == source  # deterministic
        assert parse_genome(source) == g
        model = build_from_source(source, 8)
        assert n_params(model) == estimate_params(g, 8), genome_summary(g)
        model.train()
        out = model(torch.randn(2, 3, 64, 64))
        assert out.shape == (2, 8)
        out.sum().backward()
        model.eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, 32, 32))
        assert out.shape == (1, 8) and torch.isfinite(out).all()


def test_mutations_are_named_and_deterministic():
    assert REQUIRED_MUTATIONS <= set(MUTATIONS)
    for name, mutate in MUTATIONS.items():
        assert mutate(WALK[7], random.Random(3)) == mutate(WALK[7], random.Random(3)), name


def test_every_mutation_changes_the_template_when_it_can():
    unchanged = {name for name, mutate in MUTATIONS.items()
                 if mutate(TEMPLATE_GENOME, random.Random(0)) == TEMPLATE_GENOME}
    # The Template's kernels are already the smallest; it has BatchNorm, ReLU, avg pooling.
    assert unchanged == {"smaller_kernel", "to_batchnorm", "to_relu", "to_avg_pool"}


# What each mutation promises, checked whenever it changed the genome.
PROMISES = {
    "shrink_width": lambda a, b: estimate_params(b, 8) < estimate_params(a, 8),
    "widen": lambda a, b: estimate_params(b, 8) > estimate_params(a, 8),
    "widen_early": lambda a, b: estimate_params(b, 8) > estimate_params(a, 8)
    and (len(a.stages) == 1 or b.stages[-1] == a.stages[-1]),
    "deeper": lambda a, b: blocks(b) == blocks(a) + 1,
    "shallower": lambda a, b: blocks(b) < blocks(a),
    "depthwise_separable": lambda a, b: count(b, block="dwsep") == count(a, block="dwsep") + 1,
    "inverted_residual": lambda a, b: count(b, block="inverted_residual")
    == count(a, block="inverted_residual") + 1,
    "add_se": lambda a, b: count(b, se=True) == count(a, se=True) + 1,
    "add_residual": lambda a, b: count(b, block="residual") == count(a, block="residual") + 1,
    **{move: (lambda value: lambda a, b: b.norm == value and a.stages == b.stages)(norm)
       for norm, move in NORM_MOVES.items()},
    **{move: (lambda value: lambda a, b: b.act == value and a.stages == b.stages)(act)
       for act, move in ACT_MOVES.items()},
    **{move: (lambda value: lambda a, b: b.pool == value and a.stages == b.stages)(pool)
       for pool, move in POOL_MOVES.items()},
    "bigger_kernel": lambda a, b: sum(s.kernel for s in b.stages)
    == sum(s.kernel for s in a.stages) + 2,
    "smaller_kernel": lambda a, b: sum(s.kernel for s in b.stages)
    == sum(s.kernel for s in a.stages) - 2,
    "more_dropout": lambda a, b: b.dropout == round(a.dropout + 0.1, 2),
    "less_dropout": lambda a, b: b.dropout == round(a.dropout - 0.1, 2),
    "more_downsampling": lambda a, b: downsamples(b) == downsamples(a) + 1,
    "less_downsampling": lambda a, b: downsamples(b) == downsamples(a) - 1,
}


def test_mutations_do_what_they_say():
    assert set(PROMISES) == set(MUTATIONS)
    rng = random.Random(5)
    changed = set()
    for g in WALK:
        for name, mutate in MUTATIONS.items():
            child = mutate(g, rng)
            if child != g:
                changed.add(name)
                assert PROMISES[name](g, child), (name, genome_summary(g), genome_summary(child))
    assert changed == set(MUTATIONS)


def test_mutations_return_the_same_genome_at_the_limits():
    tiny = Genome(stem_width=8, stages=[Stage(width=8, depth=1)], dropout=0.0)
    rng = random.Random(0)
    for name in ("shrink_width", "shallower", "smaller_kernel", "less_dropout"):
        assert MUTATIONS[name](tiny, rng) == tiny, name
    full = Genome(stem_width=16, stem_stride=2, dropout=0.5,
                  stages=[Stage(width=16, depth=4, stride=2) for _ in range(4)])
    for name in ("deeper", "more_downsampling", "more_dropout"):
        assert MUTATIONS[name](full, rng) == full, name


def test_genome_validation():
    with pytest.raises(ValidationError):
        Stage(width=20, depth=1)  # not a multiple of 8
    with pytest.raises(ValidationError):
        Stage(width=16, depth=1, kernel=4)
    with pytest.raises(ValidationError):
        Genome(stem_width=16, stages=[Stage(width=16, depth=6)] * 3)  # 18 blocks
    with pytest.raises(ValidationError):
        Genome(stem_width=16, stem_stride=2, stages=[Stage(width=16, depth=1)] * 5)  # 6 x /2
    with pytest.raises(ValidationError):
        Genome(stem_width=16, stages=[])
    with pytest.raises(ValidationError):
        Genome(stem_width=16, stages=[Stage(width=16, depth=1)], dropout=0.9)
    # Expansion only exists for inverted residuals; dropout sums are rounded.
    assert Stage(width=16, depth=1, block="dwsep", expansion=6).expansion == 1
    g = Genome(stem_width=16, stages=[Stage(width=16, depth=1)], dropout=0.1 + 0.2)
    assert g.dropout == 0.3


@pytest.mark.parametrize("source", [
    "",
    "def build_model(n):\n    pass\n",
    "GENOME = {",  # syntax error
    "GENOME = dict(stem_width=16)\n",  # not a literal
    render(TEMPLATE_GENOME).replace('"stem_width": 16', '"stem_width": 17'),
    render(TEMPLATE_GENOME).replace('"norm": "batch"', '"norm": "layer"'),
    render(TEMPLATE_GENOME).replace('"act": "relu",', '"act": "relu", "extra": 1,'),
])
def test_parse_genome_rejects_missing_or_invalid(source):
    assert parse_genome(source) is None


def test_parse_genome_reads_an_edited_literal():
    edited = render(TEMPLATE_GENOME).replace('"act": "relu"', '"act": "silu"')
    assert parse_genome(edited) == TEMPLATE_GENOME.model_copy(update={"act": "silu"})
    rendered = render(TEMPLATE_GENOME)
    assert "GENOME: dict[str, Any] = {" in rendered  # annotated, so mypy types the reads
    plain = rendered.replace("GENOME: dict[str, Any] = {", "GENOME = {")
    assert plain != rendered and parse_genome(plain) == TEMPLATE_GENOME


def test_choices_text_and_summary():
    text = choices_text()
    for name in CHOICES:
        assert f"- {name}:" in text
    for word in ("inverted_residual", "dwsep", "hardswish", "group"):
        assert word in text
    summary = genome_summary(TEMPLATE_GENOME)
    assert "\n" not in summary and "128x1" in summary and "relu" in summary


def test_estimate_macs_matches_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    for g in WALK[::9]:
        model = build_from_source(render(g), 8).eval()
        for size in (64, 33):
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(torch.randn(1, 3, size, size))
            assert counter.get_total_flops() == 2 * estimate_macs(g, size), genome_summary(g)
