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
