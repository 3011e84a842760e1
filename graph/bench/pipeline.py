"""The pipeline suite: the evaluation-pipeline benchmark and the loop benchmark, in one file.

* :func:`tools.bench.run_bench` (worker start, worker vs bare-loop throughput, cache
  reuse) on the profile's ``pipeline_n`` / ``pipeline_image_size`` / ``pipeline_epochs``
  synthetic set, and
* :func:`graph.bench.loop.run_loop` (the main job ``python -m graph.run --task isic
  --synthetic`` with its defaults: wall time, evaluated candidates, time outside the
  worker).

Both are the existing benchmarks (``python -m tools.bench``, ``python -m graph.bench_loop``);
this suite runs them and writes ``pipeline.{md,csv,json}``. Each is one run: worker start
and throughput take the best of ``--repeat`` alternating runs (their spread is listed).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from graph.bench.output import header, machine, md_table, verdict, write_csv, write_json
from graph.bench.profiles import Profile


def _tools_bench(profile: Profile, repeat: int) -> dict[str, Any]:
    from tools.bench import run_bench

    return run_bench(profile.pipeline_n, profile.pipeline_image_size, profile.pipeline_epochs,
                     None, repeat)


def _loop_bench() -> dict[str, Any]:
    from graph.bench.loop import run_loop

    return run_loop()


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the measures with their targets and verdicts (also the CSV rows)."""
    ev, lp = result["evaluation"], result["loop"]
    w, tp, c = ev["worker"], ev["throughput"], ev["cache"]
    return [
        {"measure": "worker start (s)", "value": round(w["start_s"], 3),
         "runs": ", ".join(f"{x:.2f}" for x in w["start_s_runs"]), "target": "<= 3",
         "ok": ev["pass"]["worker_start"]},
        {"measure": "worker / bare-loop training throughput", "value": round(tp["ratio"], 3),
         "runs": f"worker {', '.join(f'{x:.0f}' for x in tp['worker_img_s_runs'])} img/s; "
                 f"bare {', '.join(f'{x:.0f}' for x in tp['bare_img_s_runs'])} img/s",
         "target": ">= 0.9", "ok": ev["pass"]["throughput"]},
        {"measure": "decodes on the second prepare", "value": c["second_decodes"],
         "runs": f"first {c['first_decodes']} in {c['first_s']:.1f} s", "target": "0",
         "ok": ev["pass"]["cache_reuse"]},
        {"measure": "main job wall (s)", "value": round(lp["wall_s"], 1),
         "runs": f"prep {lp['prep_s']:.1f} s, search {lp['search_s']:.1f} s", "target": "<= 300",
         "ok": lp["pass"]["wall"]},
        {"measure": "main job evaluated candidates", "value": lp["candidates"],
         "runs": f"stop: {lp['stop_reason']}", "target": ">= 6", "ok": lp["pass"]["candidates"]},
        {"measure": "time outside the worker (%)", "value": round(100 * lp["outside_frac"], 2),
         "runs": f"{lp['outside_s']:.1f} s of {lp['search_s']:.1f} s", "target": "<= 5",
         "ok": lp["pass"]["outside"]},
    ]


def run_pipeline(profile: Profile, out: Path, *, command: str, repeat: int = 2,
                 evaluation: Callable[[Profile, int], dict[str, Any]] = _tools_bench,
                 loop: Callable[[], dict[str, Any]] = _loop_bench,
                 dry_run: bool = False) -> dict[str, Any] | None:
    """Run both pipeline benchmarks and write ``pipeline.{md,csv,json}`` into ``out``.

    Args:
        profile: Gives the synthetic set of the evaluation benchmark.
        out: The results folder.
        command: The benchmark's command line.
        repeat: Alternating worker / bare-loop runs of the evaluation benchmark.
        evaluation: Runs the evaluation benchmark (default :func:`tools.bench.run_bench`).
        loop: Runs the loop benchmark (default :func:`graph.bench.loop.run_loop`).
        dry_run: Print the plan and run nothing.

    Returns:
        The results (None for a dry run).
    """
    print(f"pipeline suite, profile {profile.name}: python -m tools.bench --n "
          f"{profile.pipeline_n} --image-size {profile.pipeline_image_size} --epochs "
          f"{profile.pipeline_epochs} --repeat {repeat}; then python -m graph.bench_loop "
          "(the main job, cold cache)", flush=True)
    if dry_run:
        return None
    result: dict[str, Any] = {"machine": machine(), "profile": profile.name,
                              "command": command, "evaluation": evaluation(profile, repeat),
                              "loop": loop()}
    table = rows(result)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "pipeline.json", result)
    write_csv(out / "pipeline.csv", table)
    md = [header("Pipeline suite", command, result["machine"]),
          f"Evaluation benchmark on synthetic n={profile.pipeline_n}, "
          f"{profile.pipeline_image_size} px, {profile.pipeline_epochs} epoch(s), {repeat} "
          f"worker runs; loop benchmark: `{result['loop'].get('command', 'graph.run')}`.", "",
          md_table(["measure", "value", "runs / detail", "target", "met"],
                   [[r["measure"], r["value"], r["runs"], r["target"], verdict(r["ok"])]
                    for r in table]), ""]
    (out / "pipeline.md").write_text("\n".join(md), encoding="utf-8")
    return result
