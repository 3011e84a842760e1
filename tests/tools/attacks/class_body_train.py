"""The class body replaces train: eval() leaves the model in training mode."""

import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc(x)

    train = lambda self, mode=True: self  # noqa: E731


def build_model(num_classes):
    return Net(num_classes)


if __name__ == "__main__":
    if build_model(8).eval().training:
        print("ESCAPED class_body_train")
