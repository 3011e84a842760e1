"""The run's checkpointer revives typed records on resume, with no serializer warning."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest
from langgraph.checkpoint.serde import jsonplus
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

from agents.records import Candidate, FixAttempt, GateSummary, Note
from evaluation.report import EvaluationReport
from graph.checkpoint import make_checkpointer
from graph.state import State
from tests.fakes.reports import make_record, make_report


def _write_records(state: State) -> dict[str, Any]:
    rec = make_record("c001", make_report(bal=0.6, cid="c001"), parent="c000", round_=1)
    rec = rec.model_copy(update={
        "gate": GateSummary(ok=True, params=1000), "attempt": 1,
        "fixes": [FixAttempt(attempt=1, stage="build", error="e", fixed_by="c001-fix1",
                             brain="heuristic")],
        "notes": [Note(role="auditor", round=1, text="better", candidate="c001")]})
    return {"candidates": {"c001": rec}, "notes": [Note(role="auditor", round=1, text="x")]}


def _round_trip(path, saver_of) -> dict[str, Any]:
    g = StateGraph(State)
    g.add_node("write", _write_records)
    g.add_edge(START, "write")
    g.add_edge("write", END)
    config = {"configurable": {"thread_id": "t"}}
    conn = sqlite3.connect(path, check_same_thread=False)
    g.compile(checkpointer=saver_of(conn)).invoke({"candidates": {}, "notes": []}, config)
    conn.close()
    # A new process would start here: a fresh connection and saver read it back.
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        return g.compile(checkpointer=saver_of(conn)).get_state(config).values
    finally:
        conn.close()


@pytest.fixture
def fresh_warnings(monkeypatch):
    # LangGraph warns once per type and process: forget earlier warnings.
    monkeypatch.setattr(jsonplus, "_warned_unregistered_types", set())
    monkeypatch.setattr(jsonplus, "_warned_blocked_types", set())


def test_records_come_back_typed_without_a_warning(tmp_path, caplog, fresh_warnings):
    caplog.set_level(logging.WARNING)
    values = _round_trip(tmp_path / "checkpoints.sqlite", make_checkpointer)
    rec = values["candidates"]["c001"]
    assert isinstance(rec, Candidate) and isinstance(rec.report, EvaluationReport)
    assert isinstance(rec.gate, GateSummary) and isinstance(rec.fixes[0], FixAttempt)
    assert isinstance(rec.notes[0], Note) and isinstance(values["notes"][0], Note)
    assert rec.ok and rec.report.metrics is not None and rec.report.metrics.balanced_accuracy \
        == 0.6
    assert rec.model_dump() == _write_records({})["candidates"]["c001"].model_dump()
    assert not [r for r in caplog.records if "unregistered" in r.getMessage()
                or "Blocked" in r.getMessage()]


def test_the_default_saver_would_warn(tmp_path, caplog, fresh_warnings):
    """The check above can fail: LangGraph's default serializer warns about the records."""
    caplog.set_level(logging.WARNING)
    _round_trip(tmp_path / "checkpoints.sqlite", SqliteSaver)
    assert any("unregistered type agents.records.Candidate" in r.getMessage()
               or "Blocked deserialization of agents.records.Candidate" in r.getMessage()
               for r in caplog.records)
