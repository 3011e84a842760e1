"""Per-run resources the nodes need but the state must not hold.

:class:`Services` gathers them for one run: the tracer, the display, the task data and
recipe (graph/run_data.py), each role's LLM (graph/role_llms.py), and the cached tool
calls (gate / evaluate, graph/result_cache.py; export, graph/export.py), each traced as
a ``tool_call`` event with its duration. They reach the nodes through the graph
builder's closure (``build_graph(services=...)``); :class:`ServicesFor` builds them
lazily from a node's runtime context when none were given (LangGraph Studio).
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import version as _version
from pathlib import Path
from typing import Any, Literal

from agents.llm import CallRecord, CircuitBreaker, LLMSpec
from agents.records import Candidate, code_hash
from agents.settings import Settings
from evaluation.report import Budgets, EvaluationReport
from graph.baseline import UNCONSTRAINED, name_violations
from graph.display import Display, PlainDisplay
from graph.export import export_best, validation_graph
from graph.result_cache import JsonCache, SharedCache
from graph.role_llms import RoleLLMs, call_event
from graph.run_data import RunData
from graph.trace import Tracer
from tasks.host import cpu_model
from tasks.io import atomic_write

__all__ = ["Services", "ServicesFor"]


@dataclass
class Services:
    """Resources of one run (see the module docstring)."""

    ctx: Settings
    tracer: Tracer
    display: Display | PlainDisplay
    data_: Any = None
    """The prepared data when the caller has it already (the CLI)."""
    round_t0: float | None = None
    """``time.monotonic()`` when the current round's first node started (round timing)."""
    _run_data: RunData = field(init=False, repr=False)
    _llms: RoleLLMs = field(init=False, repr=False)
    _slots: threading.BoundedSemaphore = field(init=False, repr=False)
    _executor: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        """Build the parts; nothing expensive happens before first use."""
        self._run_data = RunData(self.ctx, self.data_)
        self._llms = RoleLLMs(self.ctx)
        # Concurrent branches gate at most ``workers`` candidates at once.
        self._slots = threading.BoundedSemaphore(self.ctx.workers)

    @property
    def run_dir(self) -> Path:
        """The run folder."""
        return Path(self.ctx.run_dir)

    # ----------------------------------------------------------- data / recipe / LLMs
    def data(self) -> Any:
        """Return the prepared task data (``tasks.cache.PreparedData``)."""
        return self._run_data.data()

    def recipe(self, seed: int | None = None) -> Any:
        """Return the fixed training recipe (``tools.train.Recipe``); ``seed``: training seed."""
        return self._run_data.recipe(seed)

    def fidelity(self, seed: int | None = None) -> dict[str, Any]:
        """How much an evaluation costs and sees: recipe, image size and data size."""
        return self._run_data.fidelity(seed)

    def spec(self, role: str) -> LLMSpec:
        """Return the LLM spec of ``role`` (see graph/role_llms.py)."""
        return self._llms.spec(role)

    def chat(self, role: str) -> Any:
        """Return the chat model of ``role``."""
        return self._llms.chat(role)

    def llm_breaker(self) -> CircuitBreaker:
        """Return the run's LLM circuit breaker."""
        return self._llms.breaker()

    def record_llm(self, record: CallRecord, *, prompt_name: str, prompt_sha: str,
                   candidate: str | None) -> None:
        """Trace one LLM request."""
        self.tracer.event("llm_call", **call_event(record, prompt_name=prompt_name,
                                                   prompt_sha=prompt_sha, candidate=candidate))

    def persist(self, rec: Candidate) -> None:
        """Write ``candidates/<id>/{model.py, report.json}`` (the record, code aside)."""
        folder = self.run_dir / "candidates" / rec.id
        atomic_write(folder / "model.py", rec.code)
        atomic_write(folder / "report.json", rec.record_json())

    # ----------------------------------------------------------------------- tools
    def executor(self) -> Any:
        """Return the run's evaluation executor (``tools.executors``), built on first use.

        Raises:
            tools.executors.ExecutorError: It cannot be set up as the settings ask (Ray
                missing, no cluster at ``--ray-address``, a bad resource setting).
        """
        with self._lock:
            if self._executor is None:
                from tools.executors import make_executor

                c = self.ctx
                self._executor = make_executor(
                    c.executor, workers=c.workers, ray_address=c.ray_address,
                    cpus_per_eval=c.cpus_per_eval, gpus_per_eval=c.gpus_per_eval,
                    retries=c.eval_retries)
            return self._executor

    def result_cache(self, kind: str, model: Any) -> JsonCache[Any]:
        """Return the run's JSON result cache of one kind of tool call (``cache/<kind>/``)."""
        return JsonCache(self.run_dir / "cache", kind, model)

    def shared_cache(self, kind: str, model: Any, **scope: Any) -> SharedCache[Any] | None:
        """Return the results of one kind shared between runs (``--shared-cache``), or None.

        ``scope``: what else, beyond the run's own key, the result depends on.
        """
        if not self.ctx.shared_cache:
            return None
        return SharedCache(Path(self.ctx.shared_cache), kind, model,
                           scope={**scope, **self._run_scope})

    @functools.cached_property
    def _run_scope(self) -> dict[str, Any]:
        """What every shared key of this run adds: budgets, machine, torch, classes."""
        return {"budgets": self.ctx.budgets.model_dump(), "machine": cpu_model(),
                "torch": _version("torch"), "classes": len(self.data().class_names)}

    def gate_key(self, code: str) -> str:
        """Cache key of a gate result: code hash, image size and budgets."""
        b = self.ctx.budgets.model_dump()
        key = f"{code_hash(code)}-{self.ctx.image_size}-" + "_".join(str(b[k]) for k in sorted(b))
        screen = self.ctx.latency_screen_ms
        return key if screen is None else f"{key}-screen{screen:g}"

    def gate(self, code: str, candidate: str) -> Any:
        """Gate ``code`` (static + build + forward + budget, sandboxed), cached by code hash.

        Returns:
            The ``tools.gate.GateReport``.
        """
        from tools.gate import GateReport, gate

        cache, key = self.result_cache("gate", GateReport), self.gate_key(code)
        shared = self.shared_cache("gate", GateReport)
        t0 = time.monotonic()
        report = cache.get(key)
        cached, from_shared = report is not None, False
        if report is None and shared is not None:
            report = shared.get(key)
            from_shared = report is not None
        if report is None:
            with self._slots:
                report = gate(code, budgets=self.ctx.budgets, image_size=self.ctx.image_size,
                              num_classes=len(self.data().class_names),
                              latency_screen_ms=self.ctx.latency_screen_ms)
            if shared is not None and report.ok:
                shared.put(key, report)
        if not cached:
            cache.put(key, report)
        self.tracer.event("tool_call", tool="gate", candidate=candidate, key=key,
                          cached=cached or from_shared, shared=from_shared, ok=report.ok,
                          duration_s=round(time.monotonic() - t0, 4))
        return report

    def evaluate(self, code: str, candidate: str, *, split: Literal["val", "test"] = "val",
                 baseline: bool = False, seed: int | None = None) -> EvaluationReport:
        """Train and measure ``code`` in the sandboxed worker, cached by evaluation key.

        The cache key is :func:`tools.evaluate.evaluation_key` (code hash + recipe + data
        fingerprint + split); the file is written atomically once the report exists, so a
        killed run never re-trains a finished candidate. A ``baseline`` is evaluated
        without budgets and then judged against the run's (graph/baseline.py). ``seed``
        trains with another training seed (the confirmation rung); its outputs go to
        ``candidates/<id>/<split>-seed<seed>/``. On the test split, a design this run
        trained for validation with the same recipe and seed is not trained again: that
        model's graph is scored (tools/rescore.py; the trace's ``rescored``).
        """
        from tools.evaluate import evaluation_key

        data, recipe = self.data(), self.recipe(seed)
        cache = self.result_cache("evaluate", EvaluationReport)
        key, t0 = evaluation_key(code, recipe, data.fingerprint, split), time.monotonic()
        out_dir = self.evaluation_dir(candidate, split, seed)
        shared = self.shared_cache("evaluate", EvaluationReport, baseline=baseline)
        report = cache.get(key)
        cached, from_shared = report is not None, False
        if report is None and shared is not None:
            report = shared.get(key, files_to=out_dir)
            if report is not None:  # another run's: its files are now in out_dir
                from_shared = True
                report.candidate_id = candidate
                atomic_write(out_dir / "report.json", report.model_dump_json(indent=2))
                cache.put(key, report)
        rescored = False  # True: the validation run's model, scored on the test split
        if report is None:
            report, rescored = self._fresh_evaluation(code, candidate, split, seed, baseline,
                                                      out_dir, data, recipe)
            cache.put(key, report)
            if shared is not None and report.ok:
                shared.put(key, report, files_from=out_dir)
        self.tracer.event("tool_call", tool="evaluate", candidate=candidate, key=key,
                          split=split, fidelity=self.fidelity(seed),
                          cached=cached or from_shared, shared=from_shared,
                          rescored=rescored, ok=report.ok,
                          failure_stage=report.failure_stage,
                          duration_s=round(time.monotonic() - t0, 4))
        return report

    def evaluation_dir(self, candidate: str, split: str, seed: int | None = None) -> Path:
        """Return one evaluation's output folder: ``candidates/<id>/<split>[-seed<N>]``."""
        return self.run_dir / "candidates" / candidate / (
            split if seed is None else f"{split}-seed{seed}")

    def _fresh_evaluation(self, code: str, candidate: str, split: Literal["val", "test"],
                          seed: int | None, baseline: bool, out_dir: Path, data: Any,
                          recipe: Any) -> tuple[EvaluationReport, bool]:
        """Evaluate what no cache holds; ``(report, True)`` when it was only re-scored."""
        from tools.executors import EvalJob
        from tools.gate import GateReport

        if split == "test" and not baseline:
            scored = self._score_trained(code, candidate, seed, out_dir, data, recipe)
            if scored is not None:
                return scored, True
        budgets: Budgets = UNCONSTRAINED if baseline else self.ctx.budgets
        # The gate node already built this code under these budgets: don't redo it.
        earlier = None if baseline else self.result_cache("gate", GateReport).get(
            self.gate_key(code))
        job = EvalJob(
            code=code, recipe=recipe, budgets=budgets, split=split,
            candidate_id=candidate, out_dir=str(out_dir),
            gate_report=earlier if earlier is not None and earlier.ok else None,
            timeout_s=self.ctx.eval_timeout_s)
        # The evaluation key is the recipe's own: the job's copy records the threads used.
        report = self.executor().run(job, data, on_event=lambda ev: self.display.progress(
            candidate, ev))
        if report.candidate_id is None:
            report.candidate_id = candidate
        if baseline:
            report = name_violations(report, self.ctx.budgets)
        return report, False

    def _score_trained(self, code: str, candidate: str, seed: int | None, out_dir: Path,
                       data: Any, recipe: Any) -> EvaluationReport | None:
        """Score on the test split the model this run trained for validation (None: none).

        The same code, data, recipe and seed train the same model, so the test evaluation
        measures that model's graph (tools/rescore.py) instead of training it again.
        """
        from tools.evaluate import evaluation_key
        from tools.rescore import score_trained

        val = self.result_cache("evaluate", EvaluationReport).get(
            evaluation_key(code, recipe, data.fingerprint, "val"))
        folder = self.evaluation_dir(candidate, "val", seed)
        if val is None or not val.ok or not (folder / "model.onnx").is_file():
            return None
        return score_trained(code, data, val, folder, recipe=recipe, budgets=self.ctx.budgets,
                             candidate_id=candidate, out_dir=out_dir)

    def evaluate_many(self, calls: list[tuple[str, str, int | None]]) -> list[EvaluationReport]:
        """Evaluate ``(code, candidate, training seed)`` calls concurrently, reports in order.

        At most ``workers`` run at once (the executor bounds them); used by the fidelity
        schedule (the Template's noise seeds, the finalists' confirmations).
        """
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, min(self.ctx.workers, len(calls) or 1))) as pool:
            return list(pool.map(lambda c: self.evaluate(c[0], c[1], seed=c[2]), calls))

    def export(self, candidate: str) -> dict[str, Any]:
        """Deliver the candidate's scored ONNX graph as ``best_model.onnx`` (graph/export.py)."""
        t0 = time.monotonic()
        out = export_best(self.run_dir, candidate, image_size=self.ctx.image_size,
                          num_classes=len(self.data().class_names))
        self.tracer.event("tool_call", tool="export", candidate=candidate, cached=False,
                          ok="onnx" in out, duration_s=round(time.monotonic() - t0, 4),
                          error=out.get("onnx_error"))
        return out

    def side_by_side(self, ids: list[str]) -> dict[str, Any] | None:
        """Time the graphs of designs ``ids`` side by side in one sandboxed job.

        Each evaluation measured its latency under the load of its own moment (the other
        branch's training, anything else running); this job (tools/retime.py) times the
        given designs' validation graphs in interleaved rounds, so their latencies compare.

        Returns:
            ``{"latency_ms": {id: ms}, "round_cv": {id: cv}, "machine": ...}``, or None
            when no design left a graph or the job failed (the display says so; the
            report then keeps each evaluation's own figure).
        """
        from tools.side_by_side import RetimeFailed, sandboxed_timer

        graphs = {cid: str(g) for cid in dict.fromkeys(ids)
                  if (g := validation_graph(self.run_dir, cid)) is not None}
        if not graphs:
            return None
        t0, error = time.monotonic(), None
        try:
            latencies, info = sandboxed_timer(list(graphs.values()), self.ctx.image_size)
        except RetimeFailed as e:
            error = str(e)
            self.display.message(f"{e}; the report keeps each evaluation's own latency")
        self.tracer.event("tool_call", tool="retime", candidate=",".join(graphs), cached=False,
                          ok=error is None, error=error,
                          duration_s=round(time.monotonic() - t0, 4))
        if error is not None:
            return None
        return {"latency_ms": {c: v for c, v in zip(graphs, latencies, strict=True)
                               if v is not None},
                "round_cv": dict(zip(graphs, info["round_cv"], strict=True)),
                "errors": {c: err for c, err in zip(graphs, info["errors"], strict=True)
                           if err},
                "machine": cpu_model(), "threads": 1}

    def close(self) -> None:
        """Close the executor and the trace file (end of a run)."""
        with self._lock:
            if self._executor is not None:
                self._executor.close()
                self._executor = None
        self.tracer.close()


class ServicesFor:
    """Where a graph's nodes find the run's Services.

    The CLI hands over the services it built (``ServicesFor(services)``); without them
    (LangGraph Studio passes only a context) one is built per run folder on first use
    and kept by this object, so it lives as long as the compiled graph, not the process.
    """

    def __init__(self, services: Services | None = None) -> None:
        """Serve ``services`` to every node, or build them from each node's context."""
        self._given = services
        self._built: dict[str, Services] = {}

    def __call__(self, context: Settings | dict[str, Any] | None) -> Services:
        """Return the services of the run ``context`` describes."""
        if self._given is not None:
            return self._given
        ctx = Settings.of(context)
        key = str(Path(ctx.run_dir).resolve())
        if key not in self._built:
            Path(ctx.run_dir).mkdir(parents=True, exist_ok=True)
            self._built[key] = Services(ctx=ctx, tracer=Tracer(Path(ctx.run_dir) /
                                                               "trace.jsonl", ctx.run_id),
                                        display=PlainDisplay(quiet=True))
        return self._built[key]

    def close(self) -> None:
        """Close the services this object built (not those it was given)."""
        for svc in self._built.values():
            svc.close()
        self._built.clear()
