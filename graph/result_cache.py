"""JSON result caches: one in the run folder, and one several runs may share.

:class:`JsonCache` (``<run>/cache/<kind>/<key>.json``): the gate and the evaluation store
their reports here, keyed by what determines the result (code hash, recipe, data
fingerprint, budgets), so a resumed or recovered run never redoes finished work
(docs/architecture.md). Files are written atomically.

:class:`SharedCache` (``--shared-cache DIR``): successful reports, with the files an
evaluation left (``model.onnx``, ``weights.pt``), reused by every run that points at the
same folder. The search suite's 15 searches all train the Template on the same seeds, and
strategies often propose the same design: each such training runs once. Its keys add what
a run folder can take for granted: the budgets, the machine and the torch version (a
latency belongs to the machine that measured it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Generic, TypeVar

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


class SharedCache(Generic[M]):
    """Successful reports of one kind shared between runs, with their files (module docstring).

    Only successes are shared: a failure can depend on a run's own limits (a timeout) or
    load, and a run retries nothing it stored itself anyway.
    """

    def __init__(self, root: Path, kind: str, model: type[M], *, scope: dict[str, Any]) -> None:
        """Share ``model`` instances under ``root/kind/``.

        Args:
            root: The shared folder.
            kind: ``gate`` or ``evaluate``.
            model: The report's pydantic model.
            scope: What the run's own keys leave out and the result depends on (budgets,
                machine, torch version); part of every shared key.
        """
        self._reports = JsonCache(root, kind, model)
        self.folder = self._reports.folder
        self._scope = json.dumps(scope, sort_keys=True, default=str)

    def key(self, run_key: str) -> str:
        """Return the shared key of a run-cache key (the run key plus the scope)."""
        return hashlib.sha256(f"{run_key}\0{self._scope}".encode()).hexdigest()

    def get(self, run_key: str, files_to: Path | None = None) -> M | None:
        """Return the shared result of ``run_key`` (None: none), its files copied to ``files_to``.

        A result whose files are gone counts as missing, so the caller recomputes it.
        """
        key = self.key(run_key)
        files = self.folder / key
        value = self._reports.get(key)
        if value is None or (files_to is not None and not files.is_dir()):
            return None
        if files_to is not None:
            shutil.copytree(files, files_to, dirs_exist_ok=True)
        return value

    def put(self, run_key: str, value: M, files_from: Path | None = None) -> None:
        """Share ``value`` (and a copy of the folder ``files_from``) under ``run_key``.

        The files are copied first and the report written last (atomically), so a report
        that exists always has its files; runs writing the same key at once write the same
        result.
        """
        key = self.key(run_key)
        if files_from is not None:
            if not files_from.is_dir():
                return
            dest = self.folder / key
            if not dest.is_dir():  # a folder that exists is never replaced under a reader
                self.folder.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.folder))
                shutil.copytree(files_from, tmp, dirs_exist_ok=True)
                try:
                    tmp.rename(dest)
                except OSError:  # another run shared the same result first
                    shutil.rmtree(tmp, ignore_errors=True)
        self._reports.put(key, value)
