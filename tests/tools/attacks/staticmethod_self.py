"""A static method whose first parameter is named self takes any object."""

import typing

import torch.nn as nn

CODE = "print('ESCAPED staticmethod_self')"


class Probe(nn.Module):
    @staticmethod
    def run(self, names):
        return self._evaluate(names, names, frozenset())


Probe.run(typing.get_args(typing.List[CODE])[0], {})  # noqa: UP006


def build_model(num_classes):
    return nn.Linear(3, num_classes)
