"""The latency screen (tools/screen.py): slow designs are not trained, fast ones are."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agents import heuristic
from agents.records import GateSummary
from evaluation.report import Budgets
from tasks.genome import parse_genome
from tasks.models import template_source
from tests.fakes.code import CONV_CODE, LINEAR_CODE
from tools.gate import gate

# CONV_CODE runs in about a millisecond at one thread (0.97 ms on a 2-core Xeon with AMX,
# more on the AMD EPYC), LINEAR_CODE in microseconds (0.008 ms): a fixed 1 ms screen sits
# too close to the first on a fast CPU, so the test screens between the two as timed here.
SLOW_CODE = CONV_CODE


def test_screen_fails_the_slow_design_and_times_the_fast_one() -> None:
    # A screen far above both times both and fails neither.
    timed = {name: gate(code, budgets=Budgets(), image_size=32, latency_screen_ms=1e3)
             for name, code in (("fast", LINEAR_CODE), ("slow", SLOW_CODE))}
    assert all(r.ok and r.latency_ms for r in timed.values()), timed
    fast_ms, slow_ms = (timed[k].latency_ms or 0.0 for k in ("fast", "slow"))
    assert slow_ms > 10 * fast_ms, (fast_ms, slow_ms)
    # Screen at their geometric mean: each is at least ~3x from it, far beyond the ~14 %
    # that one design's latency spreads by between measurements.
    screen = (fast_ms * slow_ms) ** 0.5
    fast = gate(LINEAR_CODE, budgets=Budgets(), image_size=32, latency_screen_ms=screen)
    assert fast.ok, fast.message
    assert fast.latency_ms is not None and 0 < fast.latency_ms < screen
    slow = gate(SLOW_CODE, budgets=Budgets(), image_size=32, latency_screen_ms=screen)
    assert not slow.ok
    failed = [c for c in slow.checks if not c.ok]
    assert [c.name for c in failed] == ["budget"]
    assert slow.latency_ms is not None and slow.latency_ms > screen
    assert "latency" in slow.message and "not trained" in slow.message
    # The candidate's record (and the trace's gate event) keep the screened figure.
    assert GateSummary.of(slow).latency_ms == slow.latency_ms
    assert GateSummary.of(slow.model_dump(mode="json")).stage == "budget"
    # The same gate without a screen passes the slow design and times nothing.
    plain = gate(SLOW_CODE, budgets=Budgets(), image_size=32)
    assert plain.ok and plain.latency_ms is None


def test_screen_reads_no_number_from_the_candidates_process(monkeypatch) -> None:
    # The worker's result claims a latency and writes no graph: the screen has nothing
    # trusted to time, so it records no latency and leaves the design to the evaluation.
    import tools.sandbox
    from tools.sandbox import SandboxResult

    kinds: list[str] = []

    def fake_run_job(kind, payload, **kw):
        kinds.append(kind)
        checks = [{"name": n, "ok": True} for n in ("build", "shape", "budget")]
        return SandboxResult(ok=True, result={"checks": checks, "params": 10, "flops": 10,
                                              "train_s_per_image": 0.01, "latency_ms": 0.001})

    monkeypatch.setattr(tools.sandbox, "run_job", fake_run_job)
    report = gate(LINEAR_CODE, budgets=Budgets(), image_size=32, latency_screen_ms=1.0)
    assert report.ok and report.latency_ms is None
    assert kinds == ["tools.jobs:gate_export_job"]  # no timing job without a graph


@pytest.mark.parametrize(("error", "move"), [
    ("latency 3.20 ms > screen 1.5 ms", "more_downsampling"),
    ("params 250000 > 200000", "shrink_width"),
])
def test_fixer_cuts_pixels_for_latency_and_channels_for_parameters(error: str,
                                                                   move: str) -> None:
    code = template_source()
    assert parse_genome(code) is not None
    out = heuristic.fix({"code": code, "error": error, "stage": "budget", "parent_code": None,
                         "tried": []}, random.Random(0))
    assert move in out["explanation"], out["explanation"]


def test_gate_export_job_writes_the_untrained_graph(tmp_path: Path) -> None:
    from tools.export import ONNX_FILE
    from tools.jobs import gate_export_job

    out = gate_export_job({"code": LINEAR_CODE, "image_size": 16, "num_classes": 8,
                           "budgets": {}}, tmp_path)
    assert all(c["ok"] for c in out["checks"]) and out["exporter"]
    assert (tmp_path / ONNX_FILE).stat().st_size > 0
    bad = gate_export_job({"code": LINEAR_CODE.replace("nn.Linear(3,", "nn.Linear(4,"),
                           "image_size": 16, "num_classes": 8, "budgets": {}}, tmp_path / "b")
    assert not all(c["ok"] for c in bad["checks"]) and "exporter" not in bad
