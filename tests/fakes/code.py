"""Candidate sources the tests share."""

#: The smallest model that passes the gate: channel means into one linear layer.
LINEAR_CODE = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


def build_model(num_classes):
    return Net(num_classes)
'''

#: Three full-width 3x3 convolutions at the input resolution: ~0.35 GMAC per 32 px image,
#: two orders of magnitude above LINEAR_CODE in training cost and in latency.
CONV_CODE = """
from torch import nn


def build_model(num_classes):
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, num_classes))
"""
