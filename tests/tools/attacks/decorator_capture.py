"""A decorator that keeps the undecorated method, then calls it with a foreign self."""

import typing

import torch.nn as nn

CODE = "print('ESCAPED decorator_capture')"
captured = []


class Probe(nn.Module):
    @captured.append
    def run(self, names):
        return self._evaluate(names, names, frozenset())


captured[0](typing.get_args(typing.List[CODE])[0], {})  # noqa: UP006


def build_model(num_classes):
    return nn.Linear(3, num_classes)
