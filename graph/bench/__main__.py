"""CLI of :mod:`graph.bench`: ``python -m graph.bench SUITE [--profile P] [--out DIR] ...``.

Exit codes: 0 done (missed targets are reported in the files, not as errors), 1 a run
failed, 2 a usage or profile error (e.g. the full profile without ``--data-dir``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from graph.bench.profiles import PROFILES, Profile, ProfileError, get_profile

SUITES = ("pipeline", "search", "baselines", "executors")


def build_parser() -> argparse.ArgumentParser:
    """Return the benchmark's argument parser."""
    p = argparse.ArgumentParser(prog="python -m graph.bench",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("suite", choices=SUITES)
    p.add_argument("--profile", choices=list(PROFILES), default="quick",
                   help="quick: 2-core CPU, synthetic set; full: GPU, real ISIC 2019")
    p.add_argument("--out", type=Path, help="results folder (default results/<profile>)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at the same time, each with its share of the cores (default 1); "
                        "results do not depend on it, wall times do")
    p.add_argument("--cache-dir", type=Path,
                   help="data cache shared by every run (default $FLNAS_CACHE_DIR or "
                        "~/.cache/flnas)")
    o = p.add_argument_group("profile overrides")
    o.add_argument("--seeds", type=int, help="number of search seeds")
    o.add_argument("--proposals", type=int, help="evaluation budget per search (--iter-max)")
    o.add_argument("--fresh-seeds", help="comma-separated training seeds of the "
                   "re-measurements and the baselines suite")
    o.add_argument("--strategies", help="comma-separated: agents, random, evolution, "
                   "agents=LLM (e.g. agents=openai:gpt-4.1)")
    o.add_argument("--data-dir", help="real ISIC 2019 folder (full profile)")
    o.add_argument("--synthetic-n", type=int)
    o.add_argument("--image-size", type=int)
    o.add_argument("--epochs", type=int)
    o.add_argument("--latency-ref-ms", type=float, help="L of the latency normalisation")
    b = p.add_argument_group("baselines suite")
    b.add_argument("--design", type=Path, help="the found design's model.py")
    b.add_argument("--from-search", type=Path, metavar="DIR",
                   help="take the search suite's best agents design from DIR (default: the "
                        "results folder, when it holds search.json)")
    b.add_argument("--split", choices=["val", "test"], default="test",
                   help="split every design is evaluated on (default test)")
    p.add_argument("--repeat", type=int, default=2,
                   help="pipeline: alternating worker / bare-loop runs; executors: "
                        "interleaved repeats (default 2)")
    return p


def resolve_profile(args: argparse.Namespace) -> Profile:
    """Return the chosen profile with the command line's overrides applied.

    Raises:
        ProfileError: A bad override, or the full profile without a data folder.
    """
    base = get_profile(args.profile)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()] \
        if args.strategies else None
    fresh = _ints(args.fresh_seeds, "--fresh-seeds") if args.fresh_seeds else None
    profile = base.override(seeds=args.seeds, proposals=args.proposals, strategies=strategies,
                            fresh_seeds=fresh,
                            data_dir=args.data_dir, synthetic_n=args.synthetic_n,
                            image_size=args.image_size, epochs=args.epochs,
                            latency_ref_ms=args.latency_ref_ms)
    if not profile.synthetic:
        profile.require_data_dir()
    return profile


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ProfileError(f"{flag} takes comma-separated integers, got {text!r}") from None


def _cache_dir(args: argparse.Namespace) -> Path:
    from tasks.cache import default_cache_root

    if args.cache_dir:
        return args.cache_dir.expanduser().resolve()
    env = os.environ.get("FLNAS_CACHE_DIR")
    return Path(env).expanduser().resolve() if env else default_cache_root()


def _baselines(args: argparse.Namespace, profile: Profile, out: Path, command: str) -> None:
    from graph.bench.baselines import design_from_search, run_baselines

    if args.design and args.from_search:
        raise ProfileError("give --design or --from-search, not both")
    if args.design:
        label, design = f"--design {args.design}", args.design
    else:
        label, design = design_from_search(args.from_search or out)
    run_baselines(profile, out, design=design, design_label=label, command=command,
                  cache_dir=_cache_dir(args), split=args.split, dry_run=args.dry_run,
                  jobs=args.jobs)


def main(argv: list[str] | None = None) -> int:
    """Run one suite; see the module docstring for the exit codes."""
    from graph.bench.output import command_line
    from graph.bench.search import SearchFailed

    args = build_parser().parse_args(argv)
    command = command_line(argv)
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    try:
        profile = resolve_profile(args)
        out = (args.out or Path("results") / profile.name).resolve()
        if args.suite == "search":
            from graph.bench.search import run_search

            run_search(profile, out, cache_dir=_cache_dir(args), command=command,
                       dry_run=args.dry_run, jobs=args.jobs)
        elif args.suite == "baselines":
            _baselines(args, profile, out, command)
        elif args.suite == "executors":
            from graph.bench.executors import run_executors

            run_executors(profile, out, command=command, cache_dir=_cache_dir(args),
                          repeat=args.repeat, dry_run=args.dry_run)
        else:
            from graph.bench.pipeline import run_pipeline

            run_pipeline(profile, out, command=command, repeat=args.repeat,
                         dry_run=args.dry_run)
    except ProfileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SearchFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not args.dry_run:
        print(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
