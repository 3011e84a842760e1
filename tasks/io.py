"""File writes every layer shares (this is the lowest layer, so anyone may import it)."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def atomic_write(path: Path | str, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file and a rename, so no reader sees a torn file.

    The temp file sits in the same folder (a rename across file systems is not atomic) and
    carries the process and thread ids, so two processes or threads (concurrent candidate
    branches) writing the same path never share it. Parent folders are created.

    Args:
        path: Destination file.
        data: Text (written as UTF-8) or bytes.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
