"""What the two evaluation jobs get: payloads without held-out labels, and their limits.

The evaluate job (``tools/jobs.py``) gets images, the training labels and the indices to
predict; the measure job (``tools/measure.py``) gets the exported graph and the images,
never code or labels. The label files of the cache are denied to both (docs/security.md).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks.cache import PreparedData, load_arrays
from tools.sandbox import SandboxLimits
from tools.train import Recipe

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
# The floor of the limits: each training image may cost this long before the watchdog
# kills the job (generous for small candidates: the Template trains at ~1500 img/s here),
# plus fixed start/export time; the measure job gets the same per evaluation image.
SECONDS_PER_IMAGE = 0.05
FIXED_SECONDS = 180.0
# Above the floor the limit follows the gate's measured training cost per image
# (GateReport.train_s_per_image), times SAFETY_FACTOR: see default_limits for the why.
SAFETY_FACTOR = 6.0
# A forward-only image (prediction, ONNX Runtime) costs about a third of a training
# forward + backward; counted as half, to be safe.
FORWARD_SHARE = 0.5
# Forward passes of the measure job beyond the evaluation images: the batch check's
# single images, latency warm-up and timed runs, the peak-memory run (tools/measure.py).
MEASURE_EXTRA_IMAGES = 80
BATCH_CHECK_IMAGES = 16  # images run one by one and compared with their batched logits
PROFILE_THREADS = 1  # batch-1 latency threads (an edge CPU)


def auto_device(device: str) -> str:
    """Resolve "auto" to "cuda" when a GPU is available, else "cpu"; other values pass."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def default_limits(recipe: Recipe, n_train: int, device: str = "cpu", *,
                   train_s_per_image: float | None = None, n_eval: int = 0) -> SandboxLimits:
    """Sandbox limits of an evaluation's training job: timeout scaled to the work.

    Timeout = ``FIXED_SECONDS`` + training share + prediction share, where

    - training share = ``epochs * n_train * max(SECONDS_PER_IMAGE, SAFETY_FACTOR * c)``
      (at most ``recipe.max_train_seconds`` when set), ``c`` being the measured
      ``train_s_per_image``; without a measurement, ``c = 0``: the old formula, which
      stays the floor of the new one;
    - prediction share = ``SAFETY_FACTOR * c * FORWARD_SHARE * n_eval`` (the job
      predicts the evaluation images before it exports).

    ``SAFETY_FACTOR`` 6: the gate times batches of 8 on one thread, while the training
    job runs the recipe's batch with the data pipeline, the optimiser and all threads. On
    this 2-core machine at load average 8-10, the training job's seconds per image came
    out at 2.2x (ResNet-18), 2.8x (Template) and 3.9x (MobileNetV2) the median of three
    gate figures, 4.7x against the lowest one (the probe varies by up to 1.5x between
    runs there, and two OpenMP threads on oversubscribed cores are slower than one).
    6 covers the worst ratio with a quarter to spare; on cores that are not
    oversubscribed the ratio should be lower (not measured: this machine was never
    idle). The first epoch's one-off costs (start, data copy, kernel selection) and the
    export sit in ``FIXED_SECONDS``. Measurements: docs/security.md, "Limits of a job".

    All threads are used; RLIMIT_AS is dropped on CUDA (the driver reserves huge virtual
    ranges).

    Args:
        recipe: The training recipe (epochs, threads, ``max_train_seconds``).
        n_train: Training images.
        device: "cpu" or a CUDA device string.
        train_s_per_image: The gate's measured training seconds per image, or None.
        n_eval: Images the job predicts after training.

    Returns:
        The limits.
    """
    cost = SAFETY_FACTOR * (train_s_per_image or 0.0)
    budget = recipe.epochs * n_train * max(SECONDS_PER_IMAGE, cost)
    if recipe.max_train_seconds is not None:
        budget = min(budget, recipe.max_train_seconds)
    budget += cost * FORWARD_SHARE * n_eval
    update: dict[str, Any] = {"timeout_s": FIXED_SECONDS + budget,
                              "threads": recipe.threads or torch.get_num_threads()}
    if device.startswith("cuda"):
        update["memory_mb"] = None
    return SandboxLimits().model_copy(update=update)


def label_files(data: PreparedData) -> list[str]:
    """Every file of the cache except images.npy: labels, attributes, index, splits.

    The worker must not read them (labels of the evaluated split, and the sensitive
    attributes a model could key on); the sandbox hides and audit-denies them.
    The dataset's own CSVs (ground truth and metadata, recorded in meta.json) are
    denied too: they hold the same labels.
    """
    keep = {"images.npy"}
    files = {str(p) for p in data.cache_dir.iterdir() if p.is_file() and p.name not in keep}
    try:
        source = json.loads((data.cache_dir / "meta.json").read_text()).get("source") or {}
    except (OSError, ValueError):
        source = {}
    files |= {str(source[k]) for k in ("ground_truth", "metadata")
              if source.get(k) and Path(source[k]).is_file()}
    return sorted(files | {str(data.split_path)})


def build_payload(
    code: str,
    data: PreparedData,
    recipe: Recipe,
    split: str = "val",
    device: str = "auto",
    arrays: dict[str, np.ndarray] | None = None,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Build the worker payload of an evaluation (``tools.jobs.evaluate_job``).

    Only the training labels go in; the labels of ``split`` stay with the caller.

    Returns:
        ``(payload, train_idx, eval_idx)`` with the rows of the training and
        evaluated split.

    Raises:
        ValueError: Unknown split, or too few images in a split.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    arrays = arrays if arrays is not None else load_arrays(data)
    codes = np.asarray(arrays["split"])
    train_idx = np.flatnonzero(codes == SPLIT_CODES["train"])
    eval_idx = np.flatnonzero(codes == SPLIT_CODES[split])
    if len(train_idx) < 2 or len(eval_idx) == 0:
        raise ValueError(f"split has {len(train_idx)} train and {len(eval_idx)} {split} "
                         "images; need at least 2 and 1")
    payload = {
        "code": code,
        "images_path": str(data.cache_dir / "images.npy"),
        "train_indices": train_idx.tolist(),
        "train_labels": np.asarray(arrays["labels"])[train_idx].tolist(),  # the only labels
        "eval_indices": eval_idx.tolist(),
        "mean": list(data.mean),
        "std": list(data.std),
        "recipe": recipe.model_dump(mode="json"),
        "num_classes": len(data.class_names),
        "image_size": data.image_size,
        "device": auto_device(device),
    }
    return payload, train_idx, eval_idx



def measure_payload(payload: dict, onnx_path: Path, threads: int) -> dict:
    """Build the measure job's payload from the evaluate job's (no code, no labels).

    The batch-check images are drawn here with a fresh random seed, so no code that ran
    before can know which images will be compared.
    """
    n_eval = len(payload["eval_indices"])
    rng = np.random.default_rng(secrets.randbits(64))
    check = np.sort(rng.choice(n_eval, size=min(BATCH_CHECK_IMAGES, n_eval), replace=False))
    recipe = Recipe.model_validate(payload["recipe"])
    return {"onnx_path": str(onnx_path), "images_path": payload["images_path"],
            "eval_indices": payload["eval_indices"], "mean": payload["mean"],
            "std": payload["std"], "eval_batch_size": recipe.eval_batch_size,
            "num_classes": payload["num_classes"], "image_size": payload["image_size"],
            "check_positions": check.tolist(), "threads": threads,
            "profile_threads": PROFILE_THREADS}


def measure_limits(limits: SandboxLimits, n_eval: int,
                   train_s_per_image: float | None = None) -> SandboxLimits:
    """Limits of the measure job: the evaluation's memory and threads, time by images.

    ``FIXED_SECONDS`` plus the larger of the floor ``n_eval * SECONDS_PER_IMAGE`` and the
    measured cost ``SAFETY_FACTOR * FORWARD_SHARE * train_s_per_image`` per forward image
    (the evaluation images and ``MEASURE_EXTRA_IMAGES``; see :func:`default_limits`).
    """
    measured = SAFETY_FACTOR * FORWARD_SHARE * (train_s_per_image or 0.0) * (
        n_eval + MEASURE_EXTRA_IMAGES)
    budget = max(n_eval * SECONDS_PER_IMAGE, measured)
    return limits.model_copy(update={"timeout_s": FIXED_SECONDS + budget, "cpu_seconds": None})
