"""The code gate: static policy (no execution) and the sandboxed build/shape/budget stages."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.report import Budgets
from tools.gate import gate, static_check

REPO = Path(__file__).resolve().parents[2]
HEAD = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
TAIL = "\ndef build_model(num_classes):\n    return nn.Linear(3, num_classes)\n"

GOOD = HEAD + '''
from dataclasses import dataclass


@dataclass
class Cfg:
    width: int = 8


class SE(nn.Module):
    """Squeeze-and-excitation; mentions __init__ in a docstring on purpose."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c, max(c // 4, 1))
        self.fc2 = nn.Linear(max(c // 4, 1), c)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))[:, :, None, None]


class Block(nn.Module):
    def __init__(self, c):
        nn.Module.__init__(self)
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.se = SE(c)

    def forward(self, x):
        return x + self.se(F.relu(self.bn(self.conv(x))))


class Net(nn.Module):
    def __init__(self, num_classes, cfg=Cfg()):
        super().__init__()
        self.stem = nn.Conv2d(3, cfg.width, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(*[Block(cfg.width) for _ in range(2)])
        self.head = nn.Linear(cfg.width, num_classes)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        x = self.blocks(F.relu(self.stem(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build_model(num_classes: int) -> nn.Module:
    return Net(num_classes)


if __name__ == "__main__":
    print(build_model(8))
'''

BAD = {
    "import os": ("import os\n", "import of 'os'"),
    "import subprocess": ("import subprocess\n", "import of 'subprocess'"),
    "from socket": ("from socket import socket\n", "import from 'socket'"),
    "import sys": ("import sys\n", "import of 'sys'"),
    "import importlib": ("import importlib\n", "import of 'importlib'"),
    "import ctypes": ("import ctypes\n", "import of 'ctypes'"),
    "import pickle": ("import pickle\n", "import of 'pickle'"),
    "open": ("x = open('/etc/passwd')\n", "'open' is not allowed"),
    "eval": ("eval('1')\n", "'eval' is not allowed"),
    "exec": ("exec('1')\n", "'exec' is not allowed"),
    "__import__": ("__import__('os')\n", "'__import__' is not allowed"),
    "getattr": ("g = getattr(nn, 'Linear')\n", "'getattr' is not allowed"),
    "dunder chain": ("b = ().__class__.__bases__\n", "'.__class__'"),
    "__subclasses__": ("s = object.__subclasses__()\n", "'.__subclasses__'"),
    "torch.save": ("torch.save({}, '/tmp/x')\n", "torch.save"),
    "torch.load": ("m = torch.load('/tmp/x')\n", "torch.load"),
    "torch.hub.load": ("m = torch.hub.load('a', 'b')\n", "module torch.hub"),
    "load_library": ("torch.ops.load_library('x.so')\n", "module torch.ops"),
    "cpp_extension": ("import torch.utils.cpp_extension\n", "torch.utils.cpp_extension"),
    "cpp_extension attr": ("torch.utils.cpp_extension.load('x', [])\n", "module torch.utils"),
    "torch._C": ("torch._C._set_grad_enabled(False)\n", "private attribute"),
    "patch cross_entropy": ("torch.nn.functional.cross_entropy = lambda *a: 0\n", "monkeypatching"),
    "patch Module.train": ("nn.Module.train = lambda self, m=True: self\n", "monkeypatching"),
    "patch F.relu": ("F.relu = torch.sigmoid\n", "monkeypatching"),
    "patch via alias": ("C = nn.Conv2d\nC.forward = None\n", "monkeypatching"),
    "torch.os": ("torch.os.system('ls')\n", "module os"),
    "F.torch.save": ("F.torch.save({}, 'x')\n", "(torch.save)"),
    "typing.sys": ("import typing\nm = typing.sys.modules\n", "module sys"),
    "module as value": ("t = torch\n", "used as a value"),
    "manual_seed": ("torch.manual_seed(0)\n", "random state"),
    "set_num_threads": ("torch.set_num_threads(8)\n", "global state"),
    "frame walk": ("def g():\n    yield 1\nx = g().gi_frame.f_back\n", "introspection"),
    "format string": ("s = '{0.__class__}'.format(1)\n", "string containing '__'"),
    "update_wrapper": ("import functools\nfunctools.update_wrapper(nn.Linear, print)\n",
                       "monkeypatching"),
    "dataclass call": ("import dataclasses\ndataclasses.dataclass(nn.Linear)\n", "decorator"),
    "tensor subclass": ("class T(torch.Tensor):\n    pass\n", "base class"),
    "override parameters": ("class M(nn.Module):\n    def parameters(self, recurse=True):\n"
                            "        return iter([])\n", "overrides nn.Module.parameters"),
    "__torch_function__": ("class M(nn.Module):\n    def __torch_function__(self, *a):\n"
                           "        return 0\n", "'__torch_function__'"),
    "numpy tofile": ("torch.zeros(2).numpy().tofile('/tmp/x')\n", "'.tofile'"),
    "hide parameters": ("class M(nn.Module):\n    def forward(self, x):\n"
                        "        self._parameters.clear()\n        return x\n", "internals"),
    "global hook": ("nn.modules.module.register_module_forward_hook(print)\n", "global"),
    "from_file": ("s = torch.UntypedStorage.from_file('x', False, 10)\n", "'.from_file'"),
    "type": ("K = type('K', (), {})\n", "'type' is not allowed"),
    "__builtins__": ("b = __builtins__\n", "'__builtins__'"),
    "autograd.Function": ("class A(torch.autograd.Function):\n    pass\n", "torch.autograd"),
    "compile": ("f = torch.compile(print)\n", "torch.compile"),
    "star import": ("from torch import *\n", "star imports"),
    "from torch import save": ("from torch import save\n", "torch.save"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_static_check_rejects(name: str) -> None:
    snippet, expected = BAD[name]
    report = static_check(HEAD + snippet + TAIL)
    assert not report.ok
    assert report.checks[-1].name == "policy" and not report.checks[-1].ok
    assert expected in report.message, report.message
    assert "line 4" in report.message or "line 5" in report.message or "line 6" in report.message


def test_static_check_accepts_good_cnn() -> None:
    report = static_check(GOOD)
    assert report.ok, report.message
    assert [c.name for c in report.checks] == ["syntax", "policy"]


def test_missing_build_model_and_syntax_error() -> None:
    report = static_check(HEAD + "x = 1\n")
    assert not report.ok and "build_model" in report.message
    report = static_check(HEAD + "def build_model(n):\n    return nn.Linear(3,\n")
    assert not report.ok and report.checks[0].name == "syntax"
    assert "line 5" in report.message


def test_size_cap() -> None:
    report = static_check(GOOD + "#" * 70_000 + "\n")
    assert not report.ok and "limit" in report.message


def _dynamic_cases() -> dict[str, tuple[str, str, str]]:
    def model(forward: str, extra: str = "") -> str:
        return HEAD + f"""
class M(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, n){extra}

    def forward(self, x):
{forward}

def build_model(num_classes):
    return M(num_classes)
"""
    pooled = "        return self.fc(F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1))"
    return {
        "wrong shape": (model("        return self.conv(x).flatten(1)"), "shape",
                        "expected (2, 8)"),
        "nan": (model(pooled + " * float('nan')"), "shape", "NaN"),
        "not a module": (HEAD + "def build_model(num_classes):\n    return 3\n", "build",
                         "not a torch.nn.Module"),
        "raises": (HEAD + "def build_model(num_classes):\n    return nn.Linear(3)\n", "build",
                   "line 5: `return nn.Linear(3)`"),
        "over budget": (model(pooled, "\n        self.big = nn.Linear(300, 300)"), "budget",
                        "parameters"),
        "hidden weights": (model("        return self.fc(F.adaptive_avg_pool2d(self.conv(x), 1)"
                                 ".flatten(1) * self.w)",
                                 "\n        self.w = torch.ones(4, requires_grad=True)"),
                           "budget", "not registered parameters"),
    }


def test_gate_dynamic_failures_and_success() -> None:
    budgets = Budgets(max_params=50_000)
    for name, (source, stage, text) in _dynamic_cases().items():
        report = gate(source, budgets=budgets, timeout_s=60)
        assert not report.ok, name
        failed = [c for c in report.checks if not c.ok]
        assert failed[0].name == stage, (name, report.checks)
        assert text in report.message, (name, report.message)
        assert "audit-hook" in report.isolation
    report = gate(GOOD, budgets=budgets)
    assert report.ok, report.message
    assert [c.name for c in report.checks] == ["syntax", "policy", "build", "shape", "budget"]
    assert 0 < report.params < 50_000 and report.flops > 0


@pytest.mark.parametrize("name", ["template", "resnet18", "mobilenetv2"])
def test_shipped_candidates_pass(name: str) -> None:
    path = REPO / "tasks" / "candidates" / f"{name}.py"
    if not path.exists():
        pytest.skip(f"{path} not written yet")
    source = path.read_text()
    assert static_check(source).ok, static_check(source).message
    if name == "template":
        report = gate(source, budgets=Budgets(max_params=50_000_000))
        assert report.ok, report.message
