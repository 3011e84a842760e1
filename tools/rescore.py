"""Score a trained design's graph on another split without training it again.

A run trains each design on the training split and scores its exported graph on the
validation split. At the end it scores the chosen design once on the test split; that
used to be a whole evaluation, a second training of the very model the validation run had
already trained (training is deterministic for a fixed code, data, recipe and seed,
docs/metrics.md#promotion). :func:`score_trained` runs only the trusted half of an
evaluation (tools/evaluate.py) on the validation run's saved graph: the measure job, in a
fresh sandboxed worker that never loads candidate code, then the parent's metrics from
the labels it holds. The test split's labels never reach any worker either way.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from evaluation.report import Budgets, EvaluationReport
from tasks.cache import PreparedData, load_arrays
from tools.checks import EvaluationFailed
from tools.evaluate import code_hash, measure_graph, recording, score_predictions
from tools.export import ONNX_FILE
from tools.payloads import build_payload, default_limits, label_files
from tools.tmpdirs import make_temp_dir
from tools.train import WEIGHTS_FILE, Recipe
from tools.workdir import is_regular


def score_trained(code: str, data: PreparedData, trained: EvaluationReport, folder: Path, *,
                  recipe: Recipe, budgets: Budgets, split: Literal["val", "test"] = "test",
                  candidate_id: str | None = None, out_dir: Path | str | None = None,
                  n_boot: int = 0) -> EvaluationReport:
    """Score the graph a finished evaluation of ``code`` left in ``folder`` on ``split``.

    Args:
        code: The design's source (recorded with the outputs, never run).
        data: The prepared dataset.
        trained: That evaluation's report (``ok``): its training record, exporter and
            PyTorch/ONNX agreement carry over, and the graph must have its parameter and
            FLOP counts.
        folder: The evaluation's output folder (``model.onnx``, ``weights.pt``).
        recipe: The recipe it was trained with (its seed seeds the bootstrap; the report
            records ``trained``'s copy, which names the threads used).
        budgets: Budgets the new report is judged against.
        split: The split to score.
        candidate_id: Recorded in the report.
        out_dir: Receives model.py, report.json and copies of the graph and weights.
        n_boot: Bootstrap resamples for per-group confidence intervals (0: none).

    Returns:
        The report, ``status == "failed"`` with a ``failure_stage`` when the graph is
        missing, cannot be measured or is not the one ``trained`` measured.
    """
    report = EvaluationReport(
        candidate_id=candidate_id, code_hash=code_hash(code), status="failed", split=split,
        budgets=budgets, recipe=trained.recipe or recipe.model_dump(mode="json"),
        data_fingerprint=data.fingerprint, training=trained.training, exporter=trained.exporter,
        prediction_agreement=trained.prediction_agreement, isolation=list(trained.isolation))
    with recording(code, report, out_dir) as workdirs:
        workdirs.append(make_temp_dir("flnas-eval-") / "work")
        workdir = workdirs[0]
        workdir.mkdir()
        for name in (ONNX_FILE, WEIGHTS_FILE):  # copied: out_dir receives them from here
            if is_regular(Path(folder) / name):
                shutil.copyfile(Path(folder) / name, workdir / name)
        if not (workdir / ONNX_FILE).is_file():
            raise EvaluationFailed("export", f"no {ONNX_FILE} in {folder} to score")
        arrays = load_arrays(data)
        payload, train_idx, eval_idx = build_payload(code, data, recipe, split, "cpu", arrays)
        limits = default_limits(recipe, len(train_idx), n_eval=len(eval_idx))
        preds = measure_graph(payload, workdir / ONNX_FILE, report, limits, label_files(data),
                              len(data.class_names))
        _same_graph(report, trained)
        score_predictions(report, preds, data, arrays, eval_idx, budgets=budgets,
                          n_boot=n_boot, seed=recipe.seed)
    return report


def _same_graph(report: EvaluationReport, trained: EvaluationReport) -> None:
    """Refuse a graph whose size is not the one the finished evaluation measured."""
    new, old = report.hardware, trained.hardware
    if new is None or old is None or (new.params, new.flops) != (old.params, old.flops):
        raise EvaluationFailed(
            "invalid", "the saved graph is not the one its evaluation measured: "
            f"{getattr(new, 'params', None)} parameters and {getattr(new, 'flops', None)} "
            f"FLOPs against {getattr(old, 'params', None)} and {getattr(old, 'flops', None)}")
