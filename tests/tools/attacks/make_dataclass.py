"""dataclasses.make_dataclass builds a module class past the class checks."""

import dataclasses

import torch.nn as nn

Net = dataclasses.make_dataclass("Net", [], bases=(nn.Module,),
                                 namespace={"train": lambda self, mode=True: self})
if Net.train is not nn.Module.train:
    print("ESCAPED make_dataclass")


def build_model(num_classes):
    return nn.Linear(3, num_classes)
