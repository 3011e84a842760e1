"""Benchmark profiles: every number a suite runs with, as data (one instance per profile).

A :class:`Profile` holds the data arguments (synthetic n, image size), the recipe
(epochs, batch size), the budgets, the evaluation budget per search (``proposals`` =
``--iter-max``), the search seeds, the fresh training seeds of the re-measurements, the
strategies and the hypervolume normalisation. ``quick`` is sized for a 2-core CPU,
``full`` is the GPU profile on the real ISIC 2019 set (``--data-dir`` required). Change a
number here (or override it from the command line, :meth:`Profile.override`), never in
the suites.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from agents.settings import Settings
from tasks.data_args import DATA_DIR_ENV


class ProfileError(ValueError):
    """A profile cannot run as asked (missing data folder, bad override)."""


class Profile(BaseModel):
    """Everything one benchmark profile fixes before any run (see the module docstring)."""

    name: str
    description: str
    # --- data -----------------------------------------------------------------------
    synthetic: bool = True
    synthetic_n: int = Field(default=2000, ge=8)
    data_dir: str | None = None
    """Real ISIC 2019 folder (profiles with ``synthetic=False``)."""
    image_size: int = Field(default=32, ge=8)
    data_seed: int = 0
    """``--seed``: data and split, the same for every run."""
    # --- recipe ---------------------------------------------------------------------
    epochs: int = Field(default=4, ge=1)
    batch_size: int = Field(default=64, ge=2)
    confirm_top: int = Field(default=0, ge=0)
    """``--confirm-top`` of every search (0: the suite re-measures each search's choice on
    the fresh seeds itself, so the searches spend their budget on proposals)."""
    promote_top: int = Field(default=1, ge=0)
    """``--promote-top`` of every search: the in-search promotion rung (docs/metrics.md#promotion),
    the same schedule for every strategy."""
    eval_timeout_s: float | None = None
    """Training-job limit of one evaluation (None: the CLI's scaled default)."""
    baseline_timeout_s: float = 1800.0
    """Training-job limit in the baselines suite (ResNet-18 trains far longer)."""
    # --- budgets --------------------------------------------------------------------
    max_params: int | None = 200_000
    max_latency_ms: float | None = None
    max_memory_mb: float | None = None
    # --- search ---------------------------------------------------------------------
    proposals: int = Field(default=8, ge=1)
    """Evaluation budget per search: ``--iter-max`` (the Template comes on top)."""
    search_seeds: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    search_train_seed: int = 0
    """``--train-seed`` of every search (the same for all, so strategies compare alike)."""
    fresh_seeds: list[int] = Field(default_factory=lambda: [101, 102, 103], min_length=1)
    """Training seeds of the re-measurements and of the baselines suite (never searched)."""
    strategies: list[str] = Field(default_factory=lambda: ["agents", "random", "evolution"],
                                  min_length=1)
    """``NAME`` or ``NAME=LLM`` (e.g. ``agents=openai:gpt-4.1``), see :func:`strategy_args`."""
    # --- hypervolume ----------------------------------------------------------------
    latency_ref_ms: float = Field(default=1.0, gt=0)
    """``L``: latency is normalised as ``latency_ms / L``."""
    hv_reference: tuple[float, float, float] = (0.875, 1.0, 1.0)
    """Reference point of the normalised objectives (1 - bal. acc, unfairness, latency/L).
    0.875 = 1 - 1/8: a design at chance level on the 8 ISIC classes adds nothing."""
    latency_screen: float | None = Field(default=1.5, gt=0)
    """``--latency-screen-ms`` of every search as a multiple of the reference latency
    (``latency_ref_ms * hv_reference[2]``): a design that much slower than the
    hypervolume's latency edge cannot add volume, so no strategy trains it
    (tools/screen.py); the margin keeps timing noise from screening out one that could.
    None: every design is trained."""
    # --- pipeline suite -------------------------------------------------------------
    pipeline_n: int = 2000
    pipeline_image_size: int = 64
    pipeline_epochs: int = 1
    # --- planning -------------------------------------------------------------------
    eval_s_estimate: float = 20.0
    """Rough seconds per evaluation on the profile's machine, for ``--dry-run`` only."""
    gpu: bool = False
    """Written for a GPU machine (documentation; the device is chosen automatically)."""

    @model_validator(mode="after")
    def _seeds_apart(self) -> Profile:
        # The searches train on their seed, and promote and confirm on the next ones.
        searched = range(self.search_train_seed,
                         self.search_train_seed + 1 + Settings().confirm_seeds)
        if set(searched) & set(self.fresh_seeds):
            raise ValueError(f"fresh seeds {self.fresh_seeds} must not include the searches' "
                             f"training seeds {list(searched)}")
        for spec in self.strategies:
            strategy_args(spec)  # raises on an unknown strategy
        return self

    @property
    def evaluations_per_search(self) -> int:
        """Return the most trainings one search runs.

        The Template and each proposal once, plus the promotion rung's extra seeds (the
        Template's in ``prepare`` and up to ``promote_top`` designs per round; fewer when
        fewer screen within noise).
        """
        seeds = Settings().confirm_seeds
        promoted = (1 + self.promote_top * self.proposals) if self.promote_top else 0
        return self.proposals + 1 + seeds * promoted

    @property
    def latency_screen_ms(self) -> float | None:
        """The searches' latency screen in ms (None: off), from :attr:`latency_screen`."""
        if self.latency_screen is None:
            return None
        return self.latency_screen * self.latency_ref_ms * self.hv_reference[2]

    def data_args(self) -> list[str]:
        """Return the ``graph.run`` data flags of this profile."""
        if self.synthetic:
            src = ["--synthetic", "--synthetic-n", str(self.synthetic_n)]
        else:
            src = ["--data-dir", self.require_data_dir()]
        return ["--task", "isic", *src, "--image-size", str(self.image_size),
                "--seed", str(self.data_seed)]

    def recipe_args(self) -> list[str]:
        """Return the ``graph.run`` recipe and budget flags of this profile."""
        out = ["--epochs", str(self.epochs), "--batch-size", str(self.batch_size),
               "--confirm-top", str(self.confirm_top), "--promote-top", str(self.promote_top)]
        for flag, value in (("--max-params", self.max_params),
                            ("--max-latency-ms", self.max_latency_ms),
                            ("--max-memory-mb", self.max_memory_mb)):
            out += [flag, "none" if value is None else f"{value:g}"]
        if self.eval_timeout_s is not None:
            out += ["--eval-timeout", f"{self.eval_timeout_s:g}"]
        screen = self.latency_screen_ms
        out += ["--latency-screen-ms", "none" if screen is None else f"{screen:g}"]
        return out

    def require_data_dir(self) -> str:
        """Return the real data folder (``data_dir`` or ``$FLNAS_ISIC_DIR``).

        Raises:
            ProfileError: Neither is set, or the folder does not exist.
        """
        folder = self.data_dir or os.environ.get(DATA_DIR_ENV)
        if not folder:
            raise ProfileError(f"profile {self.name!r} runs on the real ISIC 2019 set: give "
                               f"--data-dir DIR (or set {DATA_DIR_ENV}); use --profile quick "
                               "for the synthetic set")
        if not os.path.isdir(folder):
            raise ProfileError(f"--data-dir {folder}: no such folder")
        return folder

    def override(self, **changes: Any) -> Profile:
        """Return a copy with the given (non-None) fields changed and validated.

        ``seeds=N`` keeps the first ``N`` search seeds (more: counts on from the last).

        Raises:
            ProfileError: A value out of range or an unknown strategy.
        """
        data = self.model_dump()
        n = changes.pop("seeds", None)
        if n is not None:
            if n < 1:
                raise ProfileError(f"--seeds must be at least 1, got {n}")
            seeds = list(self.search_seeds)
            while len(seeds) < n:
                seeds.append(max(seeds) + 1)
            data["search_seeds"] = seeds[:n]
        data.update({k: v for k, v in changes.items() if v is not None})
        try:
            return Profile.model_validate(data)
        except ValidationError as e:
            why = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'profile'}: {err['msg']}"
                            for err in e.errors())
            raise ProfileError(f"profile {self.name!r}: {why}") from None


def strategy_args(spec: str) -> tuple[str, list[str]]:
    """Return the label and the ``graph.run`` flags of a strategy spec ``NAME[=LLM]``.

    ``agents`` uses the default (heuristic) backend; ``agents=openai:gpt-4.1`` the given
    LLM (label ``agents[openai:gpt-4.1]``). ``random`` and ``evolution`` ask no LLM.

    Raises:
        ProfileError: An unknown strategy name, or an LLM on a strategy without agents.
    """
    name, _, llm = spec.partition("=")
    if name not in ("agents", "random", "evolution"):
        raise ProfileError(f"unknown strategy {name!r} in {spec!r}; use agents, random, "
                           "evolution or agents=LLM")
    if llm and name != "agents":
        raise ProfileError(f"strategy {spec!r}: only agents use an LLM")
    flags = ["--strategy", name] + (["--llm", llm] if llm else [])
    return (f"{name}[{llm}]" if llm else name), flags


# The quick profile trains at the product's default fidelity (4000 synthetic images, 32 px,
# 5 epochs): there the Template's balanced accuracy spreads by about 0.05 (sd, nine training
# seeds), against 0.078 at 64 px and 3 epochs (docs/metrics.md#noise).
QUICK = Profile(
    name="quick",
    description="2-core CPU, synthetic ISIC-format set at the default fidelity",
    synthetic_n=4000, epochs=5, proposals=6, eval_s_estimate=20.0,
)

FULL = Profile(
    name="full",
    description="GPU, real ISIC 2019 (--data-dir): 128 px, 10 epochs, 30 proposals",
    synthetic=False, image_size=128, epochs=10, proposals=30, latency_ref_ms=8.0,
    pipeline_n=4000, pipeline_image_size=128, eval_s_estimate=120.0, gpu=True,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (QUICK, FULL)}


def get_profile(name: str) -> Profile:
    """Return the named profile.

    Raises:
        ProfileError: No such profile.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None
