"""ISIC 2019 reader: the official training CSVs plus the image folder, validated row by row.

Layout (docs/design.md#isic-2019)::

    <data_dir>/ISIC_2019_Training_Input/<image>.jpg          (or one level deeper after unzip)
    <data_dir>/ISIC_2019_Training_GroundTruth.csv            (or inside the image folder)
    <data_dir>/ISIC_2019_Training_Metadata.csv               (or inside the image folder)

Every problem with the CSVs raises one `DatasetError` naming the file, the 1-based line
number in that file and the column. Missing or empty image files are reported and skipped
unless ``strict=True``.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

ISIC_CLASSES: list[str] = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
UNK_COLUMN = "UNK"
IMAGE_DIR = "ISIC_2019_Training_Input"
GROUND_TRUTH_CSV = "ISIC_2019_Training_GroundTruth.csv"
METADATA_CSV = "ISIC_2019_Training_Metadata.csv"
# lesion_id and site are optional: early copies of the 2019 metadata lacked lesion_id.
REQUIRED_METADATA_COLUMNS = ("image", "age_approx", "sex")
OPTIONAL_METADATA_COLUMNS = ("anatom_site_general", "lesion_id")
SEX_VALUES = ("female", "male")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DOWNLOAD_HINT = (
    "Download the ISIC 2019 training data from https://challenge.isic-archive.com/data/#2019 "
    f"({IMAGE_DIR}.zip, {GROUND_TRUTH_CSV}, {METADATA_CSV}), unzip it into one folder and pass "
    "it with --data-dir (or set FLNAS_ISIC_DIR); or run with --synthetic to use generated "
    "ISIC-format data."
)


class DatasetError(ValueError):
    """Bad or missing dataset input; the message names the file, row and column.

    Attributes:
        file: The offending file or folder, if known.
        row: 1-based line number in ``file`` (the header is line 1), if known.
        column: Column name, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file = Path(file) if file is not None else None
        self.row = row
        self.column = column
        where = []
        if file is not None:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


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
            "ignored"}``; the first of :data:`IMAGE_SUFFIXES` is used (``.jpg``, the
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

    def find(name: str) -> Path:
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

    gt, meta = find(GROUND_TRUTH_CSV), find(METADATA_CSV)
    if image_dir is None and need_images:
        raise DatasetError(
            f"missing image folder {IMAGE_DIR}/ beside the CSVs. {DOWNLOAD_HINT}",
            file=data_dir / IMAGE_DIR,
        )
    return IsicLayout(ground_truth=gt, metadata=meta, image_dir=image_dir)


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Return the stripped header and (line number, fields) of each non-blank row."""
    try:
        # newline="" lets csv handle CRLF; utf-8-sig drops a BOM some editors add.
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DatasetError("file is empty (no header line)", file=path, row=1)
            header = [h.strip() for h in header]
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


def _read_ground_truth(path: Path) -> list[tuple[int, str, int]]:
    """Parse the ground-truth CSV into (line, image, label index) rows."""
    header, rows = _read_rows(path)
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
    _check_widths(path, header, rows)
    img_col = header.index("image")
    label_cols = [(header.index(c), c) for c in ISIC_CLASSES]
    unk_col = header.index(UNK_COLUMN) if UNK_COLUMN in header else None
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
        ones = []
        for idx, name in [*label_cols, *([(unk_col, UNK_COLUMN)] if unk_col is not None else [])]:
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
        out.append((line, image, ISIC_CLASSES.index(ones[0])))
    if not out:
        raise DatasetError("no data rows", file=path, row=2)
    return out


def _read_metadata(path: Path) -> dict[str, tuple[int, dict[str, Any]]]:
    """Parse the metadata CSV into image -> (line, fields)."""
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
        raw_age = r[col["age_approx"]].strip()
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
        raw_sex = r[col["sex"]].strip()
        sex = raw_sex.lower() or None
        if sex is not None and sex not in SEX_VALUES:
            raise DatasetError(
                f"sex {raw_sex!r} is not one of {', '.join(SEX_VALUES)} or empty",
                file=path, row=line, column="sex",
            )
        fields = {"age_approx": age, "sex": sex}
        for c, key in (("anatom_site_general", "site"), ("lesion_id", "lesion_id")):
            fields[key] = (r[col[c]].strip() or None) if c in col else None
        out[image] = (line, fields)
    return out


def _join(layout: IsicLayout) -> pd.DataFrame:
    gt = _read_ground_truth(layout.ground_truth)
    meta = _read_metadata(layout.metadata)
    gt_names = set()
    records = []
    for line, image, label in gt:
        gt_names.add(image)
        if image not in meta:
            raise DatasetError(
                f"image {image!r} has no row in {layout.metadata.name}",
                file=layout.ground_truth, row=line, column="image",
            )
        records.append({"image": image, "label": label, **meta[image][1]})
    extra = [(ln, img) for img, (ln, _) in meta.items() if img not in gt_names]
    if extra:
        line, image = min(extra)
        raise DatasetError(
            f"image {image!r} has no row in {layout.ground_truth.name} "
            f"({len(extra)} such rows)",
            file=layout.metadata, row=line, column="image",
        )
    frame = pd.DataFrame(
        {
            "image": pd.Series([r["image"] for r in records], dtype=object),
            "label": pd.Series([r["label"] for r in records], dtype="int64"),
            "sex": pd.Series([r["sex"] for r in records], dtype=object),
            "age_approx": pd.Series([r["age_approx"] for r in records], dtype="float64"),
            "site": pd.Series([r["site"] for r in records], dtype=object),
            "lesion_id": pd.Series([r["lesion_id"] for r in records], dtype=object),
        }
    )
    return frame


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
    frame = _join(layout)
    frame["path"] = pd.Series([None] * len(frame), dtype=object)
    return frame


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
    assert layout.image_dir is not None
    frame = _join(layout)
    # One directory listing instead of 25k stat calls; maps stem -> file names by
    # preference (.jpg first), never by the listing's arbitrary order.
    found: dict[str, list[tuple[int, str, int]]] = {}
    with os.scandir(layout.image_dir) as it:
        for e in it:
            stem, ext = os.path.splitext(e.name)
            if ext.lower() in IMAGE_SUFFIXES and e.is_file():
                found.setdefault(stem, []).append(
                    (IMAGE_SUFFIXES.index(ext.lower()), e.name, e.stat().st_size))
    files = {stem: min(hits)[1:] for stem, hits in found.items()}
    duplicates = [{"image": stem, "used": min(hits)[1],
                   "ignored": [name for _, name, _ in sorted(hits)[1:]]}
                  for stem, hits in sorted(found.items()) if len(hits) > 1]
    paths: list[Path | None] = []
    skipped: list[dict[str, Any]] = []
    for image in frame["image"]:
        hit = files.get(image)
        if hit is None or hit[1] == 0:
            path = layout.image_dir / (hit[0] if hit else f"{image}.jpg")
            reason = "missing file" if hit is None else "empty file"
            if strict:
                raise DatasetError(f"image {image!r}: {reason}", file=path)
            skipped.append({"image": image, "path": str(path), "reason": reason})
            paths.append(None)
        else:
            paths.append(layout.image_dir / hit[0])
    frame["path"] = pd.Series(paths, dtype=object)
    frame = frame[frame["path"].notna()].reset_index(drop=True)
    if frame.empty:
        raise DatasetError(
            f"none of the {len(paths)} images listed in {layout.ground_truth.name} was found. "
            f"{DOWNLOAD_HINT}",
            file=layout.image_dir,
        )
    listed = set(frame["image"])
    return IsicIndex(frame=frame, layout=layout, skipped=skipped,
                     duplicates=[d for d in duplicates if d["image"] in listed])
