"""ISIC 2019 reader: the official training CSVs plus the image folder, validated row by row.

Layout (docs/architecture.md#isic-2019)::

    <data_dir>/ISIC_2019_Training_Input/<image>.jpg          (or one level deeper after unzip)
    <data_dir>/ISIC_2019_Training_GroundTruth.csv            (or inside the image folder)
    <data_dir>/ISIC_2019_Training_Metadata.csv               (or inside the image folder)

Every problem with the CSVs raises one `DatasetError` naming the file, the 1-based line
number in that file and the column (parsing: :mod:`tasks.isic_csv`; names and values of
the format: :mod:`tasks.isic_format`). Missing or empty image files are reported and
skipped unless ``strict=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.isic_csv import join_tables
from tasks.isic_format import (
    DOWNLOAD_HINT,
    GROUND_TRUTH_CSV,
    IMAGE_DIR,
    IMAGE_SUFFIXES,
    METADATA_CSV,
    DatasetError,
)

# DatasetError is part of the reader's interface: callers catch it from here.
__all__ = ["DatasetError", "IsicIndex", "IsicLayout", "locate_layout", "read_isic",
           "read_isic_tables"]


@dataclass(frozen=True)
class IsicLayout:
    """Resolved locations of the two CSVs and the image folder."""

    ground_truth: Path
    metadata: Path
    image_dir: Path | None


@dataclass
class IsicIndex:
    """Validated dataset index.

    Attributes:
        frame: One row per usable sample, in CSV order, columns ``image``, ``label`` (int,
            index into ``ISIC_CLASSES``), ``sex`` (``"female"``/``"male"``/None),
            ``age_approx`` (float, NaN missing), ``site`` (str/None), ``lesion_id``
            (str/None), ``path`` (Path of the image file, None if not checked).
        skipped: Images left out, each ``{"image", "path", "reason"}``.
        layout: Where the files were found.
        duplicates: Image ids found in more than one format, each ``{"image", "used",
            "ignored"}``; the first of ``IMAGE_SUFFIXES`` is used (``.jpg``, the
            official format).
    """

    frame: pd.DataFrame
    layout: IsicLayout
    skipped: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n(self) -> int:
        """Number of usable samples."""
        return len(self.frame)


def _has_images(folder: Path) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(e.name.lower().endswith(IMAGE_SUFFIXES) for e in it)
    except OSError:
        return False


def _find_csv(name: str, roots: list[Path], data_dir: Path) -> Path:
    """Return the first of ``name`` beside, inside or two levels inside the image folder."""
    places = []
    for root in roots:
        places += [root / name, root / IMAGE_DIR / name, root / IMAGE_DIR / IMAGE_DIR / name]
    places = list(dict.fromkeys(p for p in places))
    for p in places:
        if p.is_file():
            return p
    raise DatasetError(
        f"missing file {name} (looked in: {', '.join(str(p.parent) for p in places)}). "
        f"{DOWNLOAD_HINT}",
        file=data_dir / name,
    )


def locate_layout(data_dir: Path | str, *, need_images: bool = True) -> IsicLayout:
    """Find the CSVs and image folder under ``data_dir``, tolerating the common variants.

    Accepted: the image folder directly under ``data_dir`` or nested one level deeper
    (``ISIC_2019_Training_Input/ISIC_2019_Training_Input/*.jpg``), ``data_dir`` being the
    image folder itself, and the CSVs beside the image folder or inside it.

    Args:
        data_dir: Folder the user named.
        need_images: Raise if no image folder exists (False for CSV-only reads).

    Returns:
        The resolved layout.

    Raises:
        DatasetError: A CSV or the image folder is missing.
    """
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DatasetError(f"data folder does not exist. {DOWNLOAD_HINT}", file=data_dir)
    roots = [data_dir]
    if data_dir.name == IMAGE_DIR:  # the user named the image folder itself
        roots.append(data_dir.parent)
    image_candidates: list[Path] = []
    for root in roots:
        outer = root if root.name == IMAGE_DIR else root / IMAGE_DIR
        image_candidates += [outer / IMAGE_DIR, outer]
    image_dir = next((d for d in image_candidates if _has_images(d)), None)
    if image_dir is None:
        image_dir = next((d for d in image_candidates if d.is_dir()), None)
    gt = _find_csv(GROUND_TRUTH_CSV, roots, data_dir)
    meta = _find_csv(METADATA_CSV, roots, data_dir)
    if image_dir is None and need_images:
        raise DatasetError(
            f"missing image folder {IMAGE_DIR}/ beside the CSVs. {DOWNLOAD_HINT}",
            file=data_dir / IMAGE_DIR,
        )
    return IsicLayout(ground_truth=gt, metadata=meta, image_dir=image_dir)


def read_isic_tables(data_dir: Path | str) -> pd.DataFrame:
    """Read and validate only the two CSVs (no image folder needed).

    Args:
        data_dir: Folder holding the CSVs (any layout `locate_layout` accepts).

    Returns:
        The joined frame (columns as in `IsicIndex.frame`, ``path`` None).

    Raises:
        DatasetError: Missing file/column, bad label/age/sex value, mismatched images.
    """
    layout = locate_layout(data_dir, need_images=False)
    frame = join_tables(layout.ground_truth, layout.metadata)
    frame["path"] = pd.Series([None] * len(frame), dtype=object)
    return frame


def _list_images(image_dir: Path) -> tuple[dict[str, tuple[str, int]], list[dict[str, Any]]]:
    """Map each image stem to its preferred file (name, size), and list ids in two formats.

    One directory listing instead of 25k stat calls; the file is chosen by format
    preference (.jpg first), never by the listing's arbitrary order.
    """
    found: dict[str, list[tuple[int, str, int]]] = {}
    with os.scandir(image_dir) as it:
        for e in it:
            stem, ext = os.path.splitext(e.name)
            if ext.lower() in IMAGE_SUFFIXES and e.is_file():
                found.setdefault(stem, []).append(
                    (IMAGE_SUFFIXES.index(ext.lower()), e.name, e.stat().st_size))
    files = {stem: min(hits)[1:] for stem, hits in found.items()}
    duplicates = [{"image": stem, "used": min(hits)[1],
                   "ignored": [name for _, name, _ in sorted(hits)[1:]]}
                  for stem, hits in sorted(found.items()) if len(hits) > 1]
    return files, duplicates


def read_isic(data_dir: Path | str, strict: bool = False) -> IsicIndex:
    """Read the ISIC 2019 training set index and check that the images exist.

    Args:
        data_dir: Folder the user named (see `locate_layout` for accepted layouts).
        strict: Raise on a missing or empty image file instead of skipping it.

    Returns:
        The index of samples whose image file exists and is non-empty, plus the skip report.
        Image decodability is checked when the cache is built (`tasks.cache`).

    Raises:
        DatasetError: Any CSV problem, a missing image folder, no usable image, or (strict)
            a missing/empty image.
    """
    layout = locate_layout(data_dir, need_images=True)
    image_dir = layout.image_dir
    assert image_dir is not None  # need_images=True guarantees it
    frame = join_tables(layout.ground_truth, layout.metadata)
    files, duplicates = _list_images(image_dir)
    paths: list[Path | None] = []
    skipped: list[dict[str, Any]] = []
    for image in frame["image"]:
        hit = files.get(image)
        if hit is None or hit[1] == 0:
            path = image_dir / (hit[0] if hit else f"{image}.jpg")
            reason = "missing file" if hit is None else "empty file"
            if strict:
                raise DatasetError(f"image {image!r}: {reason}", file=path)
            skipped.append({"image": image, "path": str(path), "reason": reason})
            paths.append(None)
        else:
            paths.append(image_dir / hit[0])
    frame["path"] = pd.Series(paths, dtype=object)
    frame = frame[frame["path"].notna()].reset_index(drop=True)
    if frame.empty:
        raise DatasetError(
            f"none of the {len(paths)} images listed in {layout.ground_truth.name} was found. "
            f"{DOWNLOAD_HINT}",
            file=image_dir,
        )
    listed = set(frame["image"])
    return IsicIndex(frame=frame, layout=layout, skipped=skipped,
                     duplicates=[d for d in duplicates if d["image"] in listed])
