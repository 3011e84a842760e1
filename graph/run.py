"""CLI: ``python -m graph.run --task isic [--synthetic | --data-dir DIR] [options]``.

Runs the FL-NAS search (prepare -> critic -> designer -> gate -> [code_fixer] ->
evaluate -> ... -> finalize) and writes ``runs/<run_id>/``: ``trace.jsonl``,
``checkpoints.sqlite``, ``settings.json``, ``candidates/<id>/``, ``summary.json``,
``best_model.py`` (+ ``.onnx``), ``pareto.png``, ``group_accuracy.png``.

Settings (graph/config.py): defaults < ``--config FILE.toml`` < environment variables
``FLNAS_<SETTING>`` < flags given on the command line; ``--help`` lists every one.
``--resume RUN_ID`` restores ``settings.json`` and continues from the last checkpoint;
finished evaluations and LLM answers already in the checkpoint are never redone. A run
folder that was moved or copied resumes where it is now. A missing, empty or damaged
``checkpoints.sqlite`` stops ``--resume`` with a message that says what is intact;
``--resume RUN_ID --recover`` then keeps the damaged file aside and searches again from
the beginning in the same folder, reusing every cached evaluation. Temporary folders a
killed run left behind (``$TMPDIR/flnas-job-*``, ``flnas-eval-*``, ``flnas-export-*``
whose owning process is dead) are removed when a run starts or resumes.

Exit codes: 0 done, 1 unexpected error (work so far kept, resumable), 2 user error
(bad flag, config, dataset, LLM key or server), 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

from agents.settings import Settings
from graph import config
from graph.config import ConfigError
from graph.run_report import print_report

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    """Build the CLI parser (flags generated from the Settings fields, see graph.config)."""
    return config.build_parser((__doc__ or "").split("\n")[0])


def _fail(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    return code


def settle(args: argparse.Namespace) -> tuple[Settings, bool]:
    """Resolve the run's Settings and whether it resumes an existing run.

    A resumed run keeps its settings (changing only the resume-overridable ones) and its
    run id (the checkpoint thread), but lives where its folder is now: a moved or copied
    folder resumes in its new place. The run's role modules are loaded here, so that
    ``models`` can be checked against the registered roles.

    Raises:
        ConfigError: Bad config, unknown run to resume, a run whose checkpoints cannot
            be read (without ``--recover``), or a new run whose folder exists.
    """
    root = Path(getattr(args, "runs_root", "runs"))
    if getattr(args, "recover", False) and not getattr(args, "resume", None):
        raise ConfigError("--recover goes with --resume RUN_ID")
    layers = config.layers_of(args)
    if getattr(args, "resume", None):
        run_dir = root / args.resume
        if not (run_dir / "settings.json").is_file():
            raise ConfigError(f"cannot resume {args.resume!r}: {run_dir}/settings.json not "
                              f"found (runs in {root}: "
                              f"{', '.join(sorted(p.name for p in root.glob('*')) ) or 'none'})")
        saved = config.load_saved(run_dir / "settings.json")
        ctx, ignored = config.resume(saved, layers)
        if Path(ctx.run_dir).resolve() != run_dir.resolve():
            print(f"note: run {ctx.run_id} was moved or copied from {ctx.run_dir}; resuming it "
                  f"in {run_dir}", file=sys.stderr)
            ctx.run_dir = str(run_dir)
        if ignored:
            print(f"note: --resume keeps the run's settings; ignoring {', '.join(ignored)}",
                  file=sys.stderr)
        config.check_roles(ctx, [saved, *layers])
        problem = checkpoint_problem(run_dir, ctx.run_id)
        if problem and any(finished_work(run_dir)) and not getattr(args, "recover", False):
            raise ConfigError(_unresumable(ctx, run_dir, args.resume, problem))
        return ctx, True
    run_id = getattr(args, "run_id", None) or \
        f"{dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"
    run_dir = root / run_id
    if (run_dir / "checkpoints.sqlite").exists():
        raise ConfigError(f"run {run_id!r} already exists in {root}; continue it with "
                          f"--resume {run_id} or choose another --run-id")
    ctx = config.resolve(*layers, config.Layer("flags", {"run_dir": str(run_dir),
                                                        "run_id": run_id}))
    config.check_roles(ctx, layers)
    return ctx, False


def checkpoint_problem(run_dir: Path, run_id: str) -> str | None:
    """Say what is wrong with ``run_dir/checkpoints.sqlite`` for run ``run_id`` (None: nothing).

    Missing, not a SQLite database (truncated or overwritten), or holding no checkpoint
    of this run (empty). The file is never created here (``mode=rw``).
    """
    path = run_dir / "checkpoints.sqlite"
    if not path.exists():
        return f"{path} is missing"
    try:
        # mode=rw, not ro: after a kill -9 the WAL needs recovery, which needs write access.
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
        try:
            tables = {r[0] for r in conn.execute("select name from sqlite_master "
                                                 "where type = 'table'")}
            if "checkpoints" not in tables:
                return f"{path} holds no checkpoint (empty file or no LangGraph tables)"
            row = conn.execute("select count(*) from checkpoints where thread_id = ?",
                               (run_id,)).fetchone()
            if not row or not row[0]:
                return f"{path} holds no checkpoint of run {run_id!r}"
            check = conn.execute("pragma quick_check").fetchone()
            if check and check[0] != "ok":
                return f"{path} is damaged (sqlite quick_check: {check[0]})"
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return f"{path} is damaged ({exc}; truncated or overwritten?)"
    return None


def finished_work(run_dir: Path) -> tuple[int, int]:
    """Count cached evaluations and candidate folders (what survives a lost checkpoint)."""
    evals = len(list((run_dir / "cache" / "evaluate").glob("*.json")))
    cands = sum(1 for p in (run_dir / "candidates").glob("*") if p.is_dir())
    return evals, cands


def _unresumable(ctx: Settings, run_dir: Path, name: str, problem: str) -> str:
    evals, cands = finished_work(run_dir)
    llm = "" if ctx.llm == "heuristic" and not ctx.base_url else \
        "; every LLM answer is asked (and paid) again"
    return (f"cannot resume {name!r}: {problem}.\n"
            f"Intact in {run_dir}: {evals} finished evaluation(s) in cache/evaluate, {cands} "
            f"candidate folder(s), settings.json and trace.jsonl.\n"
            f"To recover, run: python -m graph.run --resume {name} --run-dir {run_dir.parent} "
            f"--recover\n(the damaged file is kept as checkpoints.sqlite.damaged-<time>; the "
            f"search starts again from the beginning with the same settings and reuses every "
            f"cached evaluation, so nothing is retrained{llm})")


def _set_aside(run_dir: Path) -> Path | None:
    """Move a damaged checkpoints.sqlite (and its -wal/-shm) aside; return its new name."""
    path = run_dir / "checkpoints.sqlite"
    if not path.exists():
        return None
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = path.with_name(f"checkpoints.sqlite.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            side.replace(Path(f"{dest}{suffix}"))
    return dest


def preflight_all(ctx: Settings) -> None:
    """Check every role's LLM before the search starts (raises LLMConfigError).

    One request per server, however many roles use it; each warning is printed once.
    """
    from agents.llm import preflight_all as check
    from graph.services import Services

    probe = Services(ctx=ctx, tracer=None, display=None)  # type: ignore[arg-type]
    for warning in check([probe.spec(role) for role in ("designer", "critic", "code_fixer")]):
        print(f"warning: {warning}", file=sys.stderr)


def check_isolation(ctx: Settings) -> None:
    """Apply the sandbox policy; refuse LLM-written code without the OS sandbox.

    Raises:
        ConfigError: Isolation is required and cannot be set up on this machine.
    """
    from tools import sandbox

    sandbox.configure(require_isolation=ctx.isolation_required)
    problem = sandbox.isolation_problem()
    if problem is None:
        return
    if ctx.isolation_required:
        raise ConfigError(f"{problem}. LLM-written code runs only inside the OS sandbox; "
                          "install it, or pass --no-require-isolation to run without it "
                          "(only on a machine you can afford to lose)")
    print(f"warning: {problem}; candidate code runs without the OS sandbox (Python-level "
          "checks only)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m graph.run``."""
    args = build_parser().parse_args(argv)
    from agents.llm import LLMConfigError
    from tasks.isic import DatasetError

    try:
        ctx, resuming = settle(args)
        check_isolation(ctx)
        preflight_all(ctx)
    except (ConfigError, LLMConfigError) as exc:
        return _fail(str(exc))
    try:
        from tasks.data_args import prepare_from_args

        data = prepare_from_args(ctx, progress=not ctx.quiet and sys.stderr.isatty())
    except (DatasetError, ValueError, OSError) as exc:
        return _fail(str(exc))
    from tasks.cache import skip_notes

    for note in skip_notes(data):
        print(f"data: {note}", file=sys.stderr)
    try:
        from graph.builder import build_graph

        build_graph(roles=ctx.roles)  # import and prompt errors surface here, before any work
    except (ImportError, ValueError) as exc:  # ValueError: prompts.PromptError, a role clash
        return _fail(str(exc))
    return _run(ctx, data, resuming)


def _open(ctx: Settings, resuming: bool) -> tuple[Any, Any]:
    """Create the run folder, its settings.json, tracer and display; clean and recover.

    Returns:
        The tracer and the display.
    """
    from graph.display import Display, PlainDisplay
    from graph.trace import Tracer
    from tools.tmpdirs import clean_stale_temp_dirs

    run_dir = Path(ctx.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx.save(run_dir / "settings.json")
    tracer = Tracer(run_dir / "trace.jsonl", ctx.run_id)
    rich_ok = not ctx.quiet and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    display = Display() if rich_ok else PlainDisplay(quiet=ctx.quiet)
    cleanup = clean_stale_temp_dirs()
    if cleanup.removed:
        display.message(cleanup.message() or "")
        tracer.event("tmp_cleanup", removed=[str(p) for p in cleanup.removed],
                     kept_live=cleanup.kept_live, bytes_freed=cleanup.bytes_freed)
    if resuming and (problem := checkpoint_problem(run_dir, ctx.run_id)):
        # settle() let this through: --recover, or nothing was finished yet.
        evals, cands = finished_work(run_dir)
        aside = _set_aside(run_dir)
        display.message(f"recovering run {ctx.run_id}: {problem}; searching again from the "
                        f"beginning in {run_dir}, reusing {evals} cached evaluation(s)"
                        + (f" (damaged file kept as {aside.name})" if aside else ""))
        tracer.event("run_recover", problem=problem, cached_evaluations=evals,
                     candidates=cands, set_aside=str(aside) if aside else None)
    return tracer, display


def _run(ctx: Settings, data: Any, resuming: bool) -> int:
    from graph.builder import build_graph
    from graph.checkpoint import make_checkpointer
    from graph.services import Services
    from tools.executors import ExecutorError

    run_dir = Path(ctx.run_dir)
    tracer, display = _open(ctx, resuming)
    svc = Services(ctx=ctx, tracer=tracer, display=display, data_=data)
    conn = sqlite3.connect(run_dir / "checkpoints.sqlite", check_same_thread=False)
    app = build_graph(checkpointer=make_checkpointer(conn), roles=ctx.roles, services=svc)
    config = {"configurable": {"thread_id": ctx.run_id}, "recursion_limit": 10_000}
    try:
        snapshot = app.get_state(config)
    except Exception as exc:  # noqa: BLE001 - a checkpoint that cannot be read back
        conn.close()
        svc.close()
        return _fail(_unresumable(ctx, run_dir, run_dir.name,
                                  f"its newest checkpoint cannot be read "
                                  f"({type(exc).__name__}: {exc})"))
    started = bool(snapshot.values)
    # Pending tasks: those of the next step, including tasks whose writes were saved
    # before a kill but not yet folded into a checkpoint (LangGraph leaves those out of
    # snapshot.next; resuming applies their writes without running them again).
    pending = [t.name for t in snapshot.tasks]
    if resuming and started and not pending:
        conn.close()
        display.message(f"run {ctx.run_id} already finished")
        tracer.event("run_resume", finished=True)
        rc = print_report(run_dir)
        svc.close()
        return rc
    try:  # Ray missing, no cluster, a bad resource setting: one line, before any work
        svc.executor()
    except ExecutorError as exc:
        conn.close()
        svc.close()
        return _fail(str(exc))
    tracer.event("run_resume" if started else "run_start", settings=ctx.to_json(),
                 data_fingerprint=data.fingerprint, n_images=data.n,
                 next=pending if started else ["prepare"],
                 done_not_checkpointed=[t.name for t in snapshot.tasks if t.result is not None],
                 pid=os.getpid())
    display.message(f"run {ctx.run_id} in {run_dir} ({'resumed' if started else 'new'}; "
                    f"llm {svc.spec('designer').label}; {data.n} images at "
                    f"{data.image_size}px)")
    initial = None if started else {
        "round": 0, "candidates": {}, "order": [], "critiques": [], "tokens": {},
        "notes": [], "stale_rounds": 0, "hv_history": [], "current": None}
    try:
        code = _invoke(app, initial, config, ctx, tracer, display)
    finally:
        conn.close()
    if code == EXIT_INTERRUPTED:
        return _fail(f"interrupted; continue with --resume {ctx.run_id}", code)
    if code == EXIT_OK:
        tracer.event("run_end")
        code = print_report(run_dir)
    svc.close()
    return code


def _invoke(app: Any, initial: dict[str, Any] | None, config: dict[str, Any], ctx: Settings,
            tracer: Any, display: Any) -> int:
    """Run the graph to its end; return the exit code (errors are traced and printed)."""
    from agents.llm import LLMConfigError

    display.start()
    try:
        app.invoke(initial, config, context=ctx, durability="sync")
    except KeyboardInterrupt:
        tracer.event("run_interrupted")
        return EXIT_INTERRUPTED
    except LLMConfigError as exc:
        tracer.event("run_error", error=str(exc), kind="llm_config")
        display.stop()
        return _fail(f"{exc}\nfinished work is kept; fix this and continue with --resume "
                     f"{ctx.run_id}")
    except Exception as exc:
        tracer.event("run_error", error=f"{type(exc).__name__}: {exc}")
        display.stop()
        return _fail(f"{type(exc).__name__}: {exc}\nfinished work is kept in {ctx.run_dir}; "
                     f"continue with --resume {ctx.run_id}", EXIT_ERROR)
    finally:
        display.stop()
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
