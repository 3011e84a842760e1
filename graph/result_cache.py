"""A small JSON result cache in the run folder (``cache/<kind>/<key>.json``).

The gate and the evaluation store their reports here, keyed by what determines the
result (code hash, recipe, data fingerprint, budgets), so a resumed or recovered run
never redoes finished work (docs/architecture.md). Files are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel

from tasks.io import atomic_write

M = TypeVar("M", bound=BaseModel)


class JsonCache(Generic[M]):
    """Reports of one kind (``gate``, ``evaluate``) as pydantic models, by key."""

    def __init__(self, root: Path, kind: str, model: type[M]) -> None:
        """Cache ``model`` instances under ``root/kind/``."""
        self.folder = Path(root) / kind
        self.model = model

    def path(self, key: str) -> Path:
        """Where the result of ``key`` is (or would be) stored."""
        return self.folder / f"{key}.json"

    def get(self, key: str) -> M | None:
        """Return the cached result of ``key``, or ``None`` when there is none."""
        path = self.path(key)
        if not path.is_file():
            return None
        return self.model.model_validate_json(path.read_text(encoding="utf-8"))

    def put(self, key: str, value: M) -> None:
        """Store ``value`` as the result of ``key`` (atomically: never a torn file)."""
        atomic_write(self.path(key), value.model_dump_json())
