"""``python -m graph.trace RUN_DIR [diff A B] [filters] [--call N] [--follow] [--json]``."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from graph.trace.describe import call_lines, describe
from graph.trace.ledger import follow, load_trace
from graph.trace.timeline import Annotator, Timeline, annotate, console_for, matches, print_lines
from graph.trace.timeline import render as render_timeline

DESCRIPTION = "Run trace: one structlog JSON line per event in ``runs/<id>/trace.jsonl``."


def code_diff(run_dir: Path, a: str, b: str) -> str:
    """Unified diff of two candidates' ``model.py`` (``best`` names the chosen design).

    Raises:
        FileNotFoundError: A candidate has no code in this run (the message lists the ids).
    """
    texts = []
    for cid in (a, b):
        path = (run_dir / "best_model.py" if cid == "best"
                else run_dir / "candidates" / cid / "model.py")
        if not path.is_file():
            have = sorted(p.name for p in (run_dir / "candidates").glob("*")) \
                if (run_dir / "candidates").is_dir() else []
            raise FileNotFoundError(f"no code for candidate {cid!r} in {run_dir} "
                                    f"(candidates: {', '.join(have) or 'none'})")
        texts.append(path.read_text(encoding="utf-8").splitlines(keepends=True))
    return "".join(difflib.unified_diff(texts[0], texts[1], fromfile=f"{a}/model.py",
                                        tofile=f"{b}/model.py"))


def _clean(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if not k.startswith("_")} | (
        {"round": e["_round"]} if "round" not in e and "_round" in e else {})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m graph.trace", description=DESCRIPTION,
        epilog="examples: RUN_DIR --role critic --round 2 | RUN_DIR --candidate c003 | "
               "RUN_DIR --call 4 | RUN_DIR diff c001 c002 | RUN_DIR --follow | RUN_DIR --json")
    p.add_argument("run_dir", type=Path)
    p.add_argument("command", nargs="*", metavar="diff A B",
                   help="show the code diff between candidates A and B ('best' allowed)")
    p.add_argument("--role", action="append", default=[],
                   help="only this role / node / tool (critic, designer, code_fixer, gate, "
                        "evaluate, ...); repeatable")
    p.add_argument("--candidate", action="append", default=[],
                   help="only events about this candidate (and its fixes); repeatable")
    p.add_argument("--round", action="append", type=int, default=[], help="only this round")
    p.add_argument("--call", type=int, metavar="N", help="print LLM call N (prompt + answer)")
    p.add_argument("--llm", action="store_true", help="print prompts and answers inline")
    p.add_argument("--nodes", action="store_true", help="also print node timings")
    p.add_argument("--follow", action="store_true", help="keep printing while the run goes on")
    p.add_argument("--json", action="store_true", help="JSON lines for scripts")
    return p


def _diff(args: argparse.Namespace, out: TextIO) -> int:
    a, b = args.command[1], args.command[2]
    try:
        diff = code_diff(args.run_dir, a, b)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"a": a, "b": b, "diff": diff}))
    elif not diff:
        print(f"{a} and {b} have the same code", file=out)
    else:
        from rich.syntax import Syntax

        console_for(out).print(Syntax(diff, "diff", theme="ansi_dark", background_color=None))
    return 0


def _call(args: argparse.Namespace, trace: Path, out: TextIO) -> int:
    calls = [e for e in annotate(load_trace(args.run_dir)) if e.get("event") == "llm_call"]
    if not 1 <= args.call <= len(calls):
        print(f"error: no LLM call {args.call} in {trace} ({len(calls)} calls"
              + (", the run used the heuristic brains)" if not calls else ")"),
              file=sys.stderr)
        return 2
    e = calls[args.call - 1]
    if args.json:
        print(json.dumps(_clean(e)))
    else:
        console = console_for(out)
        print_lines(console, describe(e) or [], e.get("t"))
        print_lines(console, call_lines(e))
    return 0


def _follow(args: argparse.Namespace, trace: Path, filters: dict[str, Any], out: TextIO) -> int:
    tl = Timeline(out, show_llm=args.llm, show_nodes=args.nodes, filters=filters)
    note = Annotator()
    try:
        for ev in follow(trace):
            e = note(ev)
            if args.json:
                if matches(e, **filters):
                    print(json.dumps(_clean(e)), file=out, flush=True)
            else:
                tl.feed(e)
                out.flush()
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m graph.trace RUN_DIR [diff A B] [filters] [--call N] [--follow]``."""
    p = _parser()
    args = p.parse_args(argv)
    run_dir: Path = args.run_dir
    out = sys.stdout
    if args.command:
        if args.command[0] != "diff" or len(args.command) != 3:
            p.error("the only command is: RUN_DIR diff A B")
        return _diff(args, out)
    trace = run_dir / "trace.jsonl"
    if not trace.exists() and not args.follow:
        print(f"error: {trace} not found (is {run_dir} a run folder?)", file=sys.stderr)
        return 2
    filters = {"roles": args.role, "candidates": args.candidate, "rounds": args.round}
    if args.call is not None:
        return _call(args, trace, out)
    if args.follow:
        return _follow(args, trace, filters, out)
    if args.json:
        for e in annotate(load_trace(run_dir)):
            if matches(e, **filters):
                print(json.dumps(_clean(e)), file=out)
        return 0
    render_timeline(run_dir, show_llm=args.llm, show_nodes=args.nodes, roles=args.role,
                    candidates=args.candidate, rounds=args.round, out=out)
    return 0
