"""Image decoding for the cache: one image to a square uint8 array, and many in parallel.

Used by :mod:`tasks.cache`, which stores the decoded arrays (docs/architecture.md#isic-2019).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Generator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from rich.progress import Progress

CHUNK = 256  # images per task handed to a decoding process

#: Per image of a chunk: its position, the decoded array (None when unreadable), the error.
Decoded = list[tuple[int, np.ndarray | None, str | None]]


def decode_image(path: Path | str, size: int) -> np.ndarray:
    """Decode one image to (3, size, size) uint8: shorter side to ``size``, centre crop.

    Args:
        path: Image file (JPEG or anything PIL reads).
        size: Output side.

    Returns:
        C-contiguous uint8 array in CHW order, RGB.
    """
    with Image.open(path) as im:
        # JPEG only: decode at a reduced DCT scale whose both sides stay >= size (fast).
        im.draft("RGB", (size, size))
        rgb = im.convert("RGB")
    w, h = rgb.size
    m = min(w, h)
    left, top = (w - m) / 2, (h - m) / 2
    # Resizing the centred square box == resize shorter side, then centre crop.
    out = rgb.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + m, top + m))
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1))


def _decode_chunk(items: list[tuple[int, str]], size: int) -> Decoded:
    out: Decoded = []
    for i, path in items:
        try:
            out.append((i, decode_image(path, size), None))
        except Exception as e:  # PIL raises many types on corrupt data; all mean "unreadable"
            out.append((i, None, f"{type(e).__name__}: {e}"))
    return out


def decode_all(paths: list[str], size: int, workers: int) -> Generator[Decoded, None, None]:
    """Decode ``paths`` in chunks of :data:`CHUNK`, in order with one worker, else as done.

    Args:
        paths: Image files.
        size: Output side (see :func:`decode_image`).
        workers: Spawned decoding processes; 1 decodes in this process.

    Yields:
        One :data:`Decoded` list per chunk; positions index ``paths``.
    """
    items = list(enumerate(paths))
    chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    if workers <= 1:
        for ch in chunks:
            yield _decode_chunk(ch, size)
        return
    # spawn: the parent may hold torch threads; a forked child could deadlock on them.
    ctx = multiprocessing.get_context("spawn")
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        futures = [ex.submit(_decode_chunk, ch, size) for ch in chunks]
        for fut in as_completed(futures):
            yield fut.result()
    finally:  # also runs when the consumer stops early (strict failure, Ctrl-C)
        ex.shutdown(wait=True, cancel_futures=True)


def progress_bar(enabled: bool) -> Progress:
    """Return a rich progress bar on stderr for decoding (hidden unless ``enabled``)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("decoding ISIC images"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), disable=not enabled, transient=False,
    )
