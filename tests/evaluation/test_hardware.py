"""Hardware profile of tiny nets whose costs can be worked out by hand."""

import importlib.util

import pytest
import torch
from torch import nn

from evaluation.hardware import count_flops, peak_activation_bytes, profile_model


class Tiny(nn.Module):
    """conv 3->4 (3x3, pad 1) on 8x8, ReLU, linear 256->5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)
        self.register_buffer("scale", torch.ones(7))

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_params_size_and_flops_hand_computed():
    model = Tiny()
    rep = profile_model(model, (1, 3, 8, 8), warmup=1, iters=5, onnx=False)
    # params: conv 4*3*3*3 + 4 = 112, linear 256*5 + 5 = 1285
    assert rep.params == 112 + 1285 == sum(p.numel() for p in model.parameters())
    # size: (1397 params + 7 buffer floats) * 4 bytes
    assert rep.size_mb == pytest.approx((1397 + 7) * 4 / 2**20)
    # MACs: conv 4*8*8 outputs * 27 = 6912; linear 256*5 = 1280; FLOPs = 2 * MACs
    assert rep.macs == 6912 + 1280
    assert rep.flops == 2 * (6912 + 1280)
    assert rep.input_shape == [1, 3, 8, 8] and rep.threads == 1
    assert rep.latency_device == "cpu"


def test_frozen_parameters_not_counted_as_trainable():
    model = Tiny()
    model.conv.requires_grad_(False)
    rep = profile_model(model, (1, 3, 8, 8), warmup=0, iters=1, onnx=False)
    assert rep.params == 1285
    assert rep.size_mb == pytest.approx((1397 + 7) * 4 / 2**20)


def test_peak_activation_hand_computed():
    model = Tiny().eval()
    # live at the ReLU: input 3*8*8*4 = 768 B, conv out 256*4 = 1024 B, relu out 1024 B;
    # later the linear sees input + relu out + 20 B output = 1812 B; weights excluded
    assert peak_activation_bytes(model, torch.zeros(1, 3, 8, 8)) == 768 + 1024 + 1024
    # in-place ReLU reuses the conv output's storage: 768 + 1024
    inplace = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True)).eval()
    assert peak_activation_bytes(inplace, torch.zeros(1, 3, 8, 8)) == 768 + 1024


def test_count_flops_linear_only():
    assert count_flops(nn.Linear(10, 3), torch.zeros(2, 10)) == 2 * 2 * 10 * 3


def test_latency_threads_and_mode_restored():
    model = Tiny().train()
    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    torch.set_num_threads(target)
    try:
        rep = profile_model(model, (1, 3, 8, 8), threads=1, warmup=2, iters=20, onnx=False)
        assert torch.get_num_threads() == target
    finally:
        torch.set_num_threads(before)
    assert model.training
    assert rep.latency_ms_median > 0
    assert rep.latency_ms_p90 >= rep.latency_ms_median
    assert rep.onnx_latency_ms_median is None and rep.onnx_latency_ms_p90 is None


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None
    or importlib.util.find_spec("onnxscript") is None,
    reason="onnxruntime/onnxscript not installed",
)
def test_onnx_latency_present():
    rep = profile_model(Tiny(), (1, 3, 8, 8), warmup=2, iters=10)
    assert rep.onnx_latency_ms_median is not None and rep.onnx_latency_ms_median > 0
    assert rep.onnx_latency_ms_p90 >= rep.onnx_latency_ms_median


def test_onnx_failure_leaves_none(monkeypatch):
    calls = []

    def broken_export(*args, **kwargs):
        calls.append(kwargs.get("dynamo"))
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    rep = profile_model(Tiny(), (1, 3, 8, 8), warmup=0, iters=2)
    assert calls == [False, True]  # TorchScript exporter first, then the dynamo one
    assert rep.onnx_latency_ms_median is None and rep.onnx_latency_ms_p90 is None
    assert rep.latency_ms_median > 0


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="threads"):
        profile_model(Tiny(), (1, 3, 8, 8), threads=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            profile_model(Tiny(), (1, 3, 8, 8), device="cuda")
