"""Search strategies besides the agents: random search and regularised evolution.

``--strategy agents`` (the default) lets the Critic and the Designer's brain propose each
round's design. The two baselines here replace only that proposal; the Designer node,
gate, Code-Fixer, evaluation and stop rules stay the same (docs/architecture.md,
"Search strategies"). No LLM is asked, and every draw comes from the run's search seed.

* ``random``: a genome drawn uniformly from the Choices (:func:`tasks.genome.random_genome`)
  that was not tried before.
* ``evolution``: regularised (aging) evolution (Real et al., AAAI 2019) over the run's
  history: random genomes until ``population`` designs evaluated ok; then the newest
  ``population`` evaluated designs form the population (older ones have aged out),
  ``sample_size`` of them are drawn uniformly, the best of the sample by the run's
  selection score (:func:`agents.records.select_best`) is the parent, and the child is
  one uniformly drawn mutation (:data:`tasks.mutations.MUTATIONS`) not tried before.

Both skip draws the gate would refuse for certain: designs whose analytic parameter or
FLOP count (:func:`tasks.genome.estimate_params`, ``estimate_macs``) breaks a budget, so
an evaluation is not spent on them (the budget-constrained random search of NAS
benchmarks). When no draw fits, an untried one that does not fit is proposed and the
Code-Fixer shrinks it as for any other design.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agents.heuristic import genome_key
from agents.records import Candidate, select_best, tried_keys
from agents.settings import Settings
from evaluation.report import Budgets
from tasks.genome import (
    Genome,
    estimate_macs,
    estimate_params,
    genome_summary,
    parse_genome,
    random_genome,
)
from tasks.mutations import MUTATIONS

#: Uniform draws tried before giving up on one that fits the budgets (about 7 % of the
#: Choices fit the default 200k-parameter budget, so 2000 draws almost never run out).
MAX_DRAWS = 2000
NUM_CLASSES = 8


@dataclass(frozen=True)
class Proposal:
    """One round's design as a strategy proposes it."""

    genome: Genome
    rationale: str
    parent: str | None
    """The candidate it was derived from (None: drawn from scratch)."""
    brain: str
    """``random`` or ``evolution`` (the record's and the trace's ``brain``)."""


def fits(genome: Genome, budgets: Budgets, image_size: int) -> bool:
    """Tell whether the analytic parameter and FLOP counts meet the budgets that bound them.

    Latency and memory are measured, not counted, so only the gate can judge them.
    """
    if budgets.max_params is not None and estimate_params(genome, NUM_CLASSES) > budgets.max_params:
        return False
    # FLOPs as the gate counts them: torch's FlopCounterMode reports 2 x MACs.
    return budgets.max_flops is None or \
        2 * estimate_macs(genome, image_size, NUM_CLASSES) <= budgets.max_flops


def draw_untried(rng: random.Random, tried: set[str], budgets: Budgets,
                 image_size: int) -> tuple[Genome, int]:
    """Draw uniform genomes until one is untried and fits the budgets.

    Returns:
        The genome and the number of draws it took.

    Raises:
        RuntimeError: No untried genome in ``MAX_DRAWS`` draws (never seen in practice).
    """
    spare: tuple[Genome, int] | None = None
    for n in range(1, MAX_DRAWS + 1):
        genome = random_genome(rng)
        if genome_key(genome) in tried:
            continue
        if fits(genome, budgets, image_size):
            return genome, n
        spare = spare or (genome, n)
    if spare is None:
        raise RuntimeError(f"no untried genome in {MAX_DRAWS} uniform draws")
    return spare


def mutate_untried(parent: Genome, rng: random.Random, tried: set[str], budgets: Budgets,
                   image_size: int) -> tuple[Genome, str] | None:
    """Apply one uniformly drawn mutation that yields an untried genome.

    The mutations are tried in a uniformly shuffled order; the first whose child is new
    and fits the budgets wins, else the first whose child is new.

    Returns:
        The child and the mutation's name, or None when every mutation gives the parent
        itself or a genome already tried.
    """
    names = sorted(MUTATIONS)
    rng.shuffle(names)
    spare: tuple[Genome, str] | None = None
    for name in names:
        child = MUTATIONS[name](parent, rng)
        if child == parent or genome_key(child) in tried:
            continue
        if fits(child, budgets, image_size):
            return child, name
        spare = spare or (child, name)
    return spare


def population(candidates: Mapping[str, Candidate], order: Sequence[str],
               size: int) -> list[str]:
    """Return the newest ``size`` designs that evaluated ok (baselines are references only)."""
    alive = [cid for cid in order if (rec := candidates.get(cid)) is not None and rec.ok
             and rec.origin != "baseline"]
    return alive[-size:]


def tournament(candidates: Mapping[str, Candidate], pop: Sequence[str], sample_size: int,
               rng: random.Random, unfairness_weight: float) -> tuple[list[str], str]:
    """Draw ``sample_size`` members of ``pop`` (at most all) uniformly; the best is the parent.

    Returns:
        The sample (in population order) and the parent's id.
    """
    sample = sorted(rng.sample(list(pop), min(sample_size, len(pop))), key=list(pop).index)
    parent = select_best({cid: candidates[cid] for cid in sample}, unfairness_weight)
    assert parent is not None  # every member evaluated ok, so every one has a score
    return sample, parent


def propose_random(rng: random.Random, tried: set[str], settings: Settings) -> Proposal:
    """Random search: an untried genome drawn uniformly from the Choices."""
    genome, draws = draw_untried(rng, tried, settings.budgets, settings.image_size)
    return Proposal(genome=genome, parent=None, brain="random",
                    rationale=f"random search: uniform draw from the Choices ({draws} "
                    f"draw(s) to find an untried design within the counted budgets): "
                    f"{genome_summary(genome)}")


def propose_evolution(rng: random.Random, tried: set[str],
                      candidates: Mapping[str, Candidate], order: Sequence[str],
                      settings: Settings) -> Proposal:
    """Regularised evolution: mutate the best of a uniform sample of the newest designs."""
    pop = population(candidates, order, settings.population)
    if len(pop) < settings.population:
        genome, draws = draw_untried(rng, tried, settings.budgets, settings.image_size)
        return Proposal(genome=genome, parent=None, brain="evolution",
                        rationale=f"evolution: {len(pop)} of {settings.population} designs "
                        f"evaluated ok, so a uniform random draw ({draws} draw(s)): "
                        f"{genome_summary(genome)}")
    sample, parent_id = tournament(candidates, pop, settings.sample_size, rng,
                                   settings.unfairness_weight)
    parent = parse_genome(candidates[parent_id].code)
    child = mutate_untried(parent, rng, tried, settings.budgets, settings.image_size) \
        if parent is not None else None
    if child is None:
        # The parent is custom code, or every neighbour was tried: start a new lineage.
        genome, draws = draw_untried(rng, tried, settings.budgets, settings.image_size)
        return Proposal(genome=genome, parent=None, brain="evolution",
                        rationale=f"evolution: population {', '.join(pop)}, sample "
                        f"{', '.join(sample)}, parent {parent_id} has no untried mutation, "
                        f"so a uniform random draw ({draws} draw(s)): {genome_summary(genome)}")
    genome, move = child
    return Proposal(genome=genome, parent=parent_id, brain="evolution",
                    rationale=f"evolution: population {', '.join(pop)} (newest "
                    f"{settings.population} evaluated), sample {', '.join(sample)}, parent "
                    f"{parent_id} (best of the sample), mutation {move}: "
                    f"{genome_summary(genome)}")


def propose(state: Mapping[str, Any], settings: Settings, rng: random.Random) -> Proposal:
    """Propose the next design with ``settings.strategy`` (``random`` or ``evolution``).

    Args:
        state: The graph state (``candidates``, ``order``).
        settings: The run's settings (strategy, population, sample size, budgets).
        rng: Generator seeded by the search seed and the round.

    Raises:
        ValueError: ``settings.strategy`` is ``agents`` (the Designer's brain proposes).
    """
    candidates: Mapping[str, Candidate] = state.get("candidates") or {}
    tried = set(tried_keys(candidates))
    if settings.strategy == "random":
        return propose_random(rng, tried, settings)
    if settings.strategy == "evolution":
        return propose_evolution(rng, tried, candidates, state.get("order") or [], settings)
    raise ValueError(f"strategy {settings.strategy!r} proposes through the Designer's brain")
