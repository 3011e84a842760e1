"""Benchmark of the search loop: ``python -m graph.bench_loop`` (or ``graph.bench pipeline``).

Runs the README's main-job command (``python -m graph.run --task isic --synthetic`` with
its defaults, heuristic backend) in a child process and prints, from one run:

* the command's total wall time (target: at most 300 s on a 2-core CPU), split into data
  preparation (synthetic generation + decoding, before the search) and the search;
* how many candidates were evaluated (target: at least 6);
* the time spent outside the worker (graph, agents, logging, checkpoints, plots): the
  search wall minus the time inside the gate/evaluate/export tool calls, as read from
  the trace (target: at most 5 %), with a per-node breakdown.

``--cold`` (default) uses a fresh cache folder, as on a new machine; ``--warm`` reuses
``FLNAS_CACHE_DIR`` / ``~/.cache/flnas``. Extra arguments after ``--`` go to graph.run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from graph.trace import load_trace, time_ledger

REPO = Path(__file__).resolve().parents[2]
WALL_TARGET_S = 300.0
MIN_CANDIDATES = 6
OUTSIDE_TARGET = 0.05


class LoopFailed(RuntimeError):
    """The main-job command exited with an error (the message holds its stderr tail)."""


def run_loop(extra: list[str] | None = None, *, warm: bool = False,
             keep: bool = False) -> dict[str, Any]:
    """Run the main-job command once in a child process and return its figures.

    Args:
        extra: Extra ``graph.run`` arguments.
        warm: Reuse the data cache instead of a fresh one.
        keep: Keep the run folder (its path is returned as ``run_dir``).

    Returns:
        The figures (see :func:`loop_figures`) plus ``command`` and ``run_dir``.

    Raises:
        LoopFailed: The command exited with an error.
    """
    tmp = Path(tempfile.mkdtemp(prefix="flnas-bench-"))
    env = dict(os.environ)
    if not warm:
        env["FLNAS_CACHE_DIR"] = str(tmp / "cache")
    cmd = [sys.executable, "-m", "graph.run", "--task", "isic", "--synthetic", "--quiet",
           "--run-dir", str(tmp / "runs"), "--run-id", "bench", *(extra or [])]
    print("command:", " ".join(cmd[1:]), flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    try:
        if proc.returncode != 0:
            raise LoopFailed(f"run failed with exit code {proc.returncode}:\n"
                             f"{proc.stderr[-4000:]}")
        out = loop_figures(tmp / "runs" / "bench", wall)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    out["command"] = " ".join(["python", *cmd[1:]])
    out["run_dir"] = str(tmp / "runs" / "bench") if keep else None
    return out


def loop_figures(run_dir: Path, wall: float) -> dict[str, Any]:
    """Read a finished main-job run: wall split, candidates, time outside the worker.

    Args:
        run_dir: The run folder.
        wall: The command's wall time in seconds (process start included).

    Returns:
        ``wall_s``, ``prep_s``, ``search_s``, ``candidates``, ``stop_reason``,
        ``tools_s``, ``outside_s``, ``outside_frac``, ``tools`` and ``nodes`` (seconds
        per tool / node), ``settings`` (the main ones), ``test_balanced_accuracy`` and
        ``pass`` (each target met or not).
    """
    events = load_trace(run_dir)
    split = time_ledger(events)  # the one per-node / per-tool time sum (graph.trace)
    evals = [e for e in events if e.get("event") == "tool_call" and e.get("tool") == "evaluate"]
    val = [e for e in evals if e.get("split") == "val" and not e.get("cached")]
    summary = json.loads((run_dir / "summary.json").read_text())
    settings = json.loads((run_dir / "settings.json").read_text())
    out: dict[str, Any] = {
        "wall_s": wall, "prep_s": wall - split["wall_s"], "search_s": split["wall_s"],
        "candidates": len(val), "stop_reason": summary["stop_reason"],
        "tools_s": split["tools_s"], "outside_s": split["outside_s"],
        "outside_frac": split["outside_frac"],
        "tools": {k: v["seconds"] for k, v in sorted(split["tools"].items())},
        "nodes": {k: v["seconds"] for k, v in split["nodes"].items()},
        "settings": {k: settings.get(k) for k in ("iter_max", "synthetic_n", "image_size",
                                                   "epochs", "max_params")},
        "test_balanced_accuracy": (summary.get("test") or {}).get("balanced_accuracy"),
        "best": (summary.get("best") or {}).get("id"),
    }
    out["pass"] = {"wall": wall <= WALL_TARGET_S, "candidates": len(val) >= MIN_CANDIDATES,
                   "outside": split["outside_frac"] <= OUTSIDE_TARGET}
    return out


def print_figures(fig: dict[str, Any]) -> None:
    """Print the figures of :func:`loop_figures` with their targets."""
    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISSED"

    ok = fig["pass"]
    print("settings: " + " ".join(f"{k}={v}" for k, v in fig["settings"].items()))
    print(f"total wall              {fig['wall_s']:8.1f} s   (target <= {WALL_TARGET_S:.0f} s) "
          f"{verdict(ok['wall'])}")
    print(f"  before the search     {fig['prep_s']:8.1f} s   (process start, data "
          "generation/decoding)")
    print(f"  search (trace)        {fig['search_s']:8.1f} s")
    print(f"candidates evaluated    {fig['candidates']:8d}     (target >= {MIN_CANDIDATES}) "
          f"{verdict(ok['candidates'])}; stop: {fig['stop_reason']}")
    print(f"inside tool calls       {fig['tools_s']:8.1f} s   "
          + ", ".join(f"{k} {v:.1f}s" for k, v in fig["tools"].items()))
    print(f"outside the worker      {fig['outside_s']:8.1f} s = "
          f"{100 * fig['outside_frac']:.2f} % of the search "
          f"(target <= {100 * OUTSIDE_TARGET:.0f} %) {verdict(ok['outside'])}")
    print("per node (incl. tools)  " + ", ".join(f"{k} {v:.1f}s" for k, v in fig["nodes"].items()))
    if fig["test_balanced_accuracy"] is not None:
        print(f"best {fig['best']}: test balanced accuracy {fig['test_balanced_accuracy']}")


def main(argv: list[str] | None = None) -> int:
    """Run the main-job command once and print its figures."""
    p = argparse.ArgumentParser(prog="python -m graph.bench_loop",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--warm", action="store_true", help="reuse the data cache")
    p.add_argument("--keep", action="store_true", help="keep the run folder")
    p.add_argument("extra", nargs="*", help="extra graph.run arguments (after --)")
    args = p.parse_args(argv)
    try:
        fig = run_loop(args.extra, warm=args.warm, keep=args.keep)
    except LoopFailed as e:
        print(str(e), file=sys.stderr)
        return 1
    print_figures(fig)
    if fig["run_dir"]:
        print(f"run kept in {fig['run_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
