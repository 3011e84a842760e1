"""A match class pattern reads a private attribute by name."""

import typing

import torch.nn as nn

CODE = "print('ESCAPED match_private')"

match typing.get_args(typing.List[CODE])[0]:  # noqa: UP006
    case object(_evaluate=evaluate):
        evaluate({}, {}, frozenset())


def build_model(num_classes):
    return nn.Linear(3, num_classes)
