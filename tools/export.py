"""Export a trained candidate to ONNX: the graph every scored number is measured on.

The evaluate job (``tools/jobs.py``) calls :func:`export_onnx` inside the sandboxed
worker, right after training, because the model object only exists there. What it writes
is untrusted (candidate code ran in that process): the trusted measure job
(``tools/measure.py``) validates the file and measures it, and the predictions that are
scored come from running that same file in ONNX Runtime.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch

ONNX_FILE = "model.onnx"
OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# Traced at batch 2, not 1: a batch of one lets the tracer specialise size-1 broadcasts,
# and the export must keep the batch dimension free.
EXPORT_BATCH = 2


class ExportError(RuntimeError):
    """Neither exporter could turn the model into an ONNX graph.

    Attributes:
        reason: What went wrong with each exporter, for the Code-Fixer.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _short(exc: BaseException, limit: int = 300) -> str:
    """First line of the innermost cause: what the exporter could not handle."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    lines = _ANSI.sub("", str(exc)).strip().splitlines() or [""]
    text = f"{type(exc).__name__}: {lines[0]}"
    return text if len(text) <= limit else text[: limit - 5] + "[...]"


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path | str) -> str:
    """Write ``model`` as an ONNX graph with a free batch dimension.

    The TorchScript exporter (``dynamo=False``, opset :data:`OPSET`) runs first: well
    under a second for a small CNN, and it folds eval-mode BatchNorm into the preceding
    convolution. When it fails, the dynamo exporter (``torch.export``; several seconds)
    tries the same. Input and output are named ``input`` and ``logits`` with the batch axis
    dynamic.

    Args:
        model: The model, on the CPU, in eval mode, float32.
        example: An input of shape ``(EXPORT_BATCH, 3, S, S)`` to trace with.
        path: Where to write the graph.

    Returns:
        ``"torchscript"`` or ``"dynamo"``: the exporter that succeeded.

    Raises:
        ExportError: Both exporters failed; the message carries both errors.
    """
    names: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME],
                             "dynamic_axes": {INPUT_NAME: {0: "batch"},
                                              OUTPUT_NAME: {0: "batch"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices from the exporters
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=OPSET,
                              **names)
            return "torchscript"
        except Exception as e:  # noqa: BLE001 - any exporter failure: try the other one
            first = e
        try:
            # external_data=False: the weights go inside the file (the measure job refuses
            # references to other files).
            torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=OPSET,
                              verbose=False, external_data=False, **names)
            return "dynamo"
        except Exception as e:  # noqa: BLE001
            second = e
    # The dynamo exporter copies tensors through ctypes, which the worker's audit hook
    # denies: say so instead of passing the sandbox's wording on to the Code-Fixer.
    dynamo = ("not available in the sandbox" if isinstance(second, PermissionError)
              and str(second).startswith("sandbox:") else _short(second))
    raise ExportError(
        "the trained model could not be exported to ONNX (TorchScript exporter: "
        f"{_short(first)}; dynamo exporter: {dynamo}). Use standard torch layers "
        "and tensor ops in forward, without Python branches on tensor values or on the "
        "batch size.")
