"""Run settings: the one definition of every setting, passed as LangGraph's ``context_schema``.

Each field carries its type, default, constraints and a ``description`` (shown by
``--help`` and by LangGraph Studio); its :class:`~tasks.data_args.Flag` metadata says which
``--help`` group lists it and whether a resumed run may change it. ``graph.config`` layers
the sources (defaults < TOML config < ``FLNAS_<NAME>`` environment < flags) and validates
each layer so an error names its key and layer (docs/architecture.md, "Settings").

Everything is JSON-like so that ``settings.json`` restores a run on ``--resume``. Defaults
are chosen so that ``python -m graph.run --task isic --synthetic`` evaluates at least six
candidates in under five minutes on a 2-core CPU (see graph/bench_loop.py).
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from evaluation.report import Budgets
from tasks.data_args import DataOptions, Flag
from tasks.io import atomic_write

#: Backend names ``agents.llm.parse_llm`` accepts (``--llm NAME[:MODEL]``);
#: tests/graph/test_config.py checks the two agree.
LLM_BACKENDS = ("heuristic", "openai", "local", "openai-compatible")
#: Keys of settings.json written before per-role models became the ``models`` field.
_LEGACY_ROLE_KEYS = {"designer_model": "designer", "critic_model": "critic",
                     "fixer_model": "code_fixer"}
_NONE_WORDS = ("none", "off", "")
#: Who proposes each round's design (agents.strategies).
Strategy = Literal["agents", "random", "evolution"]


def _none_allowed(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


class Settings(BaseSettings, DataOptions):
    """Resolved settings of one search run (the data fields come from ``DataOptions``)."""

    # Unknown keys are ignored: Studio and settings.json of older runs may carry some.
    model_config = SettingsConfigDict(env_prefix="FLNAS_", extra="ignore",
                                      validate_assignment=True)

    # --- search --------------------------------------------------------------------
    iter_max: Annotated[int, Flag("search", resume=True)] = Field(
        default=10, ge=0,
        description="Designer rounds (IterMax); the Template counts as candidate 0")
    patience: Annotated[int, Flag("search", resume=True)] = Field(
        default=4, ge=1, description="stop after this many rounds without hypervolume gain of the "
        "Pareto archive")
    max_fix_attempts: Annotated[int, Flag("search")] = Field(
        default=2, ge=0,
        description="Code-Fixer attempts per candidate before it is recorded as failed")
    target_balanced_accuracy: Annotated[float | None, Flag("search", resume=True)] = Field(
        default=None, ge=0, le=1, description="stop once the best design reaches this balanced "
        "accuracy (and the fairness target, when set)")
    target_max_gap: Annotated[float | None, Flag("search", resume=True)] = Field(
        default=None, ge=0, le=1, description="... and its worst accuracy gap between groups is at "
        "most this")
    unfairness_weight: Annotated[float, Flag("search")] = Field(
        default=1.0, ge=0, description="weight of mean unfairness in the final selection score "
        "(docs/metrics.md)")
    baselines: Annotated[bool, Flag("search")] = Field(
        default=False,
        description="also evaluate ResNet-18 and MobileNetV2 in prepare (slow on CPU)")
    roles: Annotated[list[str], NoDecode, Flag("search", metavar="MODULE")] = Field(
        default_factory=list, description="extra role modules to load, e.g. mypkg.auditor "
        "(comma-separated)")
    strategy: Annotated[Strategy, Flag("search")] = Field(
        default="agents", description="who proposes each round's design: agents (Critic + "
        "Designer), random (uniform draws from the Choices) or evolution (regularised "
        "evolution); see docs/architecture.md")
    population: Annotated[int, Flag("search")] = Field(
        default=6, ge=1, description="evolution: designs alive at once (the newest evaluated "
        "ones; random draws until this many evaluated ok)")
    sample_size: Annotated[int, Flag("search")] = Field(
        default=3, ge=1, description="evolution: designs drawn from the population per round "
        "(at most all of it); the best of them is the parent")
    confirm_top: Annotated[int, Flag("search")] = Field(
        default=3, ge=0, description="finalists re-evaluated on more training seeds before the "
        "final choice (the Template always joins them as the reference); 0: choose on the "
        "search's single evaluations")
    confirm_seeds: Annotated[int, Flag("search")] = Field(
        default=2, ge=1, description="extra training seeds per finalist: the final choice is on "
        "the mean over 1 + this many seeds")
    promote_top: Annotated[int, Flag("search")] = Field(
        default=1, ge=0, description="successive halving inside the search: after each round, "
        "up to this many of its designs whose single evaluation comes within noise of the best "
        "estimate are re-trained on the confirmation seeds and ranked on their means from then "
        "on (0: screen only; docs/metrics.md#promotion)")
    proposals: Annotated[int, Flag("search")] = Field(
        default=1, ge=1, description="designs proposed per round, each gated, fixed and "
        "evaluated concurrently (the evaluation budget is iter_max x proposals)")
    latency_screen_ms: Annotated[float | None, Flag("search")] = Field(
        default=None, gt=0, description="latency screen (ms, batch 1, one thread): the gate "
        "times each untrained design in a trusted job and does not train one slower than "
        "this (the Code-Fixer makes it cheaper); none: every design that passes the gate is "
        "trained (tools/screen.py)")
    search_seed: Annotated[int | None, Flag("search")] = Field(
        default=None, ge=0, description="seed of the search policy's randomness (heuristic, "
        "strategy, Code-Fixer); none: --seed")

    # --- execution (scale-out, docs/scale-out.md) --------------------------------------
    executor: Annotated[Literal["local", "ray"], Flag("execution", resume=True)] = Field(
        default="local", description="where evaluations run: local (a pool of sandboxed worker "
        "processes on this machine) or ray (Ray tasks; pip install -e '.[ray]')")
    workers: Annotated[int, Flag("execution", resume=True)] = Field(
        default=1, ge=1, description="evaluations running at the same time")
    ray_address: Annotated[str | None, Flag("execution", resume=True)] = Field(
        default=None, description="Ray cluster to join (auto: the running one); none: start a "
        "local Ray instance")
    cpus_per_eval: Annotated[float | None, Flag("execution", resume=True)] = Field(
        default=None, gt=0, description="CPU cores (torch threads) per evaluation; none: the "
        "machine's cores shared out over the workers")
    gpus_per_eval: Annotated[float, Flag("execution", resume=True)] = Field(
        default=0.0, ge=0, description="GPUs per evaluation (0: CPU only)")
    eval_retries: Annotated[int, Flag("execution", resume=True)] = Field(
        default=1, ge=0, description="retries of an evaluation whose worker or node was lost "
        "(not of a candidate's own crash)")

    # --- budgets (device) ----------------------------------------------------------
    max_latency_ms: Annotated[float | None, Flag("budgets")] = Field(
        default=None, gt=0, description="batch-1 median latency budget in ms")
    max_memory_mb: Annotated[float | None, Flag("budgets")] = Field(
        default=None, gt=0, description="weights + peak activation memory budget in MB")
    max_params: Annotated[int | None, Flag("budgets")] = Field(
        default=200_000, gt=0, description="trainable parameter budget")
    max_flops: Annotated[int | None, Flag("budgets")] = Field(
        default=None, gt=0, description="FLOPs budget of one batch-1 forward pass")

    # --- recipe --------------------------------------------------------------------
    epochs: Annotated[int, Flag("recipe")] = Field(
        default=5, ge=1, description="training epochs of the fixed recipe")
    batch_size: Annotated[int, Flag("recipe")] = Field(
        default=64, ge=1, description="training batch size")
    train_seed: Annotated[int | None, Flag("recipe")] = Field(
        default=None, ge=0, description="seed of training (weight init, sampler, augmentation); "
        "none: --seed")
    lr: Annotated[float | None, Flag("recipe")] = Field(
        default=None, gt=0, description="learning rate (none: the recipe's default)")
    eval_timeout_s: Annotated[float | None, Flag("recipe", aliases=("--eval-timeout",))] = Field(
        default=None, gt=0, description="wall-clock limit in seconds of one evaluation's training "
        "job (none: scaled with the epochs, the training-set size and the gate's measured "
        "training cost per image)")

    # --- LLM -----------------------------------------------------------------------
    llm: Annotated[str, Flag("llm", resume=True)] = Field(
        default="heuristic",
        description="backend: heuristic (offline) | openai:MODEL | local:MODEL "
        "with --base-url")
    base_url: Annotated[str | None, Flag("llm", resume=True)] = Field(
        default=None, description="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    model: Annotated[str | None, Flag("llm", resume=True)] = Field(
        default=None, description="model name for every role")
    models: Annotated[dict[str, str], NoDecode,
                      Flag("llm", resume=True, aliases=("--role-model",),
                           metavar="ROLE=MODEL")] = Field(
        default_factory=dict, description="model of one role (any registered role), "
        "overriding --model")
    llm_timeout_s: Annotated[float, Flag("llm", resume=True, aliases=("--llm-timeout",))] = \
        Field(default=120.0, gt=0, description="per-request timeout of LLM calls in seconds")
    max_llm_tokens: Annotated[int | None, Flag("llm", resume=True)] = Field(
        default=None, ge=0, description="stop when LLM input+output tokens exceed this")
    max_wall_s: Annotated[float | None, Flag("llm", resume=True)] = Field(
        default=None, gt=0,
        description="stop starting new rounds after this many seconds of search")
    llm_breaker_after: Annotated[int | None, Flag("llm", resume=True)] = Field(
        default=3, ge=1, description="open the LLM circuit breaker after this many consecutive "
        "failed calls (none: never)")
    llm_breaker_action: Annotated[Literal["heuristic", "stop"], Flag("llm", resume=True)] = \
        Field(default="heuristic", description="once the breaker is open: use the heuristic brains "
              "for the rest of the run, or stop the run and write the summary")

    # --- run -----------------------------------------------------------------------
    run_dir: Annotated[str, Flag("run", cli=False)] = Field(
        default="runs/default",
        description="this run's folder (runs/<run_id>; set by --run-dir and "
        "--run-id)")
    run_id: Annotated[str, Flag("run", cli=False)] = Field(
        default="default", description="run id, the checkpoint thread id (set by --run-id)")
    quiet: Annotated[bool, Flag("run", resume=True)] = Field(
        default=False, description="plain progress lines instead of the live display")
    shared_cache: Annotated[str | None, Flag("run", resume=True, metavar="DIR")] = Field(
        default=None,
        description="a folder of gate and evaluation results shared between runs: a design "
        "already trained there with the same data, recipe, seed, budgets and machine is "
        "reused, its files copied (none: each run keeps only its own cache)")
    require_isolation: Annotated[bool | None, Flag("run", resume=True)] = Field(
        default=None,
        description="refuse to run candidate code without the OS sandbox (bubblewrap); "
        "none: on for LLM backends, off for the heuristic one")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Build from the given values only.

        graph.config reads the environment as its own layer so an error can name it; a
        Settings built elsewhere (tests, Studio's context dict, settings.json) must not
        change with the environment of the process that builds it.
        """
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _none_words(cls, data: Any) -> Any:
        """Read ``none`` / ``off`` / empty text as None where a field allows None.

        Flags and environment variables are text, and TOML has no null.
        """
        if not isinstance(data, dict):
            return data
        return {k: None if isinstance(v, str) and v.strip().lower() in _NONE_WORDS
                and k in cls.model_fields and _none_allowed(cls.model_fields[k].annotation)
                else v for k, v in data.items()}

    @field_validator("roles", mode="before")
    @classmethod
    def _split_roles(cls, value: Any) -> Any:
        """Accept ``a,b`` text and lists of such text (repeated flags)."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            return value
        if not all(isinstance(i, str) for i in items):
            return items
        return [r.strip() for item in items for r in item.split(",") if r.strip()]

    @field_validator("roles")
    @classmethod
    def _module_paths(cls, value: list[str]) -> list[str]:
        bad = [r for r in value if not all(part.isidentifier() for part in r.split("."))]
        if bad:
            raise ValueError(f"not a module path: {', '.join(map(repr, bad))} (expected e.g. "
                             "mypkg.auditor)")
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _role_models(cls, value: Any) -> Any:
        """Accept ``ROLE=MODEL[,ROLE=MODEL]`` text and lists of it (repeated flags)."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            return value
        out: dict[str, Any] = {}
        for item in items:
            for pair in (item.split(",") if isinstance(item, str) else [item]):
                role, sep, model = str(pair).partition("=")
                if not sep or not role.strip() or not model.strip():
                    raise ValueError(f"expected ROLE=MODEL, got {pair!r}")
                out[role.strip()] = model.strip()
        return out

    @field_validator("shared_cache")
    @classmethod
    def _a_folder(cls, value: str | None) -> str | None:
        if value is None:
            return None
        folder = Path(value).expanduser()
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{value} is a file; give a folder (it is created if missing)")
        return str(folder)

    @field_validator("llm")
    @classmethod
    def _llm_backend(cls, value: str) -> str:
        name = value.partition(":")[0].strip().lower()
        if name not in LLM_BACKENDS:
            raise ValueError(f"unknown backend {name!r}; use heuristic, openai:MODEL, "
                             "local:MODEL (with --base-url) or openai-compatible:MODEL")
        return value

    @property
    def resolved_train_seed(self) -> int:
        """The recipe's seed: ``train_seed``, else ``seed``."""
        return self.seed if self.train_seed is None else self.train_seed

    @property
    def confirm_train_seeds(self) -> list[int]:
        """The training seeds of the confirmation rung (never the search's own seed)."""
        return [self.resolved_train_seed + 1 + i for i in range(self.confirm_seeds)]

    @property
    def resolved_search_seed(self) -> int:
        """The search policy's seed: ``search_seed``, else ``seed``."""
        return self.seed if self.search_seed is None else self.search_seed

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
        """Model name for ``role``: its entry in ``models``, else the shared ``model``."""
        return self.models.get(role) or self.model

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        return self.model_dump(mode="json")

    @classmethod
    def of(cls, value: Settings | dict[str, Any] | None) -> Settings:
        """Return the run's Settings from what a node's runtime carries (Studio: a dict)."""
        if isinstance(value, cls):
            return value
        return cls.from_json(value) if isinstance(value, dict) else cls()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        """Rebuild from :meth:`to_json` output, ignoring unknown keys (older runs).

        settings.json written before ``models`` existed carries ``designer_model``,
        ``critic_model`` and ``fixer_model``: they become ``models`` entries. That version
        never applied ``eval_timeout_s``, so it is dropped and the run keeps the scaled
        timeout it ran with.

        Raises:
            pydantic.ValidationError: A value of the wrong type or out of range.
        """
        data = dict(data)
        if any(k in data for k in _LEGACY_ROLE_KEYS):
            data.pop("eval_timeout_s", None)
            legacy = {role: data.pop(k) for k, role in _LEGACY_ROLE_KEYS.items() if data.get(k)}
            data["models"] = {**legacy, **(data.get("models") or {})}
        return cls.model_validate({k: v for k, v in data.items() if k in cls.model_fields})

    def save(self, path: Path) -> None:
        """Write ``settings.json`` atomically."""
        atomic_write(path, json.dumps(self.to_json(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> Settings:
        """Read ``settings.json``."""
        return cls.from_json(json.loads(path.read_text()))
