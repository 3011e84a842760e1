"""The confirm node: the final choice is the best mean over training seeds, not a lucky seed.

The graph, roles, confirm and finalize run for real; evaluations are canned (a score per
design and training seed), so a run takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.records import Candidate, Evaluation, Fidelity, seed_scores
from agents.settings import Settings
from evaluation.intervals import mean_interval
from evaluation.report import EvaluationReport
from graph.confirm import finalists, select_confirmed
from tests.fakes.reports import make_record, make_report
from tests.fakes.services import StubServices, run_stubbed

SEARCH_SEED_SCORES = {"c000": 0.50, "c001": 0.70, "c002": 0.60, "c003": 0.40}
# c001 was lucky on the search's seed; c002 is better on every other seed.
OTHER_SEED_SCORES = {"c000": 0.50, "c001": 0.45, "c002": 0.62, "c003": 0.40}


class SeededServices(StubServices):
    """Canned evaluations whose score depends on the design and the training seed."""

    def seed_score(self, code: str, candidate: str, seed: int | None) -> float:
        table = SEARCH_SEED_SCORES if seed is None else OTHER_SEED_SCORES
        return table[candidate] + (0.0 if seed is None else 0.001 * (seed % 3))


def _run(ctx: Settings, run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return run_stubbed(SeededServices, ctx, run_dir)


def test_the_final_choice_is_the_best_mean_over_seeds_not_the_lucky_single_run(tmp_path):
    ctx = Settings(iter_max=3, patience=99, confirm_top=2, confirm_seeds=2, train_seed=5,
                   run_dir=str(tmp_path), run_id="cf")
    summary, events = _run(ctx, tmp_path)
    assert summary["best"]["id"] == "c002"  # not c001, the single-seed winner
    conf = summary["confirmation"]
    assert conf["train_seeds"] == [5, 6, 7]
    assert set(conf["finalists"]) == {"c001", "c002", "c000"}  # top 2 + the Template
    c002 = conf["finalists"]["c002"]
    assert c002["seeds"] == 3 and c002["balanced_accuracy"]["values"] == [0.6, 0.62, 0.621]
    lo, hi = c002["balanced_accuracy"]["interval"]
    assert lo < c002["balanced_accuracy"]["mean"] < hi
    confirms = [e for e in events if e["event"] == "confirm"]
    # The Template's are measured first, in prepare (the run's noise level), then reused.
    assert {(e["candidate"], e["seed"]) for e in confirms} == {
        (c, s) for c in ("c000", "c001", "c002") for s in (6, 7)}
    prepare = next(e for e in events if e["event"] == "note" and e["role"] == "prepare")
    assert prepare["payload"]["template_scores"] == [0.5, 0.5, 0.501]
    assert 0 < prepare["payload"]["noise_sd"] < 0.001
    rec = json.loads((tmp_path / "candidates" / "c002" / "report.json").read_text())
    assert [c["fidelity"]["seed"] for c in rec["confirmations"]] == [6, 7]
    stop = next(e for e in events if e["event"] == "stop")
    assert stop["best"] == "c002"


def test_confirmation_off_chooses_on_the_single_runs(tmp_path):
    ctx = Settings(iter_max=3, patience=99, confirm_top=0, promote_top=0,
                   run_dir=str(tmp_path), run_id="c0")
    summary, events = _run(ctx, tmp_path)
    assert summary["best"]["id"] == "c001" and summary["confirmation"] is None
    assert not [e for e in events if e["event"] == "confirm"]


def test_promotion_retrains_promising_designs_during_the_search(tmp_path):
    # No final confirmation: the in-search rung alone keeps the lucky c001 from winning.
    ctx = Settings(iter_max=3, patience=99, confirm_top=0, promote_top=1, confirm_seeds=2,
                   train_seed=5, run_dir=str(tmp_path), run_id="pr")
    summary, events = _run(ctx, tmp_path)
    promoted = [e for e in events if e["event"] == "promote"]
    # c001 (0.70) and c002 (0.60) screened within noise of the best estimate; c003 (0.40)
    # did not, and it is never trained again. The Template is measured on the same seeds
    # in prepare (the noise level, and the reference at the promoted fidelity).
    assert [e["candidate"] for e in promoted] == ["c001", "c002"]
    assert promoted[1]["summary"]["score"]["values"] == [0.6, 0.62, 0.621]
    assert promoted[1]["bar"] == pytest.approx(0.534, abs=0.002)  # c001's mean - noise
    assert {(e["candidate"], e["seed"]) for e in events if e["event"] == "confirm"} == {
        (c, s) for c in ("c000", "c001", "c002") for s in (6, 7)}
    # Ranked on the means from then on: c001's 0.534 loses to c002's 0.614.
    assert summary["best"]["id"] == "c002"
    front = {p["id"]: p for p in summary["pareto"]["front"]}
    assert front["c002"]["seeds"] == 3
    assert front["c002"]["objectives"][0] == pytest.approx(1 - (0.6 + 0.62 + 0.621) / 3)
    off = Settings(iter_max=3, patience=99, confirm_top=0, promote_top=0,
                   run_dir=str(tmp_path / "off"), run_id="off")
    summary, events = _run(off, tmp_path / "off")
    assert summary["best"]["id"] == "c001" and not [e for e in events
                                                    if e["event"] == "promote"]


def _with_seeds(rec: Candidate, scores: list[float], *, epochs: int = 3) -> Candidate:
    fid = Fidelity(epochs=epochs, batch_size=64, seed=0, image_size=32)
    runs = [Evaluation(fidelity=fid.model_copy(update={"seed": i + 1}),
                       report=EvaluationReport.model_validate(make_report(bal=s)))
            for i, s in enumerate(scores)]
    return rec.model_copy(update={"fidelity": fid, "confirmations": runs})


def test_seed_scores_include_the_search_run_only_at_equal_epochs():
    base = make_record("c001", make_report(bal=0.7))
    assert seed_scores(_with_seeds(base, [0.5, 0.6]), 0.0) == [0.7, 0.5, 0.6]
    longer = _with_seeds(base, [0.5, 0.6]).model_copy(
        update={"confirmations": [e.model_copy(update={"fidelity": e.fidelity.model_copy(
            update={"epochs": 9})}) for e in _with_seeds(base, [0.5, 0.6]).confirmations]})
    assert seed_scores(longer, 0.0) == [0.5, 0.6]
    failed = _with_seeds(base, [0.5]).model_copy()
    failed.confirmations.append(Evaluation(
        fidelity=failed.confirmations[0].fidelity,
        report=EvaluationReport.model_validate(make_report(failed="timeout"))))
    assert seed_scores(failed, 0.0) == [0.7, 0.5]


def test_finalists_put_feasible_first_and_always_add_the_template():
    cands = {"c000": make_record("c000", make_report(bal=0.5), origin="template"),
             "c001": make_record("c001", make_report(bal=0.9, latency=9.0)),
             "c002": make_record("c002", make_report(bal=0.6)),
             "c003": make_record("c003", None)}
    from evaluation.report import Budgets

    over = make_report(bal=0.9, latency=9.0, budgets=Budgets(max_latency_ms=2.0))
    cands["c001"] = make_record("c001", over)
    ctx = Settings(confirm_top=2)
    assert finalists(cands, ctx) == ["c002", "c000"]
    assert select_confirmed(cands, ["c001", "c002"], 1.0) == "c002"  # feasible beats score


def test_mean_interval_is_a_t_interval():
    mean, lo, hi = mean_interval([0.5, 0.6, 0.7])
    assert mean == 0.6 and round(hi - mean, 4) == round(4.303 * 0.1 / 3 ** 0.5, 4)
    assert mean_interval([0.5])[1] != mean_interval([0.5])[1]  # NaN: no spread from one run
