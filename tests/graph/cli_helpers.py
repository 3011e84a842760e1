"""Shared helpers of the CLI end-to-end tests: run ``python -m graph.run`` for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
#: Tiny settings: synthetic n=200 at 32 px, one epoch, no confirmation rung (the shared
#: heuristic run of conftest.py turns it on).
TINY = ["--task", "isic", "--synthetic", "--synthetic-n", "200", "--image-size", "32",
        "--epochs", "1", "--quiet", "--confirm-top", "0"]


def cli_env(cache_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "FLNAS"))}
    env.update(FLNAS_CACHE_DIR=str(cache_dir), PYTHONPATH=str(REPO), **extra)
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 240
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graph.run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def events(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for line in (run_dir / "trace.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
