"""Scoring a trained design's saved graph on the test split, without training it again."""

from __future__ import annotations

import argparse
import shutil

import pytest

from evaluation.report import Budgets
from tasks.data_args import add_data_args, prepare_from_args
from tests.fakes.code import LINEAR_CODE
from tools.evaluate import evaluate_candidate
from tools.export import ONNX_FILE
from tools.rescore import score_trained
from tools.train import WEIGHTS_FILE, Recipe

TINY = ["--synthetic", "--synthetic-n", "240", "--image-size", "32", "--seed", "0"]
FAST = Recipe(epochs=1, batch_size=32, threads=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    args = add_data_args(argparse.ArgumentParser()).parse_args(
        [*TINY, "--cache-dir", str(tmp_path_factory.mktemp("flnas-cache"))])
    return prepare_from_args(args, progress=False)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("val")
    report = evaluate_candidate(LINEAR_CODE, data, recipe=FAST, out_dir=folder)
    assert report.ok, report.failure_reason
    return report, folder


def test_the_saved_graph_scores_as_a_fresh_test_evaluation(data, trained, tmp_path) -> None:
    val, folder = trained
    out = tmp_path / "test"
    scored = score_trained(LINEAR_CODE, data, val, folder, recipe=FAST, budgets=Budgets(),
                           candidate_id="c1", out_dir=out)
    assert scored.ok, scored.failure_reason
    assert scored.split == "test" and scored.candidate_id == "c1"
    assert scored.training == val.training and scored.recipe == val.recipe
    assert (out / ONNX_FILE).read_bytes() == (folder / ONNX_FILE).read_bytes()
    assert (out / WEIGHTS_FILE).is_file() and (out / "report.json").is_file()
    # Training is deterministic: a whole test evaluation trains the same model again.
    fresh = evaluate_candidate(LINEAR_CODE, data, recipe=FAST, split="test")
    assert fresh.ok
    assert scored.metrics == fresh.metrics
    assert scored.fairness == fresh.fairness
    assert scored.metrics != val.metrics  # another split was scored


def test_a_missing_or_different_graph_is_a_failed_report(data, trained, tmp_path) -> None:
    val, folder = trained
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = score_trained(LINEAR_CODE, data, val, empty, recipe=FAST, budgets=Budgets())
    assert not missing.ok and missing.failure_stage == "export"
    other = val.model_copy(update={"hardware": val.hardware.model_copy(
        update={"params": val.hardware.params + 1})})
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    wrong = score_trained(LINEAR_CODE, data, other, copy, recipe=FAST, budgets=Budgets())
    assert not wrong.ok and wrong.failure_stage == "invalid"
    assert "not the one its evaluation measured" in wrong.failure_reason
