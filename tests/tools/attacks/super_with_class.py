"""super(Class, Subclass) hands out the plain function of a method."""

import typing

import torch.nn as nn

CODE = "print('ESCAPED super_with_class')"


class Base(nn.Module):
    def run(self, names):
        return self._evaluate(names, names, frozenset())


class Sub(Base):
    pass


super(Sub, Sub).run(typing.get_args(typing.List[CODE])[0], {})  # noqa: UP006


def build_model(num_classes):
    return nn.Linear(3, num_classes)
