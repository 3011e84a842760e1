"""Shared fixtures: tiny ISIC-2019-format datasets written into tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

ISIC_LABELS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
GT_NAME = "ISIC_2019_Training_GroundTruth.csv"
META_NAME = "ISIC_2019_Training_Metadata.csv"
IMG_DIR = "ISIC_2019_Training_Input"
_COLOURS = [(200, 60, 60), (60, 200, 60), (60, 60, 200), (200, 200, 60),
            (200, 60, 200), (60, 200, 200), (120, 40, 10), (10, 40, 120)]


def make_rows(n: int = 24) -> list[dict[str, Any]]:
    """Deterministic rows with the real files' quirks.

    Labels ``(i // 3) % 8`` (three per class for n=24); every fifth row lacks sex and age,
    row 3 mod 7 lacks age; even classes share a lesion between their first two rows;
    every tenth name ends in ``_downsampled``; site missing every sixth row.
    """
    rows = []
    for i in range(n):
        label = (i // 3) % 8
        no_sex = i % 5 == 4
        rows.append({
            "image": f"ISIC_{i:07d}" + ("_downsampled" if i % 10 == 9 else ""),
            "label": label,
            "sex": None if no_sex else ("female" if i % 2 == 0 else "male"),
            "age": None if (no_sex or i % 7 == 3) else 5 * ((i * 7) % 18),
            "site": None if i % 6 == 5 else "anterior torso",
            "lesion_id": f"IL_{i // 3:07d}" if (label % 2 == 0 and i % 3 < 2) else None,
        })
    return rows


def write_csvs(
    folder: Path, rows: list[dict[str, Any]], *, crlf: bool = True, float_labels: bool = True
) -> tuple[Path, Path]:
    """Write the two ISIC CSVs (official column order, UNK all zero) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    nl = "\r\n" if crlf else "\n"
    one, zero = ("1.0", "0.0") if float_labels else ("1", "0")
    gt = ["image," + ",".join(ISIC_LABELS) + ",UNK"]
    meta = ["image,age_approx,anatom_site_general,lesion_id,sex"]
    for r in rows:
        gt.append(",".join([r["image"], *[one if r["label"] == k else zero for k in range(8)],
                            zero]))
        age = "" if r["age"] is None else str(r["age"])
        meta.append(",".join([r["image"], age, r["site"] or "", r["lesion_id"] or "",
                              r["sex"] or ""]))
    gt_path, meta_path = folder / GT_NAME, folder / META_NAME
    # newline="" keeps our line ends exactly as written (CRLF like the official files).
    with open(gt_path, "w", newline="") as f:
        f.write(nl.join(gt) + nl)
    with open(meta_path, "w", newline="") as f:
        f.write(nl.join(meta) + nl)
    return gt_path, meta_path


def write_image(path: Path, label: int, i: int, size: tuple[int, int] = (40, 30)) -> None:
    """Draw a small JPEG: a coloured ellipse (by label) on a skin-tone background."""
    w, h = size if i % 2 == 0 else size[::-1]  # mix landscape and portrait
    im = Image.new("RGB", (w, h), (220, 180, 150))
    ImageDraw.Draw(im).ellipse((w // 5, h // 5, 4 * w // 5, 4 * h // 5), fill=_COLOURS[label])
    im.save(path, "JPEG", quality=90)


def write_isic_dataset(
    root: Path,
    rows: list[dict[str, Any]] | None = None,
    *,
    n: int = 24,
    nested: bool = False,
    csvs_inside: bool = False,
    crlf: bool = True,
    float_labels: bool = True,
    images: bool = True,
    image_size: tuple[int, int] = (40, 30),
) -> Path:
    """Write a tiny ISIC-2019-format dataset under ``root`` and return ``root``.

    Args:
        root: Data folder (created).
        rows: Rows as from `make_rows` (default ``make_rows(n)``).
        n: Row count when ``rows`` is None.
        nested: Images in ``ISIC_2019_Training_Input/ISIC_2019_Training_Input/``.
        csvs_inside: CSVs inside the outer image folder instead of beside it.
        crlf: CRLF line ends.
        float_labels: ``0.0/1.0`` one-hot instead of ``0/1``.
        images: Write the JPEGs.
        image_size: (w, h) of even-indexed images; odd ones are transposed.
    """
    rows = make_rows(n) if rows is None else rows
    outer = root / IMG_DIR
    img_dir = outer / IMG_DIR if nested else outer
    write_csvs(outer if csvs_inside else root, rows, crlf=crlf, float_labels=float_labels)
    if images:
        img_dir.mkdir(parents=True, exist_ok=True)
        for i, r in enumerate(rows):
            write_image(img_dir / f"{r['image']}.jpg", r["label"], i, image_size)
    return root


@pytest.fixture
def isic_rows() -> list[dict[str, Any]]:
    return make_rows(24)


@pytest.fixture
def make_isic(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_isic(name="data", **write_isic_dataset kwargs) -> data dir``."""

    def make(name: str = "data", **kwargs: Any) -> Path:
        return write_isic_dataset(tmp_path / name, **kwargs)

    return make


@pytest.fixture
def isic_dir(make_isic: Callable[..., Path]) -> Path:
    return make_isic()
