"""A metaclass reached through typing builds a module class past the class checks."""

import typing

import torch.nn as nn

Net = typing.ABCMeta("Net", (nn.Module,), {"named_parameters": nn.Module.named_buffers})
if Net.named_parameters is nn.Module.named_buffers:
    print("ESCAPED metaclass")


def build_model(num_classes):
    return nn.Linear(3, num_classes)
