"""The run's task data and fixed training recipe, built from its Settings.

The data is prepared once per run (``tasks.data_args``, decoded-image cache shared with
the workers); the recipe is the same for every candidate (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from agents.settings import Settings


class RunData:
    """The task data (prepared on first use) and the training recipe of one run."""

    def __init__(self, ctx: Settings, data: Any = None) -> None:
        """Keep ``data`` when the caller prepared it already (the CLI does, to report it)."""
        self.ctx = ctx
        self._data = data

    def data(self) -> Any:
        """Return the prepared data (``tasks.cache.PreparedData``)."""
        if self._data is None:
            from tasks.data_args import prepare_from_args

            self._data = prepare_from_args(self.ctx)
        return self._data

    def recipe(self, seed: int | None = None) -> Any:
        """Return the fixed training recipe (``tools.train.Recipe``).

        Args:
            seed: Training seed; None: the run's ``train_seed``.
        """
        from tools.train import Recipe

        kw: dict[str, Any] = {"epochs": self.ctx.epochs, "batch_size": self.ctx.batch_size,
                              "seed": self.ctx.resolved_train_seed if seed is None else seed}
        if self.ctx.lr is not None:
            kw["lr"] = self.ctx.lr
        return Recipe(**kw)

    def fidelity(self, seed: int | None = None) -> dict[str, Any]:
        """How much an evaluation costs and sees: recipe, image size and data size."""
        recipe = self.recipe(seed)
        return {"epochs": recipe.epochs, "batch_size": recipe.batch_size,
                "seed": recipe.seed, "image_size": self.ctx.image_size,
                "n_images": getattr(self._data, "n", None)}
