"""The trusted measure job, in-process: graph numbers, ORT predictions, batch checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.tools.test_train import MEAN, STD, TINY_NET_CODE, job_payload
from tools.export import EXPORT_BATCH, ONNX_FILE, export_onnx
from tools.measure import MEASURED_BY, check_job, measure_job, normalise


def measure_payload(tmp_path: Path, onnx_path: Path, **extra) -> dict:
    """Measure 32 colour images (rows 64..95 of images.npy, written by job_payload)."""
    return {"onnx_path": str(onnx_path), "images_path": str(tmp_path / "images.npy"),
            "eval_indices": list(range(64, 96)), "mean": list(MEAN), "std": list(STD),
            "eval_batch_size": 8, "num_classes": 3, "image_size": 32,
            "check_positions": [0, 5, 9, 31], "warmup": 1, "iters": 5, **extra}


def test_normalisation_is_bit_identical_to_the_training_recipe():
    from tools.batches import Normalizer

    rows = np.random.default_rng(0).integers(0, 256, (4, 3, 16, 16), dtype=np.uint8)
    for mean, std in ((MEAN, STD), ((0.6, 0.52, 0.51), (0.13, 0.17, 0.19))):
        ref = Normalizer(mean, std, "cpu", channels_last=False)(torch.from_numpy(rows))
        got = normalise(rows, mean, std)
        assert got.dtype == np.float32 and np.array_equal(got, ref.numpy())


def test_graph_measured_and_predicted_like_the_trained_model(tmp_path):
    from tools.jobs import evaluate_job

    out = evaluate_job(job_payload(tmp_path, TINY_NET_CODE), tmp_path)
    assert "failure" not in out, out
    assert out["exporter"] == "torchscript" and (tmp_path / ONNX_FILE).is_file()
    res = measure_job(measure_payload(tmp_path, tmp_path / ONNX_FILE), tmp_path / "m")
    assert "failure" not in res, res
    # Same images, same normalisation and batches: exactly the trained model's classes.
    assert res["predictions"] == out["torch_predictions"]
    hw = res["hardware"]
    # conv 8*3*3*3 with the folded BatchNorm as its bias (8), linear 8*3 + 3
    assert hw["params"] == 8 * 27 + 8 + 8 * 3 + 3 and hw["size_mb"] == 251 * 4 / 2**20
    # 32x32 input, stride 2: 16*16 outputs * 8 channels * 27 MACs, linear 8*3 MACs
    assert hw["flops"] == 2 * (16 * 16 * 8 * 27 + 8 * 3) and hw["macs"] == hw["flops"] // 2
    assert hw["measured_by"] == MEASURED_BY and hw["graph_ops"]["Conv"] == 1
    assert hw["latency_ms_median"] > 0 and hw["latency_ms_p90"] >= hw["latency_ms_median"]
    assert hw["latency_device"].startswith("cpu (onnxruntime") and hw["input_shape"] == [
        1, 3, 32, 32]
    assert res["batch_check"]["n"] == 4 and res["batch_check"]["max_abs_diff"] < 1e-4
    # In this long-lived process freed memory is reused, so only the type is checked here;
    # the sandboxed measurement (a fresh process) is checked in test_evaluate.
    assert hw["runtime_peak_mb"] is None or hw["runtime_peak_mb"] >= 0


class BatchMixer(nn.Module):
    """Normalises each image by the batch mean: outputs depend on the other images."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        x = x - x.mean(0, keepdim=True)
        return self.fc(x.mean((2, 3)))


def write_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "images.npy", rng.integers(0, 255, (96, 3, 32, 32), dtype=np.uint8))


def test_outputs_that_depend_on_the_batch_fail_the_batch_check(tmp_path):
    write_images(tmp_path)
    export_onnx(BatchMixer().eval(), torch.randn(EXPORT_BATCH, 3, 32, 32), tmp_path / "m.onnx")
    res = measure_job(measure_payload(tmp_path, tmp_path / "m.onnx"), tmp_path)
    assert res["failure"]["stage"] == "invalid"
    assert "depends on the batch size" in res["failure"]["reason"]


def onnx_file(tmp_path: Path, nodes, inits) -> Path:
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "hand.onnx"
    path.write_bytes(model.SerializeToString())
    return path


HEAD = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"])]
W = {"w": np.eye(3, dtype=np.float32)}


def test_a_cheap_constant_at_batch_one_fails_the_batch_check(tmp_path):
    # y = (batch size == 1) ? constant : f @ w  -- no control flow, both sides computed
    nodes = [*HEAD, helper.make_node("MatMul", ["f", "w"], ["full"]),
             helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Equal", ["n", "one"], ["is1"]),
             helper.make_node("Where", ["is1", "cheap", "full"], ["y"])]
    inits = {**W, "zero": np.array(0, np.int64), "one": np.array(1, np.int64),
             "cheap": np.ones((1, 3), np.float32)}
    write_images(tmp_path)
    res = measure_job(measure_payload(tmp_path, onnx_file(tmp_path, nodes, inits)), tmp_path)
    assert res["failure"]["stage"] == "invalid"
    assert "depends on the batch size" in res["failure"]["reason"]


def test_cost_that_is_not_linear_in_the_batch_is_refused(tmp_path):
    # (f f^T) f w: every image's output is a sum over the whole batch, O(N^2) FLOPs
    nodes = [*HEAD, helper.make_node("Transpose", ["f"], ["ft"], perm=[1, 0]),
             helper.make_node("MatMul", ["f", "ft"], ["gram"]),
             helper.make_node("MatMul", ["gram", "f"], ["g"]),
             helper.make_node("MatMul", ["g", "w"], ["y"])]
    write_images(tmp_path)
    res = measure_job(measure_payload(tmp_path, onnx_file(tmp_path, nodes, W)), tmp_path)
    assert res["failure"]["stage"] == "invalid"
    assert "do not grow with the batch size" in res["failure"]["reason"]


def test_custom_operators_are_an_export_failure(tmp_path):
    nodes = [*HEAD, helper.make_node("FastPath", ["f"], ["y"], domain="com.evil")]
    write_images(tmp_path)
    res = measure_job(measure_payload(tmp_path, onnx_file(tmp_path, nodes, {})), tmp_path)
    assert res["failure"]["stage"] == "export"
    assert "only standard ONNX operators" in res["failure"]["reason"]


def test_check_job_runs_a_good_graph_and_names_a_bad_one(tmp_path):
    good = onnx_file(tmp_path, [*HEAD, helper.make_node("MatMul", ["f", "w"], ["y"])], W)
    payload = {"onnx_path": str(good), "image_size": 32, "num_classes": 3}
    assert check_job(payload, tmp_path) == {"check": "ok"}
    assert "expected (N, 4)" in check_job({**payload, "num_classes": 4}, tmp_path)["check"]


def test_export_failure_is_stage_export_with_a_reason_to_act_on(tmp_path):
    from tools.jobs import evaluate_job

    code = TINY_NET_CODE.replace(
        "def build_model(num_classes):\n    return nn.Sequential(",
        "import torch\n\n\nclass Kth(nn.Sequential):\n    def forward(self, x):\n"
        "        return super().forward(torch.kthvalue(x, 2, dim=1, keepdim=True).values"
        ".expand(-1, 3, -1, -1))\n\n\ndef build_model(num_classes):\n    return Kth(")
    out = evaluate_job(job_payload(tmp_path, code), tmp_path)
    assert out["failure"]["stage"] == "export"
    reason = out["failure"]["reason"]
    assert "kthvalue" in reason and "TorchScript exporter" in reason and "dynamo" in reason


def test_exporter_falls_back_to_dynamo(monkeypatch, tmp_path):
    real, calls = torch.onnx.export, []

    def first_fails(*args, **kwargs):
        calls.append(kwargs["dynamo"])
        if not kwargs["dynamo"]:
            raise RuntimeError("torchscript broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", first_fails)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    assert export_onnx(model, torch.randn(EXPORT_BATCH, 3, 32, 32), tmp_path / "m.onnx") == \
        "dynamo"
    assert calls == [False, True]
    write_images(tmp_path)
    res = measure_job(measure_payload(tmp_path, tmp_path / "m.onnx"), tmp_path)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 32, 32))
    assert res["hardware"]["flops"] == counter.get_total_flops()


@pytest.mark.parametrize("bad", [{"check_positions": [40]}, {"eval_indices": []}])
def test_bad_payloads_raise(tmp_path, bad):
    write_images(tmp_path)
    with pytest.raises(ValueError):
        measure_job({**measure_payload(tmp_path, tmp_path / "none.onnx"), **bad}, tmp_path)


def test_torch_predictions_for_the_agreement_check_are_float32(tmp_path, monkeypatch):
    import tools.jobs
    from tools.train import Recipe

    seen = []
    real = tools.jobs.predict

    def spy(model, images, idx, mean, std, device="cpu", recipe=None):
        seen.append(recipe.amp)
        return real(model, images, idx, mean, std, device, recipe)

    monkeypatch.setattr(tools.jobs, "predict", spy)
    payload = job_payload(tmp_path, TINY_NET_CODE)
    payload["recipe"] = Recipe(epochs=1, batch_size=16, threads=1, amp="bf16").model_dump()
    out = tools.jobs.evaluate_job(payload, tmp_path)
    assert out["training"]["amp"] == "bf16" and seen == ["off"]
