"""The two ISIC 2019 CSVs, parsed and validated row by row, then joined into one frame.

Every problem raises one :class:`~tasks.isic_format.DatasetError` naming the file, the
1-based line number in that file and the column (docs/architecture.md#isic-2019).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.isic_format import (
    ISIC_CLASSES,
    OPTIONAL_METADATA_COLUMNS,
    REQUIRED_METADATA_COLUMNS,
    SEX_NAMES,
    UNK_COLUMN,
    DatasetError,
)


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Return the stripped header and (line number, fields) of each non-blank row."""
    try:
        # newline="" lets csv handle CRLF; utf-8-sig drops a BOM some editors add.
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            first = next(reader, None)
            if first is None:
                raise DatasetError("file is empty (no header line)", file=path, row=1)
            header = [h.strip() for h in first]
            rows = [(reader.line_num, r) for r in reader if any(x.strip() for x in r)]
    except UnicodeDecodeError as e:
        raise DatasetError(f"not a UTF-8 text CSV ({e})", file=path) from e
    except csv.Error as e:
        raise DatasetError(f"malformed CSV ({e})", file=path) from e
    dupes = {h for h in header if header.count(h) > 1}
    if dupes:
        raise DatasetError("duplicate column in header", file=path, row=1, column=sorted(dupes)[0])
    return header, rows


def _check_widths(path: Path, header: list[str], rows: list[tuple[int, list[str]]]) -> None:
    # Called after the header checks, so a bad header is reported as such (row 1).
    for line, r in rows:
        if len(r) != len(header):
            raise DatasetError(
                f"row has {len(r)} fields, header has {len(header)}",
                file=path, row=line, column=header[max(min(len(r), len(header)) - 1, 0)],
            )


def _check_ground_truth_header(path: Path, header: list[str]) -> None:
    if "image" not in header:
        raise DatasetError("missing column", file=path, row=1, column="image")
    for c in ISIC_CLASSES:
        if c not in header:
            raise DatasetError("missing label column", file=path, row=1, column=c)
    for c in header:
        if c not in ("image", *ISIC_CLASSES, UNK_COLUMN):
            raise DatasetError(
                f"unknown label column (known: {', '.join(ISIC_CLASSES)}, {UNK_COLUMN})",
                file=path, row=1, column=c,
            )


def _row_label(path: Path, line: int, r: list[str], columns: list[tuple[int, str]]) -> int:
    """Return the class index of one ground-truth row: exactly one 1 among 0/1 values."""
    ones = []
    for idx, name in columns:
        raw = r[idx].strip()
        try:
            v = float(raw)  # the official file writes 0.0/1.0
        except ValueError:
            v = math.nan
        if v not in (0.0, 1.0):
            raise DatasetError(
                f"label value {raw!r} is not 0 or 1", file=path, row=line, column=name
            )
        if v == 1.0:
            ones.append(name)
    if UNK_COLUMN in ones:
        raise DatasetError(
            "row is labelled UNK; the 2019 training set has no UNK samples",
            file=path, row=line, column=UNK_COLUMN,
        )
    if len(ones) != 1:
        raise DatasetError(
            f"row has {len(ones)} labels ({', '.join(ones) or 'none'}); expected exactly one",
            file=path, row=line, column=ones[1] if ones else ",".join(ISIC_CLASSES),
        )
    return ISIC_CLASSES.index(ones[0])


def _read_ground_truth(path: Path) -> list[tuple[int, str, int]]:
    """Parse the ground-truth CSV.

    Args:
        path: ``ISIC_2019_Training_GroundTruth.csv``.

    Returns:
        ``(line, image, label index)`` per data row, in file order.

    Raises:
        DatasetError: A missing or unknown column, a bad or duplicate row, or no rows.
    """
    header, rows = _read_rows(path)
    _check_ground_truth_header(path, header)
    _check_widths(path, header, rows)
    img_col = header.index("image")
    columns = [(header.index(c), c) for c in ISIC_CLASSES]
    if UNK_COLUMN in header:
        columns.append((header.index(UNK_COLUMN), UNK_COLUMN))
    out: list[tuple[int, str, int]] = []
    seen: dict[str, int] = {}
    for line, r in rows:
        image = r[img_col].strip()
        if not image:
            raise DatasetError("empty image name", file=path, row=line, column="image")
        if image in seen:
            raise DatasetError(
                f"image {image!r} already listed at row {seen[image]}",
                file=path, row=line, column="image",
            )
        seen[image] = line
        out.append((line, image, _row_label(path, line, r, columns)))
    if not out:
        raise DatasetError("no data rows", file=path, row=2)
    return out


def _age(path: Path, line: int, raw_age: str) -> float:
    """Parse an ``age_approx`` field: NaN when empty, else a number in 0..120."""
    age = math.nan
    if raw_age:
        try:
            age = float(raw_age)
        except ValueError:
            age = math.nan
        if not (0.0 <= age <= 120.0):  # also rejects NaN/inf spellings
            raise DatasetError(
                f"age {raw_age!r} is not a number in 0..120",
                file=path, row=line, column="age_approx",
            )
    return age


def _read_metadata(path: Path) -> dict[str, tuple[int, dict[str, Any]]]:
    """Parse the metadata CSV.

    Args:
        path: ``ISIC_2019_Training_Metadata.csv``.

    Returns:
        ``{image: (line, {"age_approx", "sex", "site", "lesion_id"})}``; missing values
        are NaN (age) or None.

    Raises:
        DatasetError: A missing required column, a duplicate row or a bad age / sex value.
    """
    header, rows = _read_rows(path)
    for c in REQUIRED_METADATA_COLUMNS:
        if c not in header:
            raise DatasetError("missing column", file=path, row=1, column=c)
    _check_widths(path, header, rows)
    col = {c: header.index(c) for c in (*REQUIRED_METADATA_COLUMNS, *OPTIONAL_METADATA_COLUMNS)
           if c in header}
    out: dict[str, tuple[int, dict[str, Any]]] = {}
    for line, r in rows:
        image = r[col["image"]].strip()
        if not image:
            raise DatasetError("empty image name", file=path, row=line, column="image")
        if image in out:
            raise DatasetError(
                f"image {image!r} already listed at row {out[image][0]}",
                file=path, row=line, column="image",
            )
        # A row with a bad age and a bad sex reports the age.
        age = _age(path, line, r[col["age_approx"]].strip())
        raw_sex = r[col["sex"]].strip()
        sex = raw_sex.lower() or None
        if sex is not None and sex not in SEX_NAMES:
            raise DatasetError(
                f"sex {raw_sex!r} is not one of {', '.join(SEX_NAMES)} or empty",
                file=path, row=line, column="sex",
            )
        fields: dict[str, Any] = {"age_approx": age, "sex": sex}
        for c, key in (("anatom_site_general", "site"), ("lesion_id", "lesion_id")):
            fields[key] = (r[col[c]].strip() or None) if c in col else None
        out[image] = (line, fields)
    return out


def join_tables(ground_truth: Path, metadata: Path) -> pd.DataFrame:
    """Read both CSVs and join them on ``image``; every image must be in both.

    Args:
        ground_truth: The ground-truth CSV.
        metadata: The metadata CSV.

    Returns:
        One row per image in ground-truth order, columns ``image``, ``label``, ``sex``,
        ``age_approx``, ``site``, ``lesion_id``.

    Raises:
        DatasetError: Any CSV problem, or an image listed in one file only.
    """
    gt = _read_ground_truth(ground_truth)
    meta = _read_metadata(metadata)
    gt_names = set()
    records = []
    for line, image, label in gt:
        gt_names.add(image)
        if image not in meta:
            raise DatasetError(
                f"image {image!r} has no row in {metadata.name}",
                file=ground_truth, row=line, column="image",
            )
        records.append({"image": image, "label": label, **meta[image][1]})
    extra = [(ln, img) for img, (ln, _) in meta.items() if img not in gt_names]
    if extra:
        line, image = min(extra)
        raise DatasetError(
            f"image {image!r} has no row in {ground_truth.name} ({len(extra)} such rows)",
            file=metadata, row=line, column="image",
        )
    return pd.DataFrame(
        {
            "image": pd.Series([r["image"] for r in records], dtype=object),
            "label": pd.Series([r["label"] for r in records], dtype="int64"),
            "sex": pd.Series([r["sex"] for r in records], dtype=object),
            "age_approx": pd.Series([r["age_approx"] for r in records], dtype="float64"),
            "site": pd.Series([r["site"] for r in records], dtype=object),
            "lesion_id": pd.Series([r["lesion_id"] for r in records], dtype=object),
        }
    )
