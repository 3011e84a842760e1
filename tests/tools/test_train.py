"""The fixed training recipe: sampler, schedule, determinism, divergence, early stop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tools.batches import epoch_order, lr_lambda, sample_weights
from tools.train import Diverged, Recipe, predict, resolve_amp, train

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)


def tiny_net(num_classes: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )


class InfNet(nn.Module):
    """Outputs +inf logits from the first batch on: the loss is NaN at once."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.mean((2, 3))) * float("inf")


def colour_data(n: int = 96, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose dominant channel is the class (3 classes): learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 100, (n, 3, size, size)).astype(np.uint8)
    x[np.arange(n), y] += 120
    return x, y


def test_sample_weights_match_hand_computed_class_shares():
    labels = np.array([0] * 90 + [1] * 10)
    # sqrt: class share ~ n_c * n_c**-0.5 = sqrt(n_c): sqrt(10) / (sqrt(90) + sqrt(10)) = 0.25
    w = sample_weights(labels, "sqrt")
    assert w.sum() == pytest.approx(1.0)
    assert w[labels == 1].sum() == pytest.approx(math.sqrt(10) / (math.sqrt(90) + math.sqrt(10)))
    assert w[labels == 1].sum() == pytest.approx(0.25)
    # inverse: every class equally likely
    assert sample_weights(labels, "inverse")[labels == 1].sum() == pytest.approx(0.5)


def test_balanced_sampler_draws_minority_classes():
    labels = np.array([0] * 950 + [1] * 40 + [2] * 10)
    rng = np.random.default_rng(0)
    plain = labels[epoch_order(labels, Recipe(balanced_sampling=False), rng)]
    assert sorted(plain.tolist()) == sorted(labels.tolist())  # a permutation
    inv = labels[epoch_order(labels, Recipe(sampling="inverse"), rng)]
    share = np.bincount(inv, minlength=3) / len(inv)
    assert share == pytest.approx([1 / 3] * 3, abs=0.06)
    sq = labels[epoch_order(labels, Recipe(sampling="sqrt"), rng)]
    rare = (sq == 2).mean()
    # sqrt share of the rarest class: sqrt(10)/(sqrt(950)+sqrt(40)+sqrt(10)) ~ 0.077
    assert 0.04 < rare < 0.12
    assert rare > 3 * 0.01  # far above its 1 % frequency


def test_lr_schedule_warms_up_then_decays_to_zero():
    f = lr_lambda(total=100, warmup=5)
    assert [f(s) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert f(5) == pytest.approx(1.0)
    assert f(5 + 95 // 2) == pytest.approx(0.5, abs=0.02)
    assert f(99) < 0.01
    assert all(f(s) >= f(s + 1) for s in range(5, 99))


def run(seed: int, x: np.ndarray, y: np.ndarray, **kw) -> tuple[object, np.ndarray]:
    torch.manual_seed(seed)
    model = tiny_net()
    recipe = Recipe(epochs=2, batch_size=16, seed=seed, threads=1, **kw)
    stats = train(model, x, np.arange(64), y[:64], recipe, MEAN, STD)
    return stats, predict(model, x, np.arange(64, len(x)), MEAN, STD, recipe=recipe)


def test_same_seed_gives_same_predictions_and_losses():
    x, y = colour_data()
    s1, p1 = run(0, x, y)
    s2, p2 = run(0, x, y)
    s3, _ = run(1, x, y)
    assert np.array_equal(p1, p2)
    assert s1.loss_curve == s2.loss_curve
    assert s1.loss_curve != s3.loss_curve
    assert s1.steps == 2 * (64 // 16) and s1.epochs == 2 and not s1.stopped_early
    assert p1.dtype == np.int64 and p1.shape == (32,) and set(p1) <= {0, 1, 2}


def test_recipe_learns_an_easy_task():
    x, y = colour_data(n=320)
    torch.manual_seed(0)
    model = tiny_net()
    recipe = Recipe(epochs=4, batch_size=32, threads=1)
    stats = train(model, x, np.arange(256), y[:256], recipe, MEAN, STD)
    pred = predict(model, x, np.arange(256, 320), MEAN, STD, recipe=recipe)
    assert stats.loss_curve[-1] < stats.loss_curve[0]
    assert (pred == y[256:]).mean() > 0.8  # chance is 1/3


def test_non_finite_output_raises_diverged_with_step():
    x, y = colour_data()
    with pytest.raises(Diverged) as info:
        train(InfNet(), x, np.arange(64), y[:64], Recipe(batch_size=16, threads=1), MEAN, STD)
    assert info.value.epoch == 1 and info.value.step == 1
    assert "nan" in info.value.reason and "step 1" in info.value.reason


def test_huge_learning_rate_diverges():
    x, y = colour_data()
    # No normalisation layer: an lr of 1e30 blows the logits past float range.
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    with pytest.raises(Diverged) as info:
        train(model, x, np.arange(64), y[:64],
              Recipe(batch_size=16, lr=1e30, warmup_frac=0.0, amp="off", threads=1), MEAN, STD)
    assert info.value.step > 1  # the first forward is fine, the updates blow it up


def test_max_train_seconds_stops_early_and_records_it():
    x, y = colour_data()
    torch.manual_seed(0)
    stats = train(tiny_net(), x, np.arange(64), y[:64],
                  Recipe(epochs=50, batch_size=16, max_train_seconds=1e-6, threads=1), MEAN, STD)
    assert stats.stopped_early
    assert stats.steps == 1 and stats.epochs == 1
    assert math.isfinite(stats.final_loss)


def test_amp_resolution():
    assert resolve_amp("off", "cpu") == "off"
    assert resolve_amp("bf16", "cpu") == "bf16"
    assert resolve_amp("auto", "cpu") in {"bf16", "off"}


def test_recipe_rejects_bad_values():
    with pytest.raises(ValueError):
        Recipe(epochs=0)
    with pytest.raises(ValueError):
        Recipe(sampling="cubic")


TINY_NET_CODE = '''
from torch import nn


def build_model(num_classes):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )
'''

INF_CODE = '''
import math
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3))) * math.inf


def build_model(num_classes):
    return Net(num_classes)
'''


def job_payload(tmp_path, code: str) -> dict:
    x, y = colour_data(n=96, size=32)
    np.save(tmp_path / "images.npy", x)
    return {
        "code": code, "images_path": str(tmp_path / "images.npy"),
        "train_indices": list(range(64)), "train_labels": y[:64].tolist(),
        "eval_indices": list(range(64, 96)), "mean": list(MEAN), "std": list(STD),
        "recipe": Recipe(epochs=1, batch_size=16, threads=1).model_dump(mode="json"),
        "num_classes": 3, "image_size": 32, "device": "cpu",
    }


def test_evaluate_job_in_process_returns_predictions_weights_and_graph(tmp_path):
    from tools.export import ONNX_FILE
    from tools.jobs import evaluate_job
    from tools.train import WEIGHTS_FILE

    out = evaluate_job(job_payload(tmp_path, TINY_NET_CODE), tmp_path)
    assert "failure" not in out, out
    preds = out["torch_predictions"]
    assert len(preds) == 32 and set(preds) <= {0, 1, 2}
    state = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    trained = {k: v for k, v in state.items() if "running" not in k and "num_batches" not in k}
    assert sum(v.numel() for v in trained.values()) == (8 * 3 * 9 + 8) + 2 * 8 + (8 * 3 + 3)
    assert out["exporter"] == "torchscript" and out["onnx_file"] == ONNX_FILE
    assert (tmp_path / ONNX_FILE).stat().st_size > 1000
    # Numbers the worker could fake are not its to report any more.
    assert not {"hardware", "params", "param_names", "predictions"} & set(out)
    assert out["training"]["steps"] == 4
    t = out["timings"]
    assert t["job_start"] <= t["data_mapped"] <= t["trained"] <= t["exported"]


def test_evaluate_job_reports_divergence_as_data(tmp_path):
    from tools.jobs import evaluate_job

    out = evaluate_job(job_payload(tmp_path, INF_CODE), tmp_path)
    assert out["failure"]["stage"] == "diverged"
    assert out["failure"]["step"] == 1 and "nan" in out["failure"]["reason"]


def test_evaluate_job_reports_build_errors_as_crash(tmp_path):
    from tools.jobs import evaluate_job

    out = evaluate_job(job_payload(tmp_path, "def build_model(n):\n    return 1/0\n"), tmp_path)
    assert out["failure"]["stage"] == "crash"
    assert "ZeroDivisionError" in out["failure"]["reason"]


def test_evaluate_job_reports_training_errors_as_train(tmp_path):
    from tools.jobs import evaluate_job

    code = TINY_NET_CODE.replace(
        "def build_model(num_classes):\n    return nn.Sequential(",
        "class Boom(nn.Sequential):\n    def forward(self, x):\n"
        "        if self.training:\n            raise RuntimeError('boom in training')\n"
        "        return super().forward(x)\n\n\ndef build_model(num_classes):\n    return Boom(")
    out = evaluate_job(job_payload(tmp_path, code), tmp_path)
    assert out["failure"]["stage"] == "train"
    assert "boom in training" in out["failure"]["reason"]
