"""Shared command-line options for choosing and preparing the dataset."""

from __future__ import annotations

import argparse
import os
import shutil
import uuid
from pathlib import Path

from tasks.cache import PreparedData, default_cache_root, prepare_isic
from tasks.isic import DatasetError, locate_layout
from tasks.isic_format import DOWNLOAD_HINT, GROUND_TRUTH_CSV

DATA_DIR_ENV = "FLNAS_ISIC_DIR"
TASKS = ("isic",)


def add_data_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the dataset options to ``parser`` (returned for chaining).

    Options: ``--task`` (isic), ``--data-dir`` (default env ``FLNAS_ISIC_DIR``),
    ``--synthetic``, ``--synthetic-n`` (4000), ``--image-size`` (64), ``--seed`` (0),
    ``--cache-dir`` (default env ``FLNAS_CACHE_DIR`` or ``~/.cache/flnas``), ``--strict``.
    """
    g = parser.add_argument_group("data")
    g.add_argument("--task", choices=TASKS, default="isic", help="dataset/task (default: isic)")
    g.add_argument(
        "--data-dir", type=Path, default=None,
        help=f"ISIC 2019 folder with {GROUND_TRUTH_CSV}, the metadata CSV and "
        f"ISIC_2019_Training_Input/ (default: ${DATA_DIR_ENV})",
    )
    g.add_argument("--synthetic", action="store_true",
                   help="use generated ISIC-format data instead of the real set")
    g.add_argument("--synthetic-n", type=int, default=4000,
                   help="number of synthetic images (default: 4000)")
    g.add_argument("--image-size", type=int, default=64,
                   help="side of the square training images (default: 64)")
    g.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    g.add_argument("--cache-dir", type=Path, default=None,
                   help="cache root (default: $FLNAS_CACHE_DIR or ~/.cache/flnas)")
    g.add_argument("--strict", action="store_true",
                   help="fail on a missing or unreadable image instead of skipping it")
    return parser


def _synthetic_dir(root: Path, n: int, size: int, seed: int, progress: bool) -> Path:
    """Generate synthetic data once under ``root/synthetic`` and return its folder."""
    out = root / "synthetic" / f"n{n}_s{size}_seed{seed}"
    try:
        locate_layout(out)
        return out
    except DatasetError:
        pass
    from tasks.synthetic import generate  # lazy: only synthetic runs need it

    out.parent.mkdir(parents=True, exist_ok=True)
    # Generate beside the target and rename, so a killed run leaves no half dataset.
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate(tmp, n=n, size=size, seed=seed, progress=progress)
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def prepare_from_args(args: argparse.Namespace, *, progress: bool = True) -> PreparedData:
    """Prepare the dataset chosen by the options of `add_data_args`.

    Args:
        args: Parsed arguments.
        progress: Show progress bars.

    Returns:
        The prepared (decoded, cached, split) data.

    Raises:
        DatasetError: No data folder given or found, or bad data; the message says where
            to download ISIC 2019 and mentions ``--synthetic``.
    """
    if args.task not in TASKS:
        raise DatasetError(f"unknown task {args.task!r}; known: {', '.join(TASKS)}")
    root = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_root()
    if args.synthetic:
        if args.synthetic_n < 8:
            raise ValueError(f"--synthetic-n must be at least 8, got {args.synthetic_n}")
        data_dir = _synthetic_dir(root, args.synthetic_n, args.image_size, args.seed, progress)
    else:
        env = os.environ.get(DATA_DIR_ENV)
        data_dir = args.data_dir or (Path(env) if env else None)
        if data_dir is None:
            raise DatasetError(f"no ISIC 2019 data folder given. {DOWNLOAD_HINT}")
    return prepare_isic(
        data_dir, image_size=args.image_size, seed=args.seed, cache_root=root,
        strict=args.strict, progress=progress,
    )
