"""End to end through the real CLI with the offline heuristic backend (tiny settings).

One run serves several checks: run directory contents, summary (test-split metrics),
trace events, candidate count, an extension role loaded with --roles, and the
``graph.trace`` inspection CLI.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter

import pytest

from tests.graph.cli_helpers import REPO, TINY, cli_env, events, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def run(heuristic_run):
    return heuristic_run  # one run for the session (tests/graph/conftest.py)


def test_run_directory_contents(run):
    run_dir, _ = run
    for name in ("trace.jsonl", "checkpoints.sqlite", "settings.json", "summary.json",
                 "best_model.py", "pareto.png", "group_accuracy.png", "report.html",
                 "report.md"):
        assert (run_dir / name).is_file(), name
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["iter_max"] == 2 and settings["image_size"] == 32
    assert settings["roles"] == ["tests.agents.extra_role"]
    cands = sorted(p.name for p in (run_dir / "candidates").iterdir())
    assert {"c000", "c001", "c002"} <= set(cands)
    rec = json.loads((run_dir / "candidates" / "c001" / "report.json").read_text())
    assert rec["origin"] == "designer" and rec["parent"] == "c000" and rec["brain"] == "heuristic"
    assert rec["rationale"] and (run_dir / "candidates" / "c001" / "model.py").is_file()
    template = json.loads((run_dir / "candidates" / "c000" / "report.json").read_text())
    assert template["origin"] == "template" and template["status"] == "evaluated"
    # The record says what its report was measured at.
    assert template["fidelity"] == {"epochs": 3, "batch_size": 16, "seed": 0, "image_size": 32,
                                    "n_images": 200}


def test_summary_has_test_split_metrics(run):
    run_dir, proc = run
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["stop_reason"] == "iter_max" and s["rounds"] == 2
    assert s["candidates"]["total"] >= 3
    assert s["test"]["status"] == "ok" and s["test"]["split"] == "test"
    assert 0.0 <= s["test"]["balanced_accuracy"] <= 1.0
    assert {"sex", "age"} <= set(s["test"]["fairness"])
    assert s["best"]["id"] in {c["id"] for c in s["candidates"]["list"]}
    assert (run_dir / "best_model.py").read_text() == \
        (run_dir / "candidates" / s["best"]["id"] / "model.py").read_text()
    assert s["pareto"]["front"] and len(s["pareto"]["hv_history"]) >= 3
    for entry in s["pareto"]["front"]:  # collapsed trainings never enter the archive
        rec = json.loads((run_dir / "candidates" / entry["id"] / "report.json").read_text())
        recalls = rec["report"]["metrics"]["per_class_recall"].values()
        assert sum(1 for r in recalls if r > 0) > 1
    assert "test: bal.acc" in proc.stdout
    # The delivered graph is the one the test split was scored with, checked sandboxed.
    assert s["export"]["onnx"] == "best_model.onnx" and s["export"]["trained_for"] == "test"
    assert s["export"]["onnxruntime_check"] == "ok"
    assert (run_dir / "best_model.onnx").read_bytes() == \
        (run_dir / "candidates" / s["best"]["id"] / "test" / "model.onnx").read_bytes()


def test_the_best_and_the_template_are_confirmed_on_another_training_seed(run):
    run_dir, _ = run
    s = json.loads((run_dir / "summary.json").read_text())
    conf = s["confirmation"]
    assert conf["train_seeds"] == [0, 1]
    # The top design by the search's evaluations and the Template (one and the same when
    # nothing beat the Template).
    assert "c000" in conf["finalists"] and s["best"]["id"] in conf["finalists"]
    assert len(conf["finalists"]) <= 2
    for cid, summary in conf["finalists"].items():
        assert summary["seeds"] + summary["failed"] == 2
        rec = json.loads((run_dir / "candidates" / cid / "report.json").read_text())
        assert [c["fidelity"]["seed"] for c in rec["confirmations"]] == [1]
        assert rec["confirmations"][0]["report"]["recipe"]["seed"] == 1  # really retrained
        assert (run_dir / "candidates" / cid / "val-seed1" / "report.json").is_file()
    confirms = [e for e in events(run_dir) if e["event"] == "confirm"]
    assert {e["candidate"] for e in confirms} == set(conf["finalists"])


def test_trace_events(run):
    run_dir, _ = run
    evs = events(run_dir)
    kinds = Counter(e["event"] for e in evs)
    assert kinds["run_start"] == 1 and kinds["run_end"] == 1 and kinds["stop"] == 1
    assert kinds["node_start"] == kinds["node_end"] > 0
    nodes = [e["node"] for e in evs if e["event"] == "node_end"]
    assert nodes[0] == "prepare" and nodes[-1] == "finalize"
    assert nodes.count("designer") == 2 and nodes.count("critic") == 3
    tools = [e for e in evs if e["event"] == "tool_call"]
    assert {t["tool"] for t in tools} >= {"gate", "evaluate"}
    # Every cached tool call names its cache key (export and the side-by-side timing
    # are not cached).
    assert all(t["duration_s"] >= 0 and t["key"] for t in tools
               if t["tool"] not in ("export", "retime"))
    assert [t["tool"] for t in tools].count("retime") == 1
    test_calls = [t for t in tools if t["tool"] == "evaluate" and t.get("split") == "test"]
    assert len(test_calls) == 1
    # The test split scores the model the run trained for validation: no training.
    assert test_calls[0]["rescored"] and not test_calls[0]["cached"]
    best = test_calls[0]["candidate"]
    assert (run_dir / "candidates" / best / "test" / "model.onnx").read_bytes() == \
        (run_dir / "candidates" / best / "val" / "model.onnx").read_bytes()
    test, val = (json.loads((run_dir / "candidates" / best / split / "report.json").read_text())
                 for split in ("test", "val"))
    assert test["training"] == val["training"] and test["split"] == "test"
    outcomes = [e for e in evs if e["event"] == "candidate"]
    assert len(outcomes) >= 3 and {o["origin"] for o in outcomes} >= {"template", "designer"}


def test_extension_role_ran_in_the_loop(run):
    run_dir, _ = run
    evs = events(run_dir)
    audits = [e for e in evs if e["event"] == "role_event" and e["role"] == "auditor"]
    assert len(audits) == 2  # once after each designer round's evaluation
    assert {a["candidate"].split("-")[0] for a in audits} == {"c001", "c002"}  # or their fixes
    nodes = [e["node"] for e in evs if e["event"] == "node_end"]
    i = nodes.index("auditor")
    assert nodes[i - 1] == "merge" and nodes[i + 1] == "critic"  # after the round's branches


def test_the_run_evaluated_through_its_executor(run):
    run_dir, _ = run
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["workers"] == 2 and settings["executor"] in ("ray", "local")
    if importlib.util.find_spec("ray"):  # make setup installs it: then the run used Ray
        assert settings["executor"] == "ray"
    report = json.loads((run_dir / "candidates" / "c000" / "val" / "report.json").read_text())
    assert report["status"] == "ok" and report["attempts"] == 1
    assert report["recipe"]["threads"] >= 1  # set by the executor: the workers share the cores


def test_trace_inspection_cli(run):
    run_dir, _ = run
    out = subprocess.run([sys.executable, "-m", "graph.trace", str(run_dir)], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "c000 ok (template" in out and "stop: iter_max" in out


def test_resume_of_finished_run_does_nothing(run, tmp_path_factory):
    run_dir, _ = run
    env = cli_env(run_dir.parent.parent / "cache")
    proc = run_cli(["--resume", "h1", "--run-dir", str(run_dir.parent), "--quiet"], env)
    assert proc.returncode == 0, proc.stderr
    assert "already finished" in proc.stderr


def test_user_errors_exit_2_with_one_message(tmp_path):
    env = cli_env(tmp_path / "cache")
    proc = run_cli(["--task", "isic", "--run-dir", str(tmp_path)], env)
    assert proc.returncode == 2
    assert "challenge.isic-archive.com" in proc.stderr and "--synthetic" in proc.stderr
    proc = run_cli([*TINY, "--llm", "openai:gpt-4.1", "--run-dir", str(tmp_path)], env)
    assert proc.returncode == 2 and "OPENAI_API_KEY" in proc.stderr
    assert not list(tmp_path.glob("*/checkpoints.sqlite"))  # refused before the search
    proc = run_cli([*TINY, "--llm", "local:m", "--base-url", "http://127.0.0.1:9/v1",
                    "--run-dir", str(tmp_path)], env)
    assert proc.returncode == 2 and "127.0.0.1:9" in proc.stderr
    proc = run_cli(["--resume", "nope", "--run-dir", str(tmp_path)], env)
    assert proc.returncode == 2 and "cannot resume 'nope'" in proc.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("iter_maks = 3\n")
    proc = run_cli([*TINY, "--config", str(cfg), "--run-dir", str(tmp_path)], env)
    assert proc.returncode == 2 and "iter_maks" in proc.stderr
