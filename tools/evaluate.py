"""Evaluate one candidate: gate, sandboxed training, then honest metrics in the parent.

The parent holds the validation/test labels; the worker gets images, the training labels
and the indices to predict, and returns predictions plus measurements. Accuracy and
fairness are computed here, from labels the candidate never saw (DESIGN.md §6), and the
worker's parameter count is cross-checked against the weights it saved.

CLI: ``python -m tools.evaluate --code FILE [data options] [--epochs N] [--json]``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ValidationError

from evaluation.fairness import classification_metrics, fairness_report
from evaluation.report import (
    Budgets,
    EvaluationReport,
    HardwareReport,
    TrainingStats,
    budget_violations,
)
from tasks.attributes import sensitive_groups
from tasks.cache import PreparedData, load_arrays, skip_notes
from tools.tmpdirs import make_temp_dir
from tools.train import WEIGHTS_FILE, Recipe

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
# Each training image costs at most this long before the watchdog kills the job (a
# generous bound: the Template trains at ~1500 img/s here), plus fixed start/profile time.
_SECONDS_PER_IMAGE = 0.05
_FIXED_SECONDS = 180.0


def normalise_code(code: str) -> str:
    """Canonical form of candidate code: the AST unparsed (comments/layout dropped).

    Code that does not parse is normalised textually (line ends, trailing spaces).
    """
    try:
        return ast.unparse(ast.parse(code))
    except (SyntaxError, ValueError):
        lines = code.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return "\n".join(line.rstrip() for line in lines).strip() + "\n"


def code_hash(code: str) -> str:
    """sha256 hex digest of :func:`normalise_code`."""
    return hashlib.sha256(normalise_code(code).encode()).hexdigest()


def evaluation_key(code: str, recipe: Recipe, fingerprint: str, split: str) -> str:
    """Cache key of an evaluation: same key, same result (up to timing noise).

    ``sha256(normalised code, recipe JSON with sorted keys, data fingerprint, split)``,
    the four joined by NUL characters.
    """
    recipe_json = json.dumps(recipe.model_dump(mode="json"), sort_keys=True)
    blob = "\0".join([normalise_code(code), recipe_json, fingerprint, split])
    return hashlib.sha256(blob.encode()).hexdigest()


def _auto_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _default_limits(recipe: Recipe, n_train: int, device: str = "cpu") -> Any:
    """Sandbox limits of an evaluation: timeout scaled to the work, all threads.

    RLIMIT_AS is dropped on CUDA (the driver reserves huge virtual ranges).
    """
    from tools.sandbox import SandboxLimits

    budget = recipe.epochs * n_train * _SECONDS_PER_IMAGE
    if recipe.max_train_seconds is not None:
        budget = min(budget, recipe.max_train_seconds)
    update: dict[str, Any] = {"timeout_s": _FIXED_SECONDS + budget,
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


def _weights_params(path: Path, names: list[str]) -> int:
    """Count parameters in the saved state_dict: unique tensors named as parameters."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError("weights file is not a state_dict")
    missing = [n for n in names if n not in state]
    if missing:
        raise ValueError(f"parameters missing from the weights file: {missing[:5]}")
    seen: set[tuple[int, int]] = set()
    total = 0
    for n in names:
        t = state[n]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"parameter {n!r} is not a float tensor in the weights file")
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key not in seen:  # tied weights count once, like model.parameters()
            seen.add(key)
            total += t.numel()
    return total


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
        "device": _auto_device(device),
    }
    return payload, train_idx, eval_idx


class _Failed(Exception):
    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage, self.reason = stage, reason


def _check_result(res: dict, n_eval: int, num_classes: int, workdir: Path | None
                  ) -> tuple[np.ndarray, TrainingStats, HardwareReport]:
    """Validate the worker's result; raise _Failed("invalid") on anything off."""
    try:
        training = TrainingStats.model_validate(res["training"])
        hardware = HardwareReport.model_validate(res["hardware"])
        preds = np.asarray(res["predictions"])
        params = int(res["params"])
        names = [str(n) for n in res["param_names"]]
    except (KeyError, TypeError, ValueError, ValidationError) as e:
        raise _Failed("invalid", f"malformed worker result: {e}") from e
    if preds.shape != (n_eval,) or not np.issubdtype(preds.dtype, np.integer):
        raise _Failed("invalid", f"expected {n_eval} integer predictions, got shape "
                      f"{preds.shape} dtype {preds.dtype}")
    if len(preds) and (preds.min() < 0 or preds.max() >= num_classes):
        raise _Failed("invalid", f"predictions outside [0, {num_classes})")
    if not math.isfinite(training.final_loss):
        raise _Failed("diverged", f"final training loss {training.final_loss}")
    if hardware.params != params:
        raise _Failed("invalid", f"profiled params {hardware.params:,} != reported {params:,}")
    if workdir is None or not (workdir / WEIGHTS_FILE).is_file():
        raise _Failed("invalid", "the worker saved no weights")
    try:
        counted = _weights_params(workdir / WEIGHTS_FILE, names)
    except Exception as e:  # noqa: BLE001 - an unreadable weights file is itself the finding
        raise _Failed("invalid", f"weights file unreadable: {type(e).__name__}: {e}") from e
    if counted != params:
        raise _Failed("invalid", f"reported {params:,} parameters but the saved weights hold "
                      f"{counted:,}")
    return preds.astype(np.int64), training, hardware


def _sandbox_failure(result: Any) -> tuple[str, str]:
    """Map a failed sandbox run (``SandboxResult``) to (failure stage, reason)."""
    stage = {"timeout": "timeout", "memory": "memory", "invalid-result": "invalid",
             "tamper": "invalid"}.get(result.error_kind or "", "crash")
    reason = result.error or "the worker failed without a message"
    if result.error_kind in ("crash", "killed") and result.stderr_tail:
        reason += " | stderr: " + result.stderr_tail[-500:]
    return stage, reason


def evaluate_candidate(
    code: str,
    data: PreparedData,
    *,
    recipe: Recipe | None = None,
    budgets: Budgets | None = None,
    split: Literal["val", "test"] = "val",
    candidate_id: str | None = None,
    out_dir: Path | str | None = None,
    limits: Any = None,
    on_event: Callable[[dict], None] | None = None,
    device: str = "auto",
    gate_report: Any = None,
    n_boot: int = 0,
) -> EvaluationReport:
    """Gate, train and measure one candidate; compute its metrics from parent-held labels.

    Failure stages: "gate" (the gate's message), "timeout"/"memory"/"crash" (the sandbox),
    "diverged" (non-finite training loss), "train" (an exception while training),
    "invalid" (a malformed result or a parameter count that disagrees with the weights).

    Args:
        code: Candidate source defining ``build_model(num_classes)``.
        data: The prepared dataset.
        recipe: Training recipe (default ``Recipe()``).
        budgets: Device budgets (default unconstrained).
        split: "val" during the search, "test" once at the end.
        candidate_id: Recorded in the report.
        out_dir: When given, receives model.py, report.json and weights.pt.
        limits: ``tools.sandbox.SandboxLimits``; default scales the timeout with the
            training set size.
        on_event: Called with each progress event of the worker.
        device: "auto" (CUDA when available), "cpu" or "cuda[:i]".
        gate_report: A passing ``GateReport`` the caller already obtained for this very
            code, budgets and image size (the graph's gate node); the sandboxed build
            check is then not repeated. The static policy check always runs.
        n_boot: Bootstrap resamples for per-group confidence intervals (0: none).

    Returns:
        The report; ``status == "failed"`` carries ``failure_stage`` and
        ``failure_reason`` instead of metrics.
    """
    from tools.gate import gate, static_check
    from tools.sandbox import run_job

    t0 = time.perf_counter()
    recipe = recipe or Recipe()
    budgets = budgets or Budgets()
    report = EvaluationReport(
        candidate_id=candidate_id, code_hash=code_hash(code), status="failed", split=split,
        budgets=budgets, recipe=recipe.model_dump(mode="json"),
        data_fingerprint=data.fingerprint,
    )
    num_classes = len(data.class_names)
    workdir: Path | None = None
    try:
        if gate_report is not None and gate_report.ok:
            # Cheap and in-process: a stale or mismatched report can't smuggle code past it.
            g = static_check(code)
            g.isolation = list(gate_report.isolation)
        else:
            g = gate(code, budgets=budgets, image_size=data.image_size,
                     num_classes=num_classes)
        report.isolation = list(getattr(g, "isolation", []) or [])
        if not g.ok:
            raise _Failed("gate", g.message or "the gate rejected the code")
        arrays = load_arrays(data)
        payload, train_idx, eval_idx = build_payload(code, data, recipe, split, device, arrays)
        labels = np.asarray(arrays["labels"])
        keep = make_temp_dir("flnas-eval-")
        workdir = keep / "work"
        result = run_job(
            "evaluate", payload,
            limits=limits if limits is not None else _default_limits(
                recipe, len(train_idx), payload["device"]),
            read_only=[payload["images_path"]], deny_read=label_files(data),
            keep_workdir=workdir, on_event=on_event,
        )
        report.isolation = sorted(set(report.isolation) | set(result.isolation))
        if not result.ok:
            raise _Failed(*_sandbox_failure(result))
        res = result.result or {}
        if "failure" in res:
            f = res["failure"]
            raise _Failed(str(f.get("stage", "crash")), str(f.get("reason", "")))
        preds, report.training, report.hardware = _check_result(
            res, len(eval_idx), num_classes, workdir)
        y_true = labels[eval_idx]
        report.metrics = classification_metrics(y_true, preds, data.class_names)
        groups = sensitive_groups(np.asarray(arrays["sex"])[eval_idx],
                                  np.asarray(arrays["age"])[eval_idx])
        report.fairness = fairness_report(y_true, preds, groups, num_classes, n_boot=n_boot,
                                          seed=recipe.seed)
        report.violations = budget_violations(report.hardware, budgets)
        report.status = "ok"
    except _Failed as f:
        report.failure_stage, report.failure_reason = f.stage, f.reason  # type: ignore[assignment]
    finally:
        report.wall_s = time.perf_counter() - t0
        if out_dir is not None:
            _write_outputs(Path(out_dir), code, report, workdir)
        if workdir is not None:
            shutil.rmtree(workdir.parent, ignore_errors=True)
    return report


def _write_outputs(out: Path, code: str, report: EvaluationReport, workdir: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.py").write_text(code, encoding="utf-8")
    (out / "report.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    if report.ok and workdir is not None and (workdir / WEIGHTS_FILE).is_file():
        shutil.copyfile(workdir / WEIGHTS_FILE, out / WEIGHTS_FILE)


# ----------------------------------------------------------------------------------- CLI


def render_report(report: EvaluationReport, console: Any = None) -> None:
    """Print a report as rich tables: overall, per-group accuracy, fairness, hardware."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    head = f"[bold]{report.candidate_id or report.code_hash[:12]}[/] on {report.split}: "
    if not report.ok:
        console.print(head + f"[red]failed at {report.failure_stage}[/]: {report.failure_reason}")
        return
    m, hw, tr = report.metrics, report.hardware, report.training
    assert m is not None and hw is not None and tr is not None
    console.print(head + f"accuracy [bold]{m.accuracy:.3f}[/], balanced accuracy "
                  f"[bold]{m.balanced_accuracy:.3f}[/] (n={m.n}), {report.wall_s:.1f} s")
    groups = Table(title="Per-group accuracy")
    for col in ("attribute", "group", "n", "accuracy"):
        groups.add_column(col, justify="right" if col in ("n", "accuracy") else "left")
    gaps = Table(title="Fairness (gaps: lower is fairer)")
    gaps.add_column("metric")
    for name, fa in report.fairness.items():
        gaps.add_column(name, justify="right")
        for g in fa.groups:
            ci = (fa.intervals or {}).get(f"accuracy[{g.group}]")
            acc = f"{g.accuracy:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            groups.add_row(name, g.group, str(g.count), acc)
    fas = list(report.fairness.values())
    gaps.add_row("worst group", *(f"{fa.worst_group} {fa.worst_group_accuracy:.3f}" for fa in fas))
    for label, key in (("unfairness", "unfairness"), ("max gap", "max_gap"), ("EOpp0", "eopp0"),
                       ("EOpp1", "eopp1"), ("EOdd", "eodd"),
                       ("DP difference", "demographic_parity_difference"),
                       ("EO difference", "equalized_odds_difference")):
        gaps.add_row(label, *("n/a" if getattr(fa, key) is None else f"{getattr(fa, key):.3f}"
                              for fa in fas))
    gaps.add_row("max gap 95% interval", *(
        f"[{fa.max_gap_interval[0]:.3f}, {fa.max_gap_interval[1]:.3f}]"
        if fa.max_gap_interval else "n/a" for fa in fas))
    gaps.add_row("missing", *(str(fa.n_missing) for fa in fas))
    console.print(groups, gaps)
    hwt = Table(title="Hardware (batch 1)")
    hwt.add_column("measure")
    hwt.add_column("value", justify="right")
    onnx = f"{hw.onnx_latency_ms_median:.2f} ms" if hw.onnx_latency_ms_median else "n/a"
    for k, v in (("params", f"{hw.params:,}"), ("size", f"{hw.size_mb:.2f} MB"),
                 ("FLOPs", f"{hw.flops:,}"),
                 ("peak activations", f"{hw.peak_activation_mb:.2f} MB"),
                 ("latency median / p90", f"{hw.latency_ms_median:.2f} / "
                  f"{hw.latency_ms_p90:.2f} ms ({hw.latency_device}, {hw.threads} thr)"),
                 ("ONNX Runtime latency", onnx),
                 ("training", f"{tr.epochs} ep, {tr.steps} steps, {tr.images_per_s:.0f} img/s, "
                  f"amp {tr.amp}" + (" (stopped early)" if tr.stopped_early else ""))):
        hwt.add_row(k, v)
    console.print(hwt)
    if report.violations:
        console.print("[red]Budget violations:[/] " + "; ".join(report.violations))
    else:
        console.print("[green]All budgets met.[/]")
    if report.isolation:
        console.print("isolation: " + ", ".join(report.isolation))


def _parser() -> argparse.ArgumentParser:
    from tasks.data_args import add_data_args

    p = argparse.ArgumentParser(
        prog="python -m tools.evaluate",
        description="Train and measure one candidate with the fixed recipe (val split).",
    )
    p.add_argument("--code", type=Path, required=True,
                   help="candidate source file defining build_model(num_classes)")
    p.add_argument("--epochs", type=int, default=Recipe().epochs)
    p.add_argument("--batch-size", type=int, default=Recipe().batch_size)
    p.add_argument("--max-params", type=int, default=None)
    p.add_argument("--max-latency-ms", type=float, default=None)
    p.add_argument("--max-memory-mb", type=float, default=None)
    p.add_argument("--out", type=Path, default=None, help="write model.py, report.json, weights")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="bootstrap resamples for 95%% intervals of the group metrics")
    add_data_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 candidate failed, 2 usage/data error)."""
    from rich.console import Console

    from tasks.data_args import prepare_from_args
    from tasks.isic import DatasetError

    parser = _parser()
    args = parser.parse_args(argv)
    err = Console(stderr=True)
    try:
        code = args.code.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        err.print(f"[red]error:[/] cannot read --code {args.code}: {e.strerror or e}")
        return 2
    try:
        recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size)
        budgets = Budgets(max_params=args.max_params, max_latency_ms=args.max_latency_ms,
                          max_memory_mb=args.max_memory_mb)
    except ValidationError as e:
        err.print(f"[red]error:[/] {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}")
        return 2
    try:
        data = prepare_from_args(args, progress=not args.json)
    except (DatasetError, ValueError, OSError) as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    for note in skip_notes(data):
        err.print(f"data: {note}", markup=False)

    def progress(event: dict) -> None:
        if not args.json and event.get("event") == "epoch":
            err.print(f"epoch {event['epoch']}/{event['epochs']}: loss {event['loss']:.4f}, "
                      f"{event['images_per_s']:.0f} img/s")

    report = evaluate_candidate(code, data, recipe=recipe, budgets=budgets,
                                candidate_id=args.code.stem, out_dir=args.out,
                                on_event=progress, n_boot=args.bootstrap)
    if args.json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        render_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
