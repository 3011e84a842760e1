"""The search suite: each strategy x search seed as a real ``graph.run`` child process.

Every search gets the profile's data, recipe, budgets and ``--iter-max`` (the evaluation
budget), ``--patience`` above it (no search stops early on patience, so all spend the
same budget), its ``--strategy`` and ``--search-seed``, and one shared data cache
(``FLNAS_CACHE_DIR``). The reference point and ``L`` are written to ``search_plan.json``
before the first search starts. Each run folder is read (:mod:`graph.bench.runfolder`),
its best feasible design re-trained on the profile's fresh training seeds with the
product evaluation (:func:`tools.evaluate.evaluate_candidate`, sandboxed), every design
of every front re-timed side by side once all that has finished
(:mod:`graph.bench.retimed`), and the figures aggregated and written
(:mod:`graph.bench.search_report`).

The run step (:data:`Runner`) and the re-measurement (:data:`Remeasurer`) are injectable,
so the machinery is testable without training. A run folder that already holds a
``summary.json`` is reused (a killed benchmark continues where it stopped); an
unfinished one is removed and run again. Re-measurements are kept in the run folder
(``remeasured.json``, by code hash and seed), so a rerun retrains none of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agents.settings import Settings
from graph.bench.order import run_in_order
from graph.bench.output import say, write_json
from graph.bench.profiles import Profile, strategy_args
from graph.bench.retimed import (
    Timer,
    pooled_hv,
    retime,
    retimed_hv,
    run_records,
    sandboxed_timer,
)
from graph.bench.runfolder import Remeasure, SearchRun, read_run
from graph.bench.search_report import aggregate, write_search
from tools.executors import threads_per_eval

REPO = Path(__file__).resolve().parents[2]


class SearchFailed(RuntimeError):
    """A search's child process exited with an error."""


class RunSpec(BaseModel):
    """One planned search: its label, seed, folder and exact command."""

    strategy: str
    seed: int
    run_id: str
    run_dir: str
    argv: list[str]
    """Arguments after ``python`` (``-m graph.run ...``)."""

    def command(self) -> str:
        """Return the command as a user would type it."""
        return " ".join(["python", *self.argv])


#: Runs one search; returns the process wall time in seconds (raises SearchFailed).
Runner = Callable[[RunSpec, dict[str, str]], float]
#: Re-trains ``code`` of the run in ``run_dir`` with one training seed.
Remeasurer = Callable[[str, Path, int], Remeasure]


def plan_search(profile: Profile, out: Path) -> list[RunSpec]:
    """Return the searches of ``profile``, seed-major, with their ``graph.run`` commands.

    Seed-major (every strategy's seed 1, then seed 2, ...): a drift of the machine's speed
    during the suite (other load, thermal) then touches every strategy alike, and a suite
    stopped early has compared the strategies on the same seeds.

    Every search shares ``out/shared`` (``--shared-cache``): training is deterministic for
    a fixed code, data, recipe and seed (the suite's Template trained to the same figures
    in all 15 searches at d5fc3be), so a design two searches propose, the Template first,
    trains once; the searches' results are the same, the suite faster.
    """
    runs_root = out / "runs"
    specs = []
    for seed in profile.search_seeds:
        for spec in profile.strategies:
            label, flags = strategy_args(spec)
            run_id = f"{label.replace('[', '-').replace(']', '').replace(':', '-')}-s{seed}"
            argv = ["-m", "graph.run", *profile.data_args(), *profile.recipe_args(), *flags,
                    "--search-seed", str(seed), "--train-seed", str(profile.search_train_seed),
                    "--iter-max", str(profile.proposals),
                    "--patience", str(profile.proposals + 1), "--quiet",
                    "--shared-cache", str(out / "shared"),
                    "--run-dir", str(runs_root), "--run-id", run_id]
            specs.append(RunSpec(strategy=label, seed=seed, run_id=run_id,
                                 run_dir=str(runs_root / run_id), argv=argv))
    return specs


def child_env(cache_dir: Path, jobs: int = 1) -> dict[str, str]:
    """Return the searches' environment: no ``FLNAS_<SETTING>`` of the caller, one shared cache.

    A setting left in the environment would change every search behind the profile's back.
    With ``jobs`` > 1 concurrent searches, each one's torch threads are capped
    (``OMP_NUM_THREADS``, :func:`tools.executors.threads_per_eval`); torch reads it for its default.
    """
    fields = {f"FLNAS_{name.upper()}" for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in fields}
    env["FLNAS_CACHE_DIR"] = str(cache_dir)
    if jobs > 1:
        env["OMP_NUM_THREADS"] = str(threads_per_eval(jobs, None))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_cli(spec: RunSpec, env: dict[str, str]) -> float:
    """Run one search as a child process; its output goes to ``<run_dir>.log``.

    Raises:
        SearchFailed: The process exited with an error (the log's tail is in the message).
    """
    log = Path(spec.run_dir + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with log.open("w", encoding="utf-8") as fh:
        proc = subprocess.run([sys.executable, *spec.argv], cwd=REPO, env=env, stdout=fh,
                              stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise SearchFailed(f"{spec.run_id} exited with {proc.returncode} (log {log}):\n{tail}")
    return time.monotonic() - t0


class ProductRemeasure:
    """The product evaluation of a design on a fresh training seed, sandboxed.

    The run's own settings give the data, recipe (its seed replaced) and budgets; the
    prepared data and the results are shared by every run (same code and seed: same job).
    """

    def __init__(self, threads: int | None = None) -> None:
        """Start with no data prepared and nothing measured.

        Args:
            threads: Torch threads of each evaluation (None: torch's default); set it when
                several re-measurements run at once.
        """
        self.threads = threads
        self.data: dict[str, Any] = {}
        self.done: dict[tuple[str, str, int], Remeasure] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: Any) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def __call__(self, code: str, run_dir: Path, seed: int) -> Remeasure:
        """Re-train ``code`` with training seed ``seed`` under ``run_dir``'s settings.

        Thread-safe: the same (settings, code, seed) is trained once even when asked for
        by several threads at the same time; the data is prepared once per data setting.
        """
        from agents.records import code_hash
        from graph.run_data import RunData

        ctx = Settings.load(run_dir / "settings.json")
        data_key = ctx.model_dump_json(include={"task", "data_dir", "synthetic", "synthetic_n",
                                                "image_size", "seed", "cache_dir"})
        key = (data_key + ctx.model_dump_json(include={"epochs", "batch_size", "lr"}),
               code_hash(code), seed)
        with self._lock(key):
            if key not in self.done:
                with self._lock(data_key):
                    run_data = RunData(ctx, self.data.get(data_key))
                    self.data[data_key] = run_data.data()
                self.done[key] = self._measure(code, run_data, ctx, seed)
        return self.done[key]

    def _measure(self, code: str, run_data: Any, ctx: Settings, seed: int) -> Remeasure:
        from evaluation.pareto import objectives
        from tools.evaluate import evaluate_candidate

        recipe = run_data.recipe().model_copy(update={"seed": seed, "threads": self.threads})
        rep = evaluate_candidate(code, run_data.data(), recipe=recipe, budgets=ctx.budgets,
                                 split="val", timeout_s=ctx.eval_timeout_s)
        if rep.ok and rep.metrics is not None:
            return Remeasure(seed=seed, ok=True, balanced_accuracy=rep.metrics.balanced_accuracy,
                             unfairness=objectives(rep)[1])
        return Remeasure(seed=seed, ok=False, failure=f"{rep.failure_stage}: {rep.failure_reason}")


#: Settings a reused run folder must share with its planned command.
COMPARED = ("task", "data_dir", "synthetic", "synthetic_n", "image_size", "seed", "epochs",
            "batch_size", "max_params", "max_latency_ms", "max_memory_mb", "strategy", "llm",
            "search_seed", "train_seed", "iter_max", "eval_timeout_s")


def changed_settings(spec: RunSpec) -> list[str]:
    """Return the settings in which a finished run folder differs from ``spec``'s command."""
    from graph import config
    from graph.run import build_parser

    planned = config.resolve(config.flag_layer(build_parser().parse_args(spec.argv[2:])))
    saved = Settings.load(Path(spec.run_dir) / "settings.json")
    return [f"{k}: {getattr(saved, k)!r} instead of {getattr(planned, k)!r}" for k in COMPARED
            if getattr(saved, k) != getattr(planned, k)]


def _search_one(spec: RunSpec, profile: Profile, env: dict[str, str],
                runner: Runner) -> SearchRun:
    """Run (or reuse) one search and read its folder."""
    run_dir = Path(spec.run_dir)
    wall: float | None = None
    if (run_dir / "summary.json").is_file():
        stale = changed_settings(spec)
        if stale:
            raise SearchFailed(f"{run_dir} holds a finished run with other settings "
                               f"({', '.join(stale)}); choose another --out or remove it")
        say(f"{spec.run_id}: reusing the finished run in {run_dir}")
    else:
        if run_dir.exists():
            say(f"{spec.run_id}: removing an unfinished run folder")
            shutil.rmtree(run_dir)
        say(f"{spec.run_id}: {spec.command()}")
        wall = runner(spec, env)
    return read_run(run_dir, strategy=spec.strategy, seed=spec.seed,
                    latency_ref_ms=profile.latency_ref_ms, reference=profile.hv_reference,
                    process_wall_s=wall)


#: Re-measurements of a run's designs, by code hash and then training seed.
REMEASURED = "remeasured.json"


def _remeasure_one(run: SearchRun, spec: RunSpec, profile: Profile,
                   remeasure: Remeasurer) -> SearchRun:
    """Re-train the run's best feasible design on the profile's fresh seeds.

    Finished re-measurements are read back from ``remeasured.json`` in the run folder
    and each new one is written there as soon as it is done, so a killed or repeated
    benchmark retrains none of them.
    """
    from agents.records import code_hash

    if run.best_code_file:
        code = Path(run.best_code_file).read_text(encoding="utf-8")
        path = Path(spec.run_dir) / REMEASURED
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            kept = {}
        kept = kept if isinstance(kept, dict) else {}
        mine = kept.setdefault(code_hash(code), {})
        run.remeasured = []
        for seed in profile.fresh_seeds:
            try:
                run.remeasured.append(Remeasure.model_validate(mine[str(seed)]))
                continue
            except (KeyError, TypeError, ValidationError):
                pass
            done = remeasure(code, Path(spec.run_dir), seed)
            run.remeasured.append(done)
            mine[str(seed)] = done.model_dump()
            write_json(path, kept)
    say(f"{spec.run_id}: HV {run.hv:.4f} after {run.evaluations} evaluations; best "
        f"{run.best_id}; re-measured bal.acc {run.remeasured_mean('balanced_accuracy')}")
    return run


def plan_text(profile: Profile, specs: list[RunSpec], cache_dir: Path) -> str:
    """Return the dry-run plan: setup, commands, evaluations and a rough time estimate."""
    n_eval = len(specs) * profile.evaluations_per_search
    n_re = len(specs) * len(profile.fresh_seeds)
    # Each search also tests its final choice once; gate jobs are not counted.
    est = (n_eval + len(specs) + n_re) * profile.eval_s_estimate
    screen = profile.latency_screen_ms
    lines = [f"search suite, profile {profile.name}: {profile.description}",
             f"  strategies {', '.join(profile.strategies)}; search seeds {profile.search_seeds}; "
             f"training seed {profile.search_train_seed}; fresh seeds {profile.fresh_seeds}",
             f"  budgets: max_params={profile.max_params} max_latency_ms={profile.max_latency_ms}"
             f" max_memory_mb={profile.max_memory_mb}; proposals per search "
             f"{profile.proposals}",
             f"  hypervolume: reference {list(profile.hv_reference)} on (1 - bal. acc, "
             f"unfairness, latency / L), L = {profile.latency_ref_ms:g} ms",
             "  latency screen: " + ("off" if screen is None else
                                     f"designs slower than {screen:g} ms are not trained"),
             f"  data cache (FLNAS_CACHE_DIR): {cache_dir}",
             f"  evaluations: {len(specs)} searches x at most "
             f"{profile.evaluations_per_search} = "
             f"{n_eval}, {len(specs)} final test evaluations and at most {n_re} "
             f"re-measurements; estimate ~{est / 60:.0f} min at {profile.eval_s_estimate:g} s "
             "per evaluation (profile's guess)",
             "commands:"]
    return "\n".join(lines + [f"  {s.command()}" for s in specs])


def run_search(profile: Profile, out: Path, *, cache_dir: Path, command: str,
               runner: Runner = run_cli, remeasure: Remeasurer | None = None,
               timer: Timer = sandboxed_timer, dry_run: bool = False,
               jobs: int = 1) -> dict[str, Any] | None:
    """Run the search suite and write ``search.{md,csv,json}`` and ``search_hv.png``.

    Args:
        profile: The profile (data, recipe, budgets, seeds, strategies, HV setup).
        out: The results folder (run folders go to ``out/runs``).
        cache_dir: The data cache shared by every search.
        command: The benchmark's command line (written into the results).
        runner: Runs one search (default: ``graph.run`` in a child process).
        remeasure: Re-trains a design on a fresh seed (default: :class:`ProductRemeasure`).
        timer: Times the designs' graphs side by side once every search and
            re-measurement is done (:mod:`graph.bench.retimed`).
        dry_run: Print the plan and run nothing.
        jobs: Searches, each followed by its re-measurements, run at the same time, each
            with its share of the cores (:func:`tools.executors.threads_per_eval`). Each
            search is its own process with its own seeds, so the results do not depend on
            ``jobs``; wall times do.

    Returns:
        The aggregated results (None for a dry run).
    """
    specs = plan_search(profile, out)
    print(plan_text(profile, specs, cache_dir), flush=True)
    if dry_run:
        return None
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "search_plan.json", {  # fixed before any search runs
        "profile": profile.model_dump(mode="json"), "reference": list(profile.hv_reference),
        "latency_ref_ms": profile.latency_ref_ms, "command": command,
        "runs": [s.model_dump() for s in specs]})
    env = child_env(cache_dir, jobs)
    remeasure = remeasure or ProductRemeasure(threads_per_eval(jobs, None) if jobs > 1 else None)
    t0 = time.monotonic()
    # Seed-major, each seed's costliest strategy first (graph/bench/order.py). Each
    # search's re-measurements follow it in the same task, so they keep its core busy.
    runs = run_in_order(specs, lambda s: _remeasure_one(_search_one(s, profile, env, runner),
                                                         s, profile, remeasure), jobs)
    # After the pool: nothing of the suite runs beside the side-by-side timing.
    records = run_records(runs)
    latencies = retime(records, out, profile.image_size, timer)
    if latencies is not None:
        for run in runs:
            run.hv_retimed = retimed_hv(records[run.run_dir], latencies,
                                        profile.latency_ref_ms, profile.hv_reference)
    wall = time.monotonic() - t0
    print(f"search suite: {len(specs)} searches, their re-measurements and the re-timing in "
          f"{wall / 60:.1f} min with {jobs} job(s) at a time", flush=True)
    result = {**aggregate(profile, runs), "suite_wall_s": round(wall, 1), "jobs": jobs,
              "pooled": pooled_hv(records, latencies, profile.latency_ref_ms,
                                  profile.hv_reference)}
    write_search(out, result, command)
    return result
