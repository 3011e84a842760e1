"""Seeded train/val/test splits, stratified by class and grouped by lesion.

All images of one lesion (same ``lesion_id``) land in the same split, so a model is never
tested on a lesion it saw in training; samples without a lesion_id are their own group.
Within each class (a group's class is its most frequent label) groups are shuffled with
the seed, then placed largest first into the split furthest below its target count. When
a class has at least three groups, val and test each get at least one of them.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.io import atomic_write

SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")
TRAIN, VAL, TEST = 0, 1, 2


def group_ids(groups: Sequence[str | None]) -> np.ndarray:
    """Map lesion ids to dense int group ids; None/NaN/empty ids get a group of their own.

    Args:
        groups: One lesion id (or None) per sample.

    Returns:
        int64 group ids in order of first appearance.
    """
    ids: dict[str, int] = {}
    out = np.empty(len(groups), dtype=np.int64)
    nxt = 0
    for i, g in enumerate(groups):
        if g is None or (isinstance(g, float) and np.isnan(g)) or str(g) == "":
            out[i] = nxt
            nxt += 1
            continue
        if g not in ids:
            ids[g] = nxt
            nxt += 1
        out[i] = ids[g]
    return out


def _check_fracs(val_frac: float, test_frac: float) -> None:
    if not (0.0 <= val_frac < 1.0 and 0.0 <= test_frac < 1.0 and val_frac + test_frac < 1.0):
        raise ValueError(
            f"need 0 <= val_frac, test_frac and val_frac + test_frac < 1, "
            f"got {val_frac}, {test_frac}"
        )


def make_splits(
    labels: np.ndarray,
    groups: Sequence[str | None],
    *,
    seed: int = 0,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
) -> np.ndarray:
    """Assign each sample to train (0), val (1) or test (2).

    Args:
        labels: Integer class per sample.
        groups: Lesion id per sample (None for unknown).
        seed: Shuffling seed; the same inputs and seed give the same split.
        val_frac: Target fraction of each class in val.
        test_frac: Target fraction of each class in test.

    Returns:
        int8 array of split codes aligned with ``labels``.
    """
    _check_fracs(val_frac, test_frac)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(groups):
        raise ValueError(f"{len(labels)} labels but {len(groups)} group ids")
    gid = group_ids(groups)
    n_groups = int(gid.max()) + 1 if len(gid) else 0
    order = np.argsort(gid, kind="stable")
    bounds = np.searchsorted(gid[order], np.arange(n_groups + 1))
    members = [order[bounds[g]:bounds[g + 1]] for g in range(n_groups)]
    # A group's stratum is its most frequent label (ties: the smaller label).
    stratum = np.array([np.bincount(labels[m]).argmax() for m in members], dtype=np.int64)
    sizes = np.array([len(m) for m in members], dtype=np.int64)
    fracs = np.array([1.0 - val_frac - test_frac, val_frac, test_frac])
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), -1, dtype=np.int8)
    for c in np.unique(stratum):
        gs = np.flatnonzero(stratum == c)
        gs = gs[rng.permutation(len(gs))]
        gs = gs[np.argsort(-sizes[gs], kind="stable")]  # largest first, random among equals
        target = fracs * sizes[gs].sum()
        filled = np.zeros(3)
        todo = list(gs)
        # Reserve the smallest groups so val/test see every class that has >= 3 groups.
        for s in (TEST, VAL):
            if len(gs) >= 3 and fracs[s] > 0:
                g = todo.pop()
                split[members[g]] = s
                filled[s] += sizes[g]
        for g in todo:
            s = int(np.argmax(target - filled))  # ties go to train, then val
            split[members[g]] = s
            filled[s] += sizes[g]
    return split


def check_split(split: np.ndarray, groups: Sequence[str | None]) -> None:
    """Raise ValueError if a code is not 0/1/2 or one lesion sits in two splits."""
    split = np.asarray(split)
    if len(split) != len(groups):
        raise ValueError(f"split has {len(split)} entries, expected {len(groups)}")
    if not np.isin(split, (TRAIN, VAL, TEST)).all():
        raise ValueError("split codes must be 0 (train), 1 (val) or 2 (test)")
    gid = group_ids(groups)
    first: dict[int, int] = {}
    for i, (g, s) in enumerate(zip(gid.tolist(), split.tolist(), strict=True)):
        if first.setdefault(g, s) != s:
            raise ValueError(f"lesion {groups[i]!r} appears in more than one split")


def split_counts(split: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Return a (3, num_classes) matrix of sample counts per split and class."""
    out = np.zeros((3, num_classes), dtype=np.int64)
    np.add.at(out, (np.asarray(split, dtype=np.int64), np.asarray(labels, dtype=np.int64)), 1)
    return out


def _images_digest(images: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(images).encode()).hexdigest()


def split_path(directory: Path, seed: int) -> Path:
    """Path of the split file for ``seed`` in ``directory``."""
    return Path(directory) / f"split_seed{seed}.npy"


def load_split(
    path: Path, images: Sequence[str], groups: Sequence[str | None], settings: dict[str, Any]
) -> np.ndarray | None:
    """Load a split file if it exists and matches these images, groups and settings.

    Args:
        path: ``split_seed{seed}.npy``; its ``.json`` and ``.csv`` twins must exist too.
        images: Image names in cache order.
        groups: Lesion ids in cache order.
        settings: Must equal the saved settings (seed, fractions).

    Returns:
        The split array, or None when absent or inconsistent (then it is rebuilt).
    """
    info_path, csv_path = path.with_suffix(".json"), path.with_suffix(".csv")
    if not (path.is_file() and info_path.is_file() and csv_path.is_file()):
        return None
    try:
        info = json.loads(info_path.read_text())
        split = np.load(path)
        lines = csv_path.read_text().splitlines()
    except (OSError, ValueError):
        return None
    if info.get("settings") != settings or info.get("images_sha256") != _images_digest(images):
        return None
    if split.shape != (len(images),) or len(lines) - 1 != len(images):
        return None
    if [ln.split(",", 1)[0] for ln in lines[1:]] != list(images):
        return None
    try:
        check_split(split, groups)
    except ValueError:
        return None
    return split.astype(np.int8, copy=False)


def save_split(
    path: Path, split: np.ndarray, images: Sequence[str], settings: dict[str, Any],
    counts: np.ndarray | None = None,
) -> None:
    """Write ``split`` as npy plus a CSV twin (image,split) and a JSON of its settings."""
    split = np.asarray(split, dtype=np.int8)
    info = {
        "settings": settings,
        "images_sha256": _images_digest(images),
        "n": len(images),
        "sizes": {name: int((split == i).sum()) for i, name in enumerate(SPLIT_NAMES)},
    }
    if counts is not None:
        info["class_counts"] = counts.tolist()
    csv_text = "image,split\n" + "".join(
        f"{img},{SPLIT_NAMES[s]}\n" for img, s in zip(images, split.tolist(), strict=True)
    )
    # npy last: load_split also checks the twins, so a crash in between forces a rebuild.
    atomic_write(path.with_suffix(".json"), json.dumps(info, indent=1))
    atomic_write(path.with_suffix(".csv"), csv_text)
    npy = io.BytesIO()
    np.save(npy, split)
    atomic_write(path, npy.getvalue())


def ensure_split(
    directory: Path,
    labels: np.ndarray,
    groups: Sequence[str | None],
    images: Sequence[str],
    *,
    seed: int = 0,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    num_classes: int | None = None,
) -> tuple[Path, np.ndarray]:
    """Reuse ``split_seed{seed}.npy`` in ``directory`` if consistent, else make and save it.

    Returns:
        The split file path and the split array.
    """
    _check_fracs(val_frac, test_frac)
    path = split_path(directory, seed)
    settings = {"seed": int(seed), "val_frac": float(val_frac), "test_frac": float(test_frac),
                "method": "grouped-stratified-greedy-v1"}
    split = load_split(path, images, groups, settings)
    if split is None:
        split = make_splits(labels, groups, seed=seed, val_frac=val_frac, test_frac=test_frac)
        k = num_classes or (int(np.max(labels)) + 1 if len(labels) else 0)
        save_split(path, split, images, settings, split_counts(split, labels, k))
    return path, split
