"""__init__ called through the class with a foreign object as self."""

import typing

import torch.nn as nn

CODE = "print('ESCAPED init_foreign_self')"


class Probe(nn.Module):
    def __init__(self, names):
        self._evaluate(names, names, frozenset())


Probe.__init__(typing.get_args(typing.List[CODE])[0], {})  # noqa: UP006


def build_model(num_classes):
    return nn.Linear(3, num_classes)
