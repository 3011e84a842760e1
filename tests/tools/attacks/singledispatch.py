"""functools.singledispatch evaluates a string type hint as code."""

import functools

import torch.nn as nn


@functools.singledispatch
def describe(x):
    return x


@describe.register
def _(x: "print('ESCAPED singledispatch') or int"):
    return x


def build_model(num_classes):
    return nn.Linear(3, num_classes)
