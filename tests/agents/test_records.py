"""The Candidate record: one typed object, written as report.json and read back."""

from __future__ import annotations

import json

import pytest

from agents.records import (
    Candidate,
    Evaluation,
    Fidelity,
    GateSummary,
    Note,
    as_candidate,
    estimated_objectives,
    headline,
    recent_notes,
    select_best,
)
from evaluation.report import EvaluationReport
from tests.fakes.reports import make_record, make_report


def test_report_json_is_the_record_without_code_and_reads_back():
    rec = make_record("c001", make_report(bal=0.7, params=90_000), parent="c000")
    data = json.loads(rec.record_json())
    assert "code" not in data and data["report"]["hardware"]["params"] == 90_000
    assert {"attempt", "fixes", "gate", "notes", "failure"} <= set(data)
    assert not {"timings", "needs_fix"} & set(data)  # no ad-hoc or never-filled keys
    back = as_candidate({**data, "code": rec.code})
    assert back == rec and back.report is not None and back.report.hardware is not None


def test_select_best_reads_dicts_from_disk_and_skips_torn_ones():
    good = json.loads(make_record("c000", make_report(bal=0.5)).model_dump_json())
    better = make_record("c001", make_report(bal=0.6))
    cands = {"c000": good, "torn": {"id": "torn"}, "c001": better}
    assert select_best(cands) == "c001"


def test_needs_fix_follows_status_and_attempts():
    rec = make_record("c002", None)
    assert rec.status == "failed" and rec.needs_fix(2)
    assert not rec.model_copy(update={"attempt": 2}).needs_fix(2)
    gated = rec.model_copy(update={"status": "gated", "gate": GateSummary(ok=True)})
    assert not gated.needs_fix(2) and headline(gated)["status"] == "gated"


def test_gate_summary_keeps_the_first_failed_check():
    s = GateSummary.of({"ok": False, "checks": [{"name": "syntax", "ok": True},
                                                 {"name": "budget", "ok": False, "detail": "d"}],
                        "params": 5})
    assert (s.ok, s.stage, s.message, s.params) == (False, "budget", "d", 5)


def test_only_notes_with_text_reach_the_agents():
    notes = [Note(role="prepare", payload={"n": 1}),
             Note(role="scout", round=2, text="try dwsep", candidate="c002")]
    assert recent_notes(notes) == ["[round 2] scout on c002: try dwsep"]
    assert isinstance(make_record("c0", None), Candidate)


def test_a_promoted_design_is_estimated_on_its_seed_means_and_median_latency():
    fid = Fidelity(epochs=5, batch_size=64, seed=0, image_size=32, n_images=400)
    rec = make_record("c001", make_report(bal=0.60, latency=1.8))  # a screen under load
    assert estimated_objectives(rec)[::2] == pytest.approx((0.40, 1.8))
    runs = [Evaluation(fidelity=fid.model_copy(update={"seed": s}),
                       report=EvaluationReport.model_validate(make_report(bal=b, latency=lat)))
            for s, b, lat in ((1, 0.50, 1.0), (2, 0.55, 1.1))]
    runs.append(Evaluation(fidelity=fid.model_copy(update={"seed": 3}),
                           report=EvaluationReport.model_validate(make_report(failed="train"))))
    promoted = rec.model_copy(update={"fidelity": fid, "confirmations": runs})
    err, _, latency = estimated_objectives(promoted)
    assert err == pytest.approx(1 - (0.60 + 0.50 + 0.55) / 3)
    assert latency == pytest.approx(1.1)  # median of 1.8, 1.0, 1.1; the failed run adds none
