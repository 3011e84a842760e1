"""The fixed text of the Template's candidate code, around its ``GENOME`` literal.

:func:`tasks.genome.render` joins :data:`HEADER` (with the genome's summary), the
genome's ``GENOME: dict[str, Any] = {...}`` literal (annotated, so a type checker reads
its values as ``Any``) and :data:`BODY`. The result must pass the gate (docs/security.md)
like any designed candidate, and mypy, as ``tasks/candidates/template.py`` does.
"""

HEADER = '''"""FL-NAS candidate CNN, rendered from GENOME by tasks/genome.py.

{summary}

GENOME is the whole architecture: a 3x3 stem conv, stages of blocks (a stage's first
block applies its stride), global pooling, dropout and a linear classifier. Blocks:
plain (conv-norm-act), residual (ResNet basic block), dwsep (depthwise + pointwise,
MobileNetV1), inverted_residual (MBConv: 1x1 expand, depthwise, linear 1x1 project,
MobileNetV2); se adds squeeze-excitation. Works for any square input of 32 px or more.
"""

import math
from typing import Any

import torch.nn.functional as F
from torch import nn

'''

BODY = '''

def make_norm(channels: int) -> nn.Module:
    if GENOME["norm"] == "batch":
        return nn.BatchNorm2d(channels)
    if GENOME["norm"] == "group":  # independent of the batch size; up to 8 groups
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    return nn.Identity()


def make_act() -> nn.Module:
    acts = {"relu": nn.ReLU, "silu": nn.SiLU, "hardswish": nn.Hardswish, "gelu": nn.GELU}
    return acts[GENOME["act"]]()


def conv_norm_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                  act: bool = True) -> nn.Sequential:
    # A conv bias is redundant before a norm layer, so only norm-free nets get one.
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups,
                     bias=GENOME["norm"] == "none")
    return nn.Sequential(conv, make_norm(cout), make_act() if act else nn.Identity())


class SqueezeExcite(nn.Module):
    """Reweights channels by a gate computed from their global average (SENet)."""

    def __init__(self, channels: int):
        super().__init__()
        squeeze = max(8, channels // 4)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        gate = F.adaptive_avg_pool2d(x, 1)
        return x * self.expand(F.relu(self.reduce(gate))).sigmoid()


class Block(nn.Module):
    def __init__(self, kind: str, cin: int, cout: int, kernel: int, stride: int,
                 expansion: int, se: bool):
        super().__init__()
        same_shape = stride == 1 and cin == cout
        if kind == "plain":
            layers: list[nn.Module] = [conv_norm_act(cin, cout, kernel, stride)]
        elif kind == "residual":
            layers = [conv_norm_act(cin, cout, kernel, stride),
                      conv_norm_act(cout, cout, kernel, act=False)]
        elif kind == "dwsep":
            layers = [conv_norm_act(cin, cin, kernel, stride, groups=cin),
                      conv_norm_act(cin, cout, 1)]
        elif kind == "inverted_residual":
            hidden = cin * expansion
            layers = [conv_norm_act(cin, hidden, 1)] if expansion > 1 else []
            layers += [conv_norm_act(hidden, hidden, kernel, stride, groups=hidden),
                       conv_norm_act(hidden, cout, 1, act=False)]  # linear bottleneck
        else:
            raise ValueError(f"unknown block type {kind!r}")
        if se:
            layers.append(SqueezeExcite(cout))
        self.body = nn.Sequential(*layers)
        # Residual blocks always add a shortcut (projected when the shape changes) and
        # activate the sum; inverted residuals add one only when the shapes match.
        self.shortcut = None
        if kind == "residual":
            self.shortcut = nn.Identity() if same_shape else conv_norm_act(
                cin, cout, 1, stride, act=False)
        elif kind == "inverted_residual" and same_shape:
            self.shortcut = nn.Identity()
        self.out_act = make_act() if kind == "residual" else nn.Identity()

    def forward(self, x):
        y = self.body(x)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.out_act(y)


class Net(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = conv_norm_act(3, GENOME["stem_width"], 3, GENOME["stem_stride"])
        blocks, cin = [], GENOME["stem_width"]
        for stage in GENOME["stages"]:
            for i in range(stage["depth"]):
                stride = stage["stride"] if i == 0 else 1
                blocks.append(Block(stage["block"], cin, stage["width"], stage["kernel"],
                                    stride, stage["expansion"], stage["se"]))
                cin = stage["width"]
        self.blocks = nn.Sequential(*blocks)
        # Global pooling makes the net independent of the input size.
        self.pool = nn.AdaptiveAvgPool2d(1) if GENOME["pool"] == "avg" else nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(GENOME["dropout"])
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.pool(self.blocks(self.stem(x))).flatten(1)
        return self.classifier(self.dropout(x))


def build_model(num_classes: int) -> nn.Module:
    return Net(num_classes)
'''
