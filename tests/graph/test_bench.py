"""The benchmark's machinery (graph.bench) on tiny settings, without training.

The search suite's aggregation, hypervolume, intervals and writers run on synthetic run
folders (records from tests/fakes/reports.py) written by an injected runner, and its
run-folder reading on the one real tiny CLI run the graph tests share
(``heuristic_run``); the commands it would run are parsed by graph.run's own parser.
The baselines suite runs with a fake evaluator, the pipeline suite with fake benchmarks.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest

from agents.records import Candidate, Evaluation, Fidelity
from agents.settings import Settings
from evaluation.pareto import hypervolume
from evaluation.report import Budgets, EvaluationReport
from graph import config
from graph.bench import __main__ as cli
from graph.bench.baselines import GRAPHS, design_from_search, graph_dir, run_baselines
from graph.bench.pipeline import run_pipeline
from graph.bench.profiles import QUICK, ProfileError, strategy_args
from graph.bench.retimed import RetimeFailed, pooled_hv
from graph.bench.runfolder import Remeasure, SearchRun, hv_curves, read_run
from graph.bench.search import RunSpec, SearchFailed, child_env, plan_search, run_search
from graph.bench.search_report import equal_trainings, equal_trainings_md, pooled_md, targets
from graph.bench.stats import Interval, paired_difference, ratio_interval, t_interval
from graph.run import build_parser
from graph.trace import load_trace
from tasks.genome import TEMPLATE_GENOME
from tests.fakes.reports import make_record, make_report

TINY = QUICK.override(seeds=2, proposals=2, strategies=["agents", "random"], synthetic_n=120,
                      epochs=1, fresh_seeds=[101, 102])


def test_profiles_hold_the_briefed_numbers_and_overrides_validate(monkeypatch):
    assert (QUICK.synthetic_n, QUICK.image_size, QUICK.epochs, QUICK.proposals) == \
        (4000, 32, 5, 6)
    assert "--confirm-top" in QUICK.recipe_args()  # the suite re-measures on its own
    assert len(QUICK.search_seeds) == 5 and len(QUICK.fresh_seeds) == 3
    assert QUICK.strategies == ["agents", "random", "evolution"]
    assert QUICK.override(seeds=7).search_seeds == [1, 2, 3, 4, 5, 6, 7]
    args = QUICK.recipe_args()
    assert args[args.index("--promote-top") + 1] == "1"  # one schedule for every strategy
    with pytest.raises(ProfileError, match="fresh seeds"):
        QUICK.override(fresh_seeds=[0, 1])  # 0 trains every search
    with pytest.raises(ProfileError, match="fresh seeds"):
        QUICK.override(fresh_seeds=[2, 101])  # 2 promotes and confirms in every search
    with pytest.raises(ProfileError, match="unknown strategy"):
        QUICK.override(strategies=["agents", "grid"])
    assert strategy_args("agents=openai:gpt-4.1") == (
        "agents[openai:gpt-4.1]", ["--strategy", "agents", "--llm", "openai:gpt-4.1"])
    monkeypatch.delenv("FLNAS_ISIC_DIR", raising=False)
    assert cli.main(["search", "--profile", "full", "--dry-run"]) == 2  # no --data-dir


def test_the_planned_commands_are_what_graph_run_reads(tmp_path, monkeypatch, capsys):
    specs = plan_search(TINY, tmp_path)
    assert [(s.strategy, s.seed) for s in specs] == [
        ("agents", 1), ("random", 1), ("agents", 2), ("random", 2)]  # seed-major
    assert len({s.run_dir for s in specs}) == 4
    for spec in specs:
        assert spec.argv[:2] == ["-m", "graph.run"]
        args = build_parser().parse_args(spec.argv[2:])
        ctx = config.resolve(config.flag_layer(args))
        assert (ctx.strategy, ctx.search_seed, ctx.train_seed) == (spec.strategy, spec.seed, 0)
        assert (ctx.synthetic, ctx.synthetic_n, ctx.image_size, ctx.epochs) == (True, 120, 32, 1)
        assert ctx.iter_max == 2 and ctx.patience > ctx.iter_max and ctx.quiet
        assert ctx.max_params == 200_000 and ctx.max_latency_ms is None
        # 1.5x the hypervolume's latency edge (1 ms): no strategy trains a slower design.
        assert ctx.latency_screen_ms == pytest.approx(1.5)
        assert Path(args.runs_root) / args.run_id == Path(spec.run_dir)
        assert ctx.shared_cache == str(tmp_path / "shared")  # one for every search
    monkeypatch.setenv("FLNAS_MAX_PARAMS", "5")  # a caller's setting must not leak in
    env = child_env(tmp_path / "cache")
    assert env["FLNAS_CACHE_DIR"] == str(tmp_path / "cache") and "FLNAS_MAX_PARAMS" not in env

    def never(spec: RunSpec, env: dict[str, str]) -> float:
        raise AssertionError("a dry run ran a search")

    assert run_search(TINY, tmp_path / "out", cache_dir=tmp_path, command="c", runner=never,
                      dry_run=True) is None
    out = capsys.readouterr().out
    # Per search at most: the Template and 2 proposals, 2 more seeds for the Template and
    # for each round's promoted design.
    assert "4 searches x at most 9 = 36" in out and out.count("python -m graph.run") == 4
    assert "latency screen: designs slower than 1.5 ms are not trained" in out
    assert not (tmp_path / "out").exists()


def test_intervals_match_their_formulas():
    iv = t_interval([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2  # t_{0.975,3} * sd / sqrt(n)
    assert iv.value == 2.5 and iv.lo == pytest.approx(2.5 - half) and iv.hi == pytest.approx(
        2.5 + half)
    assert t_interval([0.3]).lo is None and t_interval([]).value is None
    d = paired_difference([0.5, 0.6, 0.7], [0.4, 0.4, 0.5])
    assert d.value == pytest.approx(0.5 / 3) and d.lo < d.value < d.hi
    r = ratio_interval([2.0, 2.2, 1.8], [1.0, 1.1, 0.9])
    assert r.value == pytest.approx(2.0) and r.lo < 2.0 < r.hi
    assert ratio_interval([1.0], [0.0]).value is None
    assert not Interval(value=1, lo=0.9, hi=1.1).overlaps(Interval(value=2, lo=1.2, hi=2.5))


def test_hv_curve_counts_trained_designs_in_order_and_only_feasible_ones():
    tight = Budgets(max_params=50_000)
    recs = [make_record("c000", make_report(bal=0.525, latency=0.5), origin="template"),
            make_record("c001", make_report(failed="gate"), round_=1),
            make_record("c001-fix1", make_report(bal=0.9, params=90_000, budgets=tight),
                        round_=1),  # infeasible: trained, but no point
            make_record("c002", make_report(bal=0.625, latency=0.25), round_=2),
            make_record("b-resnet18", make_report(bal=0.95), origin="baseline")]
    curve = hv_curves(recs, 1.0, (0.875, 1.0, 1.0))[0]
    first = 0.4 * 1.0 * 0.5  # (0.875 - 0.475) * (1 - 0) * (1 - 0.5)
    assert curve == pytest.approx([first, first, 0.5 * 0.75])  # c002 dominates c000
    # A promoted design counts at its mean over seeds, not at its lucky screen.
    fid = Fidelity(epochs=5, batch_size=64, seed=0, image_size=32)
    lucky = make_record("c003", make_report(bal=0.925, latency=0.25), round_=3).model_copy(
        update={"fidelity": fid, "confirmations": [
            Evaluation(fidelity=fid.model_copy(update={"seed": k}),
                       report=EvaluationReport.model_validate(make_report(bal=0.55,
                                                                          latency=0.25)))
            for k in (1, 2)]})
    promoted, per_training = hv_curves([*recs, lucky], 1.0, (0.875, 1.0, 1.0))
    mean_bal = (0.925 + 0.55 + 0.55) / 3
    assert promoted[-1] == pytest.approx(max(0.5, mean_bal - 0.125) * 0.75)
    # Per training: the gate failure cost nothing, the promoted design three trainings.
    assert per_training == pytest.approx([first, first, 0.375] + [promoted[-1]] * 3)


def test_equal_trainings_cuts_every_search_at_the_fewest_trainings():
    def run(strategy: str, seed: int, curve: list[float]) -> SearchRun:
        return SearchRun(strategy=strategy, seed=seed, run_dir="x", hv_trainings=curve,
                         evaluations=len(curve), hv=curve[-1])

    by = {"agents": [run("agents", 1, [0.1, 0.2, 0.3, 0.9, 0.9]),
                     run("agents", 2, [0.1, 0.3, 0.3, 0.8])],
          "random": [run("random", 1, [0.1, 0.2, 0.25]), run("random", 2, [0.1, 0.15, 0.2])]}
    eq = equal_trainings(by)
    assert eq is not None and eq["trainings"] == 3
    assert eq["hv"]["agents"]["value"] == pytest.approx(0.3)  # not the 0.85 of the full runs
    assert eq["hv"]["random"]["value"] == pytest.approx(0.225)
    assert eq["ratios"]["agents/random"]["value"] == pytest.approx(0.3 / 0.225)
    assert equal_trainings({"agents": [run("agents", 1, [0.1]).model_copy(
        update={"hv_trainings": []})]}) is None
    md = "\n".join(equal_trainings_md(eq))
    assert "cut after 3 trainings" in md and "agents/random" in md


def test_the_pooled_front_counts_each_design_once_at_its_best_fidelity():
    fid = Fidelity(epochs=5, batch_size=64, seed=0, image_size=32)
    wide = TEMPLATE_GENOME.model_copy(update={"dropout": 0.2})
    template = make_record("c000", make_report(bal=0.525, latency=0.5), origin="template")
    screened = make_record("c001", make_report(bal=0.925, latency=0.25), genome=wide)
    # The same design promoted in another search: its three-seed mean, not the screen.
    promoted = screened.model_copy(update={"fidelity": fid, "confirmations": [
        Evaluation(fidelity=fid.model_copy(update={"seed": k}),
                   report=EvaluationReport.model_validate(make_report(bal=0.55, latency=0.25)))
        for k in (1, 2)]})
    ref = (0.875, 1.0, 1.0)
    pool = pooled_hv({"a": [template, screened], "b": [template, promoted]}, None, 1.0, ref)
    mean_err = 1 - (0.925 + 0.55 + 0.55) / 3
    assert pool == {"designs": 2, "retimed": False, "hv": pytest.approx(
        hypervolume([(0.475, 0.0, 0.5), (mean_err, 0.0, 0.25)], ref))}
    # Re-timed latencies (by code hash) replace the searches' own; 2 ms is past the edge.
    retimed = pooled_hv({"b": [template, promoted]}, {template.code_hash: 2.0}, 1.0, ref)
    assert retimed["retimed"] and retimed["hv"] == pytest.approx(
        hypervolume([(mean_err, 0.0, 0.25)], ref))
    result = {"pooled": pool, "retimed": None,
              "strategies": {"agents": {"hv": Interval(value=pool["hv"] / 2).model_dump()}}}
    assert "2 distinct designs" in pooled_md(result)[0]
    assert "2.00x the agents mean" in pooled_md(result)[0]


def _write_run(run_dir: Path, records: list[Candidate], settings: Settings,
               tokens: int = 0) -> None:
    for rec in records:
        folder = run_dir / "candidates" / rec.id
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(rec.record_json())
        (folder / "model.py").write_text(rec.code)
    settings.save(run_dir / "settings.json")
    (run_dir / "summary.json").write_text(json.dumps(
        {"rounds": max(r.round for r in records), "stop_reason": "iter_max",
         "timings": {"search_wall_s": 12.5}}))
    call = {"event": "llm_call", "role": "designer", "input_tokens": tokens, "output_tokens": 7}
    # The Template's training taken from the suite's shared cache (another search ran it).
    reused = {"event": "tool_call", "tool": "evaluate", "candidate": "c000", "shared": True}
    (run_dir / "trace.jsonl").write_text(json.dumps(call) + "\n" + json.dumps(reused) + "\n"
                                         if tokens else "")


def fake_runner(spec: RunSpec, env: dict[str, str]) -> float:
    """A search whose one proposal reaches bal. acc. 0.6 (agents) or 0.4 (random) + seed/100."""
    bal = (0.6 if spec.strategy == "agents" else 0.4) + spec.seed / 100
    _write_run(Path(spec.run_dir), [
        make_record("c000", make_report(bal=0.2, latency=0.5), origin="template"),
        make_record("c001", make_report(bal=bal, latency=0.5), round_=1)],
        config.resolve(config.flag_layer(build_parser().parse_args(spec.argv[2:]))),
        tokens=100 if spec.strategy == "agents" else 0)
    # c001's exported graph (the Template's evaluation left none in this fake).
    graph = Path(spec.run_dir) / "candidates" / "c001" / "val" / "model.onnx"
    graph.parent.mkdir()
    graph.write_bytes(b"graph")
    return 3.0


def fake_timer(paths: list[str], image_size: int) -> tuple[list[float | None], dict]:
    """Every graph re-timed at 0.25 ms, half the 0.5 ms its search measured."""
    assert image_size == TINY.image_size and all(p.endswith("model.onnx") for p in paths)
    return [0.25] * len(paths), {"round_cv": [0.01] * len(paths)}


def fake_remeasure(code: str, run_dir: Path, seed: int) -> Remeasure:
    return Remeasure(seed=seed, ok=True, balanced_accuracy=0.5 + seed / 1000, unfairness=0.1)


def test_the_search_suite_aggregates_runs_and_writes_its_files(tmp_path):
    result = run_search(TINY, tmp_path, cache_dir=tmp_path / "cache", command="cmd",
                        runner=fake_runner, remeasure=fake_remeasure, timer=fake_timer)
    assert result is not None
    agents, random = result["strategies"]["agents"], result["strategies"]["random"]
    assert agents["hv"]["value"] == pytest.approx(0.5 * (0.6 + 0.015 - 0.125))
    assert random["hv"]["value"] == pytest.approx(0.5 * (0.4 + 0.015 - 0.125))
    assert agents["balanced_accuracy"]["value"] == pytest.approx(0.6015)
    assert agents["tokens"]["value"] == 107 and random["tokens"]["value"] == 0
    assert agents["evaluations"]["value"] == 2 and agents["search_wall_s"]["value"] == 12.5
    assert agents["reused"]["value"] == 1 and random["reused"]["value"] == 0
    ratio = result["ratios"]["agents/random"]
    assert ratio["value"] == pytest.approx(0.49 / 0.29) and ratio["lo"] <= ratio["value"]
    assert [t["ok"] for t in result["targets"]] == [True, None]  # no evolution run
    md = (tmp_path / "search.md").read_text()
    assert "PASS: agents HV >= 1.2x random" in md and "Command: `cmd`" in md
    assert "fp32" in md or "bf16" in md
    assert "latency screen 1.5x the latency edge" in md
    assert re.search(r"the suite's wall time is \d+\.\d min with 1 job\(s\)", md)
    assert result["equal_trainings"]["trainings"] == 2  # the Template and one proposal
    assert "At equal compute: every search cut after 2 trainings" in md
    # Every search's designs pooled: here each search's best is one seed of one design.
    assert result["pooled"]["designs"] == 1 and result["pooled"]["retimed"]
    assert "All searches together: the 1 distinct designs" in md
    assert (tmp_path / "search_hv.png").stat().st_size > 1000
    # Re-timed side by side: c001's latency 0.25 instead of 0.5 (by code hash, so the
    # Template, the same code here, too).
    retimed = result["retimed"]
    assert retimed["hv"]["agents"]["value"] == pytest.approx(0.75 * (0.6 + 0.015 - 0.125))
    assert retimed["ratios"]["agents/random"]["value"] == pytest.approx(0.49 / 0.29)
    assert "latency re-timed side by side after the searches" in md
    kept = json.loads((tmp_path / "retimed.json").read_text())
    assert set(kept["latency_ms"].values()) == {0.25} and "cpu" in kept["machine"]
    assert len((tmp_path / "search.csv").read_text().splitlines()) == 5
    plan = json.loads((tmp_path / "search_plan.json").read_text())
    assert plan["reference"] == [0.875, 1.0, 1.0] and len(plan["runs"]) == 4
    # Finished folders are reused; the best agents design feeds the baselines suite.
    again = run_search(TINY, tmp_path, cache_dir=tmp_path, command="cmd",
                       runner=lambda s, e: pytest.fail("reran a finished search"),
                       remeasure=lambda c, d, s: pytest.fail("re-trained a re-measurement"),
                       timer=lambda p, s: pytest.fail("re-timed again"))
    assert again is not None and again["runs"][0]["process_wall_s"] is None
    assert again["retimed"] == result["retimed"]
    assert again["strategies"] == result["strategies"]
    with pytest.raises(SearchFailed, match="epochs: 1 instead of 2"):  # not the same search
        run_search(TINY.override(epochs=2), tmp_path, cache_dir=tmp_path, command="cmd",
                   runner=fake_runner, remeasure=fake_remeasure)
    label, path = design_from_search(tmp_path)
    assert label == "agents s1 c001" and path.name == "model.py"


def test_a_failed_re_timing_keeps_the_results_with_the_searches_latencies(tmp_path, capsys):
    def broken(paths: list[str], image_size: int) -> tuple[list[float | None], dict]:
        raise RetimeFailed("re-timing failed (timeout): too slow")

    result = run_search(TINY, tmp_path, cache_dir=tmp_path, command="cmd", runner=fake_runner,
                        remeasure=fake_remeasure, timer=broken)
    assert result is not None and result["retimed"] is None
    assert result["strategies"]["agents"]["hv"]["value"] == pytest.approx(
        0.5 * (0.6 + 0.015 - 0.125))
    assert "keep the latencies measured during the runs" in capsys.readouterr().out
    assert "re-timed side by side" not in (tmp_path / "search.md").read_text()


def test_concurrent_searches_give_the_same_results_with_capped_threads(tmp_path):
    envs: list[dict[str, str]] = []

    def runner(spec: RunSpec, env: dict[str, str]) -> float:
        envs.append(env)
        return fake_runner(spec, env)

    one = run_search(TINY, tmp_path / "one", cache_dir=tmp_path, command="cmd",
                     runner=fake_runner, remeasure=fake_remeasure, timer=fake_timer)
    two = run_search(TINY, tmp_path / "two", cache_dir=tmp_path, command="cmd",
                     runner=runner, remeasure=fake_remeasure, timer=fake_timer, jobs=2)
    assert one is not None and two is not None
    assert [(r["strategy"], r["seed"]) for r in two["runs"]] == \
        [(r["strategy"], r["seed"]) for r in one["runs"]]
    assert two["strategies"] == one["strategies"] and two["ratios"] == one["ratios"]
    assert {e["OMP_NUM_THREADS"] for e in envs} == {str(max(1, (os.cpu_count() or 1) // 2))}
    assert "OMP_NUM_THREADS" not in child_env(tmp_path) or \
        os.environ.get("OMP_NUM_THREADS") == child_env(tmp_path)["OMP_NUM_THREADS"]


def test_search_targets_fail_on_overlapping_intervals():
    strat = {"agents": {"hv": {"value": 0.3, "lo": 0.1, "hi": 0.5}},
             "random": {"hv": {"value": 0.2, "lo": 0.1, "hi": 0.3}}}
    ratios = {"agents/random": {"value": 1.5, "lo": 0.8, "hi": 3.0},
              "agents/evolution": {"value": 0.9, "lo": 0.5, "hi": 1.4}}
    assert [t["ok"] for t in targets(strat, ratios)] == [False, False]
    one_seed = {k: {"hv": {"value": v["hv"]["value"]}} for k, v in strat.items()}
    assert targets(one_seed, ratios)[0]["ok"] is None  # no interval: apart or not is unknown
    ratios["agents/random"]["value"] = 1.1
    assert targets(one_seed, ratios)[0]["ok"] is False  # the ratio alone misses 1.2


def test_reading_a_real_run_folder(heuristic_run):
    run_dir, _ = heuristic_run
    run = read_run(run_dir, strategy="agents", seed=0, latency_ref_ms=QUICK.latency_ref_ms,
                   reference=QUICK.hv_reference)
    summary = json.loads((run_dir / "summary.json").read_text())
    events = load_trace(run_dir)
    val = [e for e in events if e.get("event") == "tool_call" and e.get("tool") == "evaluate"
           and e.get("split") == "val" and not e.get("cached")]
    assert run.evaluations == len(val) and run.proposals == summary["rounds"]
    assert run.tokens == 0 and run.stop_reason == summary["stop_reason"]
    assert run.best_id == summary["best"]["id"]
    assert Path(run.best_code_file).read_text() == (run_dir / "best_model.py").read_text()
    assert run.hv_curve == sorted(run.hv_curve) and run.hv == run.hv_curve[-1] > 0
    assert len(run.hv_trainings) == run.evaluations and run.hv_trainings[-1] == run.hv
    front = [[o[0], o[1], o[2] / QUICK.latency_ref_ms] for o in
             (f["objectives"] for f in summary["pareto"]["front"])]
    assert run.hv == pytest.approx(hypervolume(front, QUICK.hv_reference))


def _report(bal: float, unfair: float, params: int, latency: float) -> EvaluationReport:
    half = unfair / 2
    rep = make_report(bal=bal, acc=0.6, params=params, latency=latency,
                      sex={"female": 0.6 + half, "male": 0.6 - half},
                      age={"<40": 0.6 + half, "40-59": 0.6, ">=60": 0.6 - half})
    report = EvaluationReport.model_validate(rep)
    for fair in report.fairness.values():  # 80 % of each gap from the groups' class mix
        fair.class_mix_gap, fair.within_class_gap = 0.8 * fair.max_gap, 0.2 * fair.max_gap
    return report


def test_the_baselines_suite_reports_the_paper_headline(tmp_path):
    design = tmp_path / "model.py"
    design.write_text("def build_model(num_classes):\n    ...\n")
    table = {"ours": (0.60, 0.10, 100_000, 0.5), "template": (0.55, 0.15, 147_000, 0.6),
             "resnet18": (0.58, 0.30, 11_000_000, 5.0), "mobilenetv2": (0.5, 0.2, 2e6, 3.0)}
    calls = []

    def evaluator(name: str, code: str, seed: int) -> EvaluationReport:
        calls.append((name, seed))
        if name == "ours":
            assert code == design.read_text()
        bal, unfair, params, lat = table[name]
        return _report(bal + seed / 1000, unfair, int(params), lat)

    result = run_baselines(QUICK, tmp_path, design=design, design_label="mine", command="c",
                           evaluator=evaluator, cache_dir=tmp_path, jobs=2)
    assert result is not None and sorted(calls) == sorted(
        (n, s) for n in table for s in QUICK.fresh_seeds)
    tpl = result["comparisons"]["template"]
    assert tpl["balanced_accuracy_diff"]["value"] == pytest.approx(0.05)
    assert tpl["fairness_ratio"]["unfairness"]["value"] == pytest.approx(1.5)
    assert tpl["fairness_ratio"]["sex.max_gap"]["value"] == pytest.approx(1.5)
    res = result["comparisons"]["resnet18"]
    assert res["cost_ratio"]["params"]["value"] == pytest.approx(110)
    assert res["cost_ratio"]["latency_ms"]["value"] == pytest.approx(10)
    verdicts = {t["target"]: t["ok"] for t in result["targets"]}
    assert list(verdicts.values()) == [True, True, True, False, True]  # latency only 10x
    md = (tmp_path / "baselines.md").read_text()
    assert "FAIL: vs ResNet-18: latency >= 20x lower" in md and "sex.eodd" in md
    # The unfairness split into class mix and the rest, per design, seed means.
    assert result["means"]["resnet18"]["unfairness.class_mix_gap"]["value"] == \
        pytest.approx(0.24)
    assert "| resnet18 | 0.300 +- 0.000 | 0.240 +- 0.000 | 0.060 +- 0.000 |" in md
    assert len((tmp_path / "baselines.csv").read_text().splitlines()) == 13
    assert (tmp_path / "baselines.png").stat().st_size > 1000
    assert not result["latency_retimed"]  # no evaluation left a graph: nothing re-timed

    # Evaluations that keep their graphs: the headline's latencies are re-timed side by side.
    def keeping(name: str, code: str, seed: int) -> EvaluationReport:
        if name != "mobilenetv2":  # one design without a graph keeps its own latency
            folder = graph_dir(tmp_path / "again" / GRAPHS, name, seed)
            folder.mkdir(parents=True)
            (folder / "model.onnx").write_bytes(name.encode())
        return evaluator(name, code, seed)

    retimed = {"ours": 0.1, "template": 0.12, "resnet18": 5.0}

    def timer(paths: list[str], size: int) -> tuple[list[float | None], dict]:
        assert size == QUICK.image_size
        return [retimed[Path(p).read_text()] for p in paths], {}

    again = run_baselines(QUICK, tmp_path / "again", design=design, design_label="mine",
                          command="c", evaluator=keeping, cache_dir=tmp_path, timer=timer)
    assert again is not None and again["latency_retimed"]
    res = again["comparisons"]["resnet18"]["cost_ratio"]["latency_ms"]
    assert res["value"] == pytest.approx(50) and res["lo"] == res["hi"] == pytest.approx(50)
    assert again["comparisons"]["mobilenetv2"]["cost_ratio"]["latency_ms"]["value"] == \
        pytest.approx(3.0 / 0.1)  # its own 3.0 against ours re-timed
    assert again["per_seed"]["ours"][0]["latency_ms_in_run"] == 0.5
    assert "timed side by side" in (tmp_path / "again" / "baselines.md").read_text()


def test_the_pipeline_suite_writes_both_benchmarks(tmp_path):
    evaluation = {"worker": {"start_s": 2.9, "start_s_runs": [2.9, 3.1]},
                  "throughput": {"ratio": 1.02, "worker_img_s_runs": [900.0],
                                 "bare_img_s_runs": [880.0, 890.0]},
                  "cache": {"first_decodes": 50, "second_decodes": 0, "first_s": 1.0},
                  "pass": {"worker_start": True, "throughput": True, "cache_reuse": True}}
    loop: dict[str, Any] = {"wall_s": 320.0, "prep_s": 30.0, "search_s": 290.0,
                            "candidates": 9, "stop_reason": "iter_max", "outside_s": 6.0,
                            "outside_frac": 0.02, "command": "python -m graph.run ...",
                            "pass": {"wall": False, "candidates": True, "outside": True}}
    run_pipeline(QUICK, tmp_path, command="c", evaluation=lambda p, r: evaluation,
                 loop=lambda: loop)
    md = (tmp_path / "pipeline.md").read_text()
    assert "| main job wall (s) | 320.0 |" in md and "FAIL" in md and md.count("PASS") == 5
    assert json.loads((tmp_path / "pipeline.json").read_text())["loop"]["candidates"] == 9


def test_the_old_loop_benchmark_entry_still_imports():
    from graph.bench.loop import main as moved
    from graph.bench_loop import main

    assert main is moved
