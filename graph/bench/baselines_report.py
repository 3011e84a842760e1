"""The baselines suite's headline (FL-NAS paper form) and its files.

Against each reference (Template, ResNet-18, MobileNetV2), paired over training seeds:

* balanced accuracy difference ``ours - reference``: mean of the per-seed differences
  with a 95 % paired t interval;
* fairness ratio per metric and attribute, ``reference / ours`` (above 1: ours is
  fairer) for ``max_gap``, ``eopp0``, ``eopp1`` and ``eodd`` of sex and age, and for the
  unfairness objective (mean ``max_gap`` over sex and age);
* size (parameters), memory (weights + peak activations) and latency ratios,
  ``reference / ours`` (above 1: ours is smaller / faster).

Ratios are ratios of the seed means; their bracket is the range of the per-seed ratios
(the same seed on both sides), a seed spread rather than an interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evaluation.pareto import mean_max_gap, objectives
from evaluation.report import EvaluationReport
from graph.bench.output import header, machine, md_table, verdict, write_suite
from graph.bench.stats import Interval, paired_difference, spread

ATTRIBUTES = ("sex", "age")
FAIR_METRICS = ("max_gap", "eopp0", "eopp1", "eodd")
MIX_METRICS = ("class_mix_gap", "within_class_gap")
"""The parts of ``max_gap`` (docs/metrics.md#class-mix): reported, not compared as targets."""
MIX_KEYS = tuple(f"unfairness.{m}" for m in MIX_METRICS)
COSTS = (("params", "size (params)"), ("memory_mb", "memory"), ("latency_ms", "latency"))
PLOT = "baselines.png"


def figures(rep: EvaluationReport) -> dict[str, float | None]:
    """Return the compared numbers of one evaluation (None where failed or undefined)."""
    out: dict[str, float | None] = {"ok": float(rep.ok)}
    if not rep.ok or rep.metrics is None or rep.hardware is None:
        return out
    out["balanced_accuracy"] = rep.metrics.balanced_accuracy
    try:
        out["unfairness"] = objectives(rep)[1]
    except ValueError:
        out["unfairness"] = None
    for attr in ATTRIBUTES:
        fair = rep.fairness.get(attr)
        for m in (*FAIR_METRICS, *MIX_METRICS):
            out[f"{attr}.{m}"] = getattr(fair, m) if fair is not None else None
    for m in MIX_METRICS:  # the unfairness objective's two parts, averaged alike
        out[f"unfairness.{m}"] = mean_max_gap(rep.fairness, ATTRIBUTES, metric=m)
    hw = rep.hardware
    out.update(params=float(hw.params), memory_mb=hw.memory_mb, latency_ms=hw.latency_ms_median)
    return out


def seed_ratio(ref: list[float | None], ours: list[float | None]) -> Interval:
    """``mean(ref) / mean(ours)`` over paired seeds, bracketed by the per-seed ratios' range."""
    pairs = [(r, o) for r, o in zip(ref, ours, strict=True) if r is not None and o is not None]
    if not pairs or np.mean([o for _, o in pairs]) == 0:
        return Interval(value=None, n=len(pairs), method="ratio of means, seed range")
    value = float(np.mean([r for r, _ in pairs]) / np.mean([o for _, o in pairs]))
    per = [r / o for r, o in pairs if o != 0]
    return Interval(value=value, lo=min(per) if len(per) > 1 else None,
                    hi=max(per) if len(per) > 1 else None, n=len(pairs),
                    method="ratio of means, seed range")


def compare(ours: list[dict[str, Any]], ref: list[dict[str, Any]]) -> dict[str, Any]:
    """Headline of ours against one reference (per-seed figure dicts, same seed order)."""
    def col(rows: list[dict[str, Any]], key: str) -> list[float | None]:
        return [r.get(key) for r in rows]

    fair = {"unfairness": seed_ratio(col(ref, "unfairness"), col(ours, "unfairness"))}
    for attr in ATTRIBUTES:
        for m in FAIR_METRICS:
            key = f"{attr}.{m}"
            fair[key] = seed_ratio(col(ref, key), col(ours, key))
    return {
        "balanced_accuracy_diff": paired_difference(col(ours, "balanced_accuracy"),
                                                    col(ref, "balanced_accuracy")).model_dump(),
        "fairness_ratio": {k: v.model_dump() for k, v in fair.items()},
        "cost_ratio": {k: seed_ratio(col(ref, k), col(ours, k)).model_dump() for k, _ in COSTS},
    }


def targets(comp: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the issue's design targets against the Template and ResNet-18 as verdicts."""
    out = []

    def val(name: str, *path: str) -> float | None:
        node: Any = comp.get(name)
        for p in path:
            node = node.get(p) if node else None
        return node

    diff = val("template", "balanced_accuracy_diff", "value")
    fair = val("template", "fairness_ratio", "unfairness", "value")
    ok = None
    if diff is not None and fair is not None:
        hi = val("template", "balanced_accuracy_diff", "hi")
        equal = diff >= 0 or (hi is not None and hi >= 0)  # interval reaches 0: "equal"
        ok = (diff >= 0.03 and fair >= 1.0) or (equal and fair >= 1 / 0.7)
    out.append({"target": "vs Template: >= +0.03 bal. acc. at no worse unfairness, or "
                "unfairness >= 30 % lower at equal bal. acc.", "ok": ok,
                "measured": f"diff {diff if diff is None else round(diff, 3)}, fairness ratio "
                            f"{fair if fair is None else round(fair, 2)}"})
    for label, path, bound in (
            ("bal. acc. >= ResNet-18's", ("balanced_accuracy_diff", "value"), 0.0),
            ("unfairness <= 1/2 of ResNet-18's", ("fairness_ratio", "unfairness", "value"), 2.0),
            ("latency >= 20x lower", ("cost_ratio", "latency_ms", "value"), 20.0),
            ("memory >= 18x lower", ("cost_ratio", "memory_mb", "value"), 18.0)):
        v = val("resnet18", *path)
        out.append({"target": f"vs ResNet-18: {label}", "ok": None if v is None else v >= bound,
                    "measured": "n/a" if v is None else f"{v:.3f}"})
    return out


def headline(reports: dict[str, list[EvaluationReport]], seeds: list[int],
             latencies: dict[str, float] | None = None) -> dict[str, Any]:
    """Per-seed figures, per-design means, comparisons and targets (``ours`` first).

    Args:
        reports: Per design, its evaluations in seed order.
        seeds: The training seeds.
        latencies: Per design, its latency timed side by side with the others
            (:func:`graph.bench.baselines.retime_designs`); it replaces each evaluation's
            own (kept as ``latency_ms_in_run``). None: the evaluations' own.
    """
    rows = {name: [figures(r) for r in reps] for name, reps in reports.items()}
    for name, rs in rows.items():
        for r in rs:
            if latencies and name in latencies and "latency_ms" in r:
                r["latency_ms_in_run"], r["latency_ms"] = r["latency_ms"], latencies[name]
    means = {name: {k: spread([r.get(k) for r in rs]).model_dump()
                    for k in ("balanced_accuracy", "unfairness", *MIX_KEYS, "params",
                              "memory_mb", "latency_ms")} for name, rs in rows.items()}
    comp = {name: compare(rows["ours"], rs) for name, rs in rows.items() if name != "ours"}
    return {"machine": machine(), "seeds": seeds, "latency_retimed": bool(latencies),
            "per_seed": rows, "means": means,
            "comparisons": comp, "targets": targets(comp),
            "failures": {name: [f"seed {s}: {r.failure_stage}: {r.failure_reason}"
                                for s, r in zip(seeds, reps, strict=True) if not r.ok]
                         for name, reps in reports.items()}}


def csv_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One CSV row per design and training seed."""
    return [{"design": name, "seed": seed, **row}
            for name, rows in result["per_seed"].items()
            for seed, row in zip(result["seeds"], rows, strict=True)]


def markdown(result: dict[str, Any], command: str) -> str:
    """Return the ``baselines.md`` text: per-design means, the headline per reference, targets."""
    p = result["profile"]
    means = md_table(["design", "bal. acc. (mean +- sd)", "unfairness", "params", "memory (MB)",
                      "latency (ms)"],
                     [[n, *(_pm(m[k]) for k in ("balanced_accuracy", "unfairness", "params",
                                                "memory_mb", "latency_ms"))]
                      for n, m in result["means"].items()])
    heads = ["metric", *result["comparisons"]]
    first = next(iter(result["comparisons"].values()), None)
    rows = [["bal. acc. difference, ours - ref [95 % paired t]",
             *(Interval(**c["balanced_accuracy_diff"]).text(3)
               for c in result["comparisons"].values())]]
    for key in (first or {}).get("fairness_ratio", {}):
        rows.append([f"fairness ratio {key} (ref / ours)",
                     *(Interval(**c["fairness_ratio"][key]).text(2)
                       for c in result["comparisons"].values())])
    for key, label in COSTS:
        rows.append([f"{label} ratio (ref / ours)",
                     *(Interval(**c["cost_ratio"][key]).text(1)
                       for c in result["comparisons"].values())])
    failures = [f"- {n}: {f}" for n, fs in result["failures"].items() for f in fs]
    return "\n".join([
        header("Baselines suite", command, result["machine"]),
        f"Ours: {result['design']['label']} (`{result['design']['path']}`). Every design: "
        f"profile `{p['name']}` recipe ({p['epochs']} epochs, batch {p['batch_size']}, "
        f"{p['image_size']} px, " + (f"synthetic n={p['synthetic_n']}" if p["synthetic"]
                                     else "ISIC 2019")
        + f"), no budgets, {result['split']} split, training seeds {result['seeds']}.", "",
        means, "",
        *(["Latency: every design's exported graph timed side by side in one sandboxed job "
           "after the trainings (`tools/retime.py`); each evaluation's own figure, measured "
           "beside other work, is `latency_ms_in_run` in the CSV.", ""]
          if result.get("latency_retimed") else []),
        *_class_mix(result),
        "Headline (ratios: ratio of seed means [range of per-seed ratios]; above 1 favours "
        "ours):", "", md_table(heads, rows), "", "Targets:", "",
        *[f"- {verdict(t['ok'])}: {t['target']} (measured {t['measured']})"
          for t in result["targets"]],
        *(["", "Failed evaluations:", *failures] if failures else []),
        "", f"![balanced accuracy and unfairness per design]({PLOT})", ""])


def _class_mix(result: dict[str, Any]) -> list[str]:
    """Return the unfairness split into what the groups' class mix gives and the rest."""
    means = result["means"]
    if not all(k in m for m in means.values() for k in MIX_KEYS):
        return []  # a result written before these parts were measured
    table = md_table(["design", "unfairness", "from class mix", "within classes"],
                     [[n, *(_pm(m[k]) for k in ("unfairness", *MIX_KEYS))]
                      for n, m in means.items()])
    return ["Where the unfairness comes from (each part is the mean over sex and age of that "
            "part of `max_gap`; the parts need not add up): \"from class mix\" is the gap "
            "the groups would show if the design recalled every class equally well in every "
            "group, \"within classes\" the gap left once each group's class mix is "
            "accounted for (docs/metrics.md#class-mix).", "", table, ""]


def _pm(d: dict[str, Any]) -> str:
    iv = Interval(**d)
    if iv.value is None:
        return "n/a"
    big = abs(iv.value) >= 100
    fmt = (lambda x: f"{x:,.0f}") if big else (lambda x: f"{x:.3f}")
    return fmt(iv.value) + (f" +- {fmt(iv.sd)}" if iv.sd is not None else "")


def plot(result: dict[str, Any], path: Path) -> None:
    """Balanced accuracy and unfairness per design: seed means with sd error bars (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.4))
    FigureCanvasAgg(fig)
    names = list(result["means"])
    for i, (key, label) in enumerate((("balanced_accuracy", "balanced accuracy"),
                                      ("unfairness", "unfairness (mean max_gap)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        vals = [result["means"][n][key]["value"] or 0.0 for n in names]
        errs = [result["means"][n][key]["sd"] or 0.0 for n in names]
        ax.bar(names, vals, yerr=errs, capsize=4, color="tab:blue" if i == 0 else "tab:orange")
        ax.set_title(f"{label}, mean +- sd over seeds", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_baselines(out: Path, result: dict[str, Any], command: str) -> None:
    """Write ``baselines.md``, ``.csv``, ``.json`` and ``baselines.png`` into ``out``."""
    write_suite(out, "baselines", result, command, rows=csv_rows, plot=plot, plot_name=PLOT,
                markdown=markdown)
