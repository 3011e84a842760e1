"""The code gate: static policy (no execution) and the sandboxed build/shape/budget stages."""

from __future__ import annotations

import random
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.report import Budgets
from tests.fakes.code import CONV_CODE, LINEAR_CODE
from tools.gate import COST_BATCH, gate, gate_job, static_check, train_seconds_per_image

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
        assert report.train_s_per_image is None, name  # no cost probe for a failed model
    report = gate(GOOD, budgets=budgets)
    assert report.ok, report.message
    assert [c.name for c in report.checks] == ["syntax", "policy", "build", "shape", "budget"]
    assert 0 < report.params < 50_000 and report.flops > 0
    # The cost probe ran on the small model: a positive figure, well under the gate's limit.
    assert report.train_s_per_image is not None
    assert 0 < report.train_s_per_image < 60 / COST_BATCH


@pytest.mark.parametrize("name", ["template", "resnet18", "mobilenetv2"])
def test_shipped_candidates_pass(name: str) -> None:
    path = REPO / "tasks" / "candidates" / f"{name}.py"
    assert path.is_file(), f"shipped candidate {path} is missing"  # a missing file fails
    source = path.read_text()
    assert static_check(source).ok, static_check(source).message
    if name == "template":
        report = gate(source, budgets=Budgets(max_params=50_000_000))
        assert report.ok, report.message


# --- issue 9: the training-cost probe that sizes the evaluation's timeout ----------------

def test_cost_probe_separates_a_linear_model_from_a_conv_net() -> None:
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the gate job
    try:
        linear = train_seconds_per_image(LINEAR_CODE, 32, 8)
        conv = train_seconds_per_image(CONV_CODE, 32, 8)
        # Past the time budget, the first step of two images gives the figure.
        quick = train_seconds_per_image(CONV_CODE, 32, 8, budget_s=0.0)
    finally:
        torch.set_num_threads(saved)
    # ~0.35 GMAC per image for the conv net against ~100 for the linear model: two
    # orders of magnitude apart, so a 10x margin holds on a busy machine too.
    assert 0 < linear and conv > 10 * linear, (linear, conv)
    assert quick > 10 * linear, (linear, quick)


def test_probe_failure_is_a_shape_failure_for_the_fixer(tmp_path: Path) -> None:
    # Trains on the gate's batch of 2 but not on more: the recipe's batches would fail.
    code = HEAD + """
class M(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.fc = nn.Linear(3, n)

    def forward(self, x):
        x = x.mean((2, 3))
        if self.training:
            x = x.reshape(2, -1)[:, :3]
        return self.fc(x)


def build_model(num_classes):
    return M(num_classes)
"""
    out = gate_job({"code": code, "image_size": 32, "num_classes": 8, "budgets": {}}, tmp_path)
    assert [(c["name"], c["ok"]) for c in out["checks"]] == [
        ("build", True), ("shape", True), ("budget", True), ("shape", False)]
    assert f"batch of {COST_BATCH} images raised" in out["problem"]
    assert "train_s_per_image" not in out
    ok = gate_job({"code": LINEAR_CODE, "image_size": 32, "num_classes": 8, "budgets": {}},
                  tmp_path)
    assert all(c["ok"] for c in ok["checks"]) and ok["train_s_per_image"] > 0


@pytest.mark.parametrize(("forged", "kept"), [
    (0.01, 0.01), (1e9, 60 / COST_BATCH), (-1.0, None), (0, None), (float("nan"), None),
    (float("inf"), None), ("0.5", None), (True, None), (None, None),
])
def test_cost_figure_from_the_worker_is_not_trusted(monkeypatch, forged, kept) -> None:
    import tools.sandbox
    from tools.sandbox import SandboxResult

    def fake_run_job(kind, payload, **kw):
        checks = [{"name": n, "ok": True} for n in ("build", "shape", "budget")]
        return SandboxResult(ok=True, result={"checks": checks, "params": 10, "flops": 10,
                                              "train_s_per_image": forged})

    monkeypatch.setattr(tools.sandbox, "run_job", fake_run_job)
    report = gate(LINEAR_CODE, budgets=Budgets(), timeout_s=60)
    assert report.ok and report.train_s_per_image == kept


# --- issue 6: code execution past the gate ------------------------------------------------
# Each file under attacks/ is a working exploit of a hole the gate used to pass (see
# test_attack_files_are_live); the gate must now reject it for the reason named here.

ATTACKS = Path(__file__).resolve().parent / "attacks"
ATTACK_REASONS = {
    "forwardref_evaluate": "private attribute '._evaluate' on an object other than self",
    "unbound_method": "'.run' is a method that uses private attributes of self",
    "init_foreign_self": "'.__init__' is called on something other than self",
    "staticmethod_self": "'self._evaluate' is used in a method with a decorator other than",
    "lambda_self": "'self' is bound somewhere other than the first parameter of a method",
    "class_body_capture": "method 'run' is used as a value in the body of class Probe",
    "decorator_capture": "'self._evaluate' is used in a method with a decorator other than",
    "super_with_class": "'super' may only be called as super() (or super(YourClass, self))",
    "match_builtins": "match pattern reads the dunder attribute '__builtins__'",
    "match_private": "match pattern keyword: private attribute '._evaluate'",
    "singledispatch": "'functools.singledispatch' (functools.singledispatch) is not allowed",
    "class_body_named_parameters": "'named_parameters' bound in the body of class Net "
                                   "overrides nn.Module.named_parameters",
    "class_body_train": "'train' bound in the body of class Net overrides nn.Module.train",
    "instance_named_parameters": "assigning '.named_parameters' replaces "
                                 "nn.Module.named_parameters",
    "format_constant": "the field '{0.gi_frame.f_globals}' reads an attribute or an item",
    "format_computed": "'.format' on something other than a string constant",
    "metaclass": "'typing.ABCMeta' is a metaclass",
    "make_dataclass": "'dataclasses.make_dataclass' (dataclasses.make_dataclass) is not allowed",
}


def test_attack_files_are_listed() -> None:
    assert {p.stem for p in ATTACKS.glob("*.py")} == set(ATTACK_REASONS)


@pytest.mark.parametrize("name", sorted(ATTACK_REASONS))
def test_attack_files_rejected(name: str) -> None:
    report = static_check((ATTACKS / f"{name}.py").read_text())
    assert not report.ok
    assert report.checks[-1].name == "policy" and not report.checks[-1].ok
    assert ATTACK_REASONS[name] in report.message, report.message
    line = next(ln for ln in report.message.splitlines() if ATTACK_REASONS[name] in ln)
    assert line.startswith("- line ") and ". Fix: " in line, line  # located, with a fix


def test_attack_files_are_live(tmp_path: Path) -> None:
    """Run unsandboxed (harmless payloads: each prints a marker), the attacks do escape,
    so the rejections above close real holes rather than broken snippets."""
    runner = (
        "import contextlib, io, runpy, sys, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "for path in sys.argv[1:]:\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            runpy.run_path(path, run_name='__main__')\n"
        "        except Exception as e:\n"
        "            print('ERROR', type(e).__name__, e)\n"
        "    print(path, '->', out.getvalue().strip().replace(chr(10), ' | '))\n")
    paths = [str(ATTACKS / f"{name}.py") for name in sorted(ATTACK_REASONS)]
    done = subprocess.run([sys.executable, "-c", runner, *paths], cwd=tmp_path, timeout=300,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    results = dict(line.split(" -> ", 1) for line in done.stdout.splitlines() if " -> " in line)
    for name, path in zip(sorted(ATTACK_REASONS), paths, strict=True):
        assert results.get(path) == f"ESCAPED {name}", (name, results.get(path))


def _method(body: str, cls: str = "class M(nn.Module):\n") -> str:
    return cls + "\n".join("    " + line for line in body.splitlines()) + "\n"


BAD_MORE = {
    # private attributes and the ways of handing a method a foreign self
    "private on computed": ("x = nn.Linear(2, 2)._conv_forward\n", "private attribute"),
    "private on cls": ("class M(nn.Module):\n    @classmethod\n    def f(cls):\n"
                       "        return cls._x\n", "private attribute '._x' on an object"),
    "private outside method": ("def f(m):\n    return m._x\n", "private attribute '._x'"),
    "self at module level": ("self = nn.Linear(2, 2)\nw = self._x\n",
                             "'self' is bound somewhere other than"),
    "self helper function": ("def helper(self):\n    return self._x\n",
                             "'self' is bound somewhere other than"),
    "nested self param": (_method("def f(self):\n    def g(self):\n        return self._x\n"
                                  "    return g"), "'self' is bound somewhere other than"),
    "self loop target": (_method("def f(self, xs):\n    for self in xs:\n        pass"),
                         "'self' is bound somewhere other than"),
    "self via global": (_method("def f(self):\n    global self"),
                        "'self' is bound somewhere other than"),
    "rebind super": ("super = print\n", "the builtin 'super' is rebound"),
    "rebind property": ("property = print\n", "the builtin 'property' is rebound"),
    "rebind import": ("nn = None\n", "the imported name 'nn' is rebound"),
    "import name twice": ("if 1:\n    from typing import Any as nn\n",
                          "'nn' is imported as two different things"),
    "shadow import by param": ("def f(F):\n    return F\n", "the imported name 'F' is rebound"),
    "tainted call on instance": (_method("def run(self):\n    return self._x") +
                                 "m = M()\nm.run()\n", "'.run' is a method that uses private"),
    "tainted through caller": (_method("def run(self):\n    return self._x\n"
                                       "def outer(self):\n    return self.run()") +
                               "M.outer(nn.Linear)\n", "'.outer' is a method that uses private"),
    "tainted via fget": (_method("@property\ndef p(self):\n    return self._x") +
                         "g = M.p.fget\n", "'.fget' (frame/code introspection)"),
    "super in nested function": (_method("def f(self):\n    return lambda: super().f()"),
                                 "'super' may only be called as super()"),
    "super in classmethod": (_method("@classmethod\ndef f(cls):\n    return super().g"),
                             "'super' may only be called as super()"),
    "super as value": (_method("def f(self):\n    s = super\n    return s"),
                       "'super' may only be called as super()"),
    "lru_cache method": ("import functools\n" + _method(
        "@functools.lru_cache\ndef f(self):\n    return self._x"),
        "'self._x' is used in a method with a decorator other than"),
    "module private on self": (_method("def f(self):\n    return self._apply(print)"),
                               "'._apply' touches nn.Module/tensor internals"),
    "module call path on self": (_method("def __init__(self):\n    super().__init__()\n"
                                         "    self._call_impl = print"),
                                 "'._call_impl' touches nn.Module/tensor internals"),
    "init on other": (_method("def __init__(self):\n    super().__init__()") +
                      "M.__init__(nn.Linear(2, 2))\n", "'.__init__' is called on something"),
    # match class patterns
    "match dunder class": ("match 1:\n    case int(__class__=k):\n        pass\n",
                           "match pattern reads the dunder attribute '__class__'"),
    "match introspection": ("def g():\n    yield 1\nmatch g():\n    case object(gi_frame=f):\n"
                            "        pass\n", "'.gi_frame' (frame/code introspection)"),
    "match private local": (_method("pass") + "match M():\n    case M(_modules=m):\n"
                            "        pass\n", "'._modules' touches nn.Module"),
    "match unknown class": ("K = nn.Linear\nmatch 1:\n    case K():\n        pass\n",
                            "match class pattern on 'K'"),
    "match library positional": ("match 1:\n    case nn.Conv2d(w):\n        pass\n",
                                 "positional sub-patterns on library class 'nn.Conv2d'"),
    # string type hints and forward references
    "string hint": ("def f(x: 'int') -> None:\n    pass\n", "string type hint 'int'"),
    "string return hint": ("def f(x) -> 'int':\n    pass\n", "string type hint 'int'"),
    "string variable hint": ("x: 'int' = 1\n", "string type hint 'int'"),
    "string in subscripted hint": ("def f(x: list['M']):\n    pass\n", "string type hint 'M'"),
    "string in typing subscript": ("import typing\nT = typing.Optional['M']\n",
                                   "string 'M' in a typing subscript"),
    "ForwardRef": ("import typing\nr = typing.ForwardRef('x')\n", "typing.ForwardRef"),
    "get_device_module": ("m = torch.get_device_module('cuda')\n", "torch.get_device_module"),
    "super other object": (_method("def f(self, other):\n    return super(M, other).f()"),
                           "'super' may only be called as super()"),
    "super non-local class": (_method("def f(self):\n    return super(nn.Linear, self).f()"),
                              "'super' may only be called as super()"),
    "get_type_hints": ("import typing\nh = typing.get_type_hints(build_model)\n",
                       "typing.get_type_hints"),
    "singledispatchmethod": ("from functools import singledispatchmethod\n",
                             "functools.singledispatchmethod"),
    # class-body bindings of nn.Module names (any binding form) and instance stores
    "class body annotated": (_method("train: bool = True"), "overrides nn.Module.train"),
    "class body augmented": (_method("eval = 1\neval += 1"), "overrides nn.Module.eval"),
    "class body tuple": (_method("a, parameters = 1, 2"), "overrides nn.Module.parameters"),
    "class body del": (_method("state_dict = 1\ndel state_dict"),
                       "overrides nn.Module.state_dict"),
    "class body for": (_method("for apply in range(2):\n    pass"), "overrides nn.Module.apply"),
    "class body with": (_method("with torch.no_grad() as cuda:\n    pass"),
                        "overrides nn.Module.cuda"),
    "class body walrus": (_method("x = (modules := 1)"), "overrides nn.Module.modules"),
    "class body import as": (_method("from math import sqrt as children"),
                             "overrides nn.Module.children"),
    "class body nested class": (_method("class buffers:\n    pass"),
                                "overrides nn.Module.buffers"),
    "class body except as": (_method("try:\n    pass\nexcept ValueError as zero_grad:\n"
                                     "    pass"), "overrides nn.Module.zero_grad"),
    "class body match capture": (_method("match 1:\n    case to:\n        pass"),
                                 "overrides nn.Module.to"),
    "class body default walrus": (_method("def f(self, x=(half := 2)):\n    return x"),
                                  "overrides nn.Module.half"),
    "class body private": (_method("_call_impl = print"), "overrides nn.Module._call_impl"),
    "class body mixin": ("class Mixin:\n    named_parameters = print\n\n\n"
                         "class M(Mixin, nn.Module):\n    pass\n",
                         "overrides nn.Module.named_parameters"),
    "instance store on other": ("def f(m):\n    m.train = print\n",
                                "assigning '.train' replaces nn.Module.train"),
    "instance forward": (_method("def __init__(self):\n    super().__init__()\n"
                                 "    self.forward = print"), "replaces nn.Module.forward"),
    # format strings
    "format index": ("s = '{0[0]}'.format([1])\n", "reads an attribute or an item"),
    "format nested spec": ("s = '{:{0.real}}'.format(1)\n", "the field '{0.real}'"),
    "format_map attribute": ("s = '{x.real}'.format_map({'x': 1})\n", "the field '{x.real}'"),
    "str.format": ("s = str.format('{0.real}', 1)\n", "'.format' on something other than"),
    "format from f-string": ("a = 1\ns = f'{a}'.format(2)\n", "'.format' on something other"),
    "format as value": ("fmt = '{0.real}'.format\n", "the field '{0.real}'"),
    "malformed format": ("s = '{0'.format(1)\n", "not a valid format string"),
    # other ways to classes, attributes by name and files
    "NamedTupleMeta": ("import typing\nK = typing.NamedTupleMeta\n", "is a metaclass"),
    "import metaclass": ("from typing import ABCMeta\n", "is a metaclass"),
    "get_origin": ("import typing\nT = typing.get_origin(typing.Type[int])\n",
                   "typing.get_origin"),
    "type_before_parametrizations": (
        "T = nn.utils.parametrize.type_before_parametrizations(nn.Linear)\n",
        "type_before_parametrizations"),
    "operator.attrgetter": ("import typing\ng = typing.operator.attrgetter('real')\n",
                            "module operator"),
    "type via __class__": ("K = (1).__class__.__class__\n", "'.__class__'"),
    "storage type import": ("s = torch.zeros(1).storage().type('math')\n", "'.storage'"),
    "share_memory_": ("t = torch.zeros(1).share_memory_()\n", "'.share_memory_'"),
    "__all__ in function": ("def f():\n    __all__ = ['x']\n", "name '__all__' is not allowed"),
    "__all__ computed": ("__all__ = [str(1)]\n", "name '__all__' is not allowed"),
    "__all__ read": ("__all__ = ['M']\nx = __all__\n", "name '__all__' is not allowed"),
}


@pytest.mark.parametrize("name", sorted(BAD_MORE))
def test_static_check_rejects_more(name: str) -> None:
    snippet, expected = BAD_MORE[name]
    report = static_check(HEAD + snippet + TAIL)
    assert not report.ok
    assert expected in report.message, report.message


GOOD_MORE = {
    "__all__": "__all__ = ['build_model']\n",
    "__all__ tuple annotated": "__all__: tuple[str, ...] = ('build_model',)\n",
    "namedtuple": "import collections\nP = collections.namedtuple('P', 'a b')\n",
    "Literal hint": "import typing\ndef f(x: typing.Literal['a', 'b']) -> None:\n    pass\n",
    "config field named train": "from dataclasses import dataclass\n\n\n@dataclass\n"
                                "class Cfg:\n    train: bool = True\n",
    "set training": _method("def __init__(self):\n    super().__init__()\n"
                            "    self.training = False"),
    "match torch class": "def f(m):\n    match m:\n        case nn.Conv2d(stride=s):\n"
                         "            return s\n        case int(n) | str(n):\n"
                         "            return n\n",
    "plain format": "s = '{} {name}'.format(1, name=2) + '{0:>{1}}'.format(3, 4)\n",
    "private own helper": _method("def __init__(self):\n    super().__init__()\n"
                                  "    self._w = 2\n    self._setup()\n"
                                  "def _setup(self):\n    return self._w\n"
                                  "@property\ndef w(self):\n    return self._w\n"
                                  "@torch.no_grad()\ndef g(self):\n    return self._setup()"),
    "explicit base init": _method("def __init__(self):\n    nn.Module.__init__(self)\n"
                                  "    self._x = 1") +
                          _method("def __init__(self):\n    M.__init__(self)\n"
                                  "    self._y = 2", "class N(M):\n"),
    "two-argument super": _method("def __init__(self):\n    super(M, self).__init__()\n"
                                  "    self._x = 1"),
    "library method through class": "y = nn.Linear.forward(nn.Linear(2, 2), torch.ones(2))\n",
}


@pytest.mark.parametrize("name", sorted(GOOD_MORE))
def test_static_check_accepts_more(name: str) -> None:
    report = static_check(HEAD + GOOD_MORE[name] + TAIL)
    assert report.ok, report.message


def test_good_model_fixture_passes_and_runs() -> None:
    """Ordinary model code (residual, attention, depthwise, SE, dataclass, NamedTuple,
    __all__, real type hints, f-strings) passes the gate and really works."""
    path = Path(__file__).resolve().parent / "good_model.py"
    report = static_check(path.read_text())
    assert report.ok, report.message
    import torch

    namespace = runpy.run_path(str(path))
    model = namespace["build_model"](8)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 8)
    assert "heads=4" in repr(model.attn) and model.stats().depth == 4


def test_every_shipped_candidate_passes_static_check() -> None:
    paths = sorted((REPO / "tasks" / "candidates").glob("*.py"))
    assert paths
    for path in paths:
        report = static_check(path.read_text())
        assert report.ok, (path.name, report.message)


def test_rendered_genomes_pass_static_check() -> None:
    from tasks.genome import TEMPLATE_GENOME, render
    from tasks.mutations import MUTATIONS

    genomes = [TEMPLATE_GENOME]
    genomes += [move(TEMPLATE_GENOME, random.Random(0)) for move in MUTATIONS.values()]
    for seed in range(4):  # random walks reach combinations single moves do not
        rng, genome = random.Random(seed), TEMPLATE_GENOME
        for _ in range(8):
            genome = MUTATIONS[rng.choice(sorted(MUTATIONS))](genome, rng)
            genomes.append(genome)
    sources = {render(g) for g in genomes}
    assert len(sources) > 20
    blocks = {s.block for g in genomes for s in g.stages}
    assert blocks == {"plain", "residual", "dwsep", "inverted_residual"}
    for source in sources:
        report = static_check(source)
        assert report.ok, report.message


def test_namedtuple_field_string_is_not_code() -> None:
    """collections.namedtuple stays allowed: in this Python it only evals code built from
    field names that it first checks to be identifiers, so a field string cannot inject."""
    import collections

    with pytest.raises(ValueError, match="identifiers"):
        collections.namedtuple("P", "a, print(1)")
    with pytest.raises(ValueError, match="underscore"):
        collections.namedtuple("P", ["_evaluate"])
