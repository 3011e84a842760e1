"""Calibrate the synthetic ISIC task: neither trivial nor hopeless, and fairness-relevant.

``python -m tools.calibrate`` generates (or reuses) the synthetic set through the same
path as the product (``--synthetic`` of :mod:`tasks.data_args`), trains a ladder of
architectures from the Template's Choices with the default quick recipe, and prints for
each the validation accuracy, balanced accuracy and the largest group accuracy gap per
sensitive attribute. Then it checks the three bars the synthetic generator was tuned for:

1. the Template reaches a validation balanced accuracy in [0.35, 0.80] (chance: 1/8);
2. the largest model beats the smallest by at least ``--min-gain`` balanced accuracy;
3. some attribute shows a group accuracy gap of at least 2 points with the Template.

The models are our own rendered sources, built in-process (no sandbox needed here).
The exit status is 0 when all checks pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from evaluation.fairness import classification_metrics, fairness_report
from tasks.attributes import sensitive_groups
from tasks.cache import PreparedData, load_arrays
from tasks.data_args import add_data_args, prepare_from_args
from tasks.genome import MIN_WIDTH, TEMPLATE_GENOME, Genome, Stage, render
from tasks.models import baseline_sources, build_from_source
from tools.train import Recipe, predict, train

BAL_ACC_RANGE = (0.35, 0.80)
MIN_GROUP_GAP = 0.02


def ladder() -> dict[str, str]:
    """Candidate sources from smallest to largest, keyed by a short name.

    ``tiny``: the Template's layout at the minimum width of the Choices (8 channels);
    ``template``: the Template (16-32-64-128); ``wide``: the Template at twice its widths.
    The baselines of :mod:`tasks.models` (e.g. ``resnet18``) can be added by name.
    """
    def scaled(factor: float) -> Genome:
        stages = tuple(
            Stage(**{**s.model_dump(), "width": max(MIN_WIDTH, int(s.width * factor) // 8 * 8)})
            for s in TEMPLATE_GENOME.stages
        )
        stem = max(MIN_WIDTH, int(TEMPLATE_GENOME.stem_width * factor) // 8 * 8)
        return TEMPLATE_GENOME.model_copy(update={"stages": stages, "stem_width": stem})

    # Factor 0 clamps every width to the minimum of the Choices.
    return {"tiny": render(scaled(0.0)), "template": render(TEMPLATE_GENOME),
            "wide": render(scaled(2.0))}


def run_model(source: str, arrays: dict[str, np.ndarray], data: PreparedData,
              recipe: Recipe) -> dict:
    """Train one candidate on the train split and score it on the validation split."""
    split = np.asarray(arrays["split"])
    labels = np.asarray(arrays["labels"])
    tr, va = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
    torch.manual_seed(recipe.seed)  # same initialisation for the same recipe seed
    model = build_from_source(source, len(data.class_names))
    params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    train(model, arrays["images"], tr, labels[tr], recipe, data.mean, data.std)
    seconds = time.perf_counter() - t0
    pred = predict(model, arrays["images"], va, data.mean, data.std, recipe=recipe)
    metrics = classification_metrics(labels[va], pred, data.class_names)
    groups = sensitive_groups(np.asarray(arrays["sex"])[va], np.asarray(arrays["age"])[va])
    fair = fairness_report(labels[va], pred, groups, len(data.class_names))
    return {"params": params, "seconds": seconds, "acc": metrics.accuracy,
            "bal_acc": metrics.balanced_accuracy, "fair": fair}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--models", default="tiny,template,wide",
                    help="comma-separated: tiny, template, wide, or a baseline name")
    ap.add_argument("--epochs", type=int, default=Recipe().epochs, help="training epochs")
    ap.add_argument("--repeats", type=int, default=1,
                    help="training seeds per model; figures are means over them")
    ap.add_argument("--min-gain", type=float, default=0.02,
                    help="balanced-accuracy gain the largest model must show over the smallest")
    ap.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return ap


def _summary(runs: list[dict]) -> dict:
    """Means over the seeds of one model (gaps per attribute: NaN when never defined)."""
    gaps = {a: float(np.mean([g for r in runs if (g := r["fair"][a].max_gap) is not None]
                             or [np.nan])) for a in runs[0]["fair"]}
    return {"params": runs[0]["params"],
            "seconds": float(np.mean([r["seconds"] for r in runs])),
            "acc": float(np.mean([r["acc"] for r in runs])),
            "bal_acc": float(np.mean([r["bal_acc"] for r in runs])),
            "bal_acc_sd": float(np.std([r["bal_acc"] for r in runs])),
            "gaps": gaps, "fair": runs[0]["fair"]}


def _print_results(console: Console, results: dict[str, dict], epochs: int,
                   repeats: int) -> None:
    table = Table(title=f"Validation ({epochs} epochs, {repeats} seed(s); chance 0.125)")
    for col in ("model", "params", "train s", "acc", "bal acc", "gap sex", "gap age",
                "gap sex x age"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, r in results.items():
        g = r["gaps"]
        table.add_row(name, f"{r['params']:,}", f"{r['seconds']:.0f}", f"{r['acc']:.3f}",
                      f"{r['bal_acc']:.3f} ± {r['bal_acc_sd']:.3f}", f"{g['sex']:.3f}",
                      f"{g['age']:.3f}", f"{g['sex_x_age']:.3f}")
    console.print(table)
    ref = results.get("template") or next(iter(results.values()))
    for attr, fa in ref["fair"].items():
        groups = ", ".join(f"{gm.group} {gm.accuracy:.3f} (n={gm.count})" for gm in fa.groups)
        console.print(f"  {attr}: {groups}")


def calibration_checks(results: dict[str, dict], min_gain: float) -> list[tuple[str, bool]]:
    """Check the three bars of the module docstring; (description, passed) pairs.

    Args:
        results: Per model name, the means of :func:`run_model` over seeds.
        min_gain: Balanced-accuracy gain the largest model must show over the smallest.

    Returns:
        The checks that apply to the models given (the Template's only when it was run).
    """
    checks = []
    if "template" in results:
        b = results["template"]["bal_acc"]
        checks.append((f"template balanced accuracy {b:.3f} in {BAL_ACC_RANGE}",
                       BAL_ACC_RANGE[0] <= b <= BAL_ACC_RANGE[1]))
        gap_attr, gap = max(results["template"]["gaps"].items(), key=lambda kv: kv[1])
        checks.append((f"template group gap {gap:.3f} ({gap_attr}) >= {MIN_GROUP_GAP}",
                       gap >= MIN_GROUP_GAP))
    by_size = sorted(results.items(), key=lambda kv: kv[1]["params"])
    if len(by_size) >= 2:
        (small, rs), (large, rl) = by_size[0], by_size[-1]
        gain = rl["bal_acc"] - rs["bal_acc"]
        checks.append((f"{large} beats {small} by {gain:+.3f} balanced accuracy "
                       f"(>= {min_gain})", gain >= min_gain))
    return checks


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0: all calibration checks pass)."""
    ap = _parser()
    args = ap.parse_args(argv)
    args.synthetic = args.synthetic or args.data_dir is None  # calibrating = synthetic data
    console = Console()
    data = prepare_from_args(args, progress=not args.no_progress)
    arrays = load_arrays(data)
    split = np.asarray(arrays["split"])
    console.print(f"data: {data.n} images at {data.image_size} px, "
                  f"train/val/test = {np.bincount(split, minlength=3).tolist()}, "
                  f"cache {data.cache_dir}")
    sources = {**ladder(), **baseline_sources()}
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in sources]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {sorted(sources)}")
    results: dict[str, dict] = {}
    for name in names:
        runs = []
        for rep in range(args.repeats):
            recipe = Recipe(epochs=args.epochs, seed=rep)
            runs.append(run_model(sources[name], arrays, data, recipe))
            console.print(f"  {name} seed {rep}: bal_acc {runs[-1]['bal_acc']:.3f} "
                          f"({runs[-1]['seconds']:.0f} s)")
        results[name] = _summary(runs)
    _print_results(console, results, args.epochs, args.repeats)
    checks = calibration_checks(results, args.min_gain)
    for text, ok in checks:
        console.print(("[green]PASS[/] " if ok else "[red]FAIL[/] ") + text)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
