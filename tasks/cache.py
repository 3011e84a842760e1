"""Decode ISIC images once into a uint8 array cache, plus labels, attributes and splits.

Cache layout (``<cache_root>/isic/<dataset-fp>-s<size>-p<version>/``)::

    images.npy   (N, 3, S, S) uint8, C-contiguous
    labels.npy   int64 class index into meta["class_names"]
    sex.npy      int8, 0 female, 1 male, -1 missing
    age.npy      float32, NaN missing
    index.csv    image,label,lesion_id,sex,age_approx,site (cache order)
    meta.json    class names, size, per-channel mean/std (0..1 scale), counts, skip report
    skipped.json images left out (missing, empty or undecodable files)
    split_seed{seed}.npy / .csv / .json   train/val/test codes (see tasks.splits)

The directory name holds the dataset fingerprint (hash of both CSVs' bytes and the sorted
image names with file sizes), the image size and `PREPROCESS_VERSION`, so any change to
those gives a fresh cache. A cache is built in a temporary folder and renamed into place,
so an interrupted decode never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.attributes import encode_sex
from tasks.decode import decode_all, progress_bar
from tasks.isic import IsicIndex, read_isic
from tasks.isic_format import ISIC_CLASSES, SEX_NAMES, DatasetError
from tasks.splits import ensure_split

PREPROCESS_VERSION = 1
PARALLEL_MIN_IMAGES = 2000  # below this, worker start-up costs more than it saves
_ARRAYS = ("images", "labels", "sex", "age")


@dataclass(frozen=True)
class PreparedData:
    """A decoded, cached dataset plus its split (see the module docstring for files).

    Attributes:
        cache_dir: Folder with images.npy, labels.npy, sex.npy, age.npy, meta.json.
        split_path: ``split_seed{seed}.npy`` int8 aligned with images: 0 train, 1 val, 2 test.
        fingerprint: Hash of dataset content, image size, preprocessing version and split
            settings (seed and fractions).
        class_names: Class names, index = label.
        image_size: Side S of the square images.
        n: Number of cached images.
        mean: Per-channel mean over all cached images, 0..1 scale.
        std: Per-channel standard deviation over all cached images, 0..1 scale.
        skipped: Report of images left out (also in ``cache_dir/skipped.json``).
    """

    cache_dir: Path
    split_path: Path
    fingerprint: str
    class_names: list[str]
    image_size: int
    n: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    skipped: dict[str, Any] = field(default_factory=dict, compare=False)


def default_cache_root() -> Path:
    """Cache root: env ``FLNAS_CACHE_DIR`` or ``~/.cache/flnas``."""
    env = os.environ.get("FLNAS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "flnas"


def dataset_fingerprint(index: IsicIndex) -> str:
    """SHA-256 of both CSV files' bytes and the sorted (image file name, size) pairs."""
    h = hashlib.sha256()
    for p in (index.layout.ground_truth, index.layout.metadata):
        h.update(p.read_bytes())
        h.update(b"\0")
    entries = sorted((Path(p).name, Path(p).stat().st_size) for p in index.frame["path"])
    for name, size in entries:
        h.update(f"{name}\t{size}\n".encode())
    return h.hexdigest()


def _skip_report(index: IsicIndex, unreadable: list[dict[str, Any]]) -> dict[str, Any]:
    missing = [s for s in index.skipped if s["reason"] == "missing file"]
    bad = [s for s in index.skipped if s["reason"] != "missing file"] + unreadable
    return {
        "n_listed": index.n + len(index.skipped),
        "n_missing": len(missing),
        "n_unreadable": len(bad),
        "missing": missing,
        "unreadable": bad,
        "n_duplicates": len(index.duplicates),
        "duplicates": index.duplicates,
    }


def skip_summary(data: PreparedData) -> dict[str, Any]:
    """Count the images left out or ambiguous, and say where their list is (summary.json)."""
    rep = data.skipped or {}
    return {
        "n_images": data.n,
        "n_listed": rep.get("n_listed", data.n),
        "n_skipped": rep.get("n_missing", 0) + rep.get("n_unreadable", 0),
        "n_missing": rep.get("n_missing", 0),
        "n_unreadable": rep.get("n_unreadable", 0),
        "n_duplicates": rep.get("n_duplicates", 0),
        "list": str(data.cache_dir / "skipped.json"),
    }


def skip_notes(data: PreparedData) -> list[str]:
    """Console lines about skipped images and ids found in two formats (empty when none)."""
    s = skip_summary(data)
    notes = []
    if s["n_skipped"]:
        notes.append(f"{s['n_skipped']} of {s['n_listed']} listed images skipped "
                     f"({s['n_missing']} missing, {s['n_unreadable']} empty or unreadable); "
                     f"list: {s['list']}")
    if s["n_duplicates"]:
        dup = (data.skipped or {}).get("duplicates") or [{}]
        notes.append(f"warning: {s['n_duplicates']} image id(s) exist in two formats, e.g. "
                     f"{dup[0].get('used')} and {', '.join(dup[0].get('ignored') or [])}; "
                     f"the first is used (.jpg before .jpeg before .png); list: {s['list']}")
    return notes


class _Decoded:
    """Images decoded into ``images_all.npy`` in a build folder, with running channel sums.

    :meth:`store` writes the final ``images.npy``; the buffer is gone after it.
    """

    def __init__(self, tmp: Path, n: int, size: int) -> None:
        self.path = tmp / "images_all.npy"
        self.images = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.uint8,
                                                shape=(n, 3, size, size))
        self.ok = np.zeros(n, dtype=bool)
        self.s1 = np.zeros(3, dtype=np.float64)
        self.s2 = np.zeros(3, dtype=np.float64)
        self.failures: list[dict[str, Any]] = []

    def add(self, i: int, arr: np.ndarray) -> None:
        """Store image ``i`` and add its pixels (0..1 scale) to the channel sums."""
        self.images[i] = arr
        self.ok[i] = True
        x = arr.reshape(3, -1).astype(np.float64) / 255.0
        self.s1 += x.sum(axis=1)
        self.s2 += (x * x).sum(axis=1)

    def store(self, dest: Path, keep: np.ndarray) -> None:
        """Write the rows ``keep`` to ``dest`` (a .npy) and release the decoding buffer."""
        imgs = self.images
        del self.images  # no reference left here: the memmap closes once the rows are out
        if len(keep) < len(self.ok):  # compact: copy the decodable rows into the final array
            dst = np.lib.format.open_memmap(dest, mode="w+", dtype=np.uint8,
                                            shape=(len(keep), *imgs.shape[1:]))
            for a in range(0, len(keep), 1024):
                dst[a:a + 1024] = imgs[keep[a:a + 1024]]
            dst.flush()
            del dst, imgs
            self.path.unlink()
        else:
            imgs.flush()
            del imgs
            self.path.rename(dest)


def _decode_into(tmp: Path, frame: pd.DataFrame, size: int, strict: bool, progress: bool,
                 workers: int) -> _Decoded:
    """Decode every image of ``frame`` into ``tmp``; unreadable ones are failures (or raise)."""
    paths = [str(p) for p in frame["path"]]
    out = _Decoded(tmp, len(frame), size)
    with progress_bar(progress) as bar, closing(decode_all(paths, size, workers)) as chunks:
        task = bar.add_task("decode", total=len(frame))
        for results in chunks:
            for i, arr, err in results:
                if arr is None:
                    if strict:
                        raise DatasetError(
                            f"image {frame['image'][i]!r} cannot be decoded ({err})",
                            file=paths[i],
                        )
                    out.failures.append({"image": frame["image"][i], "path": paths[i],
                                         "reason": f"unreadable: {err}"})
                    continue
                out.add(i, arr)
            bar.advance(task, len(results))
    return out


def _meta(index: IsicIndex, kept: pd.DataFrame, decoded: _Decoded, ds_fp: str, size: int,
          report: dict[str, Any]) -> dict[str, Any]:
    """Return the cache's meta.json: version, key, class names, channel statistics, counts."""
    count = len(kept) * size * size
    mean = decoded.s1 / count
    std = np.sqrt(np.maximum(decoded.s2 / count - mean**2, 0.0))
    labels = kept["label"].to_numpy(np.int64)
    sex = encode_sex(kept["sex"])
    return {
        "version": PREPROCESS_VERSION,
        "dataset_fingerprint": ds_fp,
        "class_names": list(ISIC_CLASSES),
        "image_size": size,
        "n": int(len(kept)),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "stats_over": "all cached images",
        "preprocessing": "PIL draft+RGB, shorter side to size, centre crop, bicubic",
        "counts": {
            "class": {c: int((labels == i).sum()) for i, c in enumerate(ISIC_CLASSES)},
            "sex": {**{name: int((sex == i).sum()) for i, name in enumerate(SEX_NAMES)},
                    "missing": int((sex < 0).sum())},
            "age_missing": int(kept["age_approx"].isna().sum()),
            "lesion_id_missing": int(kept["lesion_id"].isna().sum()),
        },
        "skipped": report,
        "source": {"ground_truth": str(index.layout.ground_truth),
                   "metadata": str(index.layout.metadata),
                   "image_dir": str(index.layout.image_dir)},
    }


def _build(
    index: IsicIndex, final: Path, ds_fp: str, size: int, strict: bool, progress: bool,
    workers: int,
) -> None:
    """Decode and write the whole cache in a temporary folder, then rename it to ``final``."""
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        frame = index.frame
        decoded = _decode_into(tmp, frame, size, strict, progress, workers)
        keep = np.flatnonzero(decoded.ok)
        if len(keep) == 0:
            raise DatasetError(f"none of the {len(frame)} images could be decoded",
                               file=str(frame["path"][0]))
        decoded.store(tmp / "images.npy", keep)
        kept = frame.iloc[keep].reset_index(drop=True)
        np.save(tmp / "labels.npy", kept["label"].to_numpy(np.int64))
        np.save(tmp / "sex.npy", encode_sex(kept["sex"]))
        np.save(tmp / "age.npy", kept["age_approx"].to_numpy(np.float32))
        kept[["image", "label", "lesion_id", "sex", "age_approx", "site"]].to_csv(
            tmp / "index.csv", index=False
        )
        report = _skip_report(index, decoded.failures)
        (tmp / "skipped.json").write_text(json.dumps(report, indent=1))
        meta = _meta(index, kept, decoded, ds_fp, size, report)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # written last
        if final.exists():  # stale or broken cache with the same key
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():  # not a concurrent builder winning
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_meta(cache_dir: Path, ds_fp: str, size: int) -> dict[str, Any] | None:
    """Return meta.json if the cache there is complete and matches, else None."""
    try:
        meta = json.loads((cache_dir / "meta.json").read_text())
        if (meta.get("version"), meta.get("dataset_fingerprint"), meta.get("image_size")) != (
            PREPROCESS_VERSION, ds_fp, size
        ):
            return None
        n = meta["n"]
        shapes = {k: np.load(cache_dir / f"{k}.npy", mmap_mode="r").shape for k in _ARRAYS}
        if shapes["images"] != (n, 3, size, size) or any(
            shapes[k] != (n,) for k in ("labels", "sex", "age")
        ):
            return None
        if not (cache_dir / "index.csv").is_file():
            return None
        return meta
    except (OSError, ValueError, KeyError):
        return None


def _ensure_cache(index: IsicIndex, cache_dir: Path, ds_fp: str, size: int, strict: bool,
                  progress: bool, workers: int | None) -> dict[str, Any]:
    """Return the meta.json of the cache in ``cache_dir``, building the cache if needed."""
    meta = _load_meta(cache_dir, ds_fp, size)
    if meta is None:
        if workers is None:
            workers = min(2, os.cpu_count() or 1) if index.n >= PARALLEL_MIN_IMAGES else 1
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        _build(index, cache_dir, ds_fp, size, strict, progress, workers)
        meta = _load_meta(cache_dir, ds_fp, size)
        if meta is None:
            raise DatasetError("cache was written but fails its own check", file=cache_dir)
    elif strict and meta["skipped"]["unreadable"]:
        bad = meta["skipped"]["unreadable"][0]
        raise DatasetError(f"image {bad['image']!r}: {bad['reason']}", file=bad["path"])
    return meta


def prepare_isic(
    data_dir: Path | str,
    *,
    image_size: int = 64,
    seed: int = 0,
    cache_root: Path | str | None = None,
    strict: bool = False,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    progress: bool = True,
    workers: int | None = None,
) -> PreparedData:
    """Read, decode (once) and split the ISIC 2019 training set.

    Args:
        data_dir: Folder with the official layout (see `tasks.isic.locate_layout`).
        image_size: Side of the square cached images.
        seed: Split seed.
        cache_root: Cache root; default `default_cache_root()`.
        strict: Fail on any missing or undecodable image instead of skipping it.
        val_frac: Fraction of each class in val.
        test_frac: Fraction of each class in test.
        progress: Show a progress bar while decoding.
        workers: Decoding processes; default 2 (capped by CPUs) when there are at least
            `PARALLEL_MIN_IMAGES` images, else 1. Workers are spawned processes, so a
            script calling this needs the usual ``if __name__ == "__main__":`` guard.

    Returns:
        The prepared data handle.

    Raises:
        DatasetError: Bad CSVs, no images, or (strict) a missing/undecodable image.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    index = read_isic(data_dir, strict=strict)
    ds_fp = dataset_fingerprint(index)
    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root()
    cache_dir = root / "isic" / f"{ds_fp[:16]}-s{image_size}-p{PREPROCESS_VERSION}"
    meta = _ensure_cache(index, cache_dir, ds_fp, image_size, strict, progress, workers)
    idx = pd.read_csv(cache_dir / "index.csv", dtype=str, keep_default_na=False)
    lesions = [v or None for v in idx["lesion_id"]]
    labels = np.load(cache_dir / "labels.npy")
    split_file, _ = ensure_split(
        cache_dir, labels, lesions, list(idx["image"]), seed=seed, val_frac=val_frac,
        test_frac=test_frac, num_classes=len(meta["class_names"]),
    )
    key = json.dumps([ds_fp, image_size, PREPROCESS_VERSION, seed, val_frac, test_frac])
    return PreparedData(
        cache_dir=cache_dir,
        split_path=split_file,
        fingerprint=hashlib.sha256(key.encode()).hexdigest(),
        class_names=list(meta["class_names"]),
        image_size=int(meta["image_size"]),
        n=int(meta["n"]),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        skipped=meta["skipped"],
    )


def load_arrays(data: PreparedData) -> dict[str, np.ndarray]:
    """Open the cached arrays memory-mapped and read-only.

    Returns:
        ``{"images": (N,3,S,S) uint8, "labels": int64, "sex": int8, "age": float32,
        "split": int8}``.
    """
    out = {k: np.load(data.cache_dir / f"{k}.npy", mmap_mode="r") for k in _ARRAYS}
    out["split"] = np.load(data.split_path, mmap_mode="r")
    return out
