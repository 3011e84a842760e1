"""The code gate: static policy, then build / shape / budget checks in the sandbox.

``static_check`` never executes candidate code: it parses the source and applies the
policy of docs/security.md, the gate. An allowed import root is not an allowed capability, so
attribute chains rooted at an import are resolved against the real modules and checked
by identity (``F.torch.save`` is ``torch.save``): private attributes, modules off the
list (``torch.os``, ``torch.hub``, ``typing.sys`` ...), metaclasses and file / native-code /
global-state / string-evaluating functions are rejected. Monkeypatching (assigning to
attributes of imported objects) is rejected here and detected again at run time by the
worker's integrity check.

Rules that close ways of reaching attributes or code by name:

- private (``_name``) attributes only as ``self._name`` (or ``super()._name``) inside
  methods whose first parameter is ``self`` and whose decorators are at most
  ``@property`` / ``@torch.no_grad()``; ``self`` may be bound nowhere else, ``super``,
  ``property`` and import aliases are never rebound, ``super`` is only ``super()`` or
  ``super(YourClass, self)`` in such a method, and a method that reaches private
  attributes of ``self`` may only be reached through ``self`` / ``super()`` (never
  ``Class.method(other)``, a class-body reference or ``X.__init__(other)``), so ``self``
  is always an instance of the candidate's own classes; nn.Module's own private names
  stay off limits on ``self`` too;
- ``match`` class patterns: keyword attribute names are checked like attributes, the class
  must be the candidate's own, a builtin type or an import chain (library classes take no
  positional sub-patterns, which read attributes named by ``__match_args__``);
- no string type hints / forward references (except inside ``Literal[...]``): they are
  evaluated as code by ``typing.get_type_hints`` and ``functools.singledispatch``, both
  denied as well;
- class bodies may not bind names of ``nn.Module`` (``train = ...``, ``for``, ``with``,
  walrus, imports ...) except the overridable ones; attributes named like ``nn.Module``
  members (other than ``training``) may not be assigned on any object;
- no metaclasses (``typing.ABCMeta`` ...) and nothing that hands out ``type``
  (``typing.get_origin``, ``type_before_parametrizations``), nor
  ``dataclasses.make_dataclass``: classes come from class statements only;
- ``str.format`` / ``format_map`` only on string constants whose fields have no
  attribute (``.``) or index (``[``) access (f-strings are checked as code);
- a module-level ``__all__`` list of strings is allowed.

The gate is a first filter in front of the OS sandbox, not the boundary.

``gate`` adds the dynamic stages in a sandboxed worker (job kind ``"gate"``, handled by
:func:`gate_job`): build the model, run dummy forwards, count parameters and FLOPs, and
time a few training steps (``GateReport.train_s_per_image``), from which
``tools.payloads.default_limits`` sizes the evaluation's timeout.
"""

from __future__ import annotations

import ast
import math
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from evaluation.report import Budgets
from tasks import pyast
from tools.policy import Policy

if TYPE_CHECKING:
    from tools.sandbox import SandboxResult

MAX_SOURCE_BYTES = 64 * 1024
# The training-cost probe (:func:`train_seconds_per_image`): a small batch keeps it cheap
# for ResNet-sized models (per image, a small batch is at least as slow as the recipe's,
# so the figure errs towards a longer limit); one warm-up step (kernel selection,
# allocation), then up to COST_STEPS timed steps or COST_BUDGET_S seconds, the median.
COST_BATCH = 8
COST_STEPS = 3
COST_BUDGET_S = 5.0


class GateCheck(BaseModel):
    """One gate stage and its outcome."""

    name: Literal["syntax", "policy", "build", "shape", "budget"]
    ok: bool
    detail: str = ""


class GateReport(BaseModel):
    """Outcome of the gate; ``message`` is written for the Code-Fixer."""

    ok: bool
    checks: list[GateCheck] = Field(default_factory=list)
    params: int | None = None
    flops: int | None = None
    message: str = ""
    isolation: list[str] = Field(default_factory=list)
    train_s_per_image: float | None = Field(
        default=None, description="Seconds per image of a training forward + backward at "
        "the run's image size (one CPU thread, fp32, batch COST_BATCH); None when the "
        "sandboxed stages did not run.")
    latency_ms: float | None = Field(
        default=None, description="Batch-1 latency (ms, one thread) of the untrained graph, "
        "timed by the latency screen (tools/screen.py); None when no screen ran.")



def fixer_message(stage: str, intro: str, lines: Iterable[str]) -> str:
    """Return the gate's message to the Code-Fixer: the failed stage, why, what to change."""
    body = "\n".join(f"- {line}" for line in lines)
    return (f"Gate stage '{stage}' failed: {intro}\n{body}\n"
            "Change only what these points need; the file must keep defining "
            "build_model(num_classes) that returns a torch.nn.Module.")


def static_check(source: str) -> GateReport:
    """Check candidate source against the policy without executing it.

    Args:
        source: Candidate module source.

    Returns:
        A report with a "syntax" and (if parsed) a "policy" check; ``ok`` when both pass.
    """
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > MAX_SOURCE_BYTES:
        detail = f"source is {size} bytes; the limit is {MAX_SOURCE_BYTES}"
        return GateReport(ok=False, checks=[GateCheck(name="syntax", ok=False, detail=detail)],
                          message=fixer_message("syntax", detail, ["write a shorter module"]))
    try:
        tree = pyast.parse(source, filename="<candidate>")
    except SyntaxError as e:
        where = f"line {e.lineno}, col {e.offset}"
        text = (e.text or "").strip()
        detail = f"{e.msg} ({where})" + (f": {text}" if text else "")
        hint = f"{where}: {e.msg}" + (f" in `{text}`" if text else "")
        return GateReport(ok=False, checks=[GateCheck(name="syntax", ok=False, detail=detail)],
                          message=fixer_message("syntax", "the code does not parse.", [hint]))
    except (ValueError, RecursionError, MemoryError) as e:
        detail = f"cannot parse: {type(e).__name__}: {e}"
        return GateReport(ok=False, checks=[GateCheck(name="syntax", ok=False, detail=detail)],
                          message=fixer_message("syntax", detail, ["simplify the code"]))
    checks = [GateCheck(name="syntax", ok=True)]
    policy = Policy(tree)
    try:
        policy.visit(tree)
    except RecursionError:
        policy.bad(tree, "the code is nested too deeply to check", "flatten it")
    if not any(isinstance(n, ast.FunctionDef) and n.name == "build_model" for n in tree.body):
        policy.bad(tree, "no top-level function build_model",
                   "define `def build_model(num_classes: int) -> nn.Module` at module level")
    found = sorted(set(policy.violations))
    if not found:
        checks.append(GateCheck(name="policy", ok=True))
        return GateReport(ok=True, checks=checks)
    lines = [(f"line {ln}, col {col}: " if ln else "") + f"{what}. Fix: {fix}"
             for ln, col, what, fix in found[:20]]
    if len(found) > 20:
        lines.append(f"... and {len(found) - 20} more")
    checks.append(GateCheck(name="policy", ok=False, detail="; ".join(lines[:5])))
    return GateReport(ok=False, checks=checks, message=fixer_message(
        "policy", "the code breaks the safety rules for model code (nothing was run).", lines))


# --- dynamic stages -----------------------------------------------------------------------


def gate(source: str, *, budgets: Budgets, image_size: int = 64, num_classes: int = 8,
         timeout_s: float = 60, latency_screen_ms: float | None = None) -> GateReport:
    """Run the full gate: static policy, then build, shape and budget in the sandbox.

    Args:
        source: Candidate module source.
        budgets: Device budgets (``max_params`` and ``max_flops`` are checked here).
        image_size: Side of the square dummy input.
        num_classes: Expected number of outputs.
        timeout_s: Wall-clock limit of the sandboxed run.
        latency_screen_ms: When set, the untrained model's batch-1 latency is timed by a
            job that runs no candidate code, and a slower design fails the "budget" stage
            (:mod:`tools.screen`).

    Returns:
        The report; ``message`` explains the first failing stage to the Code-Fixer.
    """
    import shutil

    from tools.sandbox import SandboxLimits, run_job
    from tools.screen import SCREEN_JOB, screen_latency
    from tools.tmpdirs import make_temp_dir

    report = static_check(source)
    if not report.ok:
        return report
    payload = {"code": source, "image_size": image_size, "num_classes": num_classes,
               "budgets": budgets.model_dump(), "threads": 1}
    keep = None if latency_screen_ms is None else make_temp_dir("flnas-gate-") / "work"
    try:
        res = run_job("gate" if keep is None else SCREEN_JOB, payload,
                      limits=SandboxLimits(timeout_s=timeout_s), keep_workdir=keep)
        report = _dynamic_report(report, res, timeout_s)
        if keep is not None and latency_screen_ms is not None and report.ok:
            from tools.export import ONNX_FILE

            report = screen_latency(report, keep / ONNX_FILE, image_size, latency_screen_ms)
        return report
    finally:
        if keep is not None:
            shutil.rmtree(keep.parent, ignore_errors=True)


def _dynamic_report(static: GateReport, res: SandboxResult, timeout_s: float) -> GateReport:
    """Return the gate report of the sandboxed job's outcome, after the static checks."""
    checks = list(static.checks)
    if not res.ok or res.result is None:
        what = {"timeout": f"building and running the model took longer than {timeout_s:g} s "
                           "(an endless loop, or a model far too large)",
                "memory": "building or running the model ran out of memory (make it smaller)",
                "tamper": "the code modified torch or evaluator internals at run time"}.get(
            res.error_kind or "", f"the sandboxed run failed ({res.error_kind}): {res.error}")
        checks.append(GateCheck(name="build", ok=False, detail=what))
        return GateReport(ok=False, checks=checks, isolation=res.isolation,
                          message=fixer_message("build", what, [res.error or what]))
    out = res.result
    checks += [GateCheck(**c) for c in out["checks"]]
    failed = next((c for c in checks if not c.ok), None)
    message = "" if failed is None else fixer_message(
        failed.name, out.get("problem", failed.detail), out.get("hints", [failed.detail]))
    return GateReport(ok=failed is None, checks=checks, params=out.get("params"),
                      flops=out.get("flops"), message=message, isolation=res.isolation,
                      train_s_per_image=_cost_figure(out.get("train_s_per_image"), timeout_s))


def _cost_figure(value: object, timeout_s: float) -> float | None:
    """Return the worker's training-cost figure, bounded by what its run could measure.

    Candidate code ran in that worker, so the figure is not trusted: only a positive
    finite number is kept, and at most the gate's whole wall-clock limit per probe image
    (a forged huge figure would otherwise buy the candidate an endless evaluation).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return min(float(value), timeout_s / COST_BATCH)


def gate_job(payload: dict, workdir: Path) -> dict:
    """Worker-side gate handler: build, shape and budget checks, then the cost probe.

    Args:
        payload: ``code``, ``image_size``, ``num_classes``, ``budgets`` (a Budgets dict).
        workdir: The job's scratch directory (unused).

    Returns:
        ``{"checks": [...], "params", "flops", "train_s_per_image"}``, plus
        ``problem``/``hints`` on a failure (then without ``train_s_per_image``).
    """
    from tools.candidate import check_candidate

    budgets = Budgets(**payload.get("budgets", {}))
    size, n_cls = int(payload["image_size"]), int(payload["num_classes"])
    out = check_candidate(payload["code"], image_size=size, num_classes=n_cls,
                          max_params=budgets.max_params, max_flops=budgets.max_flops)
    if not all(c["ok"] for c in out["checks"]):
        return out
    try:
        out["train_s_per_image"] = train_seconds_per_image(payload["code"], size, n_cls)
    except Exception as e:  # noqa: BLE001 - the candidate's failure, reported to the fixer
        problem = (f"a training step on a batch of {COST_BATCH} images raised "
                   f"{type(e).__name__}: {e}")
        hints = ["the model must train on batches of any size >= 2 (the recipe uses 64)"]
        out["checks"].append({"name": "shape", "ok": False, "detail": problem})
        out.update(problem=problem, hints=hints)
    return out


def train_seconds_per_image(code: str, image_size: int, num_classes: int, *,
                            batch: int = COST_BATCH, steps: int = COST_STEPS,
                            budget_s: float = COST_BUDGET_S) -> float:
    """Time training steps of a freshly built candidate; seconds per image.

    A step is what the recipe's step costs apart from the optimiser update: a train-mode
    forward of a random ``(batch, 3, S, S)`` channels-last batch (the recipe's default
    layout), cross-entropy and backward, in float32 on the CPU with the process's threads
    (one in the gate job). First an untimed step of two images: when ``batch`` images
    would take ``budget_s`` or more at its pace, its time per image is the answer (an
    overestimate: a small batch, first allocations), so a huge model costs the gate two
    images, not eight. Otherwise one warm-up step of ``batch``, then up to ``steps``
    timed steps while less than ``budget_s`` has passed; the median step over ``batch``.

    Args:
        code: Candidate source (it passed the gate's other stages).
        image_size: Side of the square input (the run's image size).
        num_classes: Number of outputs (labels are drawn in ``[0, num_classes)``).
        batch: Images per step (>= 2: BatchNorm needs two in train mode).
        steps: Most timed steps.
        budget_s: Seconds after which no further step is started.

    Returns:
        Seconds per training image (> 0).
    """
    import torch
    import torch.nn.functional as F

    from tools.candidate import build_candidate

    torch.manual_seed(0)
    model = build_candidate(code, num_classes)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size, generator=gen).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(num_classes, (batch,), generator=gen)
    params = list(torch.nn.Module.parameters(model))  # unbound: overrides cannot hide any

    def step(n: int) -> float:
        t0 = time.perf_counter()
        for p in params:
            p.grad = None
        F.cross_entropy(model(x[:n]).float(), y[:n]).backward()
        return time.perf_counter() - t0

    small = step(2) / 2
    if small * batch >= budget_s:
        return small
    step(batch)  # warm-up at the timed shape: kernel selection, allocations
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < steps and (not times or time.perf_counter() - start < budget_s):
        times.append(step(batch))
    return statistics.median(times) / batch
