"""Worker-side jobs: what runs inside the sandboxed worker (``tools.worker`` dispatches).

:func:`evaluate_job` builds, trains, predicts, saves the weights and exports one
candidate to ONNX. The worker gets images and the *training* labels only; validation/test
labels stay in the parent, which computes every metric itself (docs/security.md). Nothing
this job returns is trusted for scoring: candidate code ran in this process, so the
parent scores the predictions and measures the cost of the exported graph in a separate
measure job (``tools/measure.py``) that runs no candidate code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tools.batches import Normalizer
from tools.export import EXPORT_BATCH, ONNX_FILE, ExportError, export_onnx
from tools.gate import gate_job
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


def _predict_fp32(model: torch.nn.Module, images: np.ndarray, idx: np.ndarray, payload: dict,
                  device: str, recipe: Recipe) -> np.ndarray:
    """PyTorch predictions in float32 (no autocast, no TF32), like the exported graph runs.

    They are only compared with the graph's predictions, so reduced precision would only
    blur that comparison: a barely trained model has near-tied logits that bf16 flips.
    """
    fp32 = recipe.model_copy(update={"amp": "off"})
    if not device.startswith("cuda"):
        return predict(model, images, idx, payload["mean"], payload["std"], device, fp32)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return predict(model, images, idx, payload["mean"], payload["std"], device, fp32)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _export(model: torch.nn.Module, images: np.ndarray, eval_idx: np.ndarray, payload: dict,
            workdir: Path) -> str:
    """Export the trained model (CPU, float32, eval mode) to ``workdir/model.onnx``.

    Traced on real evaluation images, normalised like ``predict`` does, at batch
    ``EXPORT_BATCH``; returns the exporter used.
    """
    rows = np.resize(eval_idx, EXPORT_BATCH)  # repeats rows when the split is tiny
    norm = Normalizer(payload["mean"], payload["std"], "cpu", channels_last=False)
    example = norm(torch.from_numpy(np.ascontiguousarray(images[np.sort(rows)])))
    model = model.to("cpu").to(  # type: ignore[call-overload]
        memory_format=torch.contiguous_format).float().eval()
    with torch.no_grad():
        return export_onnx(model, example, Path(workdir) / ONNX_FILE)


def _save_and_export(model: torch.nn.Module, images: np.ndarray, eval_idx: np.ndarray,
                     payload: dict, workdir: Path) -> str | dict:
    """Save the trained weights and export the graph; the exporter used, or a failure dict."""
    model = model.to("cpu").to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    torch.save(model.state_dict(), workdir / WEIGHTS_FILE)
    try:
        return _export(model, images, eval_idx, payload, workdir)
    except ExportError as e:
        return {"failure": {"stage": "export", "reason": e.reason[:2000]}}
    except Exception as e:  # noqa: BLE001 - e.g. the model cannot move to the CPU
        return _failure("memory" if _is_oom(e) else "export", e)


def evaluate_job(payload: dict, workdir: Path | str) -> dict:
    """Worker side of an evaluation: build, train, predict, save weights, export ONNX.

    The payload carries no validation/test labels: only ``train_labels`` aligned with
    ``train_indices``. The parent scores the predictions that ONNX Runtime makes with the
    exported graph (measure job); ``torch_predictions`` (float32, see
    :func:`_predict_fp32`) serve only to check that the graph agrees with the trained
    model.

    Args:
        payload: ``code``, ``images_path`` (cached images.npy, mapped read-only),
            ``train_indices``, ``train_labels``, ``eval_indices``, ``mean``, ``std``,
            ``recipe`` (Recipe fields), ``num_classes``, ``image_size``, ``device``.
        workdir: The job's private folder; the trained ``state_dict`` is saved there as
            ``weights.pt`` and the graph as ``model.onnx``.

    Returns:
        ``{"torch_predictions", "training", "onnx_file", "exporter",
        "timings"}``, or ``{"failure": {"stage", "reason", ...}}`` with stage "diverged",
        "train", "export", "memory" or "crash" (build).
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
    _emit("built", params=sum(p.numel() for p in model.parameters() if p.requires_grad))
    timings["model_built"] = time.time()

    def on_epoch(info: dict) -> None:
        _emit("epoch", **info)

    try:
        stats = train(model, images, train_idx, train_labels, recipe, payload["mean"],
                      payload["std"], device, on_epoch=on_epoch)
        timings["trained"] = time.time()
        preds = _predict_fp32(model, images, eval_idx, payload, device, recipe)
    except Diverged as e:
        return _failure("diverged", e, epoch=e.epoch, step=e.step)
    except Exception as e:  # noqa: BLE001
        return _failure("memory" if _is_oom(e) else "train", e)
    timings["predicted"] = time.time()
    exporter = _save_and_export(model, images, eval_idx, payload, Path(workdir))
    if isinstance(exporter, dict):
        return exporter
    timings["exported"] = time.time()
    _emit("done", seconds=timings["exported"] - timings["job_start"])
    return {
        "torch_predictions": preds.tolist(),
        "training": stats.model_dump(),
        "onnx_file": ONNX_FILE,
        "exporter": exporter,
        "timings": timings,
    }


def gate_export_job(payload: dict, workdir: Path | str) -> dict:
    """Run the gate job (:func:`tools.gate.gate_job`), then export the untrained model.

    For the latency screen (:mod:`tools.screen`): the parent times ``workdir/model.onnx``
    in a job that runs no candidate code, before any training is spent on the design.
    A model's batch-1 latency does not depend on its weights, so the untrained graph
    stands for the trained one. A model that passes the gate but cannot be exported gets
    no graph, only ``export_error``: the evaluation's own export reports that failure.

    Returns:
        The gate job's result, plus ``exporter`` or ``export_error`` when it passed.
    """
    out = gate_job(payload, Path(workdir))
    if not all(c["ok"] for c in out["checks"]):
        return out
    size = int(payload["image_size"])
    try:
        model = _build(payload, 0).float().eval()
        example = torch.randn(EXPORT_BATCH, 3, size, size,
                              generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out["exporter"] = export_onnx(model, example, Path(workdir) / ONNX_FILE)
    except ExportError as e:
        out["export_error"] = e.reason[:500]
    except Exception as e:  # noqa: BLE001 - the candidate's own failure, reported as data
        out["export_error"] = f"{type(e).__name__}: {e}"[:500]
    return out
