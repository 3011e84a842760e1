"""Validation of what the evaluation jobs return: nothing they say is taken on trust.

The evaluate job ran candidate code, so its result is checked field by field; the
measure job's result is checked all the same (docs/security.md). A failure is raised as
:class:`EvaluationFailed` with the report's failure stage.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from evaluation.report import HardwareReport, TrainingStats
from tools.export import ONNX_FILE
from tools.sandbox import SandboxResult
from tools.workdir import is_regular

# Below this share of evaluation images on which the exported graph (ONNX Runtime) and
# the trained PyTorch model predict the same class, the graph is not the trained model.
MIN_AGREEMENT = 0.95


class EvaluationFailed(Exception):
    """An evaluation failed at ``stage`` (a report failure stage) for ``reason``."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage, self.reason = stage, reason


def check_predictions(preds: np.ndarray, n_eval: int, num_classes: int, what: str) -> None:
    """Require ``n_eval`` integer class predictions in ``[0, num_classes)``."""
    if preds.shape != (n_eval,) or not np.issubdtype(preds.dtype, np.integer):
        raise EvaluationFailed("invalid", f"expected {n_eval} integer {what}, got shape "
                               f"{preds.shape} dtype {preds.dtype}")
    if len(preds) and (preds.min() < 0 or preds.max() >= num_classes):
        raise EvaluationFailed("invalid", f"{what} outside [0, {num_classes})")


def check_result(res: dict, n_eval: int, num_classes: int, workdir: Path | None
                 ) -> tuple[np.ndarray, TrainingStats, str, Path]:
    """Validate the evaluate job's (untrusted) result; raise on anything off.

    Returns:
        ``(torch_predictions, training, exporter, path of model.onnx)``.
    """
    try:
        training = TrainingStats.model_validate(res["training"])
        preds = np.asarray(res["torch_predictions"])
        exporter = str(res["exporter"])[:40]
    except (KeyError, TypeError, ValueError, ValidationError) as e:
        raise EvaluationFailed("invalid", f"malformed worker result: {e}") from e
    check_predictions(preds, n_eval, num_classes, "predictions")
    if not math.isfinite(training.final_loss):
        raise EvaluationFailed("diverged", f"final training loss {training.final_loss}")
    # The file name is ours, never the result's: a result cannot point the measure job
    # elsewhere, and a symlink or special file planted in the work dir is refused.
    if workdir is None or not is_regular(workdir / ONNX_FILE):
        raise EvaluationFailed("export", "the worker left no exported model (model.onnx)")
    onnx_path = workdir / ONNX_FILE
    return preds.astype(np.int64), training, exporter, onnx_path


def check_measure(res: dict, n_eval: int, num_classes: int
                  ) -> tuple[np.ndarray, HardwareReport]:
    """Validate the measure job's result (trusted code, checked all the same)."""
    try:
        hardware = HardwareReport.model_validate(res["hardware"])
        preds = np.asarray(res["predictions"])
    except (KeyError, TypeError, ValueError, ValidationError) as e:
        raise EvaluationFailed("invalid", f"malformed measure result: {e}") from e
    check_predictions(preds, n_eval, num_classes, "ONNX Runtime predictions")
    return preds.astype(np.int64), hardware



def sandbox_failure(result: SandboxResult) -> tuple[str, str]:
    """Map a failed sandbox run (``SandboxResult``) to (failure stage, reason)."""
    stage = {"timeout": "timeout", "memory": "memory", "invalid-result": "invalid",
             "tamper": "invalid"}.get(result.error_kind or "", "crash")
    reason = result.error or "the worker failed without a message"
    if result.error_kind in ("crash", "killed") and result.stderr_tail:
        reason += " | stderr: " + result.stderr_tail[-500:]
    return stage, reason

