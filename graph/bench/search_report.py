"""Aggregate the search suite's runs and write ``search.{md,csv,json}`` and the HV plot.

Per strategy: means with 95 % t intervals over search seeds (:mod:`graph.bench.stats`)
of the final hypervolume, the best feasible design's re-measured balanced accuracy and
unfairness (each run's mean over the fresh seeds), search wall time, evaluations and
tokens. Ratios of mean hypervolume agents / random and agents / evolution carry a 95 %
percentile bootstrap interval over seeds. Targets (issue 9): agents' HV at least 1.2x
random's with non-overlapping 95 % intervals, and at least evolution's.

Every strategy runs the same number of proposals, but the promotion rung retrains only
the designs that screen within noise of the best, so a strategy that proposes better
designs spends more trainings. The same figures at equal compute cut every search at the
fewest trainings any search used (:func:`equal_trainings`). The hypervolume is also given
with every design's latency re-timed side by side after the searches
(:mod:`graph.bench.retimed`), since the searches' own latencies were measured under
different loads (:func:`retimed`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from graph.bench.output import header, machine, md_table, verdict, write_suite
from graph.bench.profiles import Profile
from graph.bench.runfolder import SearchRun
from graph.bench.stats import Interval, ratio_interval, spread, t_interval

#: Per-strategy figures: (key, column title, value of one run).
FIGURES: list[tuple[str, str, Any]] = [
    ("hv", "hypervolume", lambda r: r.hv),
    ("balanced_accuracy", "best: re-measured bal. acc.",
     lambda r: r.remeasured_mean("balanced_accuracy")),
    ("unfairness", "best: re-measured unfairness", lambda r: r.remeasured_mean("unfairness")),
    ("search_wall_s", "search wall (s)", lambda r: r.search_wall_s),
    ("reused", "trainings reused", lambda r: r.reused),
    ("evaluations", "evaluations", lambda r: r.evaluations),
    ("tokens", "LLM tokens", lambda r: r.tokens),
]
HV_RATIO_TARGET = 1.2
HV_PLOT = "search_hv.png"


def aggregate(profile: Profile, runs: list[SearchRun]) -> dict[str, Any]:
    """Per-strategy intervals, HV ratios and the targets' verdicts of ``runs``."""
    labels = list(dict.fromkeys(r.strategy for r in runs))
    by = {s: [r for r in runs if r.strategy == s] for s in labels}
    strategies = {s: {key: t_interval([fn(r) for r in rs]).model_dump()
                      for key, _, fn in FIGURES} for s, rs in by.items()}
    hv = {s: [r.hv for r in rs] for s, rs in by.items()}
    ratios = hv_ratios(hv)
    return {"profile": profile.model_dump(mode="json"),
            "reference": list(profile.hv_reference), "latency_ref_ms": profile.latency_ref_ms,
            "machine": machine(), "strategies": strategies, "ratios": ratios,
            "targets": targets(strategies, ratios),
            "equal_trainings": equal_trainings(by), "retimed": retimed(by),
            "runs": [r.model_dump() for r in runs]}


def hv_ratios(hv: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Ratios of mean hypervolume agents / random and agents / evolution (bootstrap)."""
    return {f"agents/{o}": ratio_interval(hv["agents"], hv[o]).model_dump()
            for o in ("random", "evolution") if "agents" in hv and o in hv}


def equal_trainings(by: dict[str, list[SearchRun]]) -> dict[str, Any] | None:
    """Hypervolume of every search cut at the fewest trainings any search used.

    Returns:
        ``trainings`` (the cut), ``hv`` (per strategy, mean and 95 % t interval) and
        ``ratios`` (as :func:`hv_ratios`); None when no run holds a per-training curve.
    """
    curves = {s: [r.hv_trainings for r in rs if r.hv_trainings] for s, rs in by.items()}
    lengths = [len(c) for cs in curves.values() for c in cs]
    if not lengths:
        return None
    cut = min(lengths)
    hv = {s: [c[cut - 1] for c in cs] for s, cs in curves.items() if cs}
    return {"trainings": cut, "hv": {s: t_interval(v).model_dump() for s, v in hv.items()},
            "ratios": hv_ratios(hv)}


def retimed(by: dict[str, list[SearchRun]]) -> dict[str, Any] | None:
    """Hypervolume with the latencies re-timed side by side: per strategy and the ratios.

    Returns:
        ``hv`` (per strategy, mean and 95 % t interval) and ``ratios`` (as
        :func:`hv_ratios`); None unless every run was re-timed.
    """
    if any(r.hv_retimed is None for rs in by.values() for r in rs):
        return None
    hv = {s: [float(r.hv_retimed or 0.0) for r in rs] for s, rs in by.items()}
    return {"hv": {s: t_interval(v).model_dump() for s, v in hv.items()},
            "ratios": hv_ratios(hv)}


def targets(strategies: dict[str, dict[str, Any]],
            ratios: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the issue's search targets as verdicts (``ok`` None when a strategy is missing)."""
    out = []
    vs_random = ratios.get("agents/random")
    ok: bool | None = None
    if vs_random and vs_random["value"] is not None:
        a = Interval(**strategies["agents"]["hv"])
        r = Interval(**strategies["random"]["hv"])
        apart = None if None in (a.lo, r.lo) else not a.overlaps(r)  # n < 2: no interval
        ok = False if vs_random["value"] < HV_RATIO_TARGET else apart
    out.append({"target": f"agents HV >= {HV_RATIO_TARGET:g}x random, 95 % intervals apart",
                "ok": ok, "measured": Interval(**vs_random).text(2) if vs_random else "n/a"})
    vs_evo = ratios.get("agents/evolution")
    ok = None if not vs_evo or vs_evo["value"] is None else vs_evo["value"] >= 1.0
    out.append({"target": "agents HV >= evolution HV", "ok": ok,
                "measured": Interval(**vs_evo).text(2) if vs_evo else "n/a"})
    return out


def run_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One CSV row per search."""
    rows = []
    for r in result["runs"]:
        run = SearchRun.model_validate(r)
        bal = spread([m.balanced_accuracy for m in run.remeasured if m.ok])
        unf = spread([m.unfairness for m in run.remeasured if m.ok])
        rows.append({"strategy": run.strategy, "search_seed": run.seed, "hv": run.hv,
                     "hv_retimed": run.hv_retimed,
                     "evaluations": run.evaluations, "proposals": run.proposals,
                     "best": run.best_id, "remeasured_seeds": sum(m.ok for m in run.remeasured),
                     "balanced_accuracy_mean": bal.value, "balanced_accuracy_sd": bal.sd,
                     "unfairness_mean": unf.value, "unfairness_sd": unf.sd,
                     "search_wall_s": run.search_wall_s, "process_wall_s": run.process_wall_s,
                     "reused": run.reused,
                     "tokens": run.tokens, "stop_reason": run.stop_reason,
                     "run_dir": run.run_dir})
    return rows


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(result: dict[str, Any], command: str) -> str:
    """Return the ``search.md`` text: setup, strategy table, ratios, targets, per-run table."""
    p = result["profile"]
    digits = {"hv": 4, "search_wall_s": 0, "evaluations": 1, "reused": 1, "tokens": 0}
    table = md_table(["strategy", *(title for _, title, _ in FIGURES)],
                     [[s, *(Interval(**v[key]).text(digits.get(key, 3)) for key, _, _ in FIGURES)]
                      for s, v in result["strategies"].items()])
    ratio_rows = [[k, Interval(**v).text(2)] for k, v in result["ratios"].items()]
    per_run = md_table(["strategy", "seed", "HV", "HV re-timed", "evals", "best",
                        "re-measured bal. acc. (mean +- sd)", "unfairness (mean +- sd)",
                        "wall (s)", "reused", "tokens"],
                       [[r["strategy"], r["search_seed"], _fmt(r["hv"], 4),
                         _fmt(r["hv_retimed"], 4), r["evaluations"],
                         r["best"], f"{_fmt(r['balanced_accuracy_mean'])} +- "
                         f"{_fmt(r['balanced_accuracy_sd'])}",
                         f"{_fmt(r['unfairness_mean'])} +- {_fmt(r['unfairness_sd'])}",
                         _fmt(r["search_wall_s"], 0), r["reused"], r["tokens"]]
                        for r in run_rows(result)])
    lines = [header("Search suite", command, result["machine"]),
             f"Profile `{p['name']}`: {p['description']}. Data: "
             + (f"synthetic n={p['synthetic_n']}" if p["synthetic"] else "ISIC 2019")
             + f", {p['image_size']} px; recipe: {p['epochs']} epochs, batch {p['batch_size']}; "
             f"budgets: max_params={p['max_params']}, max_latency_ms={p['max_latency_ms']}, "
             f"max_memory_mb={p['max_memory_mb']}; "
             + (f"latency screen {p['latency_screen']:g}x the latency edge (no design slower "
                "is trained); " if p.get("latency_screen") else "")
             + f"{p['proposals']} proposals per search "
             f"(+ the Template); search seeds {p['search_seeds']}, training seed "
             f"{p['search_train_seed']}; re-measured on fresh training seeds "
             f"{p['fresh_seeds']}.",
             "",
             "Hypervolume of the feasible designs' normalised objectives (1 - balanced "
             f"accuracy, unfairness = mean max_gap over sex and age, latency / "
             f"{result['latency_ref_ms']:g} ms), reference point {result['reference']}, "
             "fixed before the runs. Cells: mean [95 % t interval over search seeds].",
             "", table, "",
             "Trainings reused: trainings a search took from the suite's shared cache "
             "(`--shared-cache`: the same design, data, recipe and seed another search had "
             "trained), so its wall time does not include them; the suite's wall time "
             "is " + (f"{result['suite_wall_s'] / 60:.1f} min with {result['jobs']} job(s) at "
                      "a time (a rerun that reuses finished searches counts only what it "
                      "ran)." if result.get("suite_wall_s") is not None else "not recorded."),
             "",
             "Ratio of mean hypervolume (95 % percentile bootstrap over search seeds, "
             "10,000 draws, each strategy resampled independently):", "",
             md_table(["ratio", "value [95 % interval]"], ratio_rows) if ratio_rows else "n/a",
             "", *equal_trainings_md(result.get("equal_trainings")),
             *retimed_md(result.get("retimed")), *pooled_md(result),
             "Targets:", "",
             *[f"- {verdict(t['ok'])}: {t['target']} (measured {t['measured']})"
               for t in result["targets"]],
             "", f"![hypervolume versus evaluations]({HV_PLOT})", "", "Runs:", "", per_run, ""]
    return "\n".join(lines)


def equal_trainings_md(eq: dict[str, Any] | None) -> list[str]:
    """Return the equal-compute paragraph of ``search.md`` (none without per-training curves)."""
    if not eq:
        return []
    rows = [[f"{s}: hypervolume", Interval(**v).text(4)] for s, v in eq["hv"].items()]
    rows += [[f"{k}: ratio", Interval(**v).text(2)] for k, v in eq["ratios"].items()]
    return [f"At equal compute: every search cut after {eq['trainings']} trainings, the "
            "fewest any search used (promotion seeds count; the cut keeps the designs found "
            "first, at their best available fidelity):", "",
            md_table(["at equal compute", "value [95 % interval]"], rows), ""]


def retimed_md(rt: dict[str, Any] | None) -> list[str]:
    """Return the re-timed paragraph of ``search.md`` (none before the re-timing)."""
    if not rt:
        return []
    rows = [[f"{s}: hypervolume", Interval(**v).text(4)] for s, v in rt["hv"].items()]
    rows += [[f"{k}: ratio", Interval(**v).text(2)] for k, v in rt["ratios"].items()]
    return ["With every design's latency re-timed side by side after the searches (one "
            "sandboxed job, interleaved rounds, `retimed.json`; the searches measured theirs "
            "under different loads):", "",
            md_table(["latency re-timed", "value [95 % interval]"], rows), ""]


def pooled_md(result: dict[str, Any]) -> list[str]:
    """Return the paragraph on the pooled front (:func:`graph.bench.retimed.pooled_hv`)."""
    pool = result.get("pooled")
    if not pool or not pool.get("designs"):
        return []
    basis = (result.get("retimed") or {}).get("hv") if pool["retimed"] else None
    means = {s: Interval(**(basis or {}).get(s, v["hv"])).value
             for s, v in result["strategies"].items()}
    times = ", ".join(f"{pool['hv'] / m:.2f}x the {s} mean" for s, m in means.items() if m)
    return [f"All searches together: the {pool['designs']} distinct designs the searches "
            f"trained, pooled into one front, reach a hypervolume of {pool['hv']:.4f} "
            + ("(latencies re-timed)" if pool["retimed"] else "(the searches' own latencies)")
            + (f": {times}." if times else ".")
            + " Not a strategy's score: it is how far the designs found so far, by any "
            "strategy, reach under this recipe and reference point.", ""]


def hv_plot(result: dict[str, Any], path: Path) -> None:
    """Hypervolume versus evaluations (trainings): mean and 95 % t band per strategy (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label in result["strategies"]:
        curves = [r.get("hv_trainings") or r["hv_curve"] for r in result["runs"]
                  if r["strategy"] == label and (r.get("hv_trainings") or r["hv_curve"])]
        if not curves:
            continue
        width = max(map(len, curves))  # a shorter search holds its last value
        arr = np.array([c + [c[-1]] * (width - len(c)) for c in curves])
        x = np.arange(1, width + 1)
        bands = [t_interval(list(col)) for col in arr.T]
        ax.plot(x, arr.mean(axis=0), drawstyle="steps-post", label=f"{label} (n={len(curves)})")
        if len(curves) > 1:
            lo = [b.value if b.lo is None else b.lo for b in bands]
            hi = [b.value if b.hi is None else b.hi for b in bands]
            ax.fill_between(x, np.asarray(lo, dtype=float), np.asarray(hi, dtype=float),
                            step="post", alpha=0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("evaluations (trainings, promotion seeds included)")
    ax.set_ylabel("hypervolume (normalised objectives)")
    ax.set_title("mean and 95 % t band over search seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_search(out: Path, result: dict[str, Any], command: str) -> None:
    """Write ``search.md``, ``search.csv``, ``search.json`` and ``search_hv.png`` into ``out``."""
    write_suite(out, "search", result, command, rows=run_rows, plot=hv_plot, plot_name=HV_PLOT,
                markdown=markdown)
