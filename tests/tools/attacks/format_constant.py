"""A constant format string walks from a generator into the module's globals."""

import torch.nn as nn


def numbers():
    yield 1


leak = "{0.gi_frame.f_globals}".format(numbers())  # noqa: UP030, UP032
if "build_model" in leak or "numbers" in leak:
    print("ESCAPED format_constant")


def build_model(num_classes):
    return nn.Linear(3, num_classes)
