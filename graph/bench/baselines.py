"""The baselines suite: the best found design against the Template, ResNet-18 and MobileNetV2.

Every design is trained under the same recipe (the profile's, through the product's
``RunData`` mapping of settings to recipe) on each of the profile's fresh training seeds,
and evaluated without budgets (``evaluation.report.Budgets()``) by the product evaluation
(:func:`tools.evaluate.evaluate_candidate`, sandboxed), on the held-out test split by
default: the design was chosen on validation. The headline's latencies come from one
sandboxed job that times every design's exported graph side by side after the trainings
(:func:`retime_designs`). The evaluation (:data:`Evaluator`) and the timing are
injectable so the machinery is testable without training. Headline and files:
:mod:`graph.bench.baselines_report`.

The design comes from ``--design PATH`` (a ``model.py``) or ``--from-search DIR``: the
search suite's agents design with the highest mean re-measured score
(``balanced accuracy - unfairness``, the selection rule's score at weight 1).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from agents.settings import Settings
from evaluation.report import Budgets, EvaluationReport
from graph.bench.baselines_report import headline, write_baselines
from graph.bench.output import say
from graph.bench.profiles import Profile, ProfileError
from graph.bench.retimed import Timer, sandboxed_timer, timed_or_none
from tasks.models import baseline_sources, template_source
from tools.executors import threads_per_eval

#: Trains and evaluates ``code`` (named ``name``) with one training seed.
Evaluator = Callable[[str, str, int], EvaluationReport]
OURS = "ours"
GRAPHS = "graphs"  # each design's first-seed evaluation outputs, under the results folder


def profile_settings(profile: Profile, cache_dir: Path) -> Settings:
    """Return the run settings equivalent to the profile's data, recipe and (no) budgets."""
    return Settings(task="isic", synthetic=profile.synthetic, synthetic_n=profile.synthetic_n,
                    data_dir=None if profile.synthetic else profile.require_data_dir(),
                    image_size=profile.image_size, seed=profile.data_seed,
                    cache_dir=str(cache_dir), epochs=profile.epochs,
                    batch_size=profile.batch_size, max_params=None)


class ProductEvaluator:
    """The product evaluation under the profile's recipe, unbudgeted, on one split."""

    def __init__(self, profile: Profile, cache_dir: Path,
                 split: Literal["val", "test"] = "test", threads: int | None = None,
                 keep_dir: Path | None = None) -> None:
        """Keep the settings; the data is prepared now, once for every evaluation.

        Args:
            profile: The profile (data, recipe, timeout).
            cache_dir: The data cache.
            split: The split every design is evaluated on.
            threads: Torch threads per evaluation (None: torch's default); set it when
                several evaluations run at once.
            keep_dir: The outputs of each design's evaluation with the profile's first
                fresh seed (``model.onnx`` among them; latency does not depend on the
                seed) go to ``keep_dir/<name>-s<seed>/`` (None: kept nowhere).
        """
        from graph.run_data import RunData

        self.profile = profile
        self.threads = threads
        self.keep_dir = keep_dir
        self.split: Literal["val", "test"] = split
        self.run_data = RunData(profile_settings(profile, cache_dir))
        self.run_data.data()

    def __call__(self, name: str, code: str, seed: int) -> EvaluationReport:
        """Train ``code`` with training seed ``seed`` and evaluate it (sandboxed)."""
        from tools.evaluate import evaluate_candidate

        recipe = self.run_data.recipe().model_copy(update={"seed": seed, "threads": self.threads})
        return evaluate_candidate(code, self.run_data.data(), recipe=recipe, budgets=Budgets(),
                                  split=self.split, candidate_id=f"{name}-s{seed}",
                                  out_dir=graph_dir(self.keep_dir, name, seed) if self.keep_dir
                                  and seed == self.profile.fresh_seeds[0] else None,
                                  timeout_s=self.profile.baseline_timeout_s)


def graph_dir(folder: Path, name: str, seed: int) -> Path:
    """Where the evaluation of ``name`` with training seed ``seed`` keeps its outputs."""
    return folder / f"{name}-s{seed}"


def retime_designs(folder: Path, names: list[str], seeds: list[int], image_size: int,
                   timer: Timer) -> dict[str, float] | None:
    """Latency (ms) per design, its graphs timed side by side (:mod:`tools.retime`).

    One graph per design (its first seed's: latency does not depend on the weights).
    None when fewer than two designs left a graph (nothing to compare) or the timing
    failed (the headline then keeps the evaluations' own latencies).
    """
    graphs = {}
    for name in names:
        found = [graph_dir(folder, name, s) / "model.onnx" for s in seeds]
        found = [p for p in found if p.is_file()]
        if found:
            graphs[name] = str(found[0])
    if len(graphs) < 2:
        return None
    timed = timed_or_none(timer, list(graphs.values()), image_size)
    if timed is None:
        return None
    return {n: v for n, v in zip(graphs, timed[0], strict=True) if v is not None}


def design_from_search(search_dir: Path) -> tuple[str, Path]:
    """Return the search suite's best agents design by mean re-measured score.

    Returns:
        A label (``agents s<seed> <id>``) and the path of its ``model.py``.

    Raises:
        ProfileError: No ``search.json`` there, or no agents run with a re-measured design.
    """
    path = search_dir / "search.json"
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ProfileError(f"--from-search {search_dir}: cannot read {path} ({e}); run "
                           "`python -m graph.bench search` first") from e
    best: tuple[float, str, Path] | None = None
    for run in result.get("runs", []):
        ok = [m for m in run.get("remeasured", []) if m.get("ok")]
        if run.get("strategy") != "agents" or not ok or not run.get("best_code_file"):
            continue
        score = sum(m["balanced_accuracy"] - m["unfairness"] for m in ok) / len(ok)
        if best is None or score > best[0]:
            best = (score, f"agents s{run['seed']} {run['best_id']}", Path(run["best_code_file"]))
    if best is None:
        raise ProfileError(f"--from-search {search_dir}: no agents run with a re-measured "
                           "feasible design in search.json")
    return best[1], best[2]


def designs(design: Path) -> dict[str, str]:
    """Return sources by name: ours (from ``design``), then the Template and the baselines.

    Raises:
        ProfileError: ``design`` cannot be read.
    """
    try:
        ours = design.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"--design {design}: cannot read it ({e})") from e
    return {OURS: ours, "template": template_source(), **baseline_sources()}


def run_baselines(profile: Profile, out: Path, *, design: Path, design_label: str,
                  command: str, evaluator: Evaluator | None = None, cache_dir: Path,
                  split: Literal["val", "test"] = "test", timer: Timer = sandboxed_timer,
                  dry_run: bool = False, jobs: int = 1) -> dict[str, Any] | None:
    """Run the baselines suite and write ``baselines.{md,csv,json}`` and its plot.

    Args:
        profile: The profile (data, recipe, fresh seeds, timeout).
        out: The results folder.
        design: The found design's ``model.py``.
        design_label: Where it came from (written into the results).
        command: The benchmark's command line.
        evaluator: Trains and evaluates one design on one seed (default: the product's,
            keeping each design's first-seed outputs in ``out/graphs``).
        timer: Times the designs' exported graphs side by side once every evaluation is
            done; the headline's latencies are those (each evaluation measured its own
            under the load of its moment, the other evaluations beside it).
        cache_dir: The data cache.
        split: The split every design is evaluated on.
        dry_run: Print the plan and run nothing.
        jobs: Evaluations run at the same time, each with its share of the cores.

    Returns:
        The results (None for a dry run).
    """
    sources = designs(design)
    seeds = profile.fresh_seeds
    print(f"baselines suite, profile {profile.name}: {', '.join(sources)} x training seeds "
          f"{seeds} = {len(sources) * len(seeds)} evaluations ({split} split, no budgets, "
          f"{profile.epochs} epochs, {profile.image_size} px, training limit "
          f"{profile.baseline_timeout_s:g} s); ours = {design_label} ({design})", flush=True)
    if dry_run:
        return None
    evaluator = evaluator or ProductEvaluator(
        profile, cache_dir, split, threads_per_eval(jobs, None) if jobs > 1 else None,
        keep_dir=out / GRAPHS)
    todo = [(name, code, seed) for name, code in sources.items() for seed in seeds]

    def one(item: tuple[str, str, int]) -> EvaluationReport:
        name, code, seed = item
        rep = evaluator(name, code, seed)
        say(f"{name} seed {seed}: "
            + (f"bal.acc {rep.metrics.balanced_accuracy:.3f}" if rep.ok and rep.metrics
               else f"failed ({rep.failure_stage}: {rep.failure_reason})"))
        return rep

    # The slowest designs (the standard networks) go first so the pool ends together.
    order = sorted(range(len(todo)), key=lambda i: todo[i][0] in (OURS, "template"))
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        done = dict(zip(order, pool.map(one, [todo[i] for i in order]), strict=True))
    reports: dict[str, list[EvaluationReport]] = {name: [] for name in sources}
    for i, (name, _, _) in enumerate(todo):
        reports[name].append(done[i])
    # After the pool: nothing else of the suite runs beside the side-by-side timing.
    latencies = retime_designs(out / GRAPHS, list(sources), seeds, profile.image_size, timer)
    result = headline(reports, seeds, latencies)
    result.update(profile=profile.model_dump(mode="json"), split=split,
                  design={"label": design_label, "path": str(design)})
    write_baselines(out, result, command)
    return result
