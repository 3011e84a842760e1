"""A typing forward reference's private evaluator runs a string as code."""

import typing

import torch.nn as nn

CODE = "print('ESCAPED forwardref_evaluate')"
ref = typing.get_args(typing.List[CODE])[0]  # noqa: UP006
ref._evaluate({}, {}, frozenset())


def build_model(num_classes):
    return nn.Linear(3, num_classes)
