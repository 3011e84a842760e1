"""Run settings passed through LangGraph's ``context_schema`` (not part of the state).

Everything here is JSON-like so that ``settings.json`` can restore a run on ``--resume``.
Defaults are chosen so that ``python -m graph.run --task isic --synthetic`` evaluates at
least six candidates in under five minutes on a 2-core CPU (see evaluation/bench_loop.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.report import Budgets


@dataclass
class Settings:
    """Resolved settings of one search run."""

    # --- task and data -------------------------------------------------------------
    task: str = "isic"
    """Task name (only ``isic`` for now)."""
    data_dir: str | None = None
    """ISIC 2019 folder (or env FLNAS_ISIC_DIR); ``None`` with ``synthetic``."""
    synthetic: bool = False
    """Use the generated ISIC-format synthetic set."""
    synthetic_n: int = 4000
    """Images in the synthetic set (the calibrated default of tasks.synthetic)."""
    image_size: int = 64
    """Training resolution (pixels, square)."""
    seed: int = 0
    """Seed for the split, the recipe and the heuristic policy."""
    cache_dir: str | None = None
    """Decoded-image cache root (default env FLNAS_CACHE_DIR or ~/.cache/flnas)."""
    strict: bool = False
    """Fail on any malformed dataset row instead of skipping it."""

    # --- search --------------------------------------------------------------------
    iter_max: int = 10
    """Designer rounds (IterMax); the Template counts as candidate 0."""
    patience: int = 4
    """Stop after this many rounds without hypervolume gain of the Pareto archive."""
    max_fix_attempts: int = 2
    """Code-Fixer attempts per candidate before it is recorded as failed."""
    target_balanced_accuracy: float | None = None
    """Target balanced accuracy; with the fairness target, all met -> converged."""
    target_max_gap: float | None = None
    """Target worst attribute max_gap (accuracy gap between groups)."""
    unfairness_weight: float = 1.0
    """Weight of mean unfairness in the final selection score (see finalize)."""
    baselines: bool = False
    """Evaluate ResNet-18 and MobileNetV2 in ``prepare`` (slow on CPU)."""
    roles: list[str] = field(default_factory=list)
    """Extra role modules to import (extension roles wire themselves at their hook)."""

    # --- budgets (device) -------------------------------------------------------------
    max_latency_ms: float | None = None
    """Batch-1 median latency budget (ms)."""
    max_memory_mb: float | None = None
    """Weights + peak activation memory budget (MB)."""
    max_params: int | None = 200_000
    """Trainable parameter budget."""
    max_flops: int | None = None
    """FLOPs budget of one batch-1 forward pass."""

    # --- recipe -------------------------------------------------------------------------
    epochs: int = 3
    """Training epochs of the fixed recipe."""
    batch_size: int = 64
    """Training batch size."""
    lr: float | None = None
    """Learning rate (None: the recipe's default)."""

    # --- LLM --------------------------------------------------------------------------
    llm: str = "heuristic"
    """Backend: ``heuristic`` or ``openai:<model>`` (or any OpenAI-compatible server)."""
    base_url: str | None = None
    """OpenAI-compatible server URL (ending in /v1)."""
    model: str | None = None
    """Model name for all roles (with ``base_url``)."""
    designer_model: str | None = None
    """Model of the Designer (overrides ``model``)."""
    critic_model: str | None = None
    """Model of the Critic (overrides ``model``)."""
    fixer_model: str | None = None
    """Model of the Code-Fixer (overrides ``model``)."""
    llm_timeout_s: float = 120.0
    """Per-request timeout of LLM calls."""
    max_llm_tokens: int | None = None
    """Stop when LLM input+output tokens exceed this."""
    max_wall_s: float | None = None
    """Stop starting new rounds after this many seconds of search."""
    llm_breaker_after: int | None = 3
    """Open the LLM circuit breaker after this many consecutive failed calls (None: never)."""
    llm_breaker_action: str = "heuristic"
    """When the breaker opens: ``heuristic`` (stop calling the LLM, use the offline
    brains) or ``stop`` (finish the run after the current step)."""

    # --- run ----------------------------------------------------------------------------
    run_dir: str = "runs/default"
    """This run's folder (``runs/<run_id>``)."""
    run_id: str = "default"
    """Run id (checkpoint thread id)."""
    eval_timeout_s: float = 900.0
    """Wall-clock limit of one evaluation job."""
    quiet: bool = False
    """Plain lines instead of the rich live display."""
    require_isolation: bool | None = None
    """Refuse to run candidate code without the OS sandbox (None: on for LLM backends)."""

    @property
    def isolation_required(self) -> bool:
        """Whether untrusted code needs the OS sandbox: LLM code always, by default."""
        if self.require_isolation is not None:
            return self.require_isolation
        return self.llm != "heuristic"

    @property
    def budgets(self) -> Budgets:
        """The device budgets in priority order."""
        return Budgets(
            max_latency_ms=self.max_latency_ms,
            max_memory_mb=self.max_memory_mb,
            max_params=self.max_params,
            max_flops=self.max_flops,
        )

    def role_model(self, role: str) -> str | None:
        """Model name for ``role`` (per-role value, else the shared ``model``)."""
        per_role = {
            "designer": self.designer_model,
            "critic": self.critic_model,
            "code_fixer": self.fixer_model,
        }.get(role)
        return per_role or self.model

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, value: Settings | dict[str, Any] | None) -> Settings:
        """Return the run's Settings from what a node's runtime carries (Studio: a dict)."""
        if isinstance(value, cls):
            return value
        return cls.from_json(value) if isinstance(value, dict) else cls()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        """Rebuild from :meth:`to_json` output, ignoring unknown keys (older runs)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def save(self, path: Path) -> None:
        """Write ``settings.json`` atomically."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Settings:
        """Read ``settings.json``."""
        return cls.from_json(json.loads(path.read_text()))
