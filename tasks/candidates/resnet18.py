"""ResNet-18 reference baseline (He et al., CVPR 2016), randomly initialised.

Layer for layer the torchvision architecture (11,689,512 parameters at 1000 classes):
a stem, four stages of two basic blocks (64, 128, 256, 512 channels; stages 2-4 start
with stride 2 and a 1x1 projection shortcut), global average pooling, a linear classifier,
and torchvision's initialisation (Kaiming-normal convs, BN weight 1 / bias 0).

Adapted to small inputs (small_input=True, the default, meant for images of 96 px or
less, as in the CIFAR versions of ResNet): the stem is a 3x3 stride-1 conv without the
max-pool instead of a 7x7 stride-2 conv followed by a 3x3 stride-2 max-pool. Total stride
8 instead of 32, so a 64 px input still has 8x8 features in the last stage; 6,912 fewer
parameters (11,681,832 at 1000 classes) but about 16x the FLOPs of the standard form at
the same resolution. small_input=False builds the standard ImageNet form.
"""

from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        # Project the input when the shape changes, so the sum is well defined.
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int, small_input: bool = True):
        super().__init__()
        if small_input:
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False),
                                      nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for width, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(cin, width, stride), BasicBlock(width, width, 1)]
            cin = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.pool(self.layers(self.stem(x))).flatten(1)
        return self.fc(x)


def build_model(num_classes: int, small_input: bool = True) -> nn.Module:
    return ResNet18(num_classes, small_input)
