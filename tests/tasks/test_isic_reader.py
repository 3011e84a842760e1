import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tasks.cache import load_arrays, prepare_isic
from tasks.isic import DatasetError, locate_layout, read_isic, read_isic_tables
from tasks.isic_format import ISIC_CLASSES
from tests.conftest import GT_NAME, IMG_DIR, META_NAME, make_rows, write_isic_dataset


def _comparable(frame):
    return frame.drop(columns=["path"]).astype(object).where(frame.notna(), None)


def test_reads_official_layout_with_quirks(isic_dir, isic_rows):
    raw = (isic_dir / GT_NAME).read_bytes()
    assert b"\r\n" in raw and b",1.0," in raw  # the fixture really has the quirks
    index = read_isic(isic_dir)
    f = index.frame
    assert index.n == len(isic_rows) and index.skipped == []
    assert f["image"].tolist() == [r["image"] for r in isic_rows]
    assert f["label"].tolist() == [r["label"] for r in isic_rows]
    assert f["label"].dtype == np.int64
    assert f["sex"].tolist() == [r["sex"] for r in isic_rows]
    for got, r in zip(f["age_approx"], isic_rows, strict=True):
        assert (math.isnan(got) and r["age"] is None) or got == r["age"]
    assert f["lesion_id"].tolist() == [r["lesion_id"] for r in isic_rows]
    assert f["site"].tolist() == [r["site"] for r in isic_rows]
    assert any(name.endswith("_downsampled") for name in f["image"])
    assert all(Path(p).is_file() and Path(p).stem == img
               for p, img in zip(f["path"], f["image"], strict=True))


@pytest.mark.parametrize(
    ("nested", "csvs_inside", "point_at_images"),
    [(True, False, False), (True, True, False), (False, True, False), (False, False, True),
     (True, False, True)],
)
def test_layout_variants(make_isic, nested, csvs_inside, point_at_images):
    reference = read_isic(make_isic("ref")).frame
    root = make_isic("variant", nested=nested, csvs_inside=csvs_inside)
    data_dir = root / IMG_DIR if point_at_images else root
    index = read_isic(data_dir)
    assert _comparable(index.frame).equals(_comparable(reference))
    expected_img_dir = root / IMG_DIR / IMG_DIR if nested else root / IMG_DIR
    assert index.layout.image_dir == expected_img_dir
    assert all(Path(p).parent == expected_img_dir for p in index.frame["path"])


def test_lf_and_integer_labels_read_the_same(make_isic):
    a = read_isic(make_isic("crlf", crlf=True, float_labels=True)).frame
    b = read_isic(make_isic("lf", crlf=False, float_labels=False)).frame
    assert _comparable(a).equals(_comparable(b))


def test_tables_only_needs_no_images(make_isic, isic_rows):
    root = make_isic(images=False)
    frame = read_isic_tables(root)
    assert len(frame) == len(isic_rows) and frame["path"].isna().all()
    with pytest.raises(DatasetError, match=IMG_DIR):
        read_isic(root)


def test_empty_folder_names_download_and_synthetic(tmp_path):
    with pytest.raises(DatasetError) as e:
        locate_layout(tmp_path)
    msg = str(e.value)
    assert GT_NAME in msg and "challenge.isic-archive.com/data/#2019" in msg
    assert "--synthetic" in msg


def _edit_line(path: Path, line_no: int, fn) -> None:
    """Apply fn to the fields of 1-based line ``line_no`` (CRLF kept)."""
    lines = path.read_bytes().decode().split("\r\n")
    lines[line_no - 1] = ",".join(fn(lines[line_no - 1].split(",")))
    path.write_bytes("\r\n".join(lines).encode())


def _drop_column(path: Path, name: str) -> None:
    lines = path.read_bytes().decode().split("\r\n")
    k = lines[0].split(",").index(name)
    path.write_bytes("\r\n".join(
        ",".join(f for j, f in enumerate(ln.split(",")) if j != k) if ln else ln for ln in lines
    ).encode())


def _set(col: int, value: str):
    return lambda f: [value if j == col else x for j, x in enumerate(f)]


# Ground-truth columns: image(0) MEL(1) NV(2) BCC(3) AK(4) BKL(5) DF(6) VASC(7) SCC(8) UNK(9);
# metadata: image(0) age_approx(1) anatom_site_general(2) lesion_id(3) sex(4).
# Line k holds sample i=k-2 with label (i // 3) % 8: line 5 is i=3 (NV); line 7 is i=5 (NV, male).
MALFORMED = {
    "zero labels": (GT_NAME, 5, "MEL,NV,BCC,AK,BKL,DF,VASC,SCC", "0 labels",
                    lambda d: _edit_line(d / GT_NAME, 5, _set(2, "0.0"))),
    "two labels": (GT_NAME, 5, "DF", "2 labels",
                   lambda d: _edit_line(d / GT_NAME, 5, _set(6, "1.0"))),
    "UNK label": (GT_NAME, 5, "UNK", "UNK",
                  lambda d: _edit_line(d / GT_NAME, 5, _set(9, "1.0"))),
    "label not 0/1": (GT_NAME, 6, "NV", "'2.0'",
                      lambda d: _edit_line(d / GT_NAME, 6, _set(2, "2.0"))),
    "unknown label column": (GT_NAME, 1, "FOO", "unknown label column",
                             lambda d: _edit_line(d / GT_NAME, 1, lambda f: [*f, "FOO"])),
    "missing label column": (GT_NAME, 1, "DF", "missing",
                             lambda d: _drop_column(d / GT_NAME, "DF")),
    "missing metadata column": (META_NAME, 1, "sex", "missing",
                                lambda d: _drop_column(d / META_NAME, "sex")),
    "bad age": (META_NAME, 4, "age_approx", "'abc'",
                lambda d: _edit_line(d / META_NAME, 4, _set(1, "abc"))),
    "negative age": (META_NAME, 4, "age_approx", "'-5'",
                     lambda d: _edit_line(d / META_NAME, 4, _set(1, "-5"))),
    "bad sex": (META_NAME, 7, "sex", "'unknown'",
                lambda d: _edit_line(d / META_NAME, 7, _set(4, "unknown"))),
    "image only in ground truth": (GT_NAME, 8, "image", "no row in",
                                   lambda d: _edit_line(d / META_NAME, 8, _set(0, "ISIC_9"))),
    "duplicate image": (GT_NAME, 3, "image", "already listed at row 2",
                        lambda d: _edit_line(d / GT_NAME, 3, _set(0, "ISIC_0000000"))),
    "short row": (META_NAME, 9, "anatom_site_general", "3 fields",
                  lambda d: _edit_line(d / META_NAME, 9, lambda f: f[:3])),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_csv_gives_one_clear_error(make_isic, case):
    file, row, column, fragment, corrupt = MALFORMED[case]
    root = make_isic(images=False)
    corrupt(root)
    with pytest.raises(DatasetError) as e:
        read_isic_tables(root)
    err = e.value
    msg = str(err)
    assert err.file == root / file and err.row == row and err.column == column
    assert str(root / file) in msg and f"row {row}" in msg and f"column {column!r}" in msg
    assert fragment in msg


def test_metadata_row_not_in_ground_truth(make_isic):
    root = make_isic(images=False)
    _edit_line(root / GT_NAME, 8, _set(0, "ISIC_9"))
    with pytest.raises(DatasetError) as e:
        read_isic_tables(root)
    # The ground-truth row is reported first; the metadata side names its own file.
    assert e.value.file == root / GT_NAME and e.value.row == 8
    root2 = make_isic("extra", images=False)
    with open(root2 / META_NAME, "ab") as f:
        f.write(b"ISIC_extra,50,,,male\r\n")
    with pytest.raises(DatasetError) as e2:
        read_isic_tables(root2)
    assert e2.value.file == root2 / META_NAME and e2.value.row == 26
    assert e2.value.column == "image" and "ISIC_extra" in str(e2.value)


def test_missing_csv_names_file(make_isic):
    root = make_isic(images=False)
    (root / META_NAME).unlink()
    with pytest.raises(DatasetError) as e:
        read_isic_tables(root)
    assert META_NAME in str(e.value) and "--synthetic" in str(e.value)


def test_missing_images_counted_and_skipped(isic_dir, isic_rows):
    gone = [isic_rows[2]["image"], isic_rows[9]["image"]]
    for name in gone:
        (isic_dir / IMG_DIR / f"{name}.jpg").unlink()
    (isic_dir / IMG_DIR / f"{isic_rows[4]['image']}.jpg").write_bytes(b"")
    index = read_isic(isic_dir)
    assert index.n == len(isic_rows) - 3
    assert {s["image"]: s["reason"] for s in index.skipped} == {
        gone[0]: "missing file", gone[1]: "missing file", isic_rows[4]["image"]: "empty file"}
    assert not set(gone) & set(index.frame["image"])
    with pytest.raises(DatasetError, match=gone[0]):
        read_isic(isic_dir, strict=True)


def _corrupt(isic_dir: Path, rows) -> tuple[str, str]:
    garbage, truncated = rows[1]["image"], rows[6]["image"]
    (isic_dir / IMG_DIR / f"{garbage}.jpg").write_bytes(b"\xff\xd8not really a jpeg" * 10)
    p = isic_dir / IMG_DIR / f"{truncated}.jpg"
    p.write_bytes(p.read_bytes()[:200])
    return garbage, truncated


def test_corrupt_images_skipped_and_reported(isic_dir, isic_rows, tmp_path):
    garbage, truncated = _corrupt(isic_dir, isic_rows)
    (isic_dir / IMG_DIR / f"{isic_rows[3]['image']}.jpg").unlink()
    data = prepare_isic(isic_dir, image_size=16, cache_root=tmp_path / "c", progress=False)
    assert data.n == len(isic_rows) - 3
    report = json.loads((data.cache_dir / "skipped.json").read_text())
    assert report == data.skipped
    assert report["n_missing"] == 1 and report["n_unreadable"] == 2
    assert {s["image"] for s in report["unreadable"]} == {garbage, truncated}
    assert json.loads((data.cache_dir / "meta.json").read_text())["skipped"] == report
    arrays = load_arrays(data)
    kept = [r for r in isic_rows if r["image"] not in {garbage, truncated, isic_rows[3]["image"]}]
    assert arrays["labels"].tolist() == [r["label"] for r in kept]
    assert arrays["images"].shape == (len(kept), 3, 16, 16)


def test_corrupt_image_strict_fails_naming_it(isic_dir, isic_rows, tmp_path):
    garbage, _ = _corrupt(isic_dir, isic_rows)
    cache = tmp_path / "c"
    with pytest.raises(DatasetError, match=garbage):
        prepare_isic(isic_dir, image_size=16, cache_root=cache, strict=True, progress=False)
    assert not list((cache / "isic").iterdir())  # nothing half-written left behind
    # A non-strict cache that skipped images must not satisfy a later strict run either.
    prepare_isic(isic_dir, image_size=16, cache_root=cache, progress=False)
    with pytest.raises(DatasetError, match="unreadable"):
        prepare_isic(isic_dir, image_size=16, cache_root=cache, strict=True, progress=False)


def test_isic_classes_contract():
    assert ISIC_CLASSES == ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
    assert len(make_rows(24)) == 24


def test_missing_lesion_and_site_columns_are_optional(tmp_path, isic_rows):
    root = write_isic_dataset(tmp_path / "d", images=False)
    for col in ("lesion_id", "anatom_site_general"):
        _drop_column(root / META_NAME, col)
    frame = read_isic_tables(root)
    assert frame["lesion_id"].isna().all() and frame["site"].isna().all()
    shutil.rmtree(root)


def test_same_id_in_two_formats_is_reported_and_jpg_wins(isic_dir, isic_rows, tmp_path):
    from tasks.cache import skip_notes, skip_summary

    image = isic_rows[5]["image"]
    jpg = isic_dir / IMG_DIR / f"{image}.jpg"
    png = jpg.with_suffix(".png")
    png.write_bytes(b"\x89PNG not the file that is used")
    index = read_isic(isic_dir)
    assert index.duplicates == [{"image": image, "used": jpg.name, "ignored": [png.name]}]
    assert Path(index.frame.set_index("image").loc[image, "path"]) == jpg
    (isic_dir / IMG_DIR / f"{isic_rows[3]['image']}.jpg").unlink()
    data = prepare_isic(isic_dir, image_size=16, cache_root=tmp_path / "c", progress=False)
    summary = skip_summary(data)
    assert (summary["n_skipped"], summary["n_missing"], summary["n_duplicates"]) == (1, 1, 1)
    assert summary["list"] == str(data.cache_dir / "skipped.json")
    notes = skip_notes(data)
    assert len(notes) == 2 and "1 of 24 listed images skipped" in notes[0]
    assert str(data.cache_dir / "skipped.json") in notes[0]
    assert notes[1].startswith("warning: 1 image id(s) exist in two formats")
    assert png.name in notes[1]
