"""Per-run resources the nodes need but the state must not hold.

Services are looked up from the run's :class:`~agents.settings.Settings` (keyed by run
directory) and built lazily, so a graph invoked from LangGraph Studio with only a
context works too. They hold: the tracer, the display, the prepared data, the chat
models per role, and the cached tool calls (gate / evaluate / export), each traced as a
``tool_call`` event with its duration.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.llm import CallRecord, CircuitBreaker, LLMSpec, make_chat_model, parse_llm
from agents.settings import Settings
from graph.display import Display, PlainDisplay
from graph.trace import Tracer, estimate_cost


@dataclass
class Services:
    """Resources of one run (see module docstring)."""

    ctx: Settings
    tracer: Tracer
    display: Display | PlainDisplay
    _data: Any = None
    _chats: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _breaker: CircuitBreaker | None = None
    round_t0: float | None = None
    """``time.monotonic()`` when the current round's first node started (round timing)."""

    @property
    def run_dir(self) -> Path:
        """The run folder."""
        return Path(self.ctx.run_dir)

    # ------------------------------------------------------------------ data / recipe
    def data(self) -> Any:
        """Return the prepared task data (``tasks.cache.PreparedData``), prepared on first use."""
        if self._data is None:
            from tasks.data_args import prepare_from_args

            self._data = prepare_from_args(data_namespace(self.ctx))
        return self._data

    def recipe(self) -> Any:
        """Return the fixed training recipe (``tools.train.Recipe``) of this run."""
        from tools.train import Recipe

        kw: dict[str, Any] = {"epochs": self.ctx.epochs, "batch_size": self.ctx.batch_size,
                              "seed": self.ctx.seed}
        if self.ctx.lr is not None:
            kw["lr"] = self.ctx.lr
        return Recipe(**kw)

    def fidelity(self) -> dict[str, Any]:
        """How much an evaluation costs and sees: recipe, image size and data size."""
        recipe = self.recipe()
        return {"epochs": recipe.epochs, "batch_size": recipe.batch_size,
                "seed": recipe.seed, "image_size": self.ctx.image_size,
                "n_images": getattr(self._data, "n", None)}

    # ----------------------------------------------------------------------- LLMs
    def spec(self, role: str) -> LLMSpec:
        """Return the LLM spec of ``role`` (heuristic unless an LLM backend is configured)."""
        c = self.ctx
        if c.llm == "heuristic" and not c.base_url:
            return parse_llm("heuristic")
        # "--base-url URL --model M" alone selects an OpenAI-compatible server.
        backend, _, inline = (c.llm if c.llm != "heuristic" else "openai").partition(":")
        model = c.role_model(role) or inline or None
        return parse_llm(backend, base_url=c.base_url, model=model, timeout_s=c.llm_timeout_s)

    def chat(self, role: str) -> Any:
        """Return the chat model of ``role`` (cached per role)."""
        with self._lock:
            if role not in self._chats:
                self._chats[role] = make_chat_model(self.spec(role))
            return self._chats[role]

    def llm_breaker(self) -> CircuitBreaker:
        """Return the run's LLM circuit breaker (one for every role, built on first use)."""
        with self._lock:
            if self._breaker is None:
                self._breaker = CircuitBreaker(self.ctx.llm_breaker_after,
                                               self.ctx.llm_breaker_action)
            return self._breaker

    def record_llm(self, record: CallRecord, *, prompt_name: str, prompt_sha: str,
                   candidate: str | None) -> None:
        """Trace one LLM request."""
        self.tracer.event("llm_call", prompt_file=prompt_name, prompt_sha256=prompt_sha,
                          candidate=candidate, cost_usd=estimate_cost(
                              record.model, record.input_tokens, record.output_tokens),
                          **record.to_dict())

    def persist(self, rec: dict[str, Any]) -> None:
        """Write ``candidates/<id>/{model.py, report.json}`` (the record, code aside)."""
        folder = self.run_dir / "candidates" / rec["id"]
        atomic_write(folder / "model.py", rec["code"])
        atomic_write(folder / "report.json",
                     json.dumps({k: v for k, v in rec.items() if k != "code"}, indent=1))

    # ----------------------------------------------------------------------- tools
    def cache_path(self, kind: str, key: str) -> Path:
        """Where the result of a tool call with ``key`` is cached in the run folder."""
        return self.run_dir / "cache" / kind / f"{key}.json"

    def gate_key(self, code: str) -> str:
        """Cache key of a gate result: code hash, image size and budgets."""
        from agents.records import code_hash

        return f"{code_hash(code)}-{self.ctx.image_size}-{_budget_key(self.ctx)}"

    def gate(self, code: str, candidate: str) -> dict[str, Any]:
        """Gate ``code`` (static + build + forward + budget, sandboxed), cached by code hash."""
        from tools.gate import gate

        key = self.gate_key(code)
        path = self.cache_path("gate", key)
        t0 = time.monotonic()
        cached = path.exists()
        if cached:
            out = json.loads(path.read_text())
        else:
            report = gate(code, budgets=self.ctx.budgets, image_size=self.ctx.image_size,
                          num_classes=len(self.data().class_names))
            out = report.model_dump(mode="json")
            atomic_write(path, json.dumps(out))
        self.tracer.event("tool_call", tool="gate", candidate=candidate, key=key, cached=cached,
                          ok=out.get("ok"), duration_s=round(time.monotonic() - t0, 4))
        return out

    def evaluate(self, code: str, candidate: str, *, split: str = "val",
                 budgets: Any = None) -> dict[str, Any]:
        """Train and measure ``code`` in the sandboxed worker, cached by evaluation key.

        The cache key is :func:`tools.evaluate.evaluation_key` (code hash + recipe + data
        fingerprint + split); the file is written atomically once the report exists, so a
        killed run never re-trains a finished candidate.
        """
        from evaluation.report import Budgets, EvaluationReport, HardwareReport, budget_violations
        from tools.evaluate import evaluate_candidate, evaluation_key

        data, recipe = self.data(), self.recipe()
        key = evaluation_key(code, recipe, data.fingerprint, split)
        path = self.cache_path("evaluate", key)
        t0 = time.monotonic()
        cached = path.exists()
        if cached:
            report = EvaluationReport.model_validate_json(path.read_text())
        else:
            kwargs: dict[str, Any] = {"recipe": recipe, "budgets": budgets or self.ctx.budgets,
                                      "split": split, "candidate_id": candidate,
                                      "out_dir": self.run_dir / "candidates" / candidate / split}
            kwargs["on_event"] = lambda ev: self.display.progress(candidate, ev)
            kwargs["timeout_s"] = self.ctx.eval_timeout_s
            gated = self.cache_path("gate", self.gate_key(code))
            if budgets is None and gated.exists():
                # The gate node already built this code under these budgets: don't redo it.
                from tools.gate import GateReport

                earlier = GateReport.model_validate_json(gated.read_text())
                kwargs["gate_report"] = earlier if earlier.ok else None
            report = evaluate_candidate(code, data, **kwargs)
            if report.candidate_id is None:
                report.candidate_id = candidate
            if budgets is not None and report.ok and report.hardware is not None:
                # Evaluated without the run's budgets (a baseline): still name violations.
                report.budgets = Budgets.model_validate(self.ctx.budgets.model_dump())
                report.violations = budget_violations(
                    HardwareReport.model_validate(report.hardware.model_dump()), report.budgets)
            atomic_write(path, report.model_dump_json())
        self.tracer.event("tool_call", tool="evaluate", candidate=candidate, key=key,
                          split=split, fidelity=self.fidelity(), cached=cached, ok=report.ok,
                          failure_stage=report.failure_stage,
                          duration_s=round(time.monotonic() - t0, 4))
        return report.model_dump(mode="json")


    def export(self, candidate: str) -> dict[str, Any]:
        """Copy the graph the candidate's test evaluation measured to ``best_model.onnx``.

        Each evaluation exports its trained model to ONNX and scores that very graph
        (``tools.measure``), so the deliverable is the file the test split was scored
        with: ``candidates/<id>/test/model.onnx`` (the validation one when the test
        evaluation failed); nothing is rebuilt or re-exported.

        Returns:
            What was exported (``onnx`` path, ``trained_for`` split, exporter, ONNX
            Runtime check) or ``onnx_error``.
        """
        import shutil

        from tools.sandbox import is_regular

        t0 = time.monotonic()
        out: dict[str, Any] = {"code": "best_model.py"}
        folder = self.run_dir / "candidates" / candidate
        try:
            for split in ("test", "val"):
                src = folder / split / "model.onnx"
                if not is_regular(src):
                    continue
                dest = self.run_dir / "best_model.onnx"
                shutil.copyfile(src, dest)
                out.update(onnx="best_model.onnx", trained_for=split,
                           onnxruntime_check=_ort_check(dest, self.ctx.image_size,
                                                        len(self.data().class_names)))
                report = folder / split / "report.json"
                if report.is_file():
                    out["exporter"] = json.loads(report.read_text()).get("exporter")
                break
            else:
                out["onnx_error"] = f"no evaluation of {candidate} left a model.onnx"
        except Exception as exc:  # noqa: BLE001 - export is a bonus; never lose the run for it
            out["onnx_error"] = f"{type(exc).__name__}: {exc}"[-500:]
        self.tracer.event("tool_call", tool="export", candidate=candidate, cached=False,
                          ok="onnx" in out, duration_s=round(time.monotonic() - t0, 4),
                          error=out.get("onnx_error"))
        return out


def _ort_check(path: Path, image_size: int, num_classes: int) -> str:
    """Validate the exported graph and run it once in ONNX Runtime, sandboxed.

    The graph's bytes came from a process that ran candidate code, so the parent never
    parses them itself: ``tools.measure.check_job`` does, in a worker that loads no
    candidate code.

    Returns:
        "ok", or what went wrong.
    """
    from tools.sandbox import SandboxLimits, run_job

    res = run_job("tools.measure:check_job", {"onnx_path": str(path), "image_size": image_size,
                                              "num_classes": num_classes},
                  limits=SandboxLimits(timeout_s=180), read_only=[str(path)])
    if not res.ok:
        return f"check failed: {res.error or 'no result'}"[:500]
    return str((res.result or {}).get("check", "no answer"))[:500]


def _budget_key(ctx: Settings) -> str:
    b = ctx.budgets.model_dump()
    return "_".join(str(b[k]) for k in sorted(b))


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file + rename (never a torn file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def data_namespace(ctx: Settings) -> argparse.Namespace:
    """Rebuild the data arguments of ``tasks.data_args`` rebuilt from a context."""
    return argparse.Namespace(
        task=ctx.task, data_dir=ctx.data_dir, synthetic=ctx.synthetic,
        synthetic_n=ctx.synthetic_n, image_size=ctx.image_size, seed=ctx.seed,
        cache_dir=ctx.cache_dir, strict=ctx.strict,
    )


_SERVICES: dict[str, Services] = {}


def install(services: Services) -> Services:
    """Register the services of a run (the CLI does this before invoking the graph)."""
    _SERVICES[str(Path(services.ctx.run_dir).resolve())] = services
    return services


def services_for(ctx: Settings | dict[str, Any] | None) -> Services:
    """Return the services of the run ``ctx`` describes, built lazily (e.g. under Studio)."""
    ctx = Settings.of(ctx)
    key = str(Path(ctx.run_dir).resolve())
    svc = _SERVICES.get(key)
    if svc is None:
        Path(ctx.run_dir).mkdir(parents=True, exist_ok=True)
        svc = install(Services(ctx=ctx, tracer=Tracer(Path(ctx.run_dir) / "trace.jsonl",
                                                       ctx.run_id),
                               display=PlainDisplay(quiet=True)))
    return svc


def release(ctx: Settings) -> None:
    """Forget and close a run's services (end of a CLI run, tests)."""
    svc = _SERVICES.pop(str(Path(ctx.run_dir).resolve()), None)
    if svc is not None:
        svc.tracer.close()
