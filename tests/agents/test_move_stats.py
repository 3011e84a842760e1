"""Per-move statistics: the diff -> move classifier and the effects credited to each move."""

from __future__ import annotations

import random

import pytest

from agents import designer
from agents.move_stats import collapsed, effects_table, move_stats, neutral_band
from agents.records import Evaluation, Fidelity
from agents.settings import Settings
from evaluation.report import EvaluationReport
from tasks.genome import TEMPLATE_GENOME, Genome, random_genome
from tasks.mutations import MUTATIONS, classify_moves
from tests.fakes.reports import make_record, make_report

T = TEMPLATE_GENOME


def _genomes() -> list[Genome]:
    rng = random.Random(7)
    return [T] + [random_genome(rng) for _ in range(60)]


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_classifier_names_every_mutation(name: str) -> None:
    applied = 0
    for i, g in enumerate(_genomes()):
        child = MUTATIONS[name](g, random.Random(i))
        if child == g:
            assert classify_moves(g, child) == []
            continue
        applied += 1
        got = classify_moves(g, child)
        # Only an identical result of another move may be named instead (for example
        # widen_early on a one-stage genome widens everything, exactly as widen does).
        assert got == [name] or (len(got) == 1 and
                                 MUTATIONS[got[0]](g, random.Random(i)) == child), got
    assert applied >= 10  # the move was exercised, not skipped


def test_classifier_reads_an_llm_style_multi_change_design() -> None:
    stages = [s.model_dump() for s in T.stages]
    stages[1].update(block="dwsep", se=True)
    stages[3].update(kernel=5)
    child = Genome.model_validate({**T.model_dump(), "stages": stages, "act": "silu",
                                   "dropout": 0.0})
    assert classify_moves(T, child) == ["depthwise_separable", "add_se", "bigger_kernel",
                                        "less_dropout", "to_silu"]
    assert classify_moves(child, child) == []


def _child(cid: str, genome: Genome, report: dict | None, parent: str = "c000",
           origin: str = "designer"):
    return make_record(cid, report, genome=genome, origin=origin, parent=parent)


def _history() -> dict:
    r = random.Random(0)
    return {
        "c000": make_record("c000", make_report(bal=0.50), origin="template"),
        "c001": _child("c001", MUTATIONS["widen"](T, r), make_report(bal=0.60, latency=2.0)),
        "c002": _child("c002", MUTATIONS["add_se"](T, r), make_report(bal=0.40)),
        "c003": _child("c003", MUTATIONS["to_groupnorm"](T, r), make_report(failed="train")),
        "c004": _child("c004", Genome.model_validate({**T.model_dump(), "norm": "group"}),
                       make_report(bal=0.125)),  # collapsed to chance
        "c005": _child("c005", MUTATIONS["to_silu"](T, r), make_report(bal=0.51)),
        "c006": _child("c006", MUTATIONS["more_dropout"](T, r),
                       make_report(bal=0.50, sex={"female": 0.5, "male": 0.7})),
    }


def test_stats_count_tries_failures_collapses_and_effects() -> None:
    stats = move_stats(_history())
    widen = stats["widen"]
    assert (widen.tries, widen.failures, widen.helped) == (1, 0, 1)
    assert widen.mean("balanced_accuracy") == pytest.approx(0.10)
    assert widen.mean("score") == pytest.approx(0.10)
    assert widen.mean("latency_ms") == pytest.approx(1.0)
    assert stats["add_se"].hurt == 1 and stats["add_se"].mean("score") == pytest.approx(-0.10)
    norm = stats["to_groupnorm"]
    assert (norm.tries, norm.failures, norm.successes) == (2, 2, 0)  # a failure and a collapse
    assert norm.mean("score") is None
    # A 0.2 sex gap is +0.1 mean max_gap: unfairness up, score down by the same.
    drop = stats["more_dropout"]
    assert drop.mean("unfairness") == pytest.approx(0.10)
    assert drop.mean("score") == pytest.approx(-0.10)
    assert move_stats(_history(), unfairness_weight=0.0)["more_dropout"].mean("score") == 0.0
    assert "template" not in {s.move for s in stats.values()}


def test_effects_within_noise_are_neutral() -> None:
    assert move_stats(_history(), noise_sd=0.03)["to_silu"].neutral == 1
    act = move_stats(_history(), noise_sd=0.005)["to_silu"]
    assert (act.helped, act.neutral) == (1, 0)
    assert move_stats(_history(), noise_sd=0.2)["widen"].helped == 0


def _promoted(rec, bals: list[float]):
    """``rec`` with confirmation runs at the given balanced accuracies (same fidelity)."""
    fid = Fidelity(epochs=5, batch_size=64, seed=0, image_size=32, n_images=400)
    runs = [Evaluation(fidelity=fid.model_copy(update={"seed": i + 1}),
                       report=EvaluationReport.model_validate(make_report(bal=b)))
            for i, b in enumerate(bals)]
    return rec.model_copy(update={"fidelity": fid, "confirmations": runs})


def test_promoted_designs_are_credited_with_their_seed_means() -> None:
    hist = _history()
    fid = Fidelity(epochs=5, batch_size=64, seed=0, image_size=32, n_images=400)
    hist["c000"] = _promoted(hist["c000"], [0.52, 0.48])  # Template mean 0.50
    # widen screened at 0.60 (+0.10, "helped"); its two more seeds say 0.49 and 0.50.
    hist["c001"] = _promoted(hist["c001"], [0.49, 0.50])
    hist["c002"] = hist["c002"].model_copy(update={"fidelity": fid})
    stats = move_stats(hist)
    widen = stats["widen"]
    assert widen.mean("balanced_accuracy") == pytest.approx(0.03)  # mean 0.53 - 0.50
    assert widen.mean("score") == pytest.approx(0.03)
    assert (widen.helped, widen.neutral) == (1, 0)  # beyond the narrower band of 3 v 3 seeds
    assert neutral_band(hist["c001"], hist["c000"], 0.05) == pytest.approx(0.05 / 3 ** 0.5)
    # A screened child against a promoted parent: one side single, the other a mean.
    assert neutral_band(hist["c002"], hist["c000"], 0.05) == pytest.approx(
        0.05 * ((1 + 1 / 3) / 2) ** 0.5)
    assert stats["add_se"].mean("score") == pytest.approx(-0.10)


def test_only_equal_fidelity_pairs_count_and_fixes_use_the_ancestor() -> None:
    hist = _history()
    fid = Fidelity(epochs=2, batch_size=32, seed=0, image_size=32, n_images=200)
    hist["c000"] = hist["c000"].model_copy(update={"fidelity": fid})
    hist["c001"] = hist["c001"].model_copy(update={"fidelity": fid.model_copy(
        update={"seed": 5})})  # another training seed: still comparable
    hist["c002"] = hist["c002"].model_copy(update={"fidelity": fid.model_copy(
        update={"epochs": 6})})  # more epochs: not comparable
    # The fixer repaired c003 (a failed to_groupnorm design) by also shrinking it.
    fixed = MUTATIONS["shrink_width"](Genome.model_validate({**T.model_dump(), "norm": "group"}),
                                      random.Random(0))
    hist["c007"] = _child("c007", fixed, make_report(bal=0.45), parent="c003",
                          origin="fixer").model_copy(update={"fidelity": fid})
    stats = move_stats(hist)
    assert stats["widen"].tries == 1 and stats["widen"].mean("score") == pytest.approx(0.1)
    assert "add_se" not in stats
    assert stats["shrink_width"].tries == 1
    assert stats["to_groupnorm"].tries == 3 and stats["to_groupnorm"].successes == 1


def test_effects_table_lists_moves_with_numbers() -> None:
    table = effects_table(move_stats(_history()), 0.03)
    assert "no move" in effects_table({}, 0.03)
    row = next(line for line in table.splitlines() if line.startswith("widen |"))
    assert row == "widen | 1 | 0 | 1/0/0 | +0.100 | +0.000 | +1.00 | +0.100"
    assert table.splitlines()[2].startswith("to_groupnorm | 2 | 2 |")  # most tried first


def test_designer_brief_and_fallback_carry_the_evidence() -> None:
    hist = _history()
    state = {"candidates": hist, "order": list(hist), "archive": ["c001", "c005"],
             "round": 7, "noise_sd": 0.02}
    settings = Settings()
    v = designer.view(state, settings)
    brief = designer.brief(v, settings)
    assert "widen | 1 | 0 | 1/0/0" in brief["move_effects"] and "0.020" in brief["move_effects"]
    answer = designer.Design.model_validate(designer.fallback(v, settings))
    assert answer.parent in ("c001", "c005")  # a front member, not only the best
    out = designer.apply(answer, "heuristic", v, settings)
    assert out.update["candidates"][v.candidate].parent == answer.parent
    # An LLM answer naming no parent (or an unknown one) keeps the best design as parent.
    llm = designer.Design(rationale="r", code=answer.code, parent="nope")
    assert designer.apply(llm, "m", v, settings).update["candidates"][v.candidate].parent == \
        v.data["best_id"]


def test_collapse_to_one_predicted_class_is_a_failure() -> None:
    def rec(bal: float, confusion: list[list[int]]):
        report = make_report(bal=bal)
        report["metrics"]["confusion"] = confusion
        return make_record("c1", report)

    one_class = [[5, 0, 0], [4, 0, 0], [6, 0, 0]]  # 3 classes present, all predicted as 0
    assert collapsed(rec(0.125, []))
    assert collapsed(rec(1 / 7, [[1] + [0] * 6] * 7))  # 7 classes present, chance 1/7
    assert collapsed(rec(0.40, one_class))
    assert not collapsed(rec(0.40, [[5, 0, 0], [1, 3, 0], [2, 0, 4]]))
    assert not collapsed(rec(0.40, []))
