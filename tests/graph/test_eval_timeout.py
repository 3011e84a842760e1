"""``eval_timeout_s`` (``--eval-timeout``) is the wall-clock limit of the evaluation job."""

from __future__ import annotations

from pathlib import Path

from agents.settings import Settings
from graph.display import PlainDisplay
from graph.services import Services
from graph.trace import Tracer
from tasks.data_args import prepare_from_args
from tests.fakes.code import LINEAR_CODE
from tools.gate import GateReport


def test_tiny_eval_timeout_fails_the_evaluation_as_timeout(tmp_path: Path) -> None:
    # The worker alone needs more than 0.5 s to import torch, so the job is killed.
    ctx = Settings(synthetic=True, synthetic_n=16, image_size=16, epochs=1,
                   cache_dir=str(tmp_path / "cache"), run_dir=str(tmp_path / "run"),
                   eval_timeout_s=0.5)
    data = prepare_from_args(ctx, progress=False)
    tracer = Tracer(tmp_path / "run" / "trace.jsonl", "t")
    svc = Services(ctx=ctx, tracer=tracer, display=PlainDisplay(quiet=True), data_=data)
    # As after the gate node: a passed gate is cached, so only the training job runs.
    svc.result_cache("gate", GateReport).put(svc.gate_key(LINEAR_CODE), GateReport(ok=True))
    try:
        report = svc.evaluate(LINEAR_CODE, "c000")
    finally:
        tracer.close()
    assert report.status == "failed" and report.failure_stage == "timeout", report
    assert "wall-clock limit of 0.5 s" in str(report.failure_reason), report
