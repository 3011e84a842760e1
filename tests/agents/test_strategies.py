"""Random search and regularised evolution: what they draw and whom they pick as parent."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from agents import designer, heuristic
from agents.heuristic import genome_key
from agents.records import tried_keys
from agents.settings import Settings
from agents.strategies import (
    draw_untried,
    fits,
    mutate_untried,
    population,
    propose,
    tournament,
)
from evaluation.report import Budgets
from tasks.genome import TEMPLATE_GENOME, estimate_params, parse_genome, random_genome
from tests.fakes.reports import make_record, make_report


def _history(bals: list[float]) -> tuple[dict, list[str]]:
    """Candidates c000.. with these balanced accuracies, each a different design."""
    rng = random.Random(3)
    cands = {}
    for i, bal in enumerate(bals):
        cid = f"c{i:03d}"
        genome = TEMPLATE_GENOME if i == 0 else random_genome(rng)
        cands[cid] = make_record(cid, make_report(cid=cid, bal=bal), genome=genome)
    return cands, list(cands)


def test_random_proposals_fit_the_counted_budget_and_are_never_tried_before():
    budgets, tried = Budgets(max_params=100_000), set()
    rng = random.Random(0)
    for _ in range(30):
        genome, draws = draw_untried(rng, tried, budgets, 32)
        assert genome_key(genome) not in tried and draws >= 1
        assert estimate_params(genome, 8) <= 100_000
        tried.add(genome_key(genome))
    assert not fits(TEMPLATE_GENOME, Budgets(max_params=1000), 32)


def test_random_strategy_is_deterministic_per_seed_and_skips_tried_designs():
    settings = Settings(strategy="random")
    first = propose({"candidates": {}}, settings, random.Random(5))
    assert first.brain == "random" and first.parent is None
    assert propose({"candidates": {}}, settings, random.Random(5)) == first
    assert propose({"candidates": {}}, settings, random.Random(6)).genome != first.genome
    seen = {"c009": make_record("c009", None, genome=first.genome)}
    again = propose({"candidates": seen}, settings, random.Random(5))
    assert again.genome != first.genome  # same seed, but that design was tried


def test_population_is_the_newest_designs_that_evaluated_ok():
    cands, order = _history([0.5, 0.6, 0.7, 0.4, 0.3])
    cands["c005"] = make_record("c005", make_report(cid="c005", failed="train"))
    cands["c006"] = make_record("c006", make_report(cid="c006", bal=0.9), origin="baseline")
    order += ["c005", "c006"]
    assert population(cands, order, 3) == ["c002", "c003", "c004"]
    assert population(cands, order, 10) == ["c000", "c001", "c002", "c003", "c004"]


def test_tournament_parent_is_the_best_of_its_sample_and_the_sample_is_uniform():
    cands, order = _history([0.9, 0.5, 0.6, 0.7, 0.4, 0.3])
    pop = population(cands, order, 4)  # c002..c005: the best-ever c000 has aged out
    parents, members = set(), set()
    for seed in range(60):
        sample, parent = tournament(cands, pop, 2, random.Random(seed), 1.0)
        assert len(sample) == 2 and set(sample) <= set(pop)
        assert parent == max(sample, key=lambda c: cands[c].report.metrics.balanced_accuracy)
        parents.add(parent)
        members.update(sample)
    assert members == set(pop)  # every member gets sampled
    assert parents == {"c002", "c003", "c004"}  # the worst member c005 never wins a sample
    # A sample as large as the population or larger is all of it: the best member wins.
    assert tournament(cands, pop, 9, random.Random(0), 1.0) == (pop, "c003")


def test_evolution_draws_randomly_until_the_population_is_full_then_mutates_its_parent():
    settings = Settings(strategy="evolution", population=4, sample_size=2)
    cands, order = _history([0.5, 0.6, 0.7])
    young = propose({"candidates": cands, "order": order}, settings, random.Random(0))
    assert young.parent is None and "3 of 4 designs evaluated ok" in young.rationale
    cands, order = _history([0.9, 0.5, 0.6, 0.7, 0.4])
    for seed in range(10):
        p = propose({"candidates": cands, "order": order}, settings, random.Random(seed))
        assert p.brain == "evolution" and p.parent in ("c001", "c002", "c003", "c004")
        assert f"parent {p.parent} (best of the sample)" in p.rationale
        assert genome_key(p.genome) not in set(tried_keys(cands))
        parent = parse_genome(cands[p.parent].code)
        assert p.genome != parent and "mutation " in p.rationale


def test_mutate_untried_skips_tried_children_and_reports_exhaustion():
    rng = random.Random(0)
    child, move = mutate_untried(TEMPLATE_GENOME, rng, set(), Budgets(), 32)
    assert child != TEMPLATE_GENOME and move
    everything = {genome_key(m(TEMPLATE_GENOME, random.Random(s)))
                  for m in heuristic.MUTATIONS.values() for s in range(40)}
    assert mutate_untried(TEMPLATE_GENOME, rng, everything, Budgets(), 32) is None


def test_seeds_default_to_seed_and_a_strategy_must_be_known():
    s = Settings(seed=4)
    assert (s.resolved_train_seed, s.resolved_search_seed) == (4, 4)
    s = Settings(seed=4, train_seed=1, search_seed=2)
    assert (s.seed, s.resolved_train_seed, s.resolved_search_seed) == (4, 1, 2)
    assert Settings.from_json(s.to_json()) == s
    with pytest.raises(ValidationError):
        Settings(strategy="annealing")


def _design(settings: Settings) -> str:
    state = {"round": 1, "candidates": {"c000": make_record("c000", make_report(cid="c000"))},
             "order": ["c000"], "critiques": [None], "notes": []}
    v = designer.view(state, settings)
    return designer.Design.model_validate(designer.fallback(v, settings)).code


def test_search_seed_changes_only_the_proposals_and_defaults_keep_todays_heuristic(
        monkeypatch):
    c000 = make_record("c000", make_report(cid="c000"))
    today = heuristic.design({"best": {"code": c000.code}, "critique": None, "notes": [],
                              "tried": tried_keys({"c000": c000})},
                             random.Random("0:design:2"))["code"]  # seeded_rng(seed, ..., round)
    assert _design(Settings()) == today == _design(Settings(train_seed=9))
    for strategy in ("random", "evolution"):
        base = _design(Settings(strategy=strategy))
        assert base == _design(Settings(strategy=strategy, search_seed=0, train_seed=3))
        assert base != _design(Settings(strategy=strategy, search_seed=1))
    # The agents' heuristic Designer draws from the search seed too.
    seen: list[float] = []
    monkeypatch.setattr(heuristic, "design", lambda brief, rng: seen.append(rng.random())
                        or {"rationale": "x", "code": today})
    for kw in ({}, {"search_seed": 0}, {"search_seed": 1}, {"seed": 1, "search_seed": 0}):
        _design(Settings(**kw))
    assert seen[0] == seen[1] == seen[3] != seen[2]
