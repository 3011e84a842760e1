"""Load, build and check candidate model code (a module source defining ``build_model``).

Only the worker process calls these, after the static gate accepted the source and the
sandbox isolation is in place (docs/security.md). The code object's filename is
``CANDIDATE_FILE`` so tracebacks show candidate line numbers and the audit hook can tell
candidate frames from the evaluator's.
"""

from __future__ import annotations

import math
import traceback
import types
from typing import Any

import torch
import torch.nn as nn
import torch.utils.flop_counter as flop_counter
from torch.utils.flop_counter import FlopCounterMode

CANDIDATE_FILE = "<candidate>"


class CandidateError(RuntimeError):
    """The candidate does not provide a usable ``build_model``."""


def load_candidate(source: str, name: str = "candidate") -> types.ModuleType:
    """Compile and execute ``source`` in a fresh module object (not in ``sys.modules``).

    Args:
        source: Candidate module source.
        name: Module ``__name__`` to give it.

    Returns:
        The executed module.

    Raises:
        SyntaxError: When the source does not parse.
    """
    module = types.ModuleType(name)
    module.__file__ = CANDIDATE_FILE
    code = compile(source, CANDIDATE_FILE, "exec", dont_inherit=True)
    exec(code, module.__dict__)  # the whole point: run the (gated) candidate code
    return module


def build_candidate(source: str, num_classes: int) -> nn.Module:
    """Load ``source`` and call its ``build_model(num_classes)``.

    Args:
        source: Candidate module source.
        num_classes: Number of output classes.

    Returns:
        The model.

    Raises:
        CandidateError: No callable ``build_model``, or it did not return an ``nn.Module``.
    """
    module = load_candidate(source)
    build = module.__dict__.get("build_model")
    if not callable(build):
        raise CandidateError("the code does not define a function build_model(num_classes)")
    model = build(num_classes)
    if not isinstance(model, nn.Module):
        raise CandidateError(
            f"build_model(num_classes) returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _candidate_line(exc: BaseException, source: str) -> str:
    lines = source.splitlines()
    hit = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == CANDIDATE_FILE]
    if not hit or not hit[-1].lineno:
        return ""
    n = hit[-1].lineno
    code = lines[n - 1].strip() if 0 < n <= len(lines) else ""
    return f"line {n}: `{code}`"


def _hidden_leaves(output: Any, params: set[int]) -> int:
    """Count trainable leaf tensors in ``output``'s graph that are not registered parameters."""
    seen, stack, hidden = set(), [output.grad_fn], 0
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        var = getattr(fn, "variable", None)  # AccumulateGrad nodes hold the leaf
        if var is not None and id(var) not in params:
            hidden += 1
        stack.extend(f for f, _ in fn.next_functions)
    return hidden


def check_candidate(code: str, *, image_size: int, num_classes: int,
                    max_params: int | None = None, max_flops: int | None = None) -> dict:
    """Build the candidate and run the gate's dynamic stages (build, shape, budget).

    Shape: eval-mode forwards on (2, 3, S, S) for S in {image_size, 32} must give finite
    (2, num_classes) logits that do not depend on the other images of the batch, and a
    training-mode forward/backward must work. Budget: trainable parameters (counted with
    the unbound ``nn.Module.parameters``, so an override cannot hide any; tensors trained
    outside registered parameters are rejected) and FLOPs of one batch-1 forward
    (``FlopCounterMode``) against ``max_params`` / ``max_flops``.

    Args:
        code: Candidate source (already accepted by the static check).
        image_size: Side of the square dummy input.
        num_classes: Expected number of outputs.
        max_params: Parameter budget, or None.
        max_flops: FLOP budget, or None.

    Returns:
        ``{"checks": [...], "params", "flops"}`` plus ``problem`` and ``hints`` when a stage
        fails; stage failures are results, not exceptions, so the parent can explain them.
    """
    size, n_cls = int(image_size), int(num_classes)
    checks: list[dict] = []

    def fail(stage: str, problem: str, hints: list[str], **extra: Any) -> dict:
        checks.append({"name": stage, "ok": False, "detail": f"{problem} {' '.join(hints)}"})
        return {"checks": checks, "problem": problem, "hints": hints, **extra}

    try:
        model = build_candidate(code, n_cls)
    except Exception as e:  # noqa: BLE001 - every failure is reported to the fixer
        return fail("build", f"build_model({n_cls}) failed with {type(e).__name__}: {e}",
                    [_candidate_line(e, code) or "see the error above"])
    checks.append({"name": "build", "ok": True, "detail": type(model).__name__})
    gen = torch.Generator().manual_seed(0)
    problem = _shape_problem(model, code, size, n_cls, gen)
    if problem is not None:
        return fail("shape", *problem)
    out, problem = _train_step(model, code, size, gen)
    if problem is not None:
        return fail("shape", *problem)
    params = list(nn.Module.parameters(model))  # unbound: an override cannot hide any
    n_params = sum(p.numel() for p in params if p.requires_grad)
    if out is not None and out.grad_fn is not None \
            and _hidden_leaves(out, {id(p) for p in params}):
        return fail("budget", "the model trains tensors that are not registered parameters",
                    ["store every trainable tensor as nn.Parameter on a module"], params=n_params)
    checks.append({"name": "shape", "ok": True, "detail": f"(2, {n_cls})"})
    model.eval()
    flops = count_flops(model, torch.randn(1, 3, size, size, generator=gen))
    problem = _budget_problem(n_params, flops, max_params, max_flops, size)
    if problem is not None:
        return fail("budget", *problem, params=n_params, flops=flops)
    checks.append({"name": "budget", "ok": True, "detail": f"params {n_params:,}, flops {flops:,}"})
    return {"checks": checks, "params": n_params, "flops": flops}


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one no-grad forward of ``model`` on ``x``, as ``FlopCounterMode`` counts them.

    Without importing ``torch._dynamo``: torch wraps every dispatch mode's
    ``__torch_dispatch__`` in ``torch._disable_dynamo``, whose first call imports
    ``torch._dynamo`` (1.3-2.4 s on a 2-core AMD EPYC, docs/metrics.md#cost) only to keep
    the method out of compilation, and each gate runs in a fresh worker. Nothing here
    compiles, so the wrapper's cache slot is given the method itself. Should torch change
    that wrapper, the counter still works and pays the import again
    (tests/tools/test_candidate.py notices).
    """
    mode: Any = getattr(flop_counter, "_FlopCounterMode", FlopCounterMode)  # dispatch mode
    raw = getattr(getattr(mode, "__torch_dispatch__", None), "__wrapped__", None)
    if raw is not None and getattr(raw, "__dynamo_disable", None) is None:
        setattr(raw, "__dynamo_disable", raw)  # noqa: B010 - the wrapper reads this name
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def _budget_problem(n_params: int, flops: int, max_params: int | None, max_flops: int | None,
                    size: int) -> tuple[str, list[str]] | None:
    """Compare parameters and FLOPs with their budgets; (problem, hints) or None when met."""
    over = []
    if max_params is not None and n_params > max_params:
        over.append(f"parameters {n_params:,} > budget {max_params:,}")
    if max_flops is not None and flops > max_flops:
        over.append(f"FLOPs {flops:,} > budget {max_flops:,} (batch 1, {size}x{size})")
    if not over:
        return None
    ratio = max(n_params / (max_params or math.inf), flops / (max_flops or math.inf))
    return "; ".join(over), [f"shrink the model about {ratio:.1f}x: fewer channels, fewer "
                             "blocks, depthwise-separable convolutions, earlier downsampling"]


def _shape_problem(model: nn.Module, code: str, size: int, n_cls: int,
                   gen: torch.Generator) -> tuple[str, list[str]] | None:
    """Run the eval-mode forwards of the shape stage; (problem, hints) or None when fine."""
    for s in sorted({size, 32}):
        x = torch.randn(2, 3, s, s, generator=gen)
        try:
            model.eval()
            with torch.no_grad():
                out = model(x)
                single = model(x[:1]) if type(out) is torch.Tensor else None
        except Exception as e:  # noqa: BLE001
            return (f"forward on a (2, 3, {s}, {s}) input raised {type(e).__name__}: {e}",
                    [_candidate_line(e, code), "the model must accept any square input of "
                     "side >= 32 (use adaptive pooling before the classifier)"])
        if type(out) is not torch.Tensor or single is None:
            return (f"forward returned {type(out).__name__}, not a torch.Tensor",
                    ["return the logits tensor of shape (batch, num_classes)"])
        if tuple(out.shape) != (2, n_cls):
            return (f"output shape is {tuple(out.shape)} for a (2, 3, {s}, {s}) input; "
                    f"expected (2, {n_cls})",
                    ["end with global pooling, flatten, and nn.Linear(features, num_classes)"])
        if not out.is_floating_point() or not torch.isfinite(out).all():
            return ("output contains NaN/Inf or is not floating point",
                    ["check divisions, logs and initialisation in forward"])
        if not torch.allclose(single, out[:1], rtol=1e-3, atol=1e-4):
            return ("in eval mode the output for one image depends on the other images in "
                    "the batch", ["do not mix samples in forward"])
    return None


def _train_step(model: nn.Module, code: str, size: int, gen: torch.Generator
                ) -> tuple[Any, tuple[str, list[str]] | None]:
    """Run a training-mode forward/backward; (its output, None) or (None, (problem, hints))."""
    model.train()
    try:
        out = model(torch.randn(2, 3, size, size, generator=gen))
        out.float().logsumexp(1).mean().backward()
    except Exception as e:  # noqa: BLE001
        return None, (f"training-mode forward/backward raised {type(e).__name__}: {e}",
                      [_candidate_line(e, code)])
    return out, None
