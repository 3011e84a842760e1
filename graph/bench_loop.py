"""Benchmark of the search loop: ``python -m graph.bench_loop``.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from graph.trace import load_trace, time_ledger

REPO = Path(__file__).resolve().parents[1]
WALL_TARGET_S = 300.0
MIN_CANDIDATES = 6
OUTSIDE_TARGET = 0.05


def main(argv: list[str] | None = None) -> int:
    """Run the main-job command once and print its figures."""
    p = argparse.ArgumentParser(prog="python -m graph.bench_loop",
                                description=__doc__.split("\n")[0])
    p.add_argument("--warm", action="store_true", help="reuse the data cache")
    p.add_argument("--keep", action="store_true", help="keep the run folder")
    p.add_argument("extra", nargs="*", help="extra graph.run arguments (after --)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="flnas-bench-"))
    env = dict(os.environ)
    if not args.warm:
        env["FLNAS_CACHE_DIR"] = str(tmp / "cache")
    cmd = [sys.executable, "-m", "graph.run", "--task", "isic", "--synthetic", "--quiet",
           "--run-dir", str(tmp / "runs"), "--run-id", "bench", *args.extra]
    print("command:", " ".join(cmd[1:]), flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        print(f"run failed with exit code {proc.returncode}", file=sys.stderr)
        return 1
    _print_figures(tmp / "runs" / "bench", wall)
    if args.keep:
        print(f"run kept in {tmp / 'runs' / 'bench'}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _print_figures(run_dir: Path, wall: float) -> None:
    """Print the run's wall time split, candidate count and time outside the worker."""
    events = load_trace(run_dir)
    split = time_ledger(events)  # the one per-node / per-tool time sum (graph.trace)
    evals = [e for e in events if e.get("event") == "tool_call" and e.get("tool") == "evaluate"]
    val = [e for e in evals if e.get("split") == "val" and not e.get("cached")]
    tool_time = {k: v["seconds"] for k, v in split["tools"].items()}
    node_time = {k: v["seconds"] for k, v in split["nodes"].items()}
    summary = json.loads((run_dir / "summary.json").read_text())
    settings = json.loads((run_dir / "settings.json").read_text())
    prep = wall - split["wall_s"]

    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISSED"

    print(f"settings: iter_max={settings['iter_max']} synthetic_n={settings['synthetic_n']} "
          f"image_size={settings['image_size']} epochs={settings['epochs']} "
          f"max_params={settings['max_params']}")
    print(f"total wall              {wall:8.1f} s   (target <= {WALL_TARGET_S:.0f} s) "
          f"{verdict(wall <= WALL_TARGET_S)}")
    print(f"  before the search     {prep:8.1f} s   (process start, data generation/decoding)")
    print(f"  search (trace)        {split['wall_s']:8.1f} s")
    print(f"candidates evaluated    {len(val):8d}     (target >= {MIN_CANDIDATES}) "
          f"{verdict(len(val) >= MIN_CANDIDATES)}; stop: {summary['stop_reason']}")
    print(f"inside tool calls       {split['tools_s']:8.1f} s   "
          + ", ".join(f"{k} {v:.1f}s" for k, v in sorted(tool_time.items())))
    print(f"outside the worker      {split['outside_s']:8.1f} s = "
          f"{100 * split['outside_frac']:.2f} % of the search "
          f"(target <= {100 * OUTSIDE_TARGET:.0f} %) "
          f"{verdict(split['outside_frac'] <= OUTSIDE_TARGET)}")
    print("per node (incl. tools)  " + ", ".join(f"{k} {v:.1f}s" for k, v in node_time.items()))
    if summary.get("test"):
        print(f"best {summary['best']['id']}: test balanced accuracy "
              f"{summary['test'].get('balanced_accuracy')}")


if __name__ == "__main__":
    raise SystemExit(main())
