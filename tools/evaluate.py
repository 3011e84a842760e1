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
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ValidationError

from evaluation.fairness import classification_metrics, fairness_report
from evaluation.report import Budgets, EvaluationReport, budget_violations
from tasks import pyast
from tasks.attributes import sensitive_groups
from tasks.cache import PreparedData, load_arrays, skip_notes
from tasks.io import atomic_write
from tools.checks import (
    MIN_AGREEMENT,
    EvaluationFailed,
    check_measure,
    check_result,
    sandbox_failure,
)
from tools.export import ONNX_FILE
from tools.gate import GateReport
from tools.payloads import (
    build_payload,
    default_limits,
    label_files,
    measure_limits,
    measure_payload,
)
from tools.sandbox import SandboxLimits
from tools.tmpdirs import make_temp_dir
from tools.train import WEIGHTS_FILE, Recipe
from tools.workdir import is_regular

MEASURE_JOB = "tools.measure:measure_job"


def normalise_code(code: str) -> str:
    """Canonical form of candidate code: the AST unparsed (comments/layout dropped).

    Code that does not parse is normalised textually (line ends, trailing spaces).
    """
    try:
        return ast.unparse(pyast.parse(code))
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



def _train_job(payload: dict, report: EvaluationReport, workdir: Path, limits: SandboxLimits,
               denied: list[str], on_event: Callable[[dict], None] | None,
               num_classes: int) -> tuple[np.ndarray, Path]:
    """Run the evaluate job (candidate code: train, predict, export) and check its result.

    Returns:
        The worker's PyTorch predictions and the path of the exported graph.
    """
    from tools.sandbox import run_job  # looked up at call time: tests spy on it

    result = run_job("evaluate", payload, limits=limits, read_only=[payload["images_path"]],
                     deny_read=denied, keep_workdir=workdir, on_event=on_event)
    report.isolation = sorted(set(report.isolation) | set(result.isolation))
    if not result.ok:
        raise EvaluationFailed(*sandbox_failure(result))
    res = result.result or {}
    if "failure" in res:
        f = res["failure"]
        raise EvaluationFailed(str(f.get("stage", "crash")), str(f.get("reason", "")))
    torch_preds, report.training, report.exporter, onnx_path = check_result(
        res, len(payload["eval_indices"]), num_classes, workdir)
    return torch_preds, onnx_path


def measure_graph(payload: dict, onnx_path: Path, report: EvaluationReport,
                  limits: SandboxLimits, denied: list[str], num_classes: int,
                  train_s_per_image: float | None = None) -> np.ndarray:
    """Measure the exported graph in a fresh worker that never loads candidate code.

    Fills ``report.hardware`` and returns the ONNX Runtime predictions (the scored ones).
    """
    from tools.sandbox import run_job

    n_eval = len(payload["eval_indices"])
    measured = run_job(MEASURE_JOB, measure_payload(payload, onnx_path, limits.threads),
                       limits=measure_limits(limits, n_eval, train_s_per_image),
                       read_only=[payload["images_path"], str(onnx_path)], deny_read=denied)
    report.isolation = sorted(set(report.isolation) | set(measured.isolation))
    if not measured.ok:
        stage, reason = sandbox_failure(measured)
        raise EvaluationFailed(stage, f"measuring the exported graph failed: {reason}")
    mres = measured.result or {}
    if "failure" in mres:
        f = mres["failure"]
        raise EvaluationFailed(str(f.get("stage", "invalid")), str(f.get("reason", "")))
    preds, report.hardware = check_measure(mres, n_eval, num_classes)
    return preds


def train_and_measure(code: str, data: PreparedData, report: EvaluationReport,
                      workdir: Path, *, recipe: Recipe, budgets: Budgets, split: str,
                      limits: SandboxLimits | None, on_event: Callable[[dict], None] | None,
                      device: str, n_boot: int, timeout_s: float | None = None,
                      train_s_per_image: float | None = None) -> None:
    """Everything after the gate: evaluate job, measure job, agreement check, metrics.

    Fills ``report`` (all but ``status``) and raises :class:`tools.checks.EvaluationFailed`
    on a failure. Tests call it directly to reach the measurement layer with code the
    static gate would refuse. Arguments are those of :func:`evaluate_candidate`;
    ``workdir`` receives the evaluate job's files; ``timeout_s`` replaces the wall-clock
    limit of the training job only; ``train_s_per_image`` (the gate's measured training
    cost) scales the default limits (:func:`tools.payloads.default_limits`).
    """
    num_classes = len(data.class_names)
    arrays = load_arrays(data)
    payload, train_idx, eval_idx = build_payload(code, data, recipe, split, device, arrays)
    limits = limits if limits is not None else default_limits(
        recipe, len(train_idx), payload["device"], train_s_per_image=train_s_per_image,
        n_eval=len(eval_idx))
    denied = label_files(data)
    train_limits = limits if timeout_s is None else \
        limits.model_copy(update={"timeout_s": timeout_s})
    torch_preds, onnx_path = _train_job(payload, report, workdir, train_limits, denied,
                                        on_event, num_classes)
    preds = measure_graph(payload, onnx_path, report, limits, denied, num_classes,
                          train_s_per_image)
    report.prediction_agreement = float(np.mean(preds == torch_preds)) if len(preds) else 1.0
    if report.prediction_agreement < MIN_AGREEMENT:
        raise EvaluationFailed(
            "invalid", "the exported ONNX graph is not the trained model: it predicts the "
            f"same class as PyTorch on {report.prediction_agreement:.1%} of the evaluation "
            f"images (need {MIN_AGREEMENT:.0%}); forward must not behave differently when "
            "traced or exported")
    score_predictions(report, preds, data, arrays, eval_idx, budgets=budgets, n_boot=n_boot,
                      seed=recipe.seed)


def score_predictions(report: EvaluationReport, preds: np.ndarray, data: PreparedData,
                      arrays: dict[str, np.ndarray], eval_idx: np.ndarray, *,
                      budgets: Budgets, n_boot: int, seed: int) -> None:
    """Fill ``report``'s metrics, fairness and budget violations (parent-held labels).

    ``preds`` are the measure job's ONNX Runtime predictions of rows ``eval_idx``;
    ``report.hardware`` is already set by :func:`measure_graph`.
    """
    assert report.hardware is not None  # set by measure_graph
    y_true = np.asarray(arrays["labels"])[eval_idx]
    report.metrics = classification_metrics(y_true, preds, data.class_names)
    groups = sensitive_groups(np.asarray(arrays["sex"])[eval_idx],
                              np.asarray(arrays["age"])[eval_idx])
    report.fairness = fairness_report(y_true, preds, groups, len(data.class_names),
                                      n_boot=n_boot, seed=seed)
    report.violations = budget_violations(report.hardware, budgets)


def _gate(code: str, data: PreparedData, budgets: Budgets,
          gate_report: GateReport | None) -> GateReport:
    """Gate ``code``; with a passing ``gate_report`` only the static policy runs again.

    The earlier report's isolation layers and measured training cost carry over.
    """
    from tools.gate import gate, static_check  # looked up at call time: tests replace them

    if gate_report is not None and gate_report.ok:
        # Cheap and in-process: a stale or mismatched report can't smuggle code past it.
        g = static_check(code)
        g.isolation = list(gate_report.isolation)
        g.train_s_per_image = gate_report.train_s_per_image
        return g
    return gate(code, budgets=budgets, image_size=data.image_size,
                num_classes=len(data.class_names))


def evaluate_candidate(
    code: str, data: PreparedData, *, recipe: Recipe | None = None,
    budgets: Budgets | None = None, split: Literal["val", "test"] = "val",
    candidate_id: str | None = None, out_dir: Path | str | None = None,
    limits: SandboxLimits | None = None, on_event: Callable[[dict], None] | None = None,
    device: str = "auto", gate_report: GateReport | None = None, n_boot: int = 0,
    timeout_s: float | None = None,
) -> EvaluationReport:
    """Gate, train and measure one candidate; compute its metrics from parent-held labels.

    Failure stages: "gate", "timeout"/"memory"/"crash" (the sandbox), "diverged"
    (non-finite loss), "train", "export" (no ONNX graph, or it cannot be measured),
    "invalid" (a malformed result, batch-dependent outputs, or a graph whose predictions
    disagree with the trained model's). Scores and hardware come
    from the measure job (module docstring); ``report.prediction_agreement`` records how
    often they match the worker's own PyTorch predictions.

    Args:
        code: Candidate source defining ``build_model(num_classes)``.
        data: The prepared dataset.
        recipe: Training recipe (default ``Recipe()``).
        budgets: Device budgets (default unconstrained).
        split: "val" during the search, "test" once at the end.
        candidate_id: Recorded in the report.
        out_dir: Receives model.py, report.json, and on success weights.pt and model.onnx.
        limits: Sandbox limits (default: :func:`tools.payloads.default_limits`).
        on_event: Called with each worker progress event.
        device: "auto" (CUDA when available), "cpu" or "cuda[:i]".
        gate_report: A passing report for this very code, budgets and image size: only the
            policy check runs again; its ``train_s_per_image`` sizes the default timeout.
        n_boot: Bootstrap resamples for per-group confidence intervals (0: none).
        timeout_s: Training job's wall-clock limit (s), replacing the one of ``limits``.

    Returns:
        The report; ``status == "failed"`` carries ``failure_stage`` and
        ``failure_reason`` instead of metrics.
    """
    recipe = recipe or Recipe()
    budgets = budgets or Budgets()
    report = EvaluationReport(
        candidate_id=candidate_id, code_hash=code_hash(code), status="failed", split=split,
        budgets=budgets, recipe=recipe.model_dump(mode="json"), data_fingerprint=data.fingerprint)
    with recording(code, report, out_dir) as workdirs:
        g = _gate(code, data, budgets, gate_report)
        report.isolation = list(g.isolation)
        if not g.ok:
            raise EvaluationFailed("gate", g.message or "the gate rejected the code")
        workdirs.append(make_temp_dir("flnas-eval-") / "work")
        train_and_measure(code, data, report, workdirs[0], recipe=recipe, budgets=budgets,
                          split=split, limits=limits, on_event=on_event, device=device,
                          n_boot=n_boot, timeout_s=timeout_s, train_s_per_image=g.train_s_per_image)
    return report


@contextmanager
def recording(code: str, report: EvaluationReport,
              out_dir: Path | str | None) -> Iterator[list[Path]]:
    """Run an evaluation's body: ``ok`` when it ends, its failure when it raises one.

    An :class:`tools.checks.EvaluationFailed` becomes ``report``'s failure stage and reason;
    either way ``report.wall_s`` is set and :func:`save_outputs` runs. Yields a list the
    body appends its work folder to (its files are copied to ``out_dir``, then removed).
    """
    t0 = time.perf_counter()
    workdirs: list[Path] = []
    try:
        yield workdirs
        report.status = "ok"
    except EvaluationFailed as f:
        report.failure_stage, report.failure_reason = f.stage, f.reason  # type: ignore[assignment]
    finally:
        report.wall_s = time.perf_counter() - t0
        save_outputs(code, report, out_dir, workdirs[0] if workdirs else None)


def save_outputs(code: str, report: EvaluationReport, out_dir: Path | str | None,
                 workdir: Path | None) -> None:
    """Write the candidate's outputs to ``out_dir`` (when given); remove ``workdir.parent``."""
    if out_dir is not None:
        _write_outputs(Path(out_dir), code, report, workdir)
    if workdir is not None:
        shutil.rmtree(workdir.parent, ignore_errors=True)


def _write_outputs(out: Path, code: str, report: EvaluationReport, workdir: Path | None) -> None:
    # Whole files or none: a search killed mid-write must not leave a torn report.json.
    atomic_write(out / "model.py", code)
    atomic_write(out / "report.json", report.model_dump_json(indent=2))
    if report.ok and workdir is not None:
        for name in (WEIGHTS_FILE, ONNX_FILE):
            if is_regular(workdir / name):
                shutil.copyfile(workdir / name, out / name)



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
    except OSError as e:
        err.print(f"[red]error:[/] cannot read --code {args.code}: {e.strerror or e}")
        return 2
    except UnicodeDecodeError as e:
        err.print(f"[red]error:[/] cannot read --code {args.code}: {e}")
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
        from tools.render import render_report

        render_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
