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
from torch.utils.flop_counter import FlopCounterMode

from evaluation.report import Budgets, HardwareReport, TrainingStats
from tasks.cache import load_arrays
from tasks.data_args import add_data_args, prepare_from_args
from tasks.models import build_from_source, template_source
from tests.fakes.code import LINEAR_CODE
from tools.checks import MIN_AGREEMENT, EvaluationFailed, check_measure, check_result
from tools.evaluate import evaluate_candidate, evaluation_key, main, train_and_measure
from tools.export import ONNX_FILE
from tools.payloads import build_payload, label_files, measure_payload
from tools.train import WEIGHTS_FILE, Recipe

REPO = Path(__file__).resolve().parents[2]
TINY = ["--synthetic", "--synthetic-n", "240", "--image-size", "32", "--seed", "0"]
FAST = Recipe(epochs=1, batch_size=32)


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


def fake_result(tmp_path: Path, preds=(0, 1, 1)) -> dict:
    (tmp_path / ONNX_FILE).write_bytes(b"graph bytes")
    tr = TrainingStats(epochs=1, steps=1, images_per_s=1.0, train_seconds=1.0, final_loss=0.5,
                       device="cpu", amp="off")
    return {"torch_predictions": list(preds), "training": tr.model_dump(),
            "exporter": "torchscript", "onnx_file": "../../etc/passwd"}


def test_worker_result_is_checked_and_names_no_file_of_its_own(tmp_path):
    preds, _, exporter, path = check_result(fake_result(tmp_path), 3, 2, tmp_path)
    assert preds.tolist() == [0, 1, 1] and exporter == "torchscript"
    assert path == tmp_path / ONNX_FILE  # never the result's own "onnx_file"
    with pytest.raises(EvaluationFailed, match="outside"):
        check_result(fake_result(tmp_path, (0, 1, 5)), 3, 2, tmp_path)
    with pytest.raises(EvaluationFailed, match="3 integer predictions"):
        check_result(fake_result(tmp_path, (0, 1)), 3, 2, tmp_path)
    with pytest.raises(EvaluationFailed, match="malformed"):
        check_result({"torch_predictions": [0]}, 1, 2, tmp_path)
    # a planted symlink (or no file at all) is no exported model
    res = fake_result(tmp_path)
    (tmp_path / ONNX_FILE).unlink()
    (tmp_path / ONNX_FILE).symlink_to("/etc/hostname")
    with pytest.raises(EvaluationFailed) as info:
        check_result(res, 3, 2, tmp_path)
    assert info.value.stage == "export" and "no exported model" in info.value.reason
    with pytest.raises(EvaluationFailed, match="no exported model"):
        check_result(res, 3, 2, None)


def test_measure_result_is_checked(tmp_path):
    hw = HardwareReport(params=8, size_mb=0.0, flops=12, macs=6, peak_activation_mb=0.0,
                        latency_ms_median=0.1, latency_ms_p90=0.2, latency_device="cpu",
                        threads=1, input_shape=[1, 3, 32, 32])
    preds, got = check_measure({"predictions": [1, 0], "hardware": hw.model_dump()}, 2, 2)
    assert preds.tolist() == [1, 0] and got == hw
    with pytest.raises(EvaluationFailed, match="ONNX Runtime predictions outside"):
        check_measure({"predictions": [1, 2], "hardware": hw.model_dump()}, 2, 2)
    with pytest.raises(EvaluationFailed, match="malformed measure result"):
        check_measure({"predictions": [1, 0], "hardware": {"params": 1}}, 2, 2)


def test_measure_payload_has_no_code_no_labels_and_random_checks(data):
    payload, _, eval_idx = build_payload(LINEAR_CODE, data, FAST, "val", "cpu")
    a = measure_payload(payload, Path("/w/model.onnx"), 2)
    b = measure_payload(payload, Path("/w/model.onnx"), 2)
    assert set(a) == {"onnx_path", "images_path", "eval_indices", "mean", "std",
                      "eval_batch_size", "num_classes", "image_size", "check_positions",
                      "threads", "profile_threads"}
    assert a["eval_indices"] == eval_idx.tolist() and a["threads"] == 2
    assert len(a["check_positions"]) == min(16, len(eval_idx))
    assert all(0 <= p < len(eval_idx) for p in a["check_positions"])
    if len(eval_idx) > 20:  # 16 of 36: the chance of two equal draws is negligible
        assert a["check_positions"] != b["check_positions"]


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
    # ONNX Runtime's resident peak, read in the fresh measure process, holds the weights.
    assert hw.runtime_peak_mb is not None and hw.runtime_peak_mb > hw.size_mb
    assert report.violations and report.violations[0].startswith("latency")
    # Every number from the graph, measured without candidate code, and the graph is the
    # trained model: same classes as PyTorch's (fp32 on the CPU), FlopCounterMode's FLOPs.
    assert hw.measured_by.startswith("onnxruntime") and "onnxruntime" in hw.latency_device
    assert report.prediction_agreement == 1.0 and report.exporter == "torchscript"
    model = build_from_source(template_source(), len(data.class_names)).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 32, 32))
    assert hw.flops == counter.get_total_flops()
    trainable = sum(p.numel() for p in model.parameters())
    channels = sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert hw.params == trainable - channels  # BatchNorm folded into the convolutions
    assert report.training.epochs == 1 and report.training.steps >= 1
    assert "audit-hook" in report.isolation and report.data_fingerprint == data.fingerprint
    assert any(e.get("event") == "epoch" for e in events)
    # Outputs: code, report, trained weights and the measured graph.
    assert (out / "model.py").read_text() == template_source()
    saved = json.loads((out / "report.json").read_text())
    assert saved["status"] == "ok" and saved["code_hash"] == report.code_hash
    assert saved["prediction_agreement"] == 1.0
    state = torch.load(out / WEIGHTS_FILE, weights_only=True)
    n_bn = sum(v.numel() for k, v in state.items() if "running" in k or "num_batches" in k)
    assert sum(v.numel() for v in state.values()) - n_bn == trainable
    from evaluation.onnx_cost import graph_cost
    from evaluation.onnx_graph import load_graph

    assert graph_cost(load_graph(str(out / ONNX_FILE))).params == hw.params
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


# ------------------------------------------- candidates that try to fake their numbers

FAST_PATH_CODE = '''
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(32, num_classes)
        self.cheap = nn.Linear(3, num_classes)
        self.steps = 0

    def forward(self, x):
        if self.training:
            self.steps += 1
        if self.steps > 0 and x.shape[0] == 1 and not self.training:
            return self.cheap(x.mean((2, 3)))  # what a batch-1 profiler would see
        return self.fc(F.relu(self.body(x)).mean((2, 3)))


def build_model(num_classes):
    return Net(num_classes)
'''

LIST_WEIGHTS_CODE = '''
import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.bank = [torch.randn(64, 3, 3, 3) * 0.1]  # not a registered parameter
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        w = self.bank[0]
        if self.training:  # trained by the model's own update rule
            self.bank[0] = (w + 0.01 * torch.randn_like(w)).detach()
        return self.fc(F.relu(F.conv2d(x, w, padding=1)).mean((2, 3)))


def build_model(num_classes):
    return Net(num_classes)
'''

HIDDEN_PARAMS_CODE = '''
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, num_classes)

    parameters = lambda self, recurse=True: iter([self.fc.bias])
    named_parameters = lambda self, prefix="", recurse=True, remove_duplicate=True: iter(
        [("fc.bias", self.fc.bias)])

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


def build_model(num_classes):
    return Net(num_classes)
'''

NOT_THE_MODEL_CODE = LINEAR_CODE.replace(
    "        return self.fc(x.mean((2, 3)))",
    "        y = self.fc(x.mean((2, 3)))\n"
    "        return -y if torch.onnx.is_in_onnx_export() else y").replace(
    "from torch import nn", "import torch\nfrom torch import nn")


def static_only():
    """A passing gate report: evaluate_candidate then runs only the static policy check."""
    from tools.gate import GateReport

    return GateReport(ok=True)


STATIC_ONLY = static_only()


def ungated(code: str, data, tmp_path: Path):
    """Train and measure without the gate (it refuses some of these statically)."""
    from evaluation.report import EvaluationReport

    report = EvaluationReport(code_hash="x", status="failed")
    try:
        train_and_measure(code, data, report, tmp_path / "work", recipe=FAST,
                           budgets=Budgets(), split="val", limits=None, on_event=None,
                           device="cpu", n_boot=0)
        report.status = "ok"
    except EvaluationFailed as f:
        report.failure_stage, report.failure_reason = f.stage, f.reason
    return report


def true_params(code: str, data) -> int:
    """Registered parameters, read from the state dict (overrides cannot hide them)."""
    model = build_from_source(code, len(data.class_names))
    return sum(t.numel() for t in model.state_dict().values())


@pytest.mark.e2e
def test_batch_one_fast_path_is_measured_as_the_full_model(data):
    report = evaluate_candidate(FAST_PATH_CODE, data, recipe=FAST, device="cpu",
                                gate_report=STATIC_ONLY)
    assert report.ok, report.failure_reason
    full = build_from_source(FAST_PATH_CODE, len(data.class_names)).eval()  # steps == 0
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        full(torch.zeros(1, 3, 32, 32))
    # 2 * 32*32 pixels * (32*27 + 32*32*9) MACs + the classifier: ~19 M, not 2 * 3 * 8
    assert report.hardware.flops == counter.get_total_flops() > 10**7
    assert report.hardware.graph_ops.get("Conv") == 2


@pytest.mark.e2e
def test_weights_in_a_plain_list_are_counted(data):
    report = evaluate_candidate(LIST_WEIGHTS_CODE, data, recipe=FAST, device="cpu",
                                gate_report=STATIC_ONLY)
    assert report.ok, report.failure_reason
    n = len(data.class_names)
    assert true_params(LIST_WEIGHTS_CODE, data) == 64 * n + n  # what torch would report
    assert report.hardware.params == 64 * 27 + 64 * n + n


@pytest.mark.e2e
def test_overridden_parameter_listing_does_not_hide_parameters(data, tmp_path):
    # (The static gate refuses class-body assignments; this checks the layer behind it.)
    report = ungated(HIDDEN_PARAMS_CODE, data, tmp_path)
    assert report.status == "ok", report.failure_reason
    n = len(data.class_names)
    assert report.hardware.params == true_params(HIDDEN_PARAMS_CODE, data) == \
        16 * 27 + 16 + 16 * n + n


@pytest.mark.e2e
def test_a_graph_that_is_not_the_trained_model_fails(data, tmp_path):
    report = ungated(NOT_THE_MODEL_CODE, data, tmp_path)
    assert report.failure_stage == "invalid", report
    assert "not the trained model" in report.failure_reason
    assert report.prediction_agreement is not None
    assert report.prediction_agreement < MIN_AGREEMENT and report.metrics is None


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
    from tools.checks import sandbox_failure
    from tools.sandbox import SandboxResult

    got, reason = sandbox_failure(SandboxResult(ok=False, error_kind=kind, error="why"))
    assert got == stage and reason.startswith("why")


# --- issue 9: the training job's timeout follows the gate's measured cost ----------------

def test_timeout_variable_part_scales_with_the_measured_cost():
    from tools.payloads import FIXED_SECONDS, SECONDS_PER_IMAGE, default_limits, measure_limits

    recipe, n_train, n_eval = Recipe(epochs=2), 840, 180
    floor = default_limits(recipe, n_train).timeout_s
    assert floor == FIXED_SECONDS + 2 * n_train * SECONDS_PER_IMAGE  # the old formula
    # A cheap model (or no measurement) keeps the floor; a costly one gets more.
    assert default_limits(recipe, n_train, train_s_per_image=1e-4, n_eval=n_eval).timeout_s \
        == pytest.approx(floor, rel=1e-3)
    small, big = (default_limits(recipe, n_train, train_s_per_image=c, n_eval=n_eval).timeout_s
                  for c in (0.02, 0.4))
    assert floor < small < big
    assert (big - FIXED_SECONDS) / (small - FIXED_SECONDS) == pytest.approx(20, rel=0.01)
    # max_train_seconds caps the training share, not the prediction share after it
    capped = default_limits(Recipe(epochs=2, max_train_seconds=30), n_train,
                            train_s_per_image=0.4, n_eval=n_eval).timeout_s
    assert FIXED_SECONDS + 30 < capped < big
    base = default_limits(recipe, n_train)
    m_small, m_big = (measure_limits(base, n_eval, c).timeout_s for c in (0.05, 1.0))
    assert measure_limits(base, n_eval).timeout_s == FIXED_SECONDS + n_eval * SECONDS_PER_IMAGE
    assert (m_big - FIXED_SECONDS) / (m_small - FIXED_SECONDS) == pytest.approx(20, rel=0.01)


def test_resnet18_limit_at_the_quick_fidelity_exceeds_its_training_time():
    from tools.gate import train_seconds_per_image
    from tools.payloads import FIXED_SECONDS, default_limits

    code = (REPO / "tasks" / "candidates" / "resnet18.py").read_text()
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the gate job
    try:
        cost = train_seconds_per_image(code, 32, 8)
    finally:
        torch.set_num_threads(saved)
    # The quick fidelity: 1200 images (840 train, 180 val), 32 px, 2 epochs.
    limit = default_limits(Recipe(epochs=2), 840, train_s_per_image=cost, n_eval=180).timeout_s
    # Training time from the gate figure: the training job's seconds per image came out at
    # 2.2x the gate's for ResNet-18 and at most 4.7x for any shipped network on this busy
    # 2-core machine (docs/security.md, "Limits of a job"); start, prediction and export
    # fit in FIXED_SECONDS.
    expected = 2 * 840 * cost * 4.7
    assert limit > FIXED_SECONDS + expected, (limit, cost)


def test_evaluation_passes_the_gate_figure_to_the_training_limit(data, monkeypatch):
    import tools.sandbox
    from tools.gate import GateReport
    from tools.payloads import default_limits
    from tools.sandbox import SandboxResult

    seen: list[float] = []

    def fake_run_job(kind, payload, *, limits, **kw):
        seen.append(limits.timeout_s)
        return SandboxResult(ok=False, error_kind="timeout", error="stopped by the test")

    monkeypatch.setattr(tools.sandbox, "run_job", fake_run_job)
    _, train_idx, eval_idx = build_payload(LINEAR_CODE, data, FAST, "val", "cpu")
    ok = GateReport(ok=True, train_s_per_image=0.5)
    evaluate_candidate(LINEAR_CODE, data, recipe=FAST, gate_report=ok, device="cpu")
    evaluate_candidate(LINEAR_CODE, data, recipe=FAST, gate_report=ok, device="cpu",
                       timeout_s=7.0)  # the user's --eval-timeout wins
    evaluate_candidate(LINEAR_CODE, data, recipe=FAST, gate_report=GateReport(ok=True),
                       device="cpu")
    assert seen == [
        pytest.approx(default_limits(FAST, len(train_idx), train_s_per_image=0.5,
                                     n_eval=len(eval_idx)).timeout_s),
        7.0, pytest.approx(default_limits(FAST, len(train_idx)).timeout_s)]
    assert seen[0] > seen[2]
