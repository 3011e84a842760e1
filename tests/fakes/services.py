"""A run's services with the sandboxed tools replaced by canned reports (graph tests)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from evaluation.report import EvaluationReport
from graph.services import Services
from tests.fakes.reports import make_report


class StubServices(Services):
    """Services whose gate passes everything and whose evaluation returns :meth:`score`."""

    def score(self, code: str, candidate: str) -> float:
        """Balanced accuracy of a candidate: the Template 0.5, every other design 0.6."""
        return 0.5 if candidate == "c000" else 0.6

    def seed_score(self, code: str, candidate: str, seed: int | None) -> float:
        """Balanced accuracy at a training seed (None: the run's); default: :meth:`score`."""
        return self.score(code, candidate)

    def data(self) -> Any:
        return SimpleNamespace(fingerprint="fp", n=200, image_size=32, skipped={},
                               class_names=[str(i) for i in range(8)],
                               cache_dir=self.run_dir)

    def gate(self, code: str, candidate: str) -> Any:
        from tools.gate import GateReport

        return GateReport(ok=True, params=1000)

    def evaluate(self, code: str, candidate: str, *, split: str = "val",
                 baseline: bool = False, seed: int | None = None) -> EvaluationReport:
        return EvaluationReport.model_validate(
            make_report(cid=candidate, bal=self.seed_score(code, candidate, seed)))

    def export(self, candidate: str) -> dict[str, Any]:
        return {"code": "best_model.py", "onnx_error": "stubbed"}


def run_stubbed(services: type[StubServices], ctx: Any, run_dir: Any
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the real graph on ``services`` (a StubServices class); return summary and trace."""
    import json
    import time

    from graph.builder import build_graph
    from graph.display import PlainDisplay
    from graph.trace import Tracer, load_trace

    svc = services(ctx=ctx, tracer=Tracer(run_dir / "trace.jsonl", ctx.run_id),
                   display=PlainDisplay(quiet=True))
    app = build_graph(services=svc)
    app.invoke({"round": 0, "candidates": {}, "order": [], "critiques": [], "tokens": {},
                "notes": [], "stale_rounds": 0, "hv_history": [], "current": None,
                "started_at": time.time()}, {"recursion_limit": 200}, context=ctx)
    svc.close()
    return json.loads((run_dir / "summary.json").read_text()), load_trace(run_dir)
