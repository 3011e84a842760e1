"""The writing side of the trace: :class:`Tracer` appends one JSON line per event.

The file is appended on resume and flushed per line, so a ``kill -9`` loses at most the
line being written.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, TextIO

import structlog


class Tracer:
    """Append-only JSON-lines trace of one run."""

    def __init__(self, path: Path, run_id: str) -> None:
        """Open ``path`` for appending.

        Args:
            path: The ``trace.jsonl`` file.
            run_id: Bound into every line.
        """
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        torn = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
        self._file: TextIO = path.open("a", encoding="utf-8")
        if torn:  # a kill -9 mid-line: start on a fresh line so the next event parses
            self._file.write("\n")
        # A private logger (not structlog.configure) so the library's global
        # configuration of a host application is left alone; every part is explicit,
        # because wrap_logger falls back to that global configuration (LangGraph's
        # server, for one, installs a stdlib-bound wrapper without ``msg``).
        self._log = structlog.wrap_logger(
            structlog.WriteLogger(self._file),
            wrapper_class=structlog.BoundLogger,
            context_class=dict,
            cache_logger_on_first_use=False,
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.dict_tracebacks,
                structlog.processors.JSONRenderer(default=_json_default, sort_keys=False),
            ],
        ).bind(run_id=run_id)
        self._t0 = time.monotonic()
        self._lock = threading.Lock()  # concurrent candidate branches share the file

    def event(self, name: str, **fields: Any) -> None:
        """Write one event line (``t`` = seconds since this tracer opened)."""
        with self._lock:
            self._log.msg(name, t=round(time.monotonic() - self._t0, 4), **fields)

    def close(self) -> None:
        """Close the file."""
        if not self._file.closed:
            self._file.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)

