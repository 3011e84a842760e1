"""Ordinary model code the gate must accept (a fixture of tests/tools/test_gate.py).

Residual, depthwise-separable and squeeze-excitation blocks, multi-head attention (torch's
and a hand-written one), a dataclass config, a NamedTuple, ``__all__``, real type hints,
private helpers on self, properties, class/static methods, ``super()`` calls, a match
statement on the candidate's own classes and f-strings in ``extra_repr``.
"""

import math
from collections import namedtuple
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Config", "Net", "build_model"]

Shape = namedtuple("Shape", "channels size")
Act = Literal["relu", "gelu"]


@dataclass
class Config:
    width: int = 16
    heads: int = 4
    act: Act = "relu"
    strides: list[int] = field(default_factory=lambda: [1, 2])
    dropout: float | None = None


class Stats(NamedTuple):
    params: int
    depth: int


def make_act(kind: Act) -> nn.Module:
    return nn.ReLU() if kind == "relu" else nn.GELU()


class SE(nn.Module):
    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.pointwise(self.depthwise(x))))


class Residual(nn.Module):
    def __init__(self, channels: int, act: Act = "relu") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act = make_act(act)
        self.se = SE(channels)
        self._scale = 1.0

    @property
    def scale(self) -> float:
        return self._scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.se(self.bn2(self.conv2(y)))
        return self.act(x + self.scale * y)


class SelfAttention(nn.Module):
    """Hand-written multi-head attention over the spatial positions."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, dim={self.proj.in_features}"

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, dim=-1))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        out = (weights @ v).transpose(1, 2).flatten(2)
        return self.proj(out)


class Head(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.flatten(x, 1))


class Net(nn.Module):
    def __init__(self, num_classes: int, cfg: Config | None = None) -> None:
        super().__init__()
        cfg = cfg or Config()
        self.cfg = cfg
        self.stem = nn.Conv2d(3, cfg.width, 3, padding=1)
        blocks: list[nn.Module] = []
        for stride in cfg.strides:
            blocks += [DepthwiseSeparable(cfg.width, cfg.width, stride), Residual(cfg.width)]
        self.blocks = nn.Sequential(*blocks)
        self.attn = SelfAttention(cfg.width, cfg.heads)
        self.mha = nn.MultiheadAttention(cfg.width, cfg.heads, batch_first=True)
        self.norm = nn.LayerNorm(cfg.width)
        self.drop = nn.Dropout(cfg.dropout or 0.0)
        self.head = Head(cfg.width, num_classes)
        self._init_weights()

    @classmethod
    def small(cls, num_classes: int) -> nn.Module:
        return cls(num_classes, Config(width=8, heads=2))

    @staticmethod
    def describe(module: nn.Module) -> str:
        match module:
            case Residual():
                return "residual"
            case DepthwiseSeparable(stride=s):
                return f"dwsep/{s}"
            case nn.Conv2d():
                return "conv"
            case _:
                return "layer {}: {name}".format(len(module.extra_repr()), name="other")

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    @torch.no_grad()
    def stats(self) -> Stats:
        return Stats(sum(p.numel() for p in self.parameters()), len(self.blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.stem(x)))
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.attn(self.norm(tokens))
        attended, _ = self.mha(tokens, tokens, tokens, need_weights=False)
        pooled = (tokens + attended).mean(dim=1)
        return self.head(self.drop(pooled))


def build_model(num_classes: int) -> nn.Module:
    return Net(num_classes)
