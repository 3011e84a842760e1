"""Services tools: the shared result cache (``--shared-cache``) and side-by-side timing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agents.settings import Settings
from graph.display import PlainDisplay
from graph.result_cache import SharedCache
from graph.services import Services
from graph.trace import Tracer
from tasks.data_args import prepare_from_args
from tests.fakes.code import LINEAR_CODE


def _services(tmp_path: Path, run: str, data: Any = None, **changes: Any) -> Services:
    ctx = Settings(synthetic=True, synthetic_n=48, image_size=16, epochs=1,
                   cache_dir=str(tmp_path / "data"), run_dir=str(tmp_path / run),
                   shared_cache=str(tmp_path / "shared"), **changes)
    data = data if data is not None else prepare_from_args(ctx, progress=False)
    return Services(ctx=ctx, tracer=Tracer(tmp_path / run / "trace.jsonl", run),
                    display=PlainDisplay(quiet=True), data_=data)


def _tool_calls(svc: Services) -> list[dict[str, Any]]:
    svc.close()
    lines = (svc.run_dir / "trace.jsonl").read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == "tool_call"]


class _NoTraining:
    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a shared result was trained again")

    def close(self) -> None:
        pass


def test_a_second_run_reuses_the_first_runs_gate_and_evaluation_with_its_files(tmp_path):
    first = _services(tmp_path, "a")
    assert first.gate(LINEAR_CODE, "c000").ok
    done = first.evaluate(LINEAR_CODE, "c000")
    assert done.ok and done.metrics is not None
    calls = _tool_calls(first)
    assert [c["shared"] for c in calls] == [False, False]

    # Another run, the design under another id: nothing is built or trained again.
    second = _services(tmp_path, "b", data=first.data())
    second._executor = _NoTraining()
    assert second.gate(LINEAR_CODE, "c003").ok
    again = second.evaluate(LINEAR_CODE, "c003")
    assert again.candidate_id == "c003"
    assert again.metrics == done.metrics and again.hardware == done.hardware
    # The files the run's later steps read (export, re-timing) are in its own folder.
    assert (tmp_path / "b" / "candidates" / "c003" / "val" / "model.onnx").is_file()
    copied = json.loads((tmp_path / "b" / "candidates" / "c003" / "val" / "report.json")
                        .read_text(encoding="utf-8"))
    assert copied["candidate_id"] == "c003"
    assert second.export("c003").get("onnx") == "best_model.onnx"
    calls = _tool_calls(second)
    assert [(c["tool"], c["cached"], c["shared"]) for c in calls[:2]] == [
        ("gate", True, True), ("evaluate", True, True)]
    # Its own cache now holds the result: a resume of this run needs the shared folder no more.
    assert len(list((tmp_path / "b" / "cache" / "evaluate").glob("*.json"))) == 1


def test_other_budgets_another_seed_or_a_failure_are_not_shared(tmp_path):
    first = _services(tmp_path, "a", eval_timeout_s=0.5)  # the worker cannot even start
    failed = first.evaluate(LINEAR_CODE, "c000")
    assert failed.status == "failed"
    assert not list((tmp_path / "shared").glob("evaluate/*.json"))  # failures stay private
    first.close()

    ok = _services(tmp_path, "b", data=first.data())
    assert ok.evaluate(LINEAR_CODE, "c000").ok
    assert len(list((tmp_path / "shared").glob("evaluate/*.json"))) == 1
    ok.close()
    for run, changes, seed in (("c", {"max_params": 7}, None), ("d", {}, 1)):
        other = _services(tmp_path, run, data=first.data(), **changes)
        other._executor = _NoTraining()
        with pytest.raises(AssertionError, match="trained again"):
            other.evaluate(LINEAR_CODE, "c000", seed=seed)
        other.close()


class _Report(BaseModel):
    value: int


def test_a_shared_result_whose_files_are_gone_counts_as_missing(tmp_path):
    files = tmp_path / "out"
    files.mkdir()
    (files / "model.onnx").write_bytes(b"graph")
    cache = SharedCache(tmp_path / "shared", "evaluate", _Report, scope={"machine": "m"})
    cache.put("k", _Report(value=3), files_from=files)
    got = cache.get("k", files_to=tmp_path / "copy")
    assert got == _Report(value=3) and (tmp_path / "copy" / "model.onnx").read_bytes() == b"graph"
    # Another machine (scope) has its own keys.
    assert SharedCache(tmp_path / "shared", "evaluate", _Report,
                       scope={"machine": "other"}).get("k") is None
    cache.put("k", _Report(value=4), files_from=files)  # a second writer: same folder kept
    for leftover in (tmp_path / "shared" / "evaluate").iterdir():
        assert not leftover.name.startswith("."), leftover
    (tmp_path / "shared" / "evaluate" / cache.key("k") / "model.onnx").unlink()
    (tmp_path / "shared" / "evaluate" / cache.key("k")).rmdir()
    assert cache.get("k", files_to=tmp_path / "again") is None
    assert cache.get("k") == _Report(value=4)  # a result without files (the gate's)


def test_a_failed_side_by_side_timing_keeps_the_run_going(tmp_path, monkeypatch):
    import tools.side_by_side as sbs

    svc = _services(tmp_path, "a")
    assert svc.evaluate(LINEAR_CODE, "c000").ok
    assert svc.side_by_side(["c000", "c404"])["latency_ms"].keys() == {"c000"}  # real job

    def broken(paths: list[str], image_size: int) -> Any:
        raise sbs.RetimeFailed("re-timing failed (timeout): too slow")

    monkeypatch.setattr(sbs, "sandboxed_timer", broken)
    assert svc.side_by_side(["c000"]) is None
    calls = [c for c in _tool_calls(svc) if c["tool"] == "retime"]
    assert [c["ok"] for c in calls] == [True, False] and "too slow" in calls[1]["error"]
