"""What the gate's static policy allows: import lists, denied objects and attribute names.

The data behind :mod:`tools.policy` (docs/security.md, the gate): which modules candidate
code may import or reach, which library objects are denied and why (with the fix the
Code-Fixer is told), and the lookups that resolve a dotted name to the real object so
rules compare by identity, not by spelling.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import string
from typing import Any

ALLOWED_IMPORTS = ("torch", "torch.nn", "torch.nn.functional", "math", "typing", "collections",
                   "functools", "dataclasses")
# Modules that may be reached as attributes (never imported directly).
REACHABLE = frozenset(ALLOWED_IMPORTS) | {
    "torch.nn.init", "torch.nn.utils", "torch.nn.utils.parametrize",
    "torch.nn.utils.parametrizations", "torch.linalg", "torch.fft", "torch.special",
    "collections.abc"}
MODULE_REASONS = {
    "torch.hub": "it downloads and runs code", "torch.jit": "it loads and saves TorchScript files",
    "torch.ops": "it loads native libraries (torch.ops.load_library)",
    "torch.utils": "it holds cpp_extension (compiles native code), data loaders and file I/O",
    "torch.library": "it registers native operators", "torch.classes": "it loads native classes",
    "torch.backends": "it changes global backend settings of the evaluator",
    "torch.distributed": "it opens sockets and processes",
    "torch.multiprocessing": "it starts processes",
    "torch.autograd": "it installs global autograd hooks",
    "torch.overrides": "it intercepts the evaluator's torch calls",
    "torch.serialization": "it reads and writes files",
    "torch.storage": "it maps files into memory", "torch.package": "it reads and writes files",
    "torch.random": "it changes the global random state",
    "torch.cuda": "it changes device state", "torch.compiler": "it compiles code and writes caches",
    "torch.nn.modules": "it holds global module hooks (register_module_forward_hook)"}
DENIED = {
    "torch.save": "writes files", "torch.load": "reads files and unpickles objects",
    "torch.from_file": "reads files", "torch.compile": "compiles code and writes caches",
    "torch.manual_seed": "changes the evaluator's global random state",
    "torch.seed": "changes the evaluator's global random state",
    "torch.use_deterministic_algorithms": "changes global torch settings",
    "torch.init_num_threads": "changes global threading", "torch.fork": "starts async work",
    "torch.wait": "waits on async work", "torch.get_file_path": "touches files",
    "torch.import_ir_module": "loads TorchScript files",
    "torch.import_ir_module_from_buffer": "loads TorchScript code",
    "typing.get_type_hints": "evaluates strings as code",
    "typing.ForwardRef": "evaluates strings as code",
    "functools.update_wrapper": "copies attributes onto other objects (monkeypatching)",
    "functools.wraps": "copies attributes onto other objects (monkeypatching)",
    # register() reads the first parameter's type hint through typing.get_type_hints
    "functools.singledispatch": "evaluates string type hints as code",
    "functools.singledispatchmethod": "evaluates string type hints as code",
    "dataclasses.make_dataclass": "builds classes from a namespace dict, past the class checks",
    # both hand out `type` itself, which builds classes past the class checks
    "torch.get_device_module": "hands out device modules (torch.cuda ...) as values",
    "typing.get_origin": "returns the class behind a type hint (typing.Type[...] gives type)",
    "torch.nn.utils.parametrize.type_before_parametrizations": "returns type(x), i.e. type "
                                                               "itself for a class"}
DENIED_FIX = {
    "typing.get_type_hints": "remove it; write the types themselves",
    "typing.ForwardRef": "remove it; write the types themselves",
    "functools.singledispatch": "dispatch with isinstance checks in a plain function",
    "functools.singledispatchmethod": "dispatch with isinstance checks in a plain method",
    "dataclasses.make_dataclass": "write a class statement (with @dataclass if needed)"}
DECORATOR_ONLY = {"dataclasses.dataclass"}  # called on a torch class it rewrites that class
FORBIDDEN_NAMES = frozenset({
    "exec", "eval", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals",
    "locals", "vars", "input", "breakpoint", "memoryview", "type", "exit", "quit", "help",
    "license", "credits", "copyright"})
INTROSPECTION = frozenset({
    "f_back", "f_builtins", "f_code", "f_globals", "f_locals", "f_trace", "gi_frame", "gi_code",
    "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code", "ag_await",
    "tb_frame", "tb_next", "co_code", "co_consts", "co_names", "mro",
    "fget", "fset", "fdel"})  # a property's functions, callable with any object as self
IO_ATTRS = frozenset({"save", "load", "from_file", "tofile", "fromfile", "dump", "load_library",
                       "numpy", "ctypes", "untyped_storage",
                       # storage().type("pkg.mod") imports by name; shared memory starts
                       # libshm's manager process and leaves sockets behind
                       "storage", "share_memory", "share_memory_"})
MODULE_INTERNALS = frozenset({
    "_parameters", "_buffers", "_modules", "_forward_hooks", "_forward_pre_hooks",
    "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks", "_non_persistent_buffers_set",
    "_version", "_cdata", "_base", "_grad_fn"})
HOOK_PREFIXES = ("register_module_", "register_state_dict", "register_load_state_dict",
                  "_register_")
ALLOWED_DUNDER_DEFS = frozenset({"__init__", "__post_init__", "__repr__", "__str__", "__len__",
                                 "__getitem__", "__iter__", "__contains__"})
OVERRIDABLE = frozenset({"forward", "extra_repr", "reset_parameters"})
ALLOWED_MSG = ", ".join(ALLOWED_IMPORTS)
FORMAT_METHODS = frozenset({"format", "format_map"})
# Builtin classes a match class pattern may name (they match the subject itself).
MATCH_BUILTINS = frozenset({"bool", "bytearray", "bytes", "dict", "float", "frozenset", "int",
                             "list", "set", "str", "tuple"})
# Names the private-attribute rule relies on: rebinding them would fake 'self' or 'super()'.
RESERVED = frozenset({"self", "super", "property"})
# Decorators a method using private attributes of self may carry (none keeps the function).
SAFE_METHOD_DECORATORS = ("torch.no_grad", "torch.enable_grad", "torch.inference_mode")


def resolve_dotted(dotted: str) -> tuple[list[Any], bool]:
    """Objects along ``dotted`` (root module first); False if a step does not exist."""
    parts = dotted.split(".")
    try:
        obj: Any = importlib.import_module(parts[0])
    except ImportError:
        return [], False
    objs = [obj]
    for part in parts[1:]:
        try:
            obj = getattr(obj, part)
        except Exception:  # noqa: BLE001 - a missing attribute fails at build time instead
            return objs, False
        objs.append(obj)
    return objs, True


def denied_ids() -> dict[int, tuple[str, str]]:
    """Map ``id`` of each denied object to (its dotted name, why it is denied)."""
    out: dict[int, tuple[str, str]] = {}
    for dotted, why in list(DENIED.items()) + [(d, "") for d in DECORATOR_ONLY]:
        objs, ok = resolve_dotted(dotted)
        if ok:
            out[id(objs[-1])] = (dotted, why)
    # The forbidden builtins stay forbidden when some module re-exports them.
    for name in FORBIDDEN_NAMES:
        if hasattr(builtins, name):
            out.setdefault(id(getattr(builtins, name)),
                           (f"builtins.{name}", "is a forbidden builtin"))
    return out


@functools.lru_cache(maxsize=1)
def safe_decorator_ids() -> frozenset[int]:
    """Ids of the decorators a method reaching private attributes of self may carry."""
    resolved = [resolve_dotted(d) for d in SAFE_METHOD_DECORATORS]
    return frozenset(id(objs[-1]) for objs, ok in resolved if ok)


def is_dunder(name: str) -> bool:
    """Tell whether ``name`` is a dunder name (``__x__``)."""
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def is_private(name: str) -> bool:
    """Tell whether ``name`` is private: a leading underscore, not a dunder."""
    return name.startswith("_") and not is_dunder(name)


@functools.lru_cache(maxsize=1)
def module_names() -> tuple[frozenset[str], frozenset[str]]:
    """Non-dunder names of nn.Module and of its instances, and the private ones among them."""
    import torch.nn as nn

    names = {n for n in dir(nn.Module) if not is_dunder(n)} | set(vars(nn.Module()))
    return frozenset(names), frozenset(n for n in names if n.startswith("_"))



def format_problem(text: str) -> str | None:
    """Why a ``str.format`` template is unsafe (attribute / index fields), or None."""
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError as e:
        return f"it is not a valid format string ({e})"
    for _literal, field, spec, _conversion in fields:
        if field is not None and ("." in field or "[" in field):
            return f"the field '{{{field}}}' reads an attribute or an item"
        if spec and (problem := format_problem(spec)):  # nested fields: "{0:{1.x}}"
            return problem
    return None
