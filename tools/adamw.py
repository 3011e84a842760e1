"""The training recipe's AdamW with its learning-rate schedule, without ``torch.optim`` on CPU.

Why not ``torch.optim.AdamW`` everywhere: building any ``torch.optim`` optimiser imports
``torch._dynamo`` (``Optimizer.add_param_group`` is wrapped in ``torch._disable_dynamo``),
and every evaluation trains in a fresh sandboxed worker, so each one paid that import:
1.3 s on an idle 2-core AMD EPYC, about 2.4 s with a second evaluation running beside it,
some 10 % of an evaluation at the quick fidelity (docs/metrics.md#cost). Nothing else
in the worker's training and TorchScript export imports it.

:class:`CpuAdamW` is the update of ``torch.optim.AdamW``'s single-tensor implementation
(the one PyTorch uses on CPU), operation for operation, so training on CPU gives the same
weights bit for bit (tests/tools/test_adamw.py compares them). On CUDA PyTorch's default is
its multi-tensor kernels, so :func:`optimiser` keeps ``torch.optim`` there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch


class Optimiser(Protocol):
    """What the training loop calls: clear the gradients, take one scheduled step."""

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (set it to None)."""

    def step(self) -> None:
        """Update the parameters, then advance the learning-rate schedule by one step."""


class CpuAdamW:
    """AdamW (decoupled weight decay) with a per-step learning-rate factor, on CPU.

    Args:
        groups: Parameter groups, each ``{"params": [...], "weight_decay": float}``
            (:func:`tools.batches.param_groups`).
        lr: Base learning rate; step ``k`` (0-based) uses ``lr * lr_factor(k)``, as
            ``torch.optim.lr_scheduler.LambdaLR`` stepped once per optimiser step does.
        lr_factor: The schedule (:func:`tools.batches.lr_lambda`).
        betas: Adam's moment decay rates.
        eps: Added to the denominator.
    """

    def __init__(self, groups: list[dict], lr: float, lr_factor: Callable[[int], float],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.groups = [(list(g["params"]), float(g["weight_decay"])) for g in groups]
        self.base_lr, self.lr_factor, self.betas, self.eps = lr, lr_factor, betas, eps
        self.state: dict[torch.nn.Parameter, _State] = {}
        self.steps = 0  # optimiser steps taken: the schedule's position

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (set it to None)."""
        for params, _ in self.groups:
            for p in params:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient, then advance the schedule."""
        lr = self.base_lr * self.lr_factor(self.steps)
        self.steps += 1
        for params, weight_decay in self.groups:
            for p in params:
                if p.grad is not None:
                    self._update(p, p.grad, lr, weight_decay)

    def _update(self, p: torch.nn.Parameter, grad: torch.Tensor, lr: float,
                weight_decay: float) -> None:
        beta1, beta2 = self.betas
        if p not in self.state:
            self.state[p] = _State(torch.zeros_like(p, memory_format=torch.preserve_format),
                                   torch.zeros_like(p, memory_format=torch.preserve_format))
        st = self.state[p]
        st.steps += 1  # per parameter, like torch: steps without a gradient do not count
        if weight_decay != 0:
            p.mul_(1 - lr * weight_decay)
        st.exp_avg.lerp_(grad, 1 - beta1)
        st.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        # torch keeps the count in a float32 tensor and reads it back as a float.
        step_size = lr / (1 - beta1 ** float(st.steps))
        bias2_sqrt = (1 - beta2 ** float(st.steps)) ** 0.5
        denom = (st.exp_avg_sq.sqrt() / bias2_sqrt).add_(self.eps)
        p.addcdiv_(st.exp_avg, denom, value=-step_size)


@dataclass
class _State:
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    steps: int = 0


class _TorchAdamW:
    """``torch.optim.AdamW`` stepped with a ``LambdaLR`` schedule (the CUDA path)."""

    def __init__(self, groups: list[dict], lr: float,
                 lr_factor: Callable[[int], float]) -> None:
        self.opt = torch.optim.AdamW(groups, lr=lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.opt.step()
        self.sched.step()


def optimiser(groups: list[dict], lr: float, lr_factor: Callable[[int], float],
              device: str) -> Optimiser:
    """Return the recipe's AdamW for ``device``: :class:`CpuAdamW` on CPU, else ``torch.optim``."""
    if device == "cpu":
        return CpuAdamW(groups, lr, lr_factor)
    return _TorchAdamW(groups, lr, lr_factor)
