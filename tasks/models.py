"""Candidate-form sources of the Template and the reference baselines.

The files under `tasks/candidates/` are read as text and go through the same gate and
sandboxed worker as any designed candidate; the product never imports them. Only tests
and trusted tooling build them in-process with `build_from_source`.
"""

from __future__ import annotations

from importlib import resources

from torch import nn

BASELINES = ("resnet18", "mobilenetv2")


def _read(name: str) -> str:
    return (resources.files("tasks") / "candidates" / f"{name}.py").read_text(encoding="utf-8")


def template_source() -> str:
    """Return the Template's candidate source (equal to `render(TEMPLATE_GENOME)`)."""
    return _read("template")


def baseline_sources() -> dict[str, str]:
    """Return the reference baselines' candidate sources by name (resnet18, mobilenetv2).

    Their `build_model(num_classes, small_input=True)` builds the form adapted to inputs of
    96 px or less; `small_input=False` builds the standard ImageNet form.
    """
    return {name: _read(name) for name in BASELINES}


def build_from_source(source: str, num_classes: int, **kwargs: object) -> nn.Module:
    """Execute trusted candidate source in a fresh namespace and build its model.

    Only for our own sources (tests, tooling): untrusted code goes through
    `tools.gate` and the sandboxed worker instead.

    Args:
        source: Module source defining `build_model(num_classes, ...)`.
        num_classes: Number of output logits.
        **kwargs: Extra keyword arguments for `build_model` (e.g. `small_input=False`).

    Returns:
        The built model.
    """
    namespace: dict[str, object] = {"__name__": "flnas_candidate"}
    exec(compile(source, "<candidate>", "exec"), namespace)  # trusted code only, see above
    build = namespace.get("build_model")
    if not callable(build):
        raise ValueError("candidate source defines no build_model function")
    return build(num_classes, **kwargs)
