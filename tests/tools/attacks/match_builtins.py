"""A match class pattern reads a dunder attribute by name."""

import torch.nn as nn


def probe():
    return None


match probe:
    case object(__builtins__=names):
        names["print"]("ESCAPED match_builtins")


def build_model(num_classes):
    return nn.Linear(3, num_classes)
