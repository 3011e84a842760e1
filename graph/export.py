"""Deliver the chosen design's ONNX graph: copy the scored file, check it sandboxed.

Each evaluation exports its trained model to ONNX and scores that very graph
(``tools.measure``), so the deliverable is the file the test split was scored with:
``candidates/<id>/test/model.onnx`` (the validation one when the test evaluation
failed); nothing is rebuilt or re-exported (docs/security.md, docs/metrics.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def ort_check(path: Path, image_size: int, num_classes: int) -> str:
    """Validate the exported graph and run it once in ONNX Runtime, sandboxed.

    The graph's bytes came from a process that ran candidate code, so the parent never
    parses them itself: ``tools.measure.check_job`` does, in a worker that loads no
    candidate code.

    Returns:
        "ok", or what went wrong.
    """
    from tools.sandbox import SandboxLimits, run_job

    res = run_job("tools.measure:check_job", {"onnx_path": str(path), "image_size": image_size,
                                              "num_classes": num_classes},
                  limits=SandboxLimits.model_validate({"timeout_s": 180}), read_only=[str(path)])
    if not res.ok:
        return f"check failed: {res.error or 'no result'}"[:500]
    return str((res.result or {}).get("check", "no answer"))[:500]


def validation_graph(run_dir: Path, candidate: str) -> Path | None:
    """Return a graph one of the candidate's validation evaluations exported (None: none).

    The first training seed's when there is one (``val/`` sorts before ``val-seed<N>/``);
    latency does not depend on the weights, so any of them times the design.
    """
    found = sorted((Path(run_dir) / "candidates" / candidate).glob("val*/model.onnx"))
    return found[0] if found else None


def export_best(run_dir: Path, candidate: str, *, image_size: int,
                num_classes: int) -> dict[str, Any]:
    """Copy the graph the candidate's test evaluation measured to ``best_model.onnx``.

    Returns:
        What was exported (``onnx`` path, ``trained_for`` split, exporter, ONNX
        Runtime check) or ``onnx_error``.
    """
    from tools.sandbox import is_regular

    out: dict[str, Any] = {"code": "best_model.py"}
    folder = run_dir / "candidates" / candidate
    try:
        for split in ("test", "val"):
            src = folder / split / "model.onnx"
            if not is_regular(src):
                continue
            dest = run_dir / "best_model.onnx"
            shutil.copyfile(src, dest)
            out.update(onnx="best_model.onnx", trained_for=split,
                       onnxruntime_check=ort_check(dest, image_size, num_classes))
            report = folder / split / "report.json"
            if report.is_file():
                out["exporter"] = json.loads(report.read_text()).get("exporter")
            break
        else:
            out["onnx_error"] = f"no evaluation of {candidate} left a model.onnx"
    except Exception as exc:  # noqa: BLE001 - export is a bonus; never lose the run for it
        out["onnx_error"] = f"{type(exc).__name__}: {exc}"[-500:]
    return out
