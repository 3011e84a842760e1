"""The executors suite: evaluation throughput of the local pool (1 and N workers) and Ray.

The same E evaluations (the Template on training seeds ``0 .. E-1``, the profile's data
and recipe, gated once like the search does) go through each executor, interleaved in
one run: every repeat runs all executors one after the other, in a rotated order, so
that a change in the machine's load falls on all of them. Executors are built (and Ray
started) and warmed up before the clock runs: each warm-up submits ``workers`` jobs
that the static gate refuses, which starts Ray's worker processes without training.

Per executor and repeat: ``evaluations per hour = E / wall * 3600`` and slot-seconds
per evaluation ``wall * workers / E`` (how long one evaluation holds a worker). Figures:
the mean over repeats with a 95 % t interval; the speed-up of N local workers over one
(per-repeat ratios, t interval); Ray's overhead per evaluation, the paired per-repeat
difference of its slot-seconds and the local pool's at the same worker count (t
interval); and each executor's slot-seconds beyond the evaluations' own time
(``EvaluationReport.wall_s``). Writes ``executors.{md,csv,json,png}``.
"""

from __future__ import annotations

from pathlib import Path
from time import monotonic
from typing import Any

from graph.bench.output import header, machine, md_table, write_suite
from graph.bench.profiles import Profile
from graph.bench.stats import Interval, paired_difference, t_interval

PLOT = "executors.png"
REFUSED = "import os\n"  # refused by the static gate: a warm-up job that trains nothing


def configs(workers: int, ray: bool) -> list[tuple[str, int]]:
    """Return the compared executors: (kind, workers)."""
    out = [("local", 1), ("local", workers)]
    return out + [("ray", workers)] if ray else out


def label(kind: str, workers: int) -> str:
    """Return the display name of one executor, e.g. ``local x2``."""
    return f"{kind} x{workers}"


def _ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _jobs(profile: Profile, cache_dir: Path, n: int) -> tuple[Any, list[Any]]:
    """Prepare the data, gate the Template once, and build the E jobs."""
    from graph.bench.baselines import profile_settings
    from graph.run_data import RunData
    from tasks.models import template_source
    from tools.executors import EvalJob
    from tools.gate import gate

    settings = profile_settings(profile, cache_dir)
    run_data = RunData(settings)
    data, code = run_data.data(), template_source()
    report = gate(code, budgets=settings.budgets, image_size=profile.image_size,
                  num_classes=len(data.class_names))
    if not report.ok:
        raise RuntimeError(f"the Template failed the gate: {report.message}")
    return data, [EvalJob(code=code, recipe=run_data.recipe(seed), budgets=settings.budgets,
                          candidate_id=f"template-s{seed}", gate_report=report,
                          timeout_s=profile.eval_timeout_s) for seed in range(n)]


def _timed(executor: Any, jobs: list[Any], data: Any) -> dict[str, Any]:
    """Run ``jobs`` all at once through ``executor``; their wall time and reports."""
    t0 = monotonic()
    reports = [f.result() for f in [executor.submit(job, data) for job in jobs]]
    wall = monotonic() - t0
    return {"wall_s": wall, "ok": sum(r.ok for r in reports),
            "eval_s": [round(r.wall_s, 3) for r in reports],
            "failures": sorted({f"{r.failure_stage}: {r.failure_reason}"[:200]
                                for r in reports if not r.ok})}


def measure(profile: Profile, cache_dir: Path, *, evaluations: int, repeat: int,
            workers: int = 2) -> dict[str, Any]:
    """Build the executors, warm them up, then time the interleaved repeats.

    Returns:
        ``{"machine", "evaluations", "repeat", "executors": {label: {kind, workers,
        start_s, warmup_s}}, "runs": [{repeat, executor, wall_s, ok, eval_s, ...}]}``.
    """
    from tools.executors import EvalJob, make_executor

    data, jobs = _jobs(profile, cache_dir, evaluations)
    chosen = configs(workers, _ray_available())
    executors, info = {}, {}
    for kind, n in chosen:
        t0 = monotonic()
        ex = make_executor(kind, workers=n)  # type: ignore[arg-type]
        start = monotonic() - t0
        t0 = monotonic()
        for f in [ex.submit(EvalJob(code=REFUSED), data) for _ in range(n)]:
            f.result()
        executors[label(kind, n)] = ex
        info[label(kind, n)] = {"kind": kind, "workers": n, "threads": ex.threads,
                                "start_s": round(start, 3),
                                "warmup_s": round(monotonic() - t0, 3)}
    runs = []
    try:
        names = list(executors)
        for r in range(repeat):
            for name in names[r % len(names):] + names[:r % len(names)]:
                print(f"repeat {r + 1}/{repeat}: {name}, {evaluations} evaluations", flush=True)
                runs.append({"repeat": r, "executor": name,
                             **_timed(executors[name], jobs, data)})
    finally:
        for ex in executors.values():
            ex.close()
    return {"machine": machine(), "evaluations": evaluations, "repeat": repeat,
            "workers": workers, "executors": info, "runs": runs}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Add the per-executor figures and the comparisons (module docstring) to ``result``."""
    e = result["evaluations"]
    per: dict[str, dict[str, Any]] = {}
    for name, ex in result["executors"].items():
        runs = sorted((x for x in result["runs"] if x["executor"] == name),
                      key=lambda x: x["repeat"])
        slot = [x["wall_s"] * ex["workers"] / e for x in runs]
        own = [sum(x["eval_s"]) / len(x["eval_s"]) for x in runs]
        per[name] = {"evals_per_hour": t_interval([e / x["wall_s"] * 3600 for x in runs]),
                     "slot_s": t_interval(slot),
                     "beyond_own_s": t_interval([s - o for s, o in zip(slot, own, strict=True)]),
                     "ok": sum(x["ok"] for x in runs), "of": e * len(runs), "slot_runs": slot}
    names, w = list(per), result["workers"]
    one, pool = label("local", 1), label("local", w)
    rate = {n: [e / x["wall_s"] * 3600 for x in sorted(
        (x for x in result["runs"] if x["executor"] == n), key=lambda x: x["repeat"])]
        for n in names}
    compare = {"speedup": t_interval([b / a for a, b in zip(rate[one], rate[pool],
                                                             strict=True)])}
    ray = label("ray", w)
    if ray in per:
        compare["ray_overhead_s"] = paired_difference(per[ray]["slot_runs"],
                                                      per[pool]["slot_runs"])
    return {**result,
            "figures": {n: {k: (v.model_dump() if isinstance(v, Interval) else v)
                            for k, v in f.items()} for n, f in per.items()},
            "compare": {k: v.model_dump() for k, v in compare.items()}}


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Return one CSV row per executor and repeat."""
    return [{**{k: v for k, v in x.items() if k != "eval_s"},
             "eval_s_mean": round(sum(x["eval_s"]) / len(x["eval_s"]), 3),
             "evals_per_hour": round(result["evaluations"] / x["wall_s"] * 3600, 2)}
            for x in result["runs"]]


def _text(d: dict[str, Any], digits: int = 1) -> str:
    return Interval.model_validate(d).text(digits)


def markdown(result: dict[str, Any], command: str) -> str:
    """Return ``executors.md``: the setup, the table and the two comparisons."""
    w, figs, comp = result["workers"], result["figures"], result["compare"]
    table = [[name, ex["threads"], _text(figs[name]["evals_per_hour"]),
              _text(figs[name]["slot_s"], 2), _text(figs[name]["beyond_own_s"], 2),
              f"{figs[name]['ok']}/{figs[name]['of']}", f"{ex['start_s']:.1f}",
              f"{ex['warmup_s']:.1f}"] for name, ex in result["executors"].items()]
    lines = [header("Executors suite", command, result["machine"]),
             f"{result['evaluations']} evaluations of the Template (training seeds 0.."
             f"{result['evaluations'] - 1}) per executor and repeat, {result['repeat']} "
             "interleaved repeats (rotated order). Intervals: 95 % t over repeats. "
             "slot-s/eval = wall x workers / evaluations; beyond own = slot-s/eval minus "
             "the evaluations' own wall time. Start and warm-up are not in the clock.", "",
             md_table(["executor", "threads/eval", "evaluations per hour",
                       "slot-s per evaluation", "slot-s beyond own", "ok", "start s",
                       "warm-up s"], table), "",
             f"Speed-up of local x{w} over local x1: "
             f"{Interval.model_validate(comp['speedup']).text(2)}."]
    if "ray_overhead_s" in comp:
        lines.append(f"Ray overhead per evaluation against local x{w} (paired over repeats, "
                     f"slot-seconds): {_text(comp['ray_overhead_s'], 2)} s.")
    else:
        lines.append("Ray not installed: no Ray figures (pip install -e '.[ray]').")
    lines += ["", f"![evaluations per hour]({PLOT})", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Plot evaluations per hour per executor: mean and 95 % t interval (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = list(result["figures"])
    ivs = [Interval.model_validate(result["figures"][n]["evals_per_hour"]) for n in names]
    means = [iv.value or 0.0 for iv in ivs]
    err = [[m - (iv.lo if iv.lo is not None else m) for m, iv in zip(means, ivs, strict=True)],
           [(iv.hi if iv.hi is not None else m) - m for m, iv in zip(means, ivs, strict=True)]]
    ax.bar(names, means, yerr=err, capsize=6, color="#4c72b0")
    ax.set_ylabel("evaluations per hour")
    ax.set_title(f"{result['evaluations']} evaluations x {result['repeat']} repeats, 95 % t")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_executors(profile: Profile, out: Path, *, command: str, cache_dir: Path,
                  evaluations: int | None = None, repeat: int = 2, workers: int = 2,
                  dry_run: bool = False) -> dict[str, Any] | None:
    """Run the executors suite and write ``executors.{md,csv,json,png}`` into ``out``.

    Args:
        profile: Data, recipe and timeout of the evaluations.
        out: The results folder.
        command: The benchmark's command line.
        cache_dir: Data cache.
        evaluations: E (default ``profile.proposals``).
        repeat: Interleaved repeats.
        workers: Workers of the pool and of Ray (compared with one local worker).
        dry_run: Print the plan and run nothing.

    Returns:
        The results (None for a dry run).
    """
    e = evaluations or profile.proposals
    chosen = configs(workers, _ray_available())
    print(f"executors suite, profile {profile.name}: {e} Template evaluations "
          f"(n={profile.synthetic_n if profile.synthetic else 'ISIC'}, {profile.image_size} px, "
          f"{profile.epochs} epochs) x {repeat} repeats through "
          f"{', '.join(label(k, n) for k, n in chosen)}; about "
          f"{round(repeat * e * profile.eval_s_estimate * (1 + (len(chosen) - 1) / workers) / 60)} "
          "min", flush=True)
    if dry_run:
        return None
    result = summarise(measure(profile, cache_dir, evaluations=e, repeat=repeat,
                               workers=workers))
    write_suite(out, "executors", result, command, rows=rows, plot=plot, plot_name=PLOT,
                markdown=markdown)
    print(markdown(result, command), flush=True)
    return result
