"""How the training recipe draws, augments, normalises and schedules its batches.

The pieces :func:`tools.train.train` and :func:`tools.train.predict` share with anything
that must train or predict exactly like them (the benchmark's bare loop in
``tools/bench.py``, and the measure job's numpy copy of :class:`Normalizer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from tools.train import Recipe


def autocast(amp: str, device: str) -> torch.autocast:
    """Return the autocast context of a run: bf16 when ``amp == "bf16"``, else disabled."""
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(dev_type, dtype=torch.bfloat16, enabled=amp == "bf16")


def sample_weights(labels: np.ndarray, sampling: str = "sqrt") -> np.ndarray:
    """Per-sample draw probabilities of the class-balanced sampler.

    ``w_i = n_{y_i} ** -p`` normalised to sum 1, with ``p = 0.5`` for "sqrt" and
    ``p = 1`` for "inverse" (see :class:`Recipe`).

    Args:
        labels: Integer class label per training sample.
        sampling: "sqrt" or "inverse".

    Returns:
        Probabilities aligned with ``labels``.
    """
    power = {"sqrt": 0.5, "inverse": 1.0}[sampling]
    counts = np.bincount(labels)
    w = counts[labels].astype(np.float64) ** -power
    return w / w.sum()


def epoch_order(
    labels: np.ndarray, recipe: Recipe, rng: np.random.Generator
) -> np.ndarray:
    """Positions (into the training subset) drawn for one epoch.

    Args:
        labels: Training labels.
        recipe: The recipe (balanced_sampling, sampling).
        rng: The run's seeded generator.

    Returns:
        ``len(labels)`` positions: a weighted draw with replacement when balanced, else
        a permutation.
    """
    n = len(labels)
    if recipe.balanced_sampling:
        return rng.choice(n, size=n, replace=True, p=sample_weights(labels, recipe.sampling))
    return rng.permutation(n)


class Normalizer:
    """uint8 (N,3,H,W) -> normalised float, with optional seeded flips on the uint8."""

    def __init__(self, mean: Any, std: Any, device: str, channels_last: bool) -> None:
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        # (x/255 - mean) / std == x * scale - shift
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = mean_t / std_t
        self.device = device
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Move ``x`` to the device, scale it to float and normalise it."""
        x = x.to(self.device, non_blocking=True).float().mul_(self.scale).sub_(self.shift)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def flip(x: torch.Tensor, dim: int, gen: torch.Generator) -> torch.Tensor:
    """Flip each image of ``x`` along ``dim`` with probability 1/2 (seeded by ``gen``)."""
    mask = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1).to(x.device), x.flip(dim), x)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: no decay on biases and norm scales (1-D tensors).

    Decaying them only hurts.
    """
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up over ``warmup`` steps, then cosine to 0."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f

