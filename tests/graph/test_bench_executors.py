"""The executors suite (graph.bench.executors) with fake executors: no training, no Ray.

Each fake evaluation "takes" a fixed time, so the throughput, slot-seconds, speed-up and
overhead the suite reports are known in advance.
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path

import pytest

import graph.bench.executors as suite
from evaluation.report import EvaluationReport
from graph.bench import __main__ as cli
from graph.bench.profiles import QUICK
from tools.executors import EvalJob

# seconds one evaluation holds a worker, and its own wall time, per executor kind
HOLD = {"local": 1.0, "ray": 1.5}
OWN = 0.9


class FakeExecutor:
    """Runs nothing: its clock (shared, see FakeClock) advances by the hold time."""

    def __init__(self, kind: str, workers: int, clock: list[float]) -> None:
        self.name, self.workers, self.threads, self.clock = kind, workers, 2 // workers, clock
        self.closed = False

    def submit(self, job: EvalJob, data: object, on_event: object = None
               ) -> Future[EvaluationReport]:
        trains = job.code != suite.REFUSED
        if trains:  # workers evaluations at once: each adds 1/workers of its hold time
            self.clock[0] += HOLD[self.name] / self.workers
        f: Future[EvaluationReport] = Future()
        f.set_result(EvaluationReport(code_hash="x", status="ok" if trains else "failed",
                                      wall_s=OWN))
        return f

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fakes(monkeypatch):
    clock = [0.0]
    made: list[FakeExecutor] = []

    def make_executor(kind, *, workers=1, **_):
        made.append(FakeExecutor(kind, workers, clock))
        return made[-1]

    import tools.executors

    monkeypatch.setattr(tools.executors, "make_executor", make_executor)
    monkeypatch.setattr(suite, "monotonic", lambda: clock[0])
    monkeypatch.setattr(suite, "_ray_available", lambda: True)
    monkeypatch.setattr(suite, "machine", lambda: {
        "cpu": "test CPU x 2", "cpu_bf16_native": False, "torch_threads": 2, "torch": "x",
        "gpu": None})
    monkeypatch.setattr(suite, "_jobs", lambda profile, cache, n: (
        None, [EvalJob(code="model", candidate_id=f"c{i}") for i in range(n)]))
    return made


def test_suite_figures_come_from_the_timed_runs(fakes, tmp_path, capsys):
    result = suite.run_executors(QUICK, tmp_path, command="cmd", cache_dir=tmp_path,
                                 evaluations=4, repeat=3)
    assert result is not None and all(ex.closed for ex in fakes)
    assert [(ex.name, ex.workers) for ex in fakes] == [("local", 1), ("local", 2), ("ray", 2)]
    # interleaved, rotated order: every repeat runs each executor once
    order = [r["executor"] for r in result["runs"]]
    assert order[:3] == ["local x1", "local x2", "ray x2"] and order[3:6] == [
        "local x2", "ray x2", "local x1"]
    figs = result["figures"]
    # local x1: 4 evaluations in 4 s -> 3600 per hour; x2 in 2 s: 7200; ray x2 in 3 s: 4800
    assert figs["local x1"]["evals_per_hour"]["value"] == pytest.approx(3600)
    assert figs["local x2"]["evals_per_hour"]["value"] == pytest.approx(7200)
    assert figs["ray x2"]["evals_per_hour"]["value"] == pytest.approx(4800)
    assert figs["ray x2"]["slot_s"]["value"] == pytest.approx(1.5)
    assert figs["ray x2"]["beyond_own_s"]["value"] == pytest.approx(1.5 - OWN)
    assert result["compare"]["speedup"]["value"] == pytest.approx(2.0)
    assert result["compare"]["ray_overhead_s"]["value"] == pytest.approx(0.5)
    assert figs["ray x2"]["ok"] == 12 == figs["ray x2"]["of"]
    md = (tmp_path / "executors.md").read_text()
    assert "Machine: test CPU x 2, no native bf16 (fp32)" in md
    assert "Speed-up of local x2 over local x1: 2.00" in md
    assert "Ray overhead per evaluation against local x2" in md
    assert json.loads((tmp_path / "executors.json").read_text())["command"] == "cmd"
    assert len((tmp_path / "executors.csv").read_text().splitlines()) == 1 + 9
    assert (tmp_path / "executors.png").stat().st_size > 0


def test_cli_dry_run_plans_the_suite(capsys, tmp_path: Path):
    assert cli.main(["executors", "--dry-run", "--proposals", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 Template evaluations" in out and "local x1, local x2" in out
    assert not any(tmp_path.iterdir())
