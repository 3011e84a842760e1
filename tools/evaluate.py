"""Evaluate one candidate: gate, sandboxed training, trusted measurement, honest metrics.

Three processes, one job each (docs/security.md):

1. the evaluate job (``tools/jobs.py``) runs the candidate in a sandboxed worker: it gets
   images, the training labels and the indices to predict; it trains, predicts with
   PyTorch and exports the trained model to ONNX (``model.onnx``);
2. the measure job (``tools/measure.py``), in a fresh sandboxed worker that never loads
   candidate code, validates that graph, counts its parameters, FLOPs and peak memory,
   predicts the evaluation images with ONNX Runtime and times it;
3. the parent (here) holds the validation/test labels and scores the ONNX Runtime
   predictions, after checking that they agree with the worker's PyTorch predictions.

Every number the search scores therefore comes from a process that ran no candidate
code; what the candidate's own process reports is only cross-checked.

CLI: ``python -m tools.evaluate --code FILE [data options] [--epochs N] [--json]``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import secrets
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
from tools.export import ONNX_FILE
from tools.sandbox import is_regular
from tools.tmpdirs import make_temp_dir
from tools.train import WEIGHTS_FILE, Recipe

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
# Each training image costs at most this long before the watchdog kills the job (a
# generous bound: the Template trains at ~1500 img/s here), plus fixed start/export time;
# the measure job gets the same per evaluation image.
_SECONDS_PER_IMAGE = 0.05
_FIXED_SECONDS = 180.0
MEASURE_JOB = "tools.measure:measure_job"
# Below this share of evaluation images on which the exported graph (ONNX Runtime) and
# the trained PyTorch model predict the same class, the graph is not the trained model.
MIN_AGREEMENT = 0.95
BATCH_CHECK_IMAGES = 16  # images run one by one and compared with their batched logits
PROFILE_THREADS = 1  # batch-1 latency threads (an edge CPU)


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


def _check_predictions(preds: np.ndarray, n_eval: int, num_classes: int, what: str) -> None:
    if preds.shape != (n_eval,) or not np.issubdtype(preds.dtype, np.integer):
        raise _Failed("invalid", f"expected {n_eval} integer {what}, got shape "
                      f"{preds.shape} dtype {preds.dtype}")
    if len(preds) and (preds.min() < 0 or preds.max() >= num_classes):
        raise _Failed("invalid", f"{what} outside [0, {num_classes})")


def _check_result(res: dict, n_eval: int, num_classes: int, workdir: Path | None
                  ) -> tuple[np.ndarray, TrainingStats, str, Path]:
    """Validate the evaluate job's (untrusted) result; raise _Failed on anything off.

    Returns:
        ``(torch_predictions, training, exporter, path of model.onnx)``.
    """
    try:
        training = TrainingStats.model_validate(res["training"])
        preds = np.asarray(res["torch_predictions"])
        exporter = str(res["exporter"])[:40]
    except (KeyError, TypeError, ValueError, ValidationError) as e:
        raise _Failed("invalid", f"malformed worker result: {e}") from e
    _check_predictions(preds, n_eval, num_classes, "predictions")
    if not math.isfinite(training.final_loss):
        raise _Failed("diverged", f"final training loss {training.final_loss}")
    # The file name is ours, never the result's: a result cannot point the measure job
    # elsewhere, and a symlink or special file planted in the work dir is refused.
    if workdir is None or not is_regular(workdir / ONNX_FILE):
        raise _Failed("export", "the worker left no exported model (model.onnx)")
    onnx_path = workdir / ONNX_FILE
    return preds.astype(np.int64), training, exporter, onnx_path


def _check_measure(res: dict, n_eval: int, num_classes: int
                   ) -> tuple[np.ndarray, HardwareReport]:
    """Validate the measure job's result (trusted code, checked all the same)."""
    try:
        hardware = HardwareReport.model_validate(res["hardware"])
        preds = np.asarray(res["predictions"])
    except (KeyError, TypeError, ValueError, ValidationError) as e:
        raise _Failed("invalid", f"malformed measure result: {e}") from e
    _check_predictions(preds, n_eval, num_classes, "ONNX Runtime predictions")
    return preds.astype(np.int64), hardware


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


def _measure_limits(limits: Any, n_eval: int) -> Any:
    """Limits of the measure job: the evaluation's memory and threads, time by images."""
    return limits.model_copy(update={"timeout_s": _FIXED_SECONDS + n_eval * _SECONDS_PER_IMAGE,
                                     "cpu_seconds": None})


def _sandbox_failure(result: Any) -> tuple[str, str]:
    """Map a failed sandbox run (``SandboxResult``) to (failure stage, reason)."""
    stage = {"timeout": "timeout", "memory": "memory", "invalid-result": "invalid",
             "tamper": "invalid"}.get(result.error_kind or "", "crash")
    reason = result.error or "the worker failed without a message"
    if result.error_kind in ("crash", "killed") and result.stderr_tail:
        reason += " | stderr: " + result.stderr_tail[-500:]
    return stage, reason


def _train_and_measure(code: str, data: PreparedData, report: EvaluationReport,
                       workdir: Path, *, recipe: Recipe, budgets: Budgets, split: str,
                       limits: Any, on_event: Callable[[dict], None] | None, device: str,
                       n_boot: int, timeout_s: float | None = None) -> None:
    """Everything after the gate: evaluate job, measure job, agreement check, metrics.

    Fills ``report`` (all but ``status``) and raises ``_Failed`` on a failure. Tests call
    it directly to reach the measurement layer with code the static gate would refuse.
    """
    from tools.sandbox import run_job

    num_classes = len(data.class_names)
    arrays = load_arrays(data)
    payload, train_idx, eval_idx = build_payload(code, data, recipe, split, device, arrays)
    labels = np.asarray(arrays["labels"])
    limits = limits if limits is not None else _default_limits(
        recipe, len(train_idx), payload["device"])
    if timeout_s is not None:
        limits = limits.model_copy(update={"timeout_s": timeout_s})
    denied = label_files(data)
    result = run_job("evaluate", payload, limits=limits, read_only=[payload["images_path"]],
                     deny_read=denied, keep_workdir=workdir, on_event=on_event)
    report.isolation = sorted(set(report.isolation) | set(result.isolation))
    if not result.ok:
        raise _Failed(*_sandbox_failure(result))
    res = result.result or {}
    if "failure" in res:
        f = res["failure"]
        raise _Failed(str(f.get("stage", "crash")), str(f.get("reason", "")))
    torch_preds, report.training, report.exporter, onnx_path = _check_result(
        res, len(eval_idx), num_classes, workdir)

    # A fresh worker that never loads candidate code measures the exported graph and
    # makes the predictions that are scored.
    mpayload = measure_payload(payload, onnx_path, limits.threads)
    measured = run_job(MEASURE_JOB, mpayload,
                       limits=_measure_limits(limits, len(eval_idx)),
                       read_only=[payload["images_path"], str(onnx_path)], deny_read=denied)
    report.isolation = sorted(set(report.isolation) | set(measured.isolation))
    if not measured.ok:
        stage, reason = _sandbox_failure(measured)
        raise _Failed(stage, f"measuring the exported graph failed: {reason}")
    mres = measured.result or {}
    if "failure" in mres:
        f = mres["failure"]
        raise _Failed(str(f.get("stage", "invalid")), str(f.get("reason", "")))
    preds, hardware = _check_measure(mres, len(eval_idx), num_classes)
    report.prediction_agreement = float(np.mean(preds == torch_preds)) if len(preds) else 1.0
    if report.prediction_agreement < MIN_AGREEMENT:
        raise _Failed("invalid", "the exported ONNX graph is not the trained model: it "
                      f"predicts the same class as PyTorch on {report.prediction_agreement:.1%}"
                      f" of the evaluation images (need {MIN_AGREEMENT:.0%}); forward must "
                      "not behave differently when traced or exported")
    report.hardware = hardware
    y_true = labels[eval_idx]
    report.metrics = classification_metrics(y_true, preds, data.class_names)
    groups = sensitive_groups(np.asarray(arrays["sex"])[eval_idx],
                              np.asarray(arrays["age"])[eval_idx])
    report.fairness = fairness_report(y_true, preds, groups, num_classes, n_boot=n_boot,
                                      seed=recipe.seed)
    report.violations = budget_violations(hardware, budgets)


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
    timeout_s: float | None = None,
) -> EvaluationReport:
    """Gate, train and measure one candidate; compute its metrics from parent-held labels.

    Failure stages: "gate" (the gate's message), "timeout"/"memory"/"crash" (the sandbox),
    "diverged" (non-finite training loss), "train" (an exception while training),
    "export" (the trained model cannot be exported to ONNX, or the graph cannot be
    measured), "invalid" (a malformed result, outputs that depend on the batch size, or a
    graph whose predictions disagree with the trained model's).

    The scored predictions and every hardware number come from the measure job
    (``tools/measure.py``), which runs the exported graph in ONNX Runtime in a process
    that never loads candidate code; ``report.prediction_agreement`` records how often
    they match the worker's own PyTorch predictions.

    Args:
        code: Candidate source defining ``build_model(num_classes)``.
        data: The prepared dataset.
        recipe: Training recipe (default ``Recipe()``).
        budgets: Device budgets (default unconstrained).
        split: "val" during the search, "test" once at the end.
        candidate_id: Recorded in the report.
        out_dir: When given, receives model.py and report.json, and on success
            weights.pt and model.onnx (the measured graph).
        limits: ``tools.sandbox.SandboxLimits``; default scales the timeout with the
            training set size.
        on_event: Called with each progress event of the worker.
        device: "auto" (CUDA when available), "cpu" or "cuda[:i]".
        gate_report: A passing ``GateReport`` the caller already obtained for this very
            code, budgets and image size (the graph's gate node); the sandboxed build
            check is then not repeated. The static policy check always runs.
        n_boot: Bootstrap resamples for per-group confidence intervals (0: none).
        timeout_s: Wall-clock limit of the training job in seconds, replacing the one of
            ``limits`` (the run setting ``eval_timeout_s``); None keeps it.

    Returns:
        The report; ``status == "failed"`` carries ``failure_stage`` and
        ``failure_reason`` instead of metrics.
    """
    from tools.gate import gate, static_check

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
        keep = make_temp_dir("flnas-eval-")
        workdir = keep / "work"
        _train_and_measure(code, data, report, workdir, recipe=recipe, budgets=budgets,
                           split=split, limits=limits, on_event=on_event, device=device,
                           n_boot=n_boot, timeout_s=timeout_s)
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
    if report.ok and workdir is not None:
        for name in (WEIGHTS_FILE, ONNX_FILE):
            if is_regular(workdir / name):
                shutil.copyfile(workdir / name, out / name)


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
    agree = ("n/a" if report.prediction_agreement is None
             else f"{report.prediction_agreement:.1%} ({report.exporter} exporter)")
    for k, v in (("params", f"{hw.params:,}"), ("size", f"{hw.size_mb:.2f} MB"),
                 ("FLOPs", f"{hw.flops:,}"),
                 ("peak activations", f"{hw.peak_activation_mb:.2f} MB (graph, batch 1)"),
                 ("runtime peak", "n/a" if hw.runtime_peak_mb is None
                  else f"{hw.runtime_peak_mb:.2f} MB (ONNX Runtime resident, batch 1)"),
                 ("latency median / p90", f"{hw.latency_ms_median:.2f} / "
                  f"{hw.latency_ms_p90:.2f} ms ({hw.latency_device})"),
                 ("measured by", hw.measured_by or "n/a"),
                 ("ONNX vs PyTorch predictions", agree),
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
