"""MobileNetV2 reference baseline (Sandler et al., CVPR 2018), randomly initialised.

Layer for layer the torchvision architecture at width 1.0 (3,504,872 parameters at 1000
classes): a 3x3 stride-2 stem conv to 32 channels, 17 inverted residual blocks (1x1
expand by t, 3x3 depthwise, linear 1x1 project, identity shortcut when stride is 1 and
the width is unchanged), a 1x1 conv to 1280 channels, global average pooling, dropout 0.2
and a linear classifier; ReLU6 and BatchNorm throughout; torchvision's initialisation.

Adapted to small inputs (small_input=True, the default, meant for images of 96 px or
less, as in the CIFAR versions of MobileNetV2): the stem conv and the first block of the
24-channel stage use stride 1 instead of 2. Total stride 8 instead of 32, so a 64 px
input still has 8x8 features at the end; same parameters, about 16x the FLOPs of the
standard form at the same resolution. small_input=False builds the standard ImageNet form.
"""

from torch import nn

# (expansion t, output channels c, blocks n, stride of the first block s), from the paper.
SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1,
                  groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = [conv_bn_relu6(cin, hidden, 1)] if expansion != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   # Linear bottleneck: no activation after the projection.
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_shortcut else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, small_input: bool = True):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu6(3, 32, 3, 1 if small_input else 2)]
        cin = 32
        for stage, (t, c, n, s) in enumerate(SETTINGS):
            if small_input and stage == 1:
                s = 1  # small inputs: this and the stem's downsampling are dropped
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(x)


def build_model(num_classes: int, small_input: bool = True) -> nn.Module:
    return MobileNetV2(num_classes, small_input)
