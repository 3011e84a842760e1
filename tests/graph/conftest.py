"""Fixtures shared by the graph tests: one tiny heuristic CLI run for the whole session."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from tests.graph.cli_helpers import TINY, cli_env, run_cli


@pytest.fixture(scope="session")
def heuristic_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A finished ``python -m graph.run`` (heuristic brains, 2 rounds, extension role).

    The parameter budget sits just above the Template's 147k parameters, so the
    Designer's first widening fails the gate and the Code-Fixer repairs it: the run has
    a failure and a fix to show. The best design and the Template are confirmed on one
    more training seed. Three epochs at batch 16 (about 25 steps) make the Template learn
    (balanced accuracy about 0.25 against 1/7 for a collapsed model), so the run has a
    Pareto front. Its evaluations run on a local Ray instance, two at a
    time, when Ray is installed (``make setup`` installs it), else on the local pool.
    Tests must not modify it (copy it first).
    """
    root = tmp_path_factory.mktemp("e2e")
    env = cli_env(root / "cache")
    executor = "ray" if importlib.util.find_spec("ray") else "local"
    proc = run_cli([*TINY, "--executor", executor, "--workers", "2",
                    "--iter-max", "2", "--patience", "5", "--max-params", "150000",
                    "--run-dir", str(root / "runs"), "--run-id", "h1",
                    "--roles", "tests.agents.extra_role", "--confirm-top", "1",
                    "--confirm-seeds", "1", "--epochs", "3", "--batch-size", "16"], env,
                   timeout=600)  # ~1 min alone; shared CI cores can make it several
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "runs" / "h1", proc
