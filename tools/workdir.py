"""Reading what a sandboxed job left in its work dir, trusting nothing (docs/security.md).

The job ran untrusted code with write access to its work dir, so every file there may be
a symlink to a host file, a FIFO that blocks a reader, a socket, a device or simply huge.
These helpers read only regular files (checked on the open descriptor) within a size
limit, and bound the work dir's disk use while the job runs.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path


def tail(path: Path, n: int = 4096) -> str:
    """Return the last ``n`` bytes of ``path`` as text ("" when unreadable)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - n))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""



def is_regular(path: Path) -> bool:
    """Return whether ``path`` itself (not a symlink's target) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_regular(path: Path, limit_bytes: int) -> bytes:
    """Read a file the sandbox wrote, refusing anything but a regular file within limit.

    Symlinks (which would resolve on the host), FIFOs (which would block), sockets and
    devices are refused; the size is checked on the open descriptor.

    Raises:
        OSError: Missing, not a regular file, or over ``limit_bytes``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if st.st_size > limit_bytes:
            raise OSError(errno.EFBIG, f"{st.st_size} bytes (limit {limit_bytes})", str(path))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit_bytes + 1)[:limit_bytes]
    finally:
        os.close(fd)


def read_result(path: Path, limit_mb: int) -> tuple[dict | None, str | None]:
    """Read the worker's ``result.json``: a JSON object with a boolean ``ok``.

    Returns:
        ``(data, None)``, or ``(None, why it was refused)``.
    """
    try:
        blob = read_regular(path, limit_mb << 20)
    except FileNotFoundError:
        return None, "the worker wrote no result.json"
    except OSError as e:
        return None, f"result.json refused: {e.strerror or e}"
    try:
        data = json.loads(blob)
    except ValueError as e:
        return None, f"result.json is not JSON: {str(e)[:200]}"
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        return None, "result.json is not a JSON object with a boolean 'ok'"
    return data, None


def copy_outputs(workdir: Path, dest: Path, limit_bytes: int) -> list[str]:
    """Copy the regular files of ``workdir`` into ``dest``; skip everything else.

    Symlinks, sockets, FIFOs and devices are skipped (and named in the return value), as
    is whatever would exceed ``limit_bytes`` in total. Never raises for what the job left.

    Returns:
        Relative paths that were skipped.
    """
    skipped: list[str] = []
    total = 0
    for root, dirs, files in os.walk(workdir, followlinks=False):
        rel_root = Path(root).relative_to(workdir)
        for d in list(dirs):
            if os.path.islink(os.path.join(root, d)):
                skipped.append(str(rel_root / d))
                dirs.remove(d)
        for name in files:
            rel = rel_root / name
            try:
                st = os.lstat(os.path.join(root, name))
                if not stat.S_ISREG(st.st_mode) or total + st.st_size > limit_bytes:
                    skipped.append(str(rel))
                    continue
                blob = read_regular(Path(root) / name, limit_bytes - total)
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob)
                total += len(blob)
            except OSError:
                skipped.append(str(rel))
    return skipped



def disk_use(workdir: Path, max_bytes: int, max_files: int) -> tuple[int, int]:
    """Bytes and entries under ``workdir``; stops counting once a limit is passed."""
    total = files = 0
    for root, dirs, names in os.walk(workdir):
        for name in names + dirs:
            files += 1
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
            if total > max_bytes or files > max_files:
                return total, files
    return total, files

