"""Synthetic ISIC 2019: a procedurally drawn skin-lesion dataset in the official layout.

``generate(out_dir)`` (CLI: ``python -m tasks.synthetic --out DIR [--n --size --seed]``)
writes ``ISIC_2019_Training_Input/*.jpg``, ``ISIC_2019_Training_GroundTruth.csv`` and
``ISIC_2019_Training_Metadata.csv`` byte for byte in the format of the official files
(CRLF, one-hot floats ``0.0``/``1.0``, all-zero ``UNK``, integer ``age_approx``, empty
fields for missing values, ``_downsampled`` names, ``HAM_``/``BCN_``/``MSK4_`` lesion ids),
so the real reader (:mod:`tasks.isic`) loads it unchanged.

The metadata follows the real statistics (docs/architecture.md#isic-2019): class prevalence, sex
and age by class, body site by class and sex, and, per acquisition source (the old ISIC archive,
HAM10000, BCN_20000, MSK), the class and age mix, image aspect, missing-value rates,
``_downsampled`` names and images per lesion. The images (drawn by :mod:`tasks._lesions`)
give each class a visual signature that overlaps with its look-alikes; skin, hair and
acquisition depend on sex, age, body site and source, so groups differ in difficulty.
Same seed, same bytes.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from tasks._lesions import CLASS_STYLE, LOOKALIKE, STYLE_JITTER, F, render_batch
from tasks.io import atomic_write
from tasks.isic_format import (
    GROUND_TRUTH_CSV,
    IMAGE_DIR,
    ISIC_CLASSES,
    METADATA_COLUMNS,
    METADATA_CSV,
    SEX_NAMES,
    SITES,
    UNK_COLUMN,
)

GROUND_TRUTH_HEADER = ",".join(["image", *ISIC_CLASSES, UNK_COLUMN])
METADATA_HEADER = ",".join(METADATA_COLUMNS)
JPEG_QUALITY = 90  # fixed, with fixed subsampling: the bytes depend on the pixels only

# ---- real ISIC 2019 statistics (counts from the official training CSVs) -------------------
CLASS_COUNTS = np.array([4522, 12875, 3323, 867, 2624, 239, 253, 628], float)
SEX_BY_CLASS = np.array(  # female, male
    [[1980, 2461], [6379, 6225], [1317, 2000], [406, 458], [1134, 1467], [117, 122],
     [125, 128], [203, 425]], float)
AGE_BY_CLASS = np.array(  # <20, 20-39, 40-59, 60-79, >=80
    [[7, 341, 1496, 1841, 752], [643, 3234, 6081, 2309, 291], [4, 139, 787, 1549, 838],
     [2, 19, 136, 515, 192], [6, 112, 695, 1330, 455], [7, 32, 121, 65, 14],
     [15, 35, 95, 88, 20], [0, 3, 79, 330, 216]], float)
AGE_STEPS = np.arange(0, 90, 5)  # ages 0..85 in 5-year steps; bins of 4, 4, 4, 4, 2 steps
AGE_STEP_COUNTS = np.array([54, 113, 142, 375, 388, 677, 1199, 1651, 2246, 2585, 2489, 2170,
                            2036, 2075, 2120, 1796, 1459, 1319], float)
AGE_BIN_OF_STEP = np.array([0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 2)
SITE_BY_CLASS = np.array(
    [[1331, 880, 14, 796, 19, 201, 430, 724], [3699, 767, 34, 2876, 24, 168, 1888, 1325],
     [1114, 1131, 0, 462, 0, 0, 186, 358], [92, 598, 0, 66, 0, 6, 4, 79],
     [445, 1001, 6, 412, 14, 7, 230, 234], [43, 0, 0, 138, 0, 0, 2, 52],
     [78, 36, 0, 58, 2, 3, 22, 23], [113, 174, 0, 182, 0, 13, 25, 115]], float)
SITE_BY_SEX = np.array([[2918, 1923, 14, 2940, 29, 241, 1071, 1418],
                        [3932, 2658, 34, 2027, 30, 152, 1674, 1470]], float)
SITE_SUN = np.array([0.5, 1.0, 0.5, 0.4, 0.0, 0.0, 0.5, 0.8])  # sun exposure of each site
SITE_HAIR = np.array([1.0, 0.6, 0.9, 0.9, 0.5, 0.0, 1.0, 0.9])

# Sources, by index of the SRC_* rows: 0 the old ISIC archive (no lesion ids), 1 HAM10000,
# 2 BCN_20000, 3 MSK.
LESION_PREFIX = (None, "HAM_", "BCN_", "MSK4_")
SRC_BY_CLASS = np.array(
    [[337, 1113, 2857, 215], [1549, 6705, 4206, 415], [0, 514, 2809, 0], [0, 130, 737, 0],
     [198, 1099, 1138, 189], [0, 115, 124, 0], [0, 142, 111, 0], [0, 197, 431, 0]], float)
SRC_BY_AGE = np.array([[235, 243, 204, 2], [452, 1633, 1763, 67], [534, 4484, 4179, 293],
                       [477, 2908, 4304, 338], [76, 694, 1889, 119]], float)
SEX_MISSING = np.array([263 / 2084, 47 / 10015, 74 / 12413, 0.0])  # age is missing too
AGE_ONLY_MISSING = np.array([47 / 1821, 6 / 9968, 0.0, 0.0])
SITE_MISSING = np.array([0.0, 1686 / 10015, 173 / 12413, 15 / 819])  # ARCHIVE: see below
ARCHIVE_SITE_MISSING = (0.03, 0.58)  # (full size, _downsampled)
DOWNSAMPLED = np.array([1258 / 2084, 0.0, 0.0, 816 / 819])
# Images per lesion: distribution over lesions, k = 1, 2, ... (tails folded in).
IMAGES_PER_LESION = (
    None,
    np.array([5514, 1423, 490, 34, 5, 4], float),
    np.array([488, 1069, 815, 433, 243, 194, 112, 59, 54, 24, 18, 60], float),
    np.array([786, 13, 1, 1], float),
)
FIRST_IMAGE_ID = (0, 24306, 53000, 0)  # ARCHIVE and MSK share the low id range

# ---- acquisition per source: aspect ratios (w/h), zoom, cast, blur (px at 64), ... -------
ASPECTS = {0: ((4 / 3, 3 / 2, 1.0), (0.4, 0.3, 0.3)), 1: ((4 / 3,), (1.0,)),
           2: ((1.0,), (1.0,)), 3: ((3 / 2, 4 / 3, 1.0), (0.5, 0.3, 0.2))}
SRC_ZOOM = np.array([1.05, 1.2, 0.95, 1.05])
SRC_CAST = np.array([[1.0, 1.0, 1.0], [1.04, 0.98, 0.92], [0.94, 0.98, 1.06], [0.97, 1.03, 0.95]])
SRC_CAST_JITTER = np.array([0.08, 0.03, 0.03, 0.04])
SRC_CONTRAST = np.array([0.9, 1.0, 1.05, 0.85])
SRC_VIGNETTE = np.array([0.25, 0.15, 0.08, 0.2])
SRC_BLUR = np.array([0.6, 0.25, 0.4, 0.7])
SRC_NOISE = np.array([0.03, 0.01, 0.015, 0.02])
SRC_CIRCLE = np.array([0.0, 0.0, 0.6, 0.1])  # share of uncropped dermoscope images
SRC_HAIR = np.array([1.0, 1.0, 1.1, 0.8])
LOOKALIKE_STRENGTH = 0.3  # max blend toward a look-alike class: the main difficulty knob
BATCH = 128
# One drawing job: the batch's parameters, its image height and width, seed and file paths.
Job = tuple[dict[str, np.ndarray], int, int, np.random.SeedSequence, list[Path]]


def _norm(t: np.ndarray, axis: int = -1) -> np.ndarray:
    return t / t.sum(axis=axis, keepdims=True)


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of `probs` (rows sum to 1)."""
    u = rng.random(int(probs.shape[0]))[:, None]
    return np.minimum((np.cumsum(probs, axis=1) < u).sum(axis=1), probs.shape[1] - 1)


def sample_metadata(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw the metadata of `n` images, in ISIC image-id order.

    Class, then sex | class and age bin | class (the real tables), then source |
    (class, age bin) assuming class and age independent given source, body site | (class,
    sex), missing values | source. Images of one source, class and sex are then cut into
    lesions of real per-source sizes; a lesion's images share age and site.

    Returns:
        dict of arrays: cls, sex (0 female, 1 male, -1 missing), age (NaN missing), site
        (-1 missing), src, lesion (-1 none), downsampled (bool), image_id.
    """
    cls = _categorical(rng, np.tile(_norm(CLASS_COUNTS), (n, 1)))
    sex = _categorical(rng, _norm(SEX_BY_CLASS)[cls])
    age_bin = _categorical(rng, _norm(AGE_BY_CLASS)[cls])
    src = _categorical(rng, _norm(_norm(SRC_BY_CLASS)[cls] * _norm(SRC_BY_AGE, 0)[age_bin]))
    step_p = np.where(AGE_BIN_OF_STEP[None] == age_bin[:, None], AGE_STEP_COUNTS, 0.0)
    age = AGE_STEPS[_categorical(rng, _norm(step_p))].astype(float)
    site_tilt = _norm(SITE_BY_SEX) / _norm(SITE_BY_SEX.sum(0))
    site = _categorical(rng, _norm(_norm(SITE_BY_CLASS)[cls] * site_tilt[sex]))
    downsampled = rng.random(n) < DOWNSAMPLED[src]
    no_sex = rng.random(n) < SEX_MISSING[src]
    sex[no_sex] = -1
    age[no_sex | (rng.random(n) < AGE_ONLY_MISSING[src])] = np.nan
    site_missing = np.where(src == 0, np.where(downsampled, *ARCHIVE_SITE_MISSING[::-1]),
                            SITE_MISSING[src])
    site[rng.random(n) < site_missing] = -1

    lesion = np.full(n, -1)
    image_id = np.zeros(n, int)
    next_lesion = 0
    for s, sizes in enumerate(IMAGES_PER_LESION):
        if sizes is None:
            continue
        for key in np.unique(cls * 3 + sex + 1):
            members = rng.permutation(np.flatnonzero((src == s) & (cls * 3 + sex + 1 == key)))
            while len(members):
                k = 1 + _categorical(rng, _norm(sizes)[None])[0]
                chunk, members = members[:k], members[k:]
                lesion[chunk] = next_lesion
                age[chunk], site[chunk] = age[chunk[0]], site[chunk[0]]
                next_lesion += 1
    # Image ids: ARCHIVE and MSK interleaved, then HAM, then BCN, with random gaps.
    end = 0
    for block in ((0, 3), (1,), (2,)):
        members = rng.permutation(np.flatnonzero(np.isin(src, block)))
        start = max(FIRST_IMAGE_ID[block[0]], end + 1000 if end else 0)
        ids = start - 1 + np.cumsum(rng.geometric(0.6, len(members)))
        image_id[members] = ids
        end = int(ids[-1]) if len(ids) else end
    order = np.argsort(image_id, kind="stable")
    return {"cls": cls[order], "sex": sex[order], "age": age[order], "site": site[order],
            "src": src[order], "lesion": lesion[order], "downsampled": downsampled[order],
            "image_id": image_id[order]}


def render_params(meta: dict[str, np.ndarray], size: int, rng: np.random.Generator
                  ) -> dict[str, np.ndarray]:
    """Per-image drawing parameters: lesion style shared within a lesion, acquisition per image.

    Returns:
        The arrays :func:`tasks._lesions.render_batch` reads, plus ``height``/``width``.
    """
    n = len(meta["cls"])
    cls, src, site, sex = meta["cls"], meta["src"], meta["site"], meta["sex"]
    # Lesion-level draws, indexed by a lesion key (images without a lesion id stand alone).
    key = np.where(meta["lesion"] >= 0, meta["lesion"], meta["lesion"].max() + 1 + np.arange(n))
    _, lk = np.unique(key, return_inverse=True)
    m = lk.max() + 1
    first = np.zeros(m, int)
    first[lk[::-1]] = np.arange(n)[::-1]
    lcls = cls[first]
    look = _categorical(rng, LOOKALIKE[lcls])
    alpha = (LOOKALIKE_STRENGTH * rng.beta(1.0, 2.2, m))[:, None]
    style = (1 - alpha) * CLASS_STYLE[lcls] + alpha * CLASS_STYLE[look]
    style = style + STYLE_JITTER * rng.standard_normal((m, len(STYLE_JITTER)))
    style[:, F["radius"]] = np.abs(style[:, F["radius"]])
    harm_amp = np.abs(rng.normal(1.0, 0.5, (m, 6)))
    harm_phase = rng.uniform(0, 2 * np.pi, (m, 6))
    skin_tone = np.clip(rng.beta(1.5, 6.0, m) + 0.05 * (src[first] == 2), 0, 1)

    age01 = np.clip((np.nan_to_num(meta["age"], nan=50.0) - 20.0) / 65.0, 0.0, 1.0)
    site_sun = np.where(site >= 0, SITE_SUN[np.maximum(site, 0)], 0.5)
    site_hair = np.where(site >= 0, SITE_HAIR[np.maximum(site, 0)], 0.8)
    hair_base = np.choose(sex + 1, [0.35, 0.15, 0.55])  # missing, female, male
    hair = np.clip((hair_base + rng.normal(0, 0.2, n)) * site_hair * SRC_HAIR[src], 0, 1)
    aspect = np.empty(n)
    for s, (ratios, probs) in ASPECTS.items():
        sel = src == s
        aspect[sel] = np.array(ratios)[_categorical(rng, np.tile(probs, (sel.sum(), 1)))]
    circle = np.where(rng.random(n) < SRC_CIRCLE[src], rng.uniform(0.95, 1.3, n), 0.0)
    jitter = np.where(src == 0, 0.25, 0.15)
    return {
        "style": style[lk].astype(np.float32),
        "harm_amp": harm_amp[lk].astype(np.float32),
        "harm_phase": harm_phase[lk].astype(np.float32),
        "skin_tone": skin_tone[lk],
        "age01": age01,
        "sun": age01 * (0.4 + 0.6 * site_sun) * rng.uniform(0.5, 1.2, n),
        "hair": hair,
        "hair_angle": rng.uniform(0, np.pi, n),
        "theta": rng.uniform(0, 2 * np.pi, n),
        "zoom": SRC_ZOOM[src] * np.exp(jitter * rng.standard_normal(n)),
        "cx": rng.normal(0, 0.12, n),
        "cy": rng.normal(0, 0.12, n),
        "cast": (SRC_CAST[src] + SRC_CAST_JITTER[src, None] * rng.standard_normal((n, 3))
                 ).astype(np.float32),
        "brightness": rng.normal(1.0, np.where(src == 2, 0.1, 0.06)),
        "contrast": SRC_CONTRAST[src] + rng.normal(0, 0.08, n),
        "vignette": SRC_VIGNETTE[src] * rng.uniform(0.5, 1.5, n),
        "blur": SRC_BLUR[src] * rng.uniform(0.5, 1.5, n),
        "noise": SRC_NOISE[src] * rng.uniform(0.5, 1.5, n),
        "circle": circle,
        "height": np.full(n, size),
        "width": np.round(size * aspect).astype(int),
    }


def image_names(meta: dict[str, np.ndarray]) -> list[str]:
    """ISIC image names, ``ISIC_0012653`` or ``ISIC_0012653_downsampled``."""
    return [f"ISIC_{i:07d}" + ("_downsampled" if d else "")
            for i, d in zip(meta["image_id"], meta["downsampled"], strict=True)]


def ground_truth_csv(meta: dict[str, np.ndarray]) -> bytes:
    """Format the ground-truth CSV: one-hot floats, UNK always 0.0, CRLF line ends."""
    lines = [GROUND_TRUTH_HEADER]
    for name, c in zip(image_names(meta), meta["cls"], strict=True):
        lines.append(name + "," + ",".join("1.0" if j == c else "0.0"
                                           for j in range(len(ISIC_CLASSES) + 1)))
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def metadata_csv(meta: dict[str, np.ndarray]) -> bytes:
    """Format the metadata CSV: integer ages, empty fields for missing values, CRLF line ends."""
    lines = [METADATA_HEADER]
    names = image_names(meta)
    for i, name in enumerate(names):
        age, site, les, sex = (meta[k][i] for k in ("age", "site", "lesion", "sex"))
        prefix = LESION_PREFIX[meta["src"][i]]
        lines.append(",".join([
            name,
            "" if np.isnan(age) else str(int(age)),
            SITES[site] if site >= 0 else "",
            f"{prefix}{les:07d}" if les >= 0 and prefix else "",
            SEX_NAMES[sex] if sex >= 0 else "",
        ]))
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _draw_and_write(job: Job) -> int:
    """Worker body: draw one batch and write its JPEGs. Returns the number written."""
    params, h, w, seed, paths = job
    images = render_batch(params, h, w, seed)
    for img, path in zip(images, paths, strict=True):
        # No EXIF, no timestamps, fixed quality and subsampling: reproducible bytes.
        Image.fromarray(img).save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=2)
    return len(paths)


def _jobs(params: dict[str, np.ndarray], paths: list[Path], root: np.random.SeedSequence
          ) -> Iterator[Job]:
    """Batches of one image shape, in a fixed order with a fixed seed each."""
    shapes = sorted(set(zip(params["height"].tolist(), params["width"].tolist(), strict=True)))
    for h, w in shapes:
        idx = np.flatnonzero((params["height"] == h) & (params["width"] == w))
        for start in range(0, len(idx), BATCH):
            sel = idx[start:start + BATCH]
            sub = {k: v[sel] for k, v in params.items() if k not in ("height", "width")}
            seed = np.random.SeedSequence(root.entropy, spawn_key=(h, w, start))
            yield sub, h, w, seed, [paths[i] for i in sel]


def generate(out_dir: Path, n: int = 4000, size: int = 64, seed: int = 0,
             progress: bool = True) -> Path:
    """Write a synthetic ISIC 2019 training set into `out_dir`.

    Args:
        out_dir: target directory (created; existing files of the same names are replaced).
        n: number of images.
        size: shorter image side in pixels (>= 16); widths follow each source's aspect.
        seed: random seed; the same seed gives the same bytes.
        progress: show a rich progress bar.

    Returns:
        `out_dir`, holding the official ISIC 2019 layout. The CSVs are written last, so
        a directory with both CSVs is complete.
    """
    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
    out_dir = Path(out_dir)
    img_dir = out_dir / IMAGE_DIR
    img_dir.mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(seed)
    meta_seed, param_seed, draw_seed = root.spawn(3)
    meta = sample_metadata(n, np.random.default_rng(meta_seed))
    params = render_params(meta, size, np.random.default_rng(param_seed))
    paths = [img_dir / f"{name}.jpg" for name in image_names(meta)]
    jobs = list(_jobs(params, paths, draw_seed))
    workers = min(2, os.cpu_count() or 1) if n * size * size >= 2_000_000 else 1

    from rich.progress import Progress  # imported here: only the CLI path needs it

    with Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task(f"Drawing {n} synthetic lesions", total=n)
        if workers > 1:
            # spawn, not fork: safe even when the caller has torch threads running.
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                for done in pool.map(_draw_and_write, jobs):
                    bar.advance(task, done)
        else:
            for job in jobs:
                bar.advance(task, _draw_and_write(job))
    atomic_write(out_dir / GROUND_TRUTH_CSV, ground_truth_csv(meta))
    atomic_write(out_dir / METADATA_CSV, metadata_csv(meta))
    return out_dir


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: ``python -m tasks.synthetic --out DIR``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--n", type=int, default=4000, help="number of images (default 4000)")
    ap.add_argument("--size", type=int, default=64, help="shorter image side (default 64)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = generate(args.out, n=args.n, size=args.size, seed=args.seed,
                   progress=not args.no_progress)
    print(f"wrote {args.n} images to {out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
