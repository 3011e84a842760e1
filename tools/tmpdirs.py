"""Temporary folders that name their owner, and the cleanup of those a kill left behind.

Jobs, evaluations and exports work in ``$TMPDIR/flnas-job-*``, ``flnas-eval-*`` and
``flnas-export-*`` folders that their ``finally`` blocks remove. A ``kill -9`` skips
those blocks, so :func:`make_temp_dir` writes an owner file (``.flnas-owner``: pid and
process start time) into each folder, and :func:`clean_stale_temp_dirs`, called when a
search starts or resumes, removes the folders whose owner is dead. A folder of a live
process (a search running at the same time) is never touched; the start time guards
against a recycled pid. A folder without an owner file (made by an older version) is
removed only when it is older than :data:`UNOWNED_MAX_AGE_S`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OWNER_FILE", "PREFIXES", "clean_stale_temp_dirs", "make_temp_dir"]

OWNER_FILE = ".flnas-owner"
PREFIXES = ("flnas-job-", "flnas-eval-", "flnas-export-", "flnas-gate-")
#: Folders without an owner file are left alone until they are this old (no job lasts
#: a day: the evaluation timeout is minutes), so a folder being created is never hit.
UNOWNED_MAX_AGE_S = 24 * 3600.0


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (state first); ``None``: no process, or not Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return stat[stat.rfind(")") + 2:].split()


def _start_time(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), else ``None``."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def make_temp_dir(prefix: str, dir: str | Path | None = None) -> Path:  # noqa: A002
    """Create a temporary folder (like ``tempfile.mkdtemp``) that names its owner.

    Args:
        prefix: Folder name prefix, e.g. ``"flnas-job-"``.
        dir: Parent folder (default: ``tempfile.gettempdir()``).

    Returns:
        The new folder; its ``.flnas-owner`` file holds this process's pid and start time.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    pid = os.getpid()
    (path / OWNER_FILE).write_text(json.dumps({"pid": pid, "start": _start_time(pid)}))
    return path


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    if not sys.platform.startswith("linux"):
        return True
    fields = _stat(pid)
    if not fields:  # exited between the two checks
        return False
    if fields[0] in ("Z", "X"):  # killed, waiting to be reaped: dead for our purpose
        return False
    # A different start time: the pid was recycled by an unrelated process.
    return start is None or (len(fields) > 19 and fields[19] == start)


@dataclass
class Cleanup:
    """What :func:`clean_stale_temp_dirs` did."""

    removed: list[Path]
    kept_live: int
    bytes_freed: int

    def message(self) -> str | None:
        """One console line, or ``None`` when nothing was removed."""
        if not self.removed:
            return None
        parent = self.removed[0].parent
        return (f"removed {len(self.removed)} temporary folder(s) left in {parent} by a killed "
                f"run ({self.bytes_freed / 1e6:.1f} MB)")


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def clean_stale_temp_dirs(root: str | Path | None = None, prefixes: tuple[str, ...] = PREFIXES,
                          unowned_max_age_s: float = UNOWNED_MAX_AGE_S) -> Cleanup:
    """Remove the ``flnas-*`` temporary folders whose owning process is dead.

    Args:
        root: Folder to scan (default: ``tempfile.gettempdir()``).
        prefixes: Folder name prefixes to consider.
        unowned_max_age_s: Age after which a folder without owner file counts as stale.

    Returns:
        The folders removed, how many were kept because their owner lives, bytes freed.
    """
    base = Path(root) if root is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    kept, freed = 0, 0
    try:
        entries = list(base.iterdir())
    except OSError:
        return Cleanup([], 0, 0)
    for path in entries:
        if not path.name.startswith(prefixes) or path.is_symlink() or not path.is_dir():
            continue
        try:
            owner = json.loads((path / OWNER_FILE).read_text())
            stale = not _alive(int(owner["pid"]), owner.get("start"))
        except FileNotFoundError:
            try:
                stale = time.time() - path.stat().st_mtime > unowned_max_age_s
            except OSError:
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable owner file: not ours to judge
        if not stale:
            kept += 1
            continue
        size = _size(path)
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
            freed += size
    return Cleanup(sorted(removed), kept, freed)
