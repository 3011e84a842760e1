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
:func:`gate_job`): build the model, run dummy forwards, count parameters and FLOPs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from evaluation.report import Budgets
from tools.policy import Policy

MAX_SOURCE_BYTES = 64 * 1024


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



def _fixer_message(stage: str, intro: str, lines: Iterable[str]) -> str:
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
                          message=_fixer_message("syntax", detail, ["write a shorter module"]))
    try:
        tree = ast.parse(source, filename="<candidate>")
    except SyntaxError as e:
        where = f"line {e.lineno}, col {e.offset}"
        text = (e.text or "").strip()
        detail = f"{e.msg} ({where})" + (f": {text}" if text else "")
        hint = f"{where}: {e.msg}" + (f" in `{text}`" if text else "")
        return GateReport(ok=False, checks=[GateCheck(name="syntax", ok=False, detail=detail)],
                          message=_fixer_message("syntax", "the code does not parse.", [hint]))
    except (ValueError, RecursionError, MemoryError) as e:
        detail = f"cannot parse: {type(e).__name__}: {e}"
        return GateReport(ok=False, checks=[GateCheck(name="syntax", ok=False, detail=detail)],
                          message=_fixer_message("syntax", detail, ["simplify the code"]))
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
    return GateReport(ok=False, checks=checks, message=_fixer_message(
        "policy", "the code breaks the safety rules for model code (nothing was run).", lines))


# --- dynamic stages -----------------------------------------------------------------------


def gate(source: str, *, budgets: Budgets, image_size: int = 64, num_classes: int = 8,
         timeout_s: float = 60) -> GateReport:
    """Run the full gate: static policy, then build, shape and budget in the sandbox.

    Args:
        source: Candidate module source.
        budgets: Device budgets (``max_params`` and ``max_flops`` are checked here).
        image_size: Side of the square dummy input.
        num_classes: Expected number of outputs.
        timeout_s: Wall-clock limit of the sandboxed run.

    Returns:
        The report; ``message`` explains the first failing stage to the Code-Fixer.
    """
    from tools.sandbox import SandboxLimits, run_job

    report = static_check(source)
    if not report.ok:
        return report
    lim = SandboxLimits(timeout_s=timeout_s)
    payload = {"code": source, "image_size": image_size, "num_classes": num_classes,
               "budgets": budgets.model_dump(), "threads": 1}
    res = run_job("gate", payload, limits=lim)
    checks = list(report.checks)
    if not res.ok or res.result is None:
        what = {"timeout": f"building and running the model took longer than {timeout_s:g} s "
                           "(an endless loop, or a model far too large)",
                "memory": "building or running the model ran out of memory (make it smaller)",
                "tamper": "the code modified torch or evaluator internals at run time"}.get(
            res.error_kind or "", f"the sandboxed run failed ({res.error_kind}): {res.error}")
        checks.append(GateCheck(name="build", ok=False, detail=what))
        return GateReport(ok=False, checks=checks, isolation=res.isolation,
                          message=_fixer_message("build", what, [res.error or what]))
    out = res.result
    checks += [GateCheck(**c) for c in out["checks"]]
    failed = next((c for c in checks if not c.ok), None)
    message = "" if failed is None else _fixer_message(
        failed.name, out.get("problem", failed.detail), out.get("hints", [failed.detail]))
    return GateReport(ok=failed is None, checks=checks, params=out.get("params"),
                      flops=out.get("flops"), message=message, isolation=res.isolation)


def gate_job(payload: dict, workdir: Path) -> dict:
    """Worker-side gate handler: build, shape and budget checks (see ``check_candidate``).

    Args:
        payload: ``code``, ``image_size``, ``num_classes``, ``budgets`` (a Budgets dict).
        workdir: The job's scratch directory (unused).

    Returns:
        ``{"checks": [...], "params", "flops"}`` plus ``problem``/``hints`` on a failure.
    """
    from tools.candidate import check_candidate

    budgets = Budgets(**payload.get("budgets", {}))
    return check_candidate(payload["code"], image_size=int(payload["image_size"]),
                           num_classes=int(payload["num_classes"]),
                           max_params=budgets.max_params, max_flops=budgets.max_flops)
