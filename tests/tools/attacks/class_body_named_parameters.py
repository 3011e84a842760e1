"""The class body replaces named_parameters: the parameter count reads 0."""

import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc(x)

    named_parameters = nn.Module.named_buffers


def build_model(num_classes):
    return Net(num_classes)


if __name__ == "__main__":
    model = build_model(8)
    if not list(model.named_parameters()) and model.state_dict():
        print("ESCAPED class_body_named_parameters")
