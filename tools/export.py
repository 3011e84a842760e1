"""Worker-side export job: build a candidate, load its trained weights, write ONNX.

Runs inside the sandbox (``run_job("tools.export:export_job", payload)``) because
building the model executes candidate code. The parent copies ``model.onnx`` out of the
job's workdir and checks it with ONNX Runtime.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

ONNX_FILE = "model.onnx"


def export_job(payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Export the candidate in ``payload`` to ``workdir/model.onnx``.

    Args:
        payload: ``code``, ``num_classes``, ``image_size`` and optionally ``weights``
            (path of a saved state_dict, mapped read-only).
        workdir: The job's private working directory.

    Returns:
        ``{"onnx": file name, "bytes": size, "exporter": "torchscript" | "dynamo",
        "weights_loaded": bool}``.
    """
    import torch

    from tools.candidate import load_candidate

    module = load_candidate(payload["code"])
    model = module.build_model(int(payload["num_classes"]))
    weights = payload.get("weights")
    loaded = False
    if weights and Path(weights).is_file():
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        loaded = True
    model.eval()
    size = int(payload["image_size"])
    x = torch.zeros(1, 3, size, size)
    out = Path(workdir) / ONNX_FILE
    exporter = "torchscript"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # The TorchScript exporter is ~20x faster than dynamo here and sufficient
            # for plain CNNs; dynamo is the fallback for what it cannot trace.
            torch.onnx.export(model, (x,), str(out), dynamo=False, input_names=["input"],
                              output_names=["logits"], opset_version=18,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        except Exception:  # noqa: BLE001 - any exporter failure: try the other exporter
            exporter = "dynamo"
            torch.onnx.export(model, (x,), str(out), dynamo=True, input_names=["input"],
                              output_names=["logits"])
    return {"onnx": ONNX_FILE, "bytes": out.stat().st_size, "exporter": exporter,
            "weights_loaded": loaded}
