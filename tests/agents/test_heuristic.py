"""The offline brains react to the reports: budgets, lagging groups, no repeats."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from agents import heuristic, move_prior, policy
from agents.critic import Critique
from agents.move_prior import MovePrior, PriorTable
from agents.move_stats import move_stats
from agents.records import headline, select_best, tried_keys
from evaluation.report import Budgets
from tasks.genome import TEMPLATE_GENOME, estimate_params, parse_genome, render
from tests.fakes.reports import make_record, make_report


def _brief(report: dict, best_report: dict | None = None, **targets: float) -> dict:
    latest = headline(make_record("c001", report))
    best = headline(make_record("c000", best_report or report))
    return {"latest": latest, "best": best, "budgets": {}, "targets": targets}


def test_critic_names_violated_budget_with_numbers_first():
    rep = make_report(latency=5.0, params=300_000,
                      budgets=Budgets(max_latency_ms=2.0, max_params=200_000))
    crit = heuristic.critique(_brief(rep))
    assert crit["violated_budgets"][0].startswith("latency 5.00 ms > 2 ms")
    assert any("params" in v for v in crit["violated_budgets"])
    assert crit["priorities"][:2] == ["meet the latency budget", "meet the params budget"]
    assert not crit["converged"]


def test_critic_finds_lagging_group_with_gap():
    rep = make_report(acc=0.70, age={"<40": 0.80, "40-59": 0.72, ">=60": 0.55})
    crit = heuristic.critique(_brief(rep))
    worst = crit["lagging_groups"][0]
    assert (worst["attribute"], worst["group"]) == ("age", ">=60")
    assert abs(worst["gap"] - 0.15) < 1e-6
    assert all(g["group"] != "<40" for g in crit["lagging_groups"])
    assert "close the accuracy gap of lagging groups" in crit["priorities"]


def test_critic_ignores_a_lag_whose_interval_includes_zero():
    rep = make_report(acc=0.70, age={"<40": 0.80, "40-59": 0.72, ">=60": 0.55})
    groups = rep["fairness"]["age"]["groups"]
    groups[2]["gap_interval"] = [-0.05, 0.40]  # a small, noisy group: not a measured lag
    groups[1]["gap_interval"] = [-0.02, 0.06]
    crit = heuristic.critique(_brief(rep))
    assert crit["lagging_groups"] == [] and "lagging" not in crit["summary"]
    groups[2]["gap_interval"] = [0.05, 0.25]  # the same lag, measured
    crit = heuristic.critique(_brief(rep))
    assert [g["group"] for g in crit["lagging_groups"]] == [">=60"]
    # Every shown gap carries its interval and group sizes in the headline.
    head = headline(make_record("c001", rep))
    assert head["groups"]["age"][2] == {"group": ">=60", "count": 50, "accuracy": 0.55,
                                        "gap_interval": [0.05, 0.25]}
    # With the group's expected accuracy from its class mix, the critique says how much
    # of the lag that explains (0.70 - 0.60 of the 0.15).
    groups[2]["expected_accuracy"] = 0.60
    head = headline(make_record("c001", rep))
    assert head["groups"]["age"][2]["expected_accuracy"] == 0.6
    crit = heuristic.critique(_brief(rep))
    assert crit["lagging_groups"][0]["from_class_mix"] == pytest.approx(0.1)
    assert Critique.model_validate(crit).lagging_groups[0].from_class_mix == pytest.approx(0.1)
    assert "lags by 0.150 (acc 0.550; 0.100 of it from its class mix)" in \
        " ".join(crit["suggestions"])


def test_critic_converges_only_when_targets_set_and_met():
    rep = make_report(bal=0.8, sex={"female": 0.6, "male": 0.61})
    assert not heuristic.critique(_brief(rep))["converged"]  # no target set
    assert heuristic.critique(_brief(rep, balanced_accuracy=0.75, max_gap=0.05))["converged"]
    assert not heuristic.critique(_brief(rep, balanced_accuracy=0.9))["converged"]


def test_critic_reports_failure():
    crit = heuristic.critique(_brief(make_report(failed="train"), make_report()))
    assert "failed at train" in crit["summary"]


@pytest.fixture
def flat_prior(monkeypatch):
    """No measured prior: the plan and the run's own evidence alone steer the policy."""
    monkeypatch.setenv(move_prior.PRIOR_ENV, "none")


def _write_prior(path, **scores: float) -> str:
    table = PriorTable(measured="test", moves={
        m: MovePrior(move=m, seeds=4, balanced_accuracy=v, unfairness=0.0, score=v, params=1)
        for m, v in scores.items()})
    path.write_text(table.model_dump_json(), encoding="utf-8")
    return str(path)


def test_designer_shrinks_when_over_budget():
    base = render(TEMPLATE_GENOME)
    crit = {"violated_budgets": ["latency 5.00 ms > 2 ms"], "lagging_groups": [],
            "priorities": ["meet the latency budget"]}
    firsts = []
    for seed in range(20):
        out = heuristic.design({"best": {"code": base}, "critique": crit, "tried": []},
                               random.Random(seed))
        firsts.append(out["moves"][0])
        if out["moves"][0] in heuristic.COST_MOVES["latency"]:
            g = parse_genome(out["code"])
            assert estimate_params(g, 8) < estimate_params(TEMPLATE_GENOME, 8) or \
                g.stem_stride > TEMPLATE_GENOME.stem_stride or \
                any(s.block == "dwsep" for s in g.stages)
    # A violated budget puts the cost moves first, whatever the measured prior says of
    # their accuracy (the shipped prior rates every latency move below to_silu).
    assert all(m in heuristic.COST_MOVES["latency"] for m in firsts)


@pytest.mark.usefixtures("flat_prior")
def test_designer_adds_capacity_or_norm_for_lagging_group():
    crit = {"violated_budgets": [], "lagging_groups": [
        {"attribute": "sex", "group": "female", "accuracy": 0.5, "gap": 0.1}]}
    firsts = [heuristic.design({"best": {"code": render(TEMPLATE_GENOME)}, "critique": crit,
                                "tried": []}, random.Random(seed))["moves"][0]
              for seed in range(20)]
    assert sum(m in heuristic.FAIRNESS_MOVES for m in firsts) >= 16


def test_the_measured_prior_leads_the_first_moves_and_wears_the_fairness_plan_down(
        tmp_path, monkeypatch):
    monkeypatch.setenv(move_prior.PRIOR_ENV, _write_prior(
        tmp_path / "prior.json", to_gelu=0.15, widen_early=-0.15, add_se=-0.15,
        add_residual=-0.15, less_downsampling=-0.15, shrink_width=-0.2))
    base = {"best": {"code": render(TEMPLATE_GENOME)}, "tried": []}

    def firsts(crit: dict | None) -> Counter:
        return Counter(heuristic.design({**base, "critique": crit}, random.Random(seed))
                       ["moves"][0] for seed in range(20))
    # No problem in the critique: the evidence alone ranks, and to_gelu measured best.
    assert firsts(None)["to_gelu"] >= 16
    # A lagging group asks for fairness moves, but each was measured to hurt by 3 noise sd:
    # the worn-down bonus no longer carries them past the move that was measured to help.
    lag = {"violated_budgets": [], "lagging_groups": [
        {"attribute": "sex", "group": "female", "accuracy": 0.5, "gap": 0.1}]}
    assert firsts(lag)["to_gelu"] >= 16
    out = heuristic.design({**base, "critique": None}, random.Random(0))
    assert "on the Template it changed the score by +0.150" in out["rationale"]


def test_shipped_prior_is_complete_and_says_how_it_was_measured():
    table = PriorTable.model_validate_json(move_prior.DEFAULT_PATH.read_text())
    assert "python -m agents.move_prior" in table.measured and "bf16" in table.measured \
        or "fp32" in table.measured
    unchanged = {"smaller_kernel", "to_batchnorm", "to_relu", "to_avg_pool"}  # Template's own
    assert set(table.moves) == set(heuristic.MUTATIONS) - unchanged
    assert move_prior.load_prior("none") == {}
    assert move_prior.load_prior(move_prior.DEFAULT_PATH) == table.moves


def test_designer_never_repeats_a_tried_genome():
    tried: list[str] = [heuristic.genome_key(TEMPLATE_GENOME)]
    crit = {"violated_budgets": ["params 300,000 > 200,000"], "lagging_groups": []}
    for i in range(25):
        out = heuristic.design({"best": {"code": render(TEMPLATE_GENOME)}, "critique": crit,
                                "tried": tried}, random.Random(i))
        key = heuristic.genome_key(parse_genome(out["code"]))
        assert key not in tried
        tried.append(key)


def test_designer_is_deterministic_for_a_seed():
    brief = {"best": {"code": render(TEMPLATE_GENOME)}, "critique": None, "tried": []}
    a = heuristic.design(brief, random.Random("0:design:1"))
    b = heuristic.design(brief, random.Random("0:design:1"))
    assert a["code"] == b["code"]


def test_fixer_rerenders_broken_edit_and_shrinks_on_budget():
    good = render(TEMPLATE_GENOME)
    broken = good.replace("def build_model(num_classes: int) -> nn.Module:",
                          "def build_model(num_classes: int) -> nn.Module:\n    x = undefined")
    out = heuristic.fix({"code": broken, "error": "NameError: undefined", "stage": "build"},
                        random.Random(0))
    assert out["code"] == good
    out = heuristic.fix({"code": good, "error": "params 300,000 > 200,000", "stage": "budget"},
                        random.Random(0))
    assert estimate_params(parse_genome(out["code"]), 8) < estimate_params(TEMPLATE_GENOME, 8)


def test_fixer_falls_back_to_parent_when_unparsable():
    out = heuristic.fix({"code": "import os\n", "error": "SyntaxError", "stage": "syntax",
                         "parent_code": render(TEMPLATE_GENOME)}, random.Random(0))
    assert parse_genome(out["code"]) is not None
    assert "parent" in out["explanation"]


def test_select_best_prefers_feasible_then_score():
    b = Budgets(max_params=150_000)
    cands = {
        "c000": make_record("c000", make_report(bal=0.7, params=100_000, budgets=b)),
        "c001": make_record("c001", make_report(bal=0.9, params=300_000, budgets=b)),
        "c002": make_record("c002", make_report(bal=0.75, params=120_000, budgets=b,
                                                sex={"female": 0.5, "male": 0.9})),
        "c003": make_record("c003", None),
    }
    # c001 is infeasible; c002 has higher accuracy but a 0.4 sex gap (0.2 mean) -> c000
    assert select_best(cands) == "c000"
    assert select_best(cands, unfairness_weight=0.0) == "c002"


def test_critic_brief_after_prepare_critiques_the_template_not_a_baseline():
    from agents.critic import critic_brief
    from agents.settings import Settings

    budgets = Budgets(max_params=200_000)
    template = make_record("c000", make_report(cid="c000", budgets=budgets), origin="template")
    resnet = make_record("b-resnet18", make_report(cid="b-resnet18", params=11_000_000,
                                                   budgets=budgets), origin="baseline")
    state = {"candidates": {"c000": template, "b-resnet18": resnet},
             "order": ["c000", "b-resnet18"], "current": None}
    brief = critic_brief(state, Settings())
    assert brief["latest"]["id"] == "c000"
    assert heuristic.critique(brief)["violated_budgets"] == []


# ------------------------------------------------------------ the learning policy

def _stage_edit(i: int, **changes: object):
    stages = [s.model_dump() for s in TEMPLATE_GENOME.stages]
    stages[i].update(changes)
    return TEMPLATE_GENOME.model_validate({**TEMPLATE_GENOME.model_dump(), "stages": stages})


def _policy_brief(history: dict, archive: list[str], crit: dict | None = None) -> dict:
    best = select_best(history)
    return {"best": {"code": history[best].code}, "best_id": best, "critique": crit,
            "tried": tried_keys(history), "history": history, "archive": archive,
            "noise_sd": 0.03, "unfairness_weight": 1.0}


def _learned_history() -> dict:
    """deeper hurt three times, bigger_kernel helped three times (same stage, re-seeded)."""
    hist = {"c000": make_record("c000", make_report(bal=0.50), origin="template")}
    for i in range(3):
        hist[f"d{i}"] = make_record(f"d{i}", make_report(bal=0.42), parent="c000",
                                    genome=_stage_edit(0, depth=2))
        hist[f"k{i}"] = make_record(f"k{i}", make_report(bal=0.58), parent="c000",
                                    genome=_stage_edit(0, kernel=5))
    return hist


def test_policy_prefers_a_move_that_helped_over_one_that_hurt(tmp_path, monkeypatch):
    monkeypatch.setenv(move_prior.PRIOR_ENV, _write_prior(
        tmp_path / "prior.json", deeper=0.03, bigger_kernel=0.0))
    hist = _learned_history()
    brief = _policy_brief(hist, ["c000"]) | {"best": {"code": hist["c000"].code},
                                             "best_id": "c000"}
    moves = Counter(heuristic.design(brief, random.Random(s))["moves"][0] for s in range(40))
    # The prior puts deeper before bigger_kernel; the run's evidence reverses it.
    assert moves["bigger_kernel"] >= 3 * max(1, moves["deeper"])
    prior_only = Counter(heuristic.design({**brief, "history": {}}, random.Random(s))["moves"][0]
                         for s in range(40))
    assert prior_only["deeper"] > prior_only["bigger_kernel"]
    out = heuristic.design(brief, random.Random(1))
    assert out["parent"] == "c000" and "Evidence:" in out["rationale"]
    if out["moves"] == ["bigger_kernel"]:
        assert "3 tries, 0 failed, 3 helped" in out["rationale"]


@pytest.mark.usefixtures("flat_prior")
def test_policy_avoids_a_move_that_failed_twice():
    group = TEMPLATE_GENOME.model_copy(update={"norm": "group"})
    hist = {"c000": make_record("c000", make_report(bal=0.50), origin="template"),
            "c001": make_record("c001", make_report(failed="train"), parent="c000",
                                genome=group),
            "c002": make_record("c002", make_report(bal=0.125), parent="c000",
                                genome=group.model_copy(update={"pool": "max"}))}
    crit = {"violated_budgets": [], "lagging_groups": [
        {"attribute": "sex", "group": "female", "accuracy": 0.5, "gap": 0.1}]}
    brief = _policy_brief(hist, ["c000"], crit)
    used = {m for s in range(40) for m in heuristic.design(brief, random.Random(s))["moves"]}
    assert "to_groupnorm" not in used and "widen_early" in used
    assert policy.banned(move_stats(hist)["to_groupnorm"])


def _front() -> dict:
    """Four front members: best score c003, cheapest c002, fairest c004."""
    b = Budgets(max_latency_ms=3.0)
    return {
        "c000": make_record("c000", make_report(bal=0.50, latency=2.0, budgets=b),
                            origin="template"),
        "c001": make_record("c001", make_report(bal=0.70, latency=2.9, budgets=b,  # 0.55
                                                sex={"female": 0.4, "male": 0.7}),
                            parent="c000", genome=_stage_edit(1, depth=3)),
        "c002": make_record("c002", make_report(bal=0.55, latency=0.5, budgets=b,  # 0.50
                                                age={"<40": 0.6, "40-59": 0.6, ">=60": 0.5}),
                            parent="c000", genome=_stage_edit(2, block="dwsep")),
        "c003": make_record("c003", make_report(bal=0.62, latency=2.5, budgets=b,  # 0.59
                                                sex={"female": 0.56, "male": 0.62}),
                            parent="c000", genome=_stage_edit(3, se=True)),
        "c004": make_record("c004", make_report(bal=0.52, latency=1.5, budgets=b),  # 0.52
                            parent="c000", genome=_stage_edit(3, kernel=5)),
    }


@pytest.mark.parametrize(("crit", "wanted"), [
    (None, "c003"),
    ({"violated_budgets": ["latency 5.00 ms > 3 ms"], "lagging_groups": []}, "c002"),
    ({"violated_budgets": [], "lagging_groups": [
        {"attribute": "sex", "group": "female", "accuracy": 0.5, "gap": 0.1}]}, "c004"),
])
def test_policy_draws_parents_from_the_front_as_the_critique_asks(crit, wanted):
    hist = _front()
    front = ["c001", "c002", "c003", "c004"]
    brief = _policy_brief(hist, front, crit)
    parents = Counter(heuristic.design(brief, random.Random(s))["parent"] for s in range(40))
    assert parents.most_common(1)[0][0] == wanted and parents[wanted] >= 20
    assert len(parents) >= 2 and set(parents) <= set(front)  # explores the front


def test_policy_keeps_exploring_and_is_deterministic_per_seed():
    hist = _learned_history()
    brief = _policy_brief(hist, ["c000", "k0"])
    moves = Counter(heuristic.design(brief, random.Random(s))["moves"][0] for s in range(40))
    assert len(moves) >= 4  # never the argmax alone
    a = heuristic.design(brief, random.Random("3:design:5"))
    b = heuristic.design(brief, random.Random("3:design:5"))
    assert (a["code"], a["parent"], a["rationale"]) == (b["code"], b["parent"], b["rationale"])
    assert heuristic.genome_key(parse_genome(a["code"])) not in brief["tried"]
