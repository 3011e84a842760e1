"""A method called through its class runs with a foreign object as self."""

import typing

import torch.nn as nn

CODE = "print('ESCAPED unbound_method')"


class Probe(nn.Module):
    def run(self, names):
        return self._evaluate(names, names, frozenset())


Probe.run(typing.get_args(typing.List[CODE])[0], {})  # noqa: UP006


def build_model(num_classes):
    return nn.Linear(3, num_classes)
