import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks import synthetic as syn
from tasks._lesions import CLASS_STYLE, render_batch
from tasks.isic_format import GROUND_TRUTH_CSV, IMAGE_DIR, METADATA_CSV

CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
GT_HEADER = b"image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\r\n"
META_HEADER = b"image,age_approx,anatom_site_general,lesion_id,sex\r\n"
SITES = {"anterior torso", "head/neck", "lateral torso", "lower extremity", "oral/genital",
         "palms/soles", "posterior torso", "upper extremity"}
N, SIZE = 300, 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return syn.generate(tmp_path_factory.mktemp("syn") / "a", n=N, size=SIZE, seed=0,
                        progress=False)


def _rows(path: Path) -> list[list[str]]:
    text = path.read_bytes().decode("ascii")
    assert text.endswith("\r\n")
    return [line.split(",") for line in text[:-2].split("\r\n")[1:]]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    again = syn.generate(tmp_path / "b", n=N, size=SIZE, seed=0, progress=False)
    first, second = _files(dataset), _files(again)
    assert len(first) == N + 2
    assert first == second
    other = _files(syn.generate(tmp_path / "c", n=N, size=SIZE, seed=1, progress=False))
    assert other[GROUND_TRUTH_CSV] != first[GROUND_TRUTH_CSV]
    assert other[METADATA_CSV] != first[METADATA_CSV]


def test_ground_truth_format(dataset):
    raw = (dataset / GROUND_TRUTH_CSV).read_bytes()
    assert raw.startswith(GT_HEADER)
    assert raw.count(b"\n") == raw.count(b"\r\n") == N + 1  # CRLF everywhere, no bare LF
    rows = _rows(dataset / GROUND_TRUTH_CSV)
    assert len(rows) == N
    names = [r[0] for r in rows]
    assert all(re.fullmatch(r"ISIC_\d{7}(_downsampled)?", n) for n in names)
    ids = [int(n[5:12]) for n in names]
    assert ids == sorted(ids) and len(set(ids)) == N
    for r in rows:
        assert len(r) == 10
        assert set(r[1:]) <= {"0.0", "1.0"}
        assert r[1:9].count("1.0") == 1
        assert r[9] == "0.0"  # UNK never set on training rows
    labels = Counter(r[1:9].index("1.0") for r in rows)
    assert labels[1] == max(labels.values())  # NV dominates, as in ISIC 2019


def test_metadata_format_and_row_order(dataset):
    raw = (dataset / METADATA_CSV).read_bytes()
    assert raw.startswith(META_HEADER)
    assert raw.count(b"\n") == raw.count(b"\r\n") == N + 1
    meta = _rows(dataset / METADATA_CSV)
    gt = _rows(dataset / GROUND_TRUTH_CSV)
    assert [m[0] for m in meta] == [g[0] for g in gt]
    for _image, age, site, lesion, sex in meta:
        assert age == "" or (re.fullmatch(r"\d{1,2}", age) and int(age) % 5 == 0
                             and 0 <= int(age) <= 85)
        assert site == "" or site in SITES
        assert lesion == "" or re.fullmatch(r"(HAM|BCN|MSK4)_\d{7}", lesion)
        assert sex in {"", "female", "male"}
        if sex == "":
            assert age == ""  # as in ISIC 2019: no sex means no age


def test_missing_values_downsampled_and_lesions_present(dataset):
    meta = _rows(dataset / METADATA_CSV)
    gt = {g[0]: g[1:9].index("1.0") for g in _rows(dataset / GROUND_TRUTH_CSV)}
    for column in (1, 2, 3, 4):  # age, site, lesion_id, sex
        assert any(m[column] == "" for m in meta), column
    assert any(m[0].endswith("_downsampled") for m in meta)
    by_lesion: dict[str, list[list[str]]] = {}
    for m in meta:
        if m[3]:
            by_lesion.setdefault(m[3], []).append(m)
    sizes = Counter(len(v) for v in by_lesion.values())
    assert sizes[1] > 0 and sum(c for k, c in sizes.items() if k >= 2) >= 10
    for rows in by_lesion.values():  # one lesion = one patient, site and diagnosis
        assert len({(r[1], r[2], r[4], gt[r[0]]) for r in rows}) == 1


def test_images_decode_at_source_aspect(dataset):
    meta = _rows(dataset / METADATA_CSV)
    img_dir = dataset / IMAGE_DIR
    assert len(list(img_dir.glob("*.jpg"))) == N
    widths = set()
    for image, _, _, lesion, _ in meta:
        with Image.open(img_dir / f"{image}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            w, h = im.size
            im.load()
        assert h == SIZE
        assert w in {SIZE, round(SIZE * 4 / 3), round(SIZE * 3 / 2)}
        if lesion.startswith("HAM_"):
            assert w == round(SIZE * 4 / 3)  # 600 x 450 in HAM10000
        if lesion.startswith("BCN_"):
            assert w == SIZE  # 1024 x 1024 in BCN_20000
        widths.add(w)
    assert len(widths) >= 2


def test_marginals_follow_isic_2019():
    n = 25331
    m = syn.sample_metadata(n, np.random.default_rng(3))
    real = np.array([4522, 12875, 3323, 867, 2624, 239, 253, 628]) / 25331
    share = np.bincount(m["cls"], minlength=8) / n
    np.testing.assert_allclose(share, real, atol=0.01, rtol=0.1)
    # Sex: male 13286, female 11661, missing 384.
    assert abs((m["sex"] == 1).mean() - 13286 / n) < 0.015
    assert abs((m["sex"] == -1).mean() - 384 / n) < 0.005
    assert np.isnan(m["age"][m["sex"] == -1]).all()
    assert abs(np.isnan(m["age"]).mean() - 437 / n) < 0.005
    assert abs((m["site"] == -1).mean() - 2631 / n) < 0.015
    assert abs((m["lesion"] == -1).mean() - 2084 / n) < 0.015
    assert abs(m["downsampled"].mean() - 2074 / n) < 0.015
    # Class by sex: SCC and BCC lean male, NV is balanced.
    male_share = {c: (m["sex"][(m["cls"] == c) & (m["sex"] >= 0)] == 1).mean() for c in (1, 2, 7)}
    assert abs(male_share[1] - 6225 / 12604) < 0.03
    assert abs(male_share[2] - 2000 / 3317) < 0.04
    assert abs(male_share[7] - 425 / 628) < 0.06
    # Class by age: NV young, SCC / BCC old (docs/architecture.md#isic-2019 bins).
    age = m["age"]
    for c, real_old in ((1, 2600 / 12558), (2, 2387 / 3317), (7, 546 / 628)):
        known = (m["cls"] == c) & ~np.isnan(age)
        assert abs((age[known] >= 60).mean() - real_old) < 0.05, c
    assert set(np.unique(age[~np.isnan(age)])) <= set(range(0, 90, 5))
    # Several images per lesion, as in HAM10000 and BCN_20000.
    per_lesion = np.bincount(m["lesion"][m["lesion"] >= 0])
    per_lesion = per_lesion[per_lesion > 0]
    assert 1.5 < per_lesion.mean() < 3.5 and per_lesion.max() >= 5


def test_class_signatures_differ():
    # Same acquisition for every class: only the lesion style changes.
    b = len(CLASSES)
    params = {
        "style": CLASS_STYLE.copy(), "harm_amp": np.ones((b, 6), np.float32),
        "harm_phase": np.zeros((b, 6), np.float32), "skin_tone": np.full(b, 0.2),
        "age01": np.full(b, 0.5), "hair": np.zeros(b), "hair_angle": np.zeros(b),
        "sun": np.zeros(b), "theta": np.zeros(b), "zoom": np.ones(b), "cx": np.zeros(b),
        "cy": np.zeros(b), "cast": np.ones((b, 3), np.float32), "brightness": np.ones(b),
        "contrast": np.ones(b), "vignette": np.zeros(b), "blur": np.zeros(b),
        "noise": np.zeros(b), "circle": np.zeros(b),
    }
    imgs = render_batch(params, 48, 48, np.random.SeedSequence(0)).astype(float)
    centre = imgs[:, 18:30, 18:30].mean(axis=(1, 2))  # (B, 3) mean RGB of the lesion centre
    red_minus_green = centre[:, 0] - centre[:, 1]
    cls = {c: i for i, c in enumerate(CLASSES)}
    assert red_minus_green[cls["VASC"]] > red_minus_green[cls["NV"]] + 20
    assert centre[cls["MEL"]].mean() < centre[cls["BKL"]].mean()  # melanoma darker
    assert centre[cls["DF"]].mean() > centre[cls["NV"]].mean()  # white central scar


def test_real_reader_loads_generated_data(dataset, tmp_path):
    isic = pytest.importorskip("tasks.isic")
    index = isic.read_isic(dataset, strict=True)
    frame = index.frame
    assert len(frame) == N and not index.skipped
    gt = _rows(dataset / GROUND_TRUTH_CSV)
    assert list(frame["image"]) == [g[0] for g in gt]
    assert list(frame["label"]) == [g[1:9].index("1.0") for g in gt]
    assert frame["age_approx"].isna().any() and frame["sex"].isna().any()
    cache = pytest.importorskip("tasks.cache")
    data = cache.prepare_isic(dataset, image_size=32, cache_root=tmp_path, progress=False)
    arrays = cache.load_arrays(data)
    assert arrays["images"].shape == (N, 3, 32, 32)
    assert set(np.unique(arrays["split"])) == {0, 1, 2}


def test_bad_arguments_and_cli(tmp_path, capsys):
    with pytest.raises(ValueError):
        syn.generate(tmp_path / "x", n=0)
    with pytest.raises(ValueError):
        syn.generate(tmp_path / "x", n=10, size=8)
    syn.main(["--out", str(tmp_path / "cli"), "--n", "12", "--size", "24", "--no-progress"])
    assert "wrote 12 images" in capsys.readouterr().out
    assert len(list((tmp_path / "cli" / IMAGE_DIR).glob("*.jpg"))) == 12
