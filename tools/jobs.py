"""Worker-side jobs: what runs inside the sandboxed worker (``tools.worker`` dispatches).

:func:`evaluate_job` builds, trains, predicts, saves the weights and profiles one
candidate; :func:`profile_job` only profiles. The worker gets images and the *training*
labels only; validation/test labels stay in the parent, which computes every metric
itself (DESIGN.md §6).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tools.train import WEIGHTS_FILE, Diverged, Recipe, predict, train


def _emit(event: str, **data: Any) -> None:
    """Send a progress event to the parent through the worker; a no-op elsewhere."""
    from tools.worker import emit

    emit({"event": event, **data})


def _failure(stage: str, exc: BaseException, **extra: Any) -> dict:
    reason = exc.reason if isinstance(exc, Diverged) else f"{type(exc).__name__}: {exc}"
    return {"failure": {"stage": stage, "reason": reason[:2000], **extra}}


def _is_oom(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or (
        "out of memory" in text.lower()
    )


def _load_job(payload: dict) -> tuple[Recipe, np.ndarray, str]:
    recipe = Recipe.model_validate(payload.get("recipe", {}))
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    images = np.load(payload["images_path"], mmap_mode="r")  # read-only map, never copied whole
    size = int(payload["image_size"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, size, size):
        raise ValueError(f"images must be (N,3,{size},{size}) uint8, got {images.shape} "
                         f"{images.dtype}")
    return recipe, images, str(payload.get("device", "cpu"))


def _build(payload: dict, seed: int) -> torch.nn.Module:
    from tools.candidate import build_candidate

    torch.manual_seed(seed)  # same seed -> same initial weights
    return build_candidate(payload["code"], int(payload["num_classes"]))


def _profile(model: torch.nn.Module, payload: dict, device: str) -> dict:
    from evaluation.hardware import profile_model

    size = int(payload["image_size"])
    hw = profile_model(
        model, (1, 3, size, size), threads=int(payload.get("profile_threads", 1)),
        device=device, onnx=bool(payload.get("onnx", True)),
    )
    return hw.model_dump()


def evaluate_job(payload: dict, workdir: Path | str) -> dict:
    """Worker side of an evaluation: build, train, predict, save weights, profile.

    The payload carries no validation/test labels: only ``train_labels`` aligned with
    ``train_indices``. The parent computes every metric from ``predictions``.

    Args:
        payload: ``code``, ``images_path`` (cached images.npy, mapped read-only),
            ``train_indices``, ``train_labels``, ``eval_indices``, ``mean``, ``std``,
            ``recipe`` (Recipe fields), ``num_classes``, ``image_size``, ``device``;
            optional ``profile_threads`` (1) and ``onnx`` (True).
        workdir: The job's private folder; the trained ``state_dict`` is saved there as
            ``weights.pt``.

    Returns:
        ``{"predictions", "training", "hardware", "params", "param_names",
        "weights_file", "timings"}``, or ``{"failure": {"stage", "reason", ...}}`` with
        stage "diverged", "train", "memory" or "crash" (build/profile).
    """
    timings = {"job_start": time.time()}
    recipe, images, device = _load_job(payload)
    train_idx = np.asarray(payload["train_indices"], dtype=np.int64)
    train_labels = np.asarray(payload["train_labels"], dtype=np.int64)
    eval_idx = np.asarray(payload["eval_indices"], dtype=np.int64)
    timings["data_mapped"] = time.time()
    try:
        model = _build(payload, recipe.seed)
    except Exception as e:  # noqa: BLE001 - the candidate's own failure, reported as data
        return _failure("memory" if _is_oom(e) else "crash", e, phase="build")
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    _emit("built", params=params)
    timings["model_built"] = time.time()

    def on_epoch(info: dict) -> None:
        _emit("epoch", **info)

    try:
        stats = train(model, images, train_idx, train_labels, recipe, payload["mean"],
                      payload["std"], device, on_epoch=on_epoch)
        timings["trained"] = time.time()
        preds = predict(model, images, eval_idx, payload["mean"], payload["std"], device, recipe)
    except Diverged as e:
        return _failure("diverged", e, epoch=e.epoch, step=e.step)
    except Exception as e:  # noqa: BLE001
        return _failure("memory" if _is_oom(e) else "train", e)
    timings["predicted"] = time.time()
    model = model.to("cpu").to(memory_format=torch.contiguous_format)
    torch.save(model.state_dict(), Path(workdir) / WEIGHTS_FILE)
    # Profile the trained model (what would be deployed) after training, so the
    # profiler's thread setting can never leak into the training run; a deep copy keeps
    # the saved weights untouched by anything the profile does.
    try:
        hardware = _profile(copy.deepcopy(model), payload, device)
    except Exception as e:  # noqa: BLE001
        return _failure("memory" if _is_oom(e) else "crash", e, phase="profile")
    timings["profiled"] = time.time()
    _emit("done", seconds=timings["profiled"] - timings["job_start"])
    return {
        "predictions": preds.tolist(),
        "training": stats.model_dump(),
        "hardware": hardware,
        "params": int(params),
        "param_names": [name for name, p in model.named_parameters() if p.requires_grad],
        "weights_file": WEIGHTS_FILE,
        "timings": timings,
    }


def profile_job(payload: dict, workdir: Path | str) -> dict:
    """Worker side of a hardware profile only (no data, no training).

    Args:
        payload: ``code``, ``num_classes``, ``image_size``, ``device``, optional
            ``seed``, ``profile_threads``, ``onnx``.
        workdir: The job's private folder (unused).

    Returns:
        ``{"hardware": HardwareReport fields, "params": int}`` or ``{"failure": ...}``.
    """
    try:
        model = _build(payload, int(payload.get("seed", 0)))
        hardware = _profile(model, payload, str(payload.get("device", "cpu")))
    except Exception as e:  # noqa: BLE001
        return _failure("memory" if _is_oom(e) else "crash", e)
    return {"hardware": hardware, "params": hardware["params"]}

