"""The CPU AdamW: torch.optim.AdamW's update bit for bit, and no torch._dynamo import."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from tools.adamw import CpuAdamW, optimiser
from tools.batches import lr_lambda, param_groups


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4),
        torch.nn.Linear(4, 4))  # the last layer gets no gradient in odd steps (below)


def _train(model: torch.nn.Module, opt_step, zero_grad) -> None:
    gen = torch.Generator().manual_seed(0)
    for step in range(40):
        x = torch.randn(16, 3, 12, 12, generator=gen)
        y = torch.randint(0, 4, (16,), generator=gen)
        zero_grad()
        head = model[:-1] if step % 2 else model  # some steps leave a parameter without grad
        loss = torch.nn.functional.cross_entropy(head(x), y)
        loss.backward()
        opt_step()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_recipe_optimiser_matches_torch_adamw_with_lambda_lr_bit_for_bit(device: str) -> None:
    # "cuda" builds the torch.optim path; on these CPU tensors torch runs the same update.
    factor = lr_lambda(total=40, warmup=5)
    ref, ours = _model(0), _model(0)

    torch_opt = torch.optim.AdamW(param_groups(ref, 0.05), lr=3e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(torch_opt, factor)

    def torch_step() -> None:
        torch_opt.step()
        sched.step()

    _train(ref, torch_step, lambda: torch_opt.zero_grad(set_to_none=True))
    opt = optimiser(param_groups(ours, 0.05), 3e-3, factor, device)
    _train(ours, opt.step, opt.zero_grad)

    for (name, a), b in zip(ref.state_dict().items(), ours.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(ours[-1].weight, _model(0)[-1].weight)  # it did train


def test_optimiser_is_the_cpu_adamw_only_on_cpu() -> None:
    groups = param_groups(_model(0), 0.05)
    assert isinstance(optimiser(groups, 1e-3, lambda s: 1.0, "cpu"), CpuAdamW)
    assert not isinstance(optimiser(groups, 1e-3, lambda s: 1.0, "cuda"), CpuAdamW)


def test_training_on_cpu_does_not_import_torch_dynamo() -> None:
    # A fresh interpreter, like the sandboxed worker: the import is the cost this avoids.
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import torch
        from tools.train import Recipe, train
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                    torch.nn.Linear(4, 2))
        images = np.random.default_rng(0).integers(0, 255, (32, 3, 8, 8), dtype=np.uint8)
        labels = np.arange(32) % 2
        train(model, images, np.arange(32), labels, Recipe(epochs=1, batch_size=8),
              [0.5] * 3, [0.25] * 3)
        print("torch._dynamo" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False"
