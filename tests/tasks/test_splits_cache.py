import argparse
import json
import sys
import types

import numpy as np
import pytest
from PIL import Image

import tasks.decode as decode_mod
import tasks.splits as splits_mod
from tasks.cache import PreparedData, load_arrays, prepare_isic
from tasks.data_args import add_data_args, prepare_from_args
from tasks.decode import decode_image
from tasks.isic import DatasetError
from tasks.splits import check_split, ensure_split, make_splits, split_counts
from tests.conftest import IMG_DIR, META_NAME, write_isic_dataset


def _synthetic_labels(n=3000, seed=0):
    """Imbalanced labels with lesion groups of 1-4 images (one label per lesion)."""
    rng = np.random.default_rng(seed)
    probs = np.array([0.18, 0.5, 0.13, 0.035, 0.1, 0.01, 0.01, 0.025])
    labels, groups = [], []
    g = 0
    while len(labels) < n:
        label = rng.choice(8, p=probs / probs.sum())
        size = int(rng.integers(1, 5))
        lesion = None if rng.random() < 0.2 and size == 1 else f"L{g}"
        labels += [label] * size
        groups += [lesion] * size
        g += 1
    labels += [5, 6, 6]  # a very rare extra class example stays in train
    groups += [None, None, None]
    return np.array(labels), groups


def test_split_groups_never_cross_and_strata_match():
    labels, groups = _synthetic_labels()
    split = make_splits(labels, groups, seed=0)
    assert split.dtype == np.int8 and set(np.unique(split)) == {0, 1, 2}
    check_split(split, groups)
    by_lesion = {}
    for g, s in zip(groups, split, strict=True):
        if g is not None:
            assert by_lesion.setdefault(g, s) == s
    counts = split_counts(split, labels, 8)
    frac = counts / counts.sum(axis=0)
    big = counts.sum(axis=0) >= 100
    assert np.allclose(frac[:, big], [[0.7], [0.15], [0.15]], atol=0.03)
    assert (counts[1:] > 0).all()  # every class reaches val and test
    assert abs(counts[0].sum() / len(labels) - 0.7) < 0.01


def test_rare_class_reaches_val_and_test():
    labels = np.array([0] * 50 + [1] * 3)
    split = make_splits(labels, [None] * 53, seed=3)
    assert sorted(split[labels == 1].tolist()) == [0, 1, 2]
    two = make_splits(np.array([0] * 50 + [1] * 2), [None] * 52, seed=3)
    assert (two >= 0).all()


def test_split_is_seeded():
    labels, groups = _synthetic_labels()
    a = make_splits(labels, groups, seed=1)
    assert np.array_equal(a, make_splits(labels, groups, seed=1))
    assert not np.array_equal(a, make_splits(labels, groups, seed=2))
    custom = make_splits(labels, groups, seed=1, val_frac=0.1, test_frac=0.3)
    assert abs((custom == 2).mean() - 0.3) < 0.02
    with pytest.raises(ValueError):
        make_splits(labels, groups, val_frac=0.6, test_frac=0.5)


def test_check_split_detects_crossing_lesion():
    with pytest.raises(ValueError, match="L1"):
        check_split(np.array([0, 1, 2], dtype=np.int8), ["L1", "L1", None])
    with pytest.raises(ValueError):
        check_split(np.array([0, 3]), [None, None])


def test_split_file_written_and_reused(tmp_path, monkeypatch):
    labels, groups = _synthetic_labels(500)
    images = [f"ISIC_{i:07d}" for i in range(len(labels))]
    path, split = ensure_split(tmp_path, labels, groups, images, seed=4)
    assert path.name == "split_seed4.npy"
    lines = path.with_suffix(".csv").read_text().splitlines()
    assert lines[0] == "image,split" and len(lines) == len(images) + 1
    assert lines[1] == f"{images[0]},{('train', 'val', 'test')[split[0]]}"

    def boom(*a, **k):
        raise AssertionError("split recomputed")

    monkeypatch.setattr(splits_mod, "make_splits", boom)
    path2, again = ensure_split(tmp_path, labels, groups, images, seed=4)
    assert path2 == path and np.array_equal(again, split)
    monkeypatch.undo()
    # A file that no longer fits (other fractions, other images, tampering) is rebuilt.
    _, other = ensure_split(tmp_path, labels, groups, images, seed=4, val_frac=0.3)
    assert json.loads(path.with_suffix(".json").read_text())["settings"]["val_frac"] == 0.3
    assert (other == 1).sum() > (split == 1).sum()
    bad = other.copy()
    first = groups.index(next(g for g in groups if g is not None and groups.count(g) > 1))
    bad[first] = (bad[first] + 1) % 3
    np.save(path, bad)
    _, fixed = ensure_split(tmp_path, labels, groups, images, seed=4, val_frac=0.3)
    assert np.array_equal(fixed, other)


def test_decode_resizes_shorter_side_and_centre_crops(tmp_path):
    im = Image.new("RGB", (90, 30), (255, 0, 0))
    im.paste((0, 255, 0), (30, 0, 60, 30))
    im.paste((0, 0, 255), (60, 0, 90, 30))
    im.save(tmp_path / "x.png")
    out = decode_image(tmp_path / "x.png", 12)
    assert out.shape == (3, 12, 12) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (out[1] > 200).all() and (out[0] < 40).all() and (out[2] < 40).all()
    Image.new("L", (20, 50), 128).save(tmp_path / "g.jpg")  # grey JPEG goes through draft
    g = decode_image(tmp_path / "g.jpg", 16)
    assert g.shape == (3, 16, 16) and abs(int(g.mean()) - 128) <= 2


def _counting_decoder(monkeypatch):
    calls = []
    real = decode_mod.decode_image

    def counted(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(decode_mod, "decode_image", counted)
    return calls


def test_cache_build_contents(isic_dir, isic_rows, tmp_path):
    data = prepare_isic(isic_dir, image_size=20, cache_root=tmp_path / "c", progress=False)
    assert isinstance(data, PreparedData)
    assert data.n == len(isic_rows) and data.image_size == 20
    a = load_arrays(data)
    assert set(a) == {"images", "labels", "sex", "age", "split"}
    imgs = a["images"]
    assert imgs.shape == (24, 3, 20, 20) and imgs.dtype == np.uint8 and imgs.flags.c_contiguous
    assert isinstance(imgs, np.memmap) and not imgs.flags.writeable
    assert a["labels"].dtype == np.int64 and a["sex"].dtype == np.int8
    assert a["age"].dtype == np.float32 and a["split"].dtype == np.int8
    assert a["labels"].tolist() == [r["label"] for r in isic_rows]
    assert a["sex"].tolist() == [{"female": 0, "male": 1, None: -1}[r["sex"]] for r in isic_rows]
    assert np.isnan(a["age"]).tolist() == [r["age"] is None for r in isic_rows]
    check_split(np.asarray(a["split"]), [r["lesion_id"] for r in isic_rows])
    x = np.asarray(imgs, dtype=np.float64) / 255
    assert np.allclose(data.mean, x.mean(axis=(0, 2, 3)), atol=1e-6)
    assert np.allclose(data.std, x.std(axis=(0, 2, 3)), atol=1e-6)
    meta = json.loads((data.cache_dir / "meta.json").read_text())
    assert meta["class_names"] == data.class_names and meta["image_size"] == 20
    assert meta["counts"]["class"]["MEL"] == 3 and meta["counts"]["sex"]["missing"] == 4
    assert data.split_path == data.cache_dir / "split_seed0.npy"
    assert not [p for p in data.cache_dir.parent.iterdir() if p.name.startswith(".tmp")]


def test_cache_reused_without_decoding(isic_dir, tmp_path, monkeypatch):
    calls = _counting_decoder(monkeypatch)
    first = prepare_isic(isic_dir, image_size=16, cache_root=tmp_path / "c", progress=False)
    assert len(calls) == 24
    mtime = (first.cache_dir / "images.npy").stat().st_mtime_ns
    split_mtime = first.split_path.stat().st_mtime_ns
    second = prepare_isic(isic_dir, image_size=16, cache_root=tmp_path / "c", progress=False)
    assert len(calls) == 24 and second == first
    assert (first.cache_dir / "images.npy").stat().st_mtime_ns == mtime
    assert first.split_path.stat().st_mtime_ns == split_mtime
    # Another seed reuses the images and only adds a split file.
    third = prepare_isic(isic_dir, image_size=16, seed=1, cache_root=tmp_path / "c",
                         progress=False)
    assert len(calls) == 24 and third.cache_dir == first.cache_dir
    assert third.split_path.name == "split_seed1.npy" and third.fingerprint != first.fingerprint


def test_cache_rebuilt_on_size_or_dataset_change(isic_dir, tmp_path, monkeypatch):
    calls = _counting_decoder(monkeypatch)
    root = tmp_path / "c"
    a = prepare_isic(isic_dir, image_size=16, cache_root=root, progress=False)
    b = prepare_isic(isic_dir, image_size=24, cache_root=root, progress=False)
    assert len(calls) == 48 and b.cache_dir != a.cache_dir and b.fingerprint != a.fingerprint
    meta = isic_dir / META_NAME
    meta.write_bytes(meta.read_bytes().replace(b",female\r\n", b",male\r\n", 1))
    c = prepare_isic(isic_dir, image_size=16, cache_root=root, progress=False)
    assert len(calls) == 72 and c.cache_dir != a.cache_dir
    # Replacing one image's bytes (other size) also changes the fingerprint.
    img = next((isic_dir / IMG_DIR).glob("*.jpg"))
    Image.new("RGB", (50, 50), (1, 2, 3)).save(img, "JPEG", quality=100)
    d = prepare_isic(isic_dir, image_size=16, cache_root=root, progress=False)
    assert len(calls) == 96 and d.cache_dir not in {a.cache_dir, c.cache_dir}


def test_interrupted_decode_leaves_no_cache(isic_dir, tmp_path, monkeypatch):
    real = decode_mod.decode_image
    calls = []

    def dies(path, size):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(path, size)

    monkeypatch.setattr(decode_mod, "decode_image", dies)
    root = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        prepare_isic(isic_dir, image_size=16, cache_root=root, progress=False)
    assert list((root / "isic").iterdir()) == []
    monkeypatch.setattr(decode_mod, "decode_image", real)
    data = prepare_isic(isic_dir, image_size=16, cache_root=root, progress=False)
    assert data.n == 24


def test_parallel_decode_matches_serial(isic_dir, tmp_path):
    s = prepare_isic(isic_dir, image_size=16, cache_root=tmp_path / "s", progress=False,
                     workers=1)
    p = prepare_isic(isic_dir, image_size=16, cache_root=tmp_path / "p", progress=True,
                     workers=2)
    assert np.array_equal(load_arrays(s)["images"], load_arrays(p)["images"])
    assert np.array_equal(load_arrays(s)["split"], load_arrays(p)["split"])
    assert s.fingerprint == p.fingerprint and s.mean == p.mean


def _args(*argv):
    return add_data_args(argparse.ArgumentParser()).parse_args(list(argv))


def test_data_args_defaults_and_env(isic_dir, tmp_path, monkeypatch):
    a = _args()
    assert (a.task, a.data_dir, a.synthetic, a.synthetic_n, a.image_size, a.seed,
            a.cache_dir, a.strict) == ("isic", None, False, 4000, 32, 0, None, False)
    monkeypatch.delenv("FLNAS_ISIC_DIR", raising=False)
    with pytest.raises(DatasetError) as e:
        prepare_from_args(_args("--cache-dir", str(tmp_path / "c")), progress=False)
    assert "https://challenge.isic-archive.com/data/#2019" in str(e.value)
    assert "--synthetic" in str(e.value)
    monkeypatch.setenv("FLNAS_ISIC_DIR", str(isic_dir))
    data = prepare_from_args(_args("--image-size", "16", "--cache-dir", str(tmp_path / "c")),
                             progress=False)
    assert data.n == 24 and data.image_size == 16
    assert data.cache_dir.is_relative_to(tmp_path / "c")


def test_data_args_synthetic_generates_once(tmp_path, monkeypatch):
    made = []

    def generate(out_dir, n=4000, size=64, seed=0, progress=True):
        made.append((n, size, seed))
        write_isic_dataset(out_dir, n=n)
        return out_dir

    monkeypatch.setitem(sys.modules, "tasks.synthetic",
                        types.SimpleNamespace(generate=generate))
    argv = ("--synthetic", "--synthetic-n", "16", "--image-size", "16", "--seed", "2",
            "--cache-dir", str(tmp_path / "c"))
    data = prepare_from_args(_args(*argv), progress=False)
    assert made == [(16, 16, 2)] and data.n == 16
    assert (tmp_path / "c" / "synthetic" / "n16_s16_seed2" / IMG_DIR).is_dir()
    again = prepare_from_args(_args(*argv), progress=False)
    assert made == [(16, 16, 2)] and again == data
