"""Parent-side evaluation: keys, payload hygiene, result checks, the real sandbox, the CLI."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.report import Budgets, HardwareReport, TrainingStats
from tasks.cache import load_arrays
from tasks.data_args import add_data_args, prepare_from_args
from tasks.models import template_source
from tools.evaluate import (
    _check_result,
    _Failed,
    build_payload,
    evaluate_candidate,
    evaluation_key,
    label_files,
    main,
)
from tools.train import WEIGHTS_FILE, Recipe

REPO = Path(__file__).resolve().parents[2]
TINY = ["--synthetic", "--synthetic-n", "240", "--image-size", "32", "--seed", "0"]
FAST = Recipe(epochs=1, batch_size=32)

LINEAR_CODE = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


def build_model(num_classes):
    return Net(num_classes)
'''


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flnas-cache")


@pytest.fixture(scope="module")
def data(cache_root: Path):
    args = add_data_args(argparse.ArgumentParser()).parse_args(
        [*TINY, "--cache-dir", str(cache_root)])
    return prepare_from_args(args, progress=False)


def test_evaluation_key_ignores_layout_and_separates_inputs():
    code = "def build_model(n):\n    return n  # a comment\n"
    same = "\n\ndef build_model(n):\n\n    return n\n"
    k = evaluation_key(code, FAST, "fp", "val")
    assert k == evaluation_key(same, FAST, "fp", "val")
    assert len({k, evaluation_key(code, Recipe(epochs=2, batch_size=32), "fp", "val"),
                evaluation_key(code, FAST, "fp2", "val"), evaluation_key(code, FAST, "fp", "test"),
                evaluation_key(code.replace("return n", "return n + 1"), FAST, "fp", "val")}) == 5


def test_payload_carries_train_labels_only(data):
    arrays = load_arrays(data)
    payload, train_idx, eval_idx = build_payload("x = 1\n", data, FAST, "val", "cpu")
    labels, split = np.asarray(arrays["labels"]), np.asarray(arrays["split"])
    assert set(train_idx) == set(np.flatnonzero(split == 0))
    assert set(eval_idx) == set(np.flatnonzero(split == 1))
    assert payload["train_labels"] == labels[train_idx].tolist()
    assert "labels" not in json.dumps(sorted(k for k in payload if k != "train_labels"))
    denied = {Path(p).name for p in label_files(data)}
    assert {"labels.npy", "index.csv", "sex.npy", "age.npy"} <= denied
    # the raw dataset's CSVs carry the same labels
    assert {"ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv"} <= denied
    assert "images.npy" not in denied


def fake_result(tmp_path: Path, params: int) -> dict:
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / WEIGHTS_FILE)  # 8 parameters
    hw = HardwareReport(params=params, size_mb=0.0, flops=12, macs=6, peak_activation_mb=0.0,
                        latency_ms_median=0.1, latency_ms_p90=0.2, latency_device="cpu",
                        threads=1, input_shape=[1, 3, 32, 32])
    tr = TrainingStats(epochs=1, steps=1, images_per_s=1.0, train_seconds=1.0, final_loss=0.5,
                       device="cpu", amp="off")
    return {"predictions": [0, 1, 1], "training": tr.model_dump(), "hardware": hw.model_dump(),
            "params": params, "param_names": ["weight", "bias"]}


def test_reported_params_are_checked_against_saved_weights(tmp_path):
    preds, _, hw = _check_result(fake_result(tmp_path, 8), 3, 2, tmp_path)
    assert preds.tolist() == [0, 1, 1] and hw.params == 8
    with pytest.raises(_Failed) as info:
        _check_result(fake_result(tmp_path, 7), 3, 2, tmp_path)
    assert info.value.stage == "invalid" and "saved weights hold 8" in info.value.reason
    bad = fake_result(tmp_path, 8) | {"predictions": [0, 1, 5]}
    with pytest.raises(_Failed, match="outside"):
        _check_result(bad, 3, 2, tmp_path)
    with pytest.raises(_Failed, match="3 integer predictions"):
        _check_result(fake_result(tmp_path, 8) | {"predictions": [0, 1]}, 3, 2, tmp_path)


def test_gate_failure_is_a_failed_report(data):
    report = evaluate_candidate("import os\n", data, recipe=FAST, candidate_id="bad")
    assert report.status == "failed" and report.failure_stage == "gate"
    assert "os" in report.failure_reason and report.metrics is None


def test_passing_gate_report_skips_the_sandboxed_gate_but_not_the_policy(data, monkeypatch):
    import tools.gate

    def no_second_gate(*args, **kwargs):
        raise AssertionError("the sandboxed gate ran again")

    monkeypatch.setattr(tools.gate, "gate", no_second_gate)
    ok = tools.gate.GateReport(ok=True, isolation=["audit-hook"])
    report = evaluate_candidate(LINEAR_CODE, data, recipe=FAST, gate_report=ok)
    assert report.ok, report.failure_reason
    # A passing report of other code cannot wave forbidden code through.
    bad = evaluate_candidate("import os\n", data, recipe=FAST, gate_report=ok)
    assert bad.failure_stage == "gate" and "os" in bad.failure_reason


@pytest.mark.e2e
def test_template_end_to_end_through_the_sandbox(data, tmp_path, monkeypatch):
    import tools.sandbox

    real_run_job = tools.sandbox.run_job

    def spy(kind, payload, **kw):  # keep the job file the worker was given
        result = real_run_job(kind, payload, **kw)
        if kind == "evaluate":
            shutil.copyfile(Path(kw["keep_workdir"]) / "job.json", tmp_path / "job.json")
        return result

    monkeypatch.setattr(tools.sandbox, "run_job", spy)
    events: list[dict] = []
    out = tmp_path / "out"
    report = evaluate_candidate(template_source(), data, recipe=FAST, candidate_id="template",
                                out_dir=out, budgets=Budgets(max_latency_ms=1e-6),
                                on_event=events.append)
    assert report.ok, report.failure_reason
    arrays = load_arrays(data)
    split, labels = np.asarray(arrays["split"]), np.asarray(arrays["labels"])
    assert report.metrics.n == int((split == 1).sum())
    assert 0.0 <= report.metrics.balanced_accuracy <= 1.0
    assert {"sex", "age"} <= set(report.fairness)
    assert {g.group for g in report.fairness["sex"].groups} <= {"female", "male"}
    hw = report.hardware
    assert hw.params > 0 and hw.latency_ms_median > 0 and hw.input_shape == [1, 3, 32, 32]
    assert report.violations and report.violations[0].startswith("latency")
    assert report.training.epochs == 1 and report.training.steps >= 1
    assert "audit-hook" in report.isolation and report.data_fingerprint == data.fingerprint
    assert any(e.get("event") == "epoch" for e in events)
    # Outputs: the weights hold exactly the reported parameters.
    assert (out / "model.py").read_text() == template_source()
    saved = json.loads((out / "report.json").read_text())
    assert saved["status"] == "ok" and saved["code_hash"] == report.code_hash
    state = torch.load(out / WEIGHTS_FILE, weights_only=True)
    n_bn = sum(v.numel() for k, v in state.items() if "running" in k or "num_batches" in k)
    assert sum(v.numel() for v in state.values()) - n_bn == hw.params
    # The worker's job file: train labels only, label files denied.
    job = json.loads((tmp_path / "job.json").read_text())
    payload = job["payload"]
    train_idx = np.asarray(payload["train_indices"])
    assert payload["train_labels"] == labels[train_idx].tolist()
    assert set(payload["eval_indices"]) == set(np.flatnonzero(split == 1))
    assert set(payload) == {"code", "images_path", "train_indices", "train_labels",
                            "eval_indices", "mean", "std", "recipe", "num_classes",
                            "image_size", "device"}
    assert not set(train_idx) & set(payload["eval_indices"])
    assert str(data.cache_dir / "labels.npy") in job["deny_read"]


@pytest.mark.e2e
def test_diverging_training_is_reported_with_its_step(data):
    recipe = Recipe(epochs=1, batch_size=32, lr=1e30, warmup_frac=0.0)
    report = evaluate_candidate(LINEAR_CODE, data, recipe=recipe)
    assert report.status == "failed" and report.failure_stage == "diverged"
    assert "training loss became" in report.failure_reason and "step" in report.failure_reason
    assert report.metrics is None and report.hardware is None


@pytest.mark.e2e
def test_cli_json_on_a_tiny_set(tmp_path, cache_root, data):
    code = tmp_path / "template.py"
    code.write_text(template_source())
    proc = subprocess.run(
        [sys.executable, "-m", "tools.evaluate", "--code", str(code), *TINY, "--epochs", "1",
         "--batch-size", "32", "--cache-dir", str(cache_root), "--max-latency-ms", "1000",
         "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["status"] == "ok" and report["candidate_id"] == "template"
    assert report["budgets"]["max_latency_ms"] == 1000 and report["violations"] == []
    assert report["data_fingerprint"] == data.fingerprint
    assert set(report["fairness"]) >= {"sex", "age"} and report["hardware"]["params"] > 0


def test_cli_bad_code_path_is_a_clear_error(tmp_path, capsys):
    assert main(["--code", str(tmp_path / "missing.py"), "--synthetic"]) == 2
    err = capsys.readouterr().err
    assert "cannot read --code" in err and "missing.py" in err


def test_cli_bad_values_and_missing_data_exit_2(tmp_path, capsys, monkeypatch):
    code = tmp_path / "m.py"
    code.write_text(template_source())
    assert main(["--code", str(code), "--epochs", "0", "--synthetic"]) == 2
    assert "epochs" in capsys.readouterr().err
    monkeypatch.delenv("FLNAS_ISIC_DIR", raising=False)
    assert main(["--code", str(code), "--cache-dir", str(tmp_path)]) == 2
    assert "--synthetic" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--code", str(code), "--no-such-flag"])
    assert info.value.code == 2


@pytest.mark.parametrize(("kind", "stage"), [
    ("timeout", "timeout"), ("memory", "memory"), ("crash", "crash"), ("killed", "crash"),
    ("invalid-result", "invalid"), ("tamper", "invalid"), ("error", "crash"),
])
def test_sandbox_errors_map_to_failure_stages(kind, stage):
    from tools.evaluate import _sandbox_failure
    from tools.sandbox import SandboxResult

    got, reason = _sandbox_failure(SandboxResult(ok=False, error_kind=kind, error="why"))
    assert got == stage and reason.startswith("why")
