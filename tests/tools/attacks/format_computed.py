"""A computed format string reads a function's globals."""

import torch.nn as nn


def probe():
    return None


template = "{0." + "_" * 2 + "globals" + "_" * 2 + "}"
if "probe" in template.format(probe):
    print("ESCAPED format_computed")


def build_model(num_classes):
    return nn.Linear(3, num_classes)
