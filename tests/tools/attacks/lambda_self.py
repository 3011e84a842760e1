"""A lambda whose parameter is named self."""

import typing

import torch.nn as nn

CODE = "print('ESCAPED lambda_self')"
peek = lambda self, names: self._evaluate(names, names, frozenset())  # noqa: E731
peek(typing.get_args(typing.List[CODE])[0], {})  # noqa: UP006


def build_model(num_classes):
    return nn.Linear(3, num_classes)
