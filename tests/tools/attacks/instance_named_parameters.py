"""An instance attribute shadows named_parameters."""

import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)
        self.named_parameters = self.named_buffers

    def forward(self, x):
        return self.fc(x)


def build_model(num_classes):
    return Net(num_classes)


if __name__ == "__main__":
    model = build_model(8)
    if not list(model.named_parameters()) and model.state_dict():
        print("ESCAPED instance_named_parameters")
