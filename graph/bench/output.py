"""What every suite writes: the machine line, Markdown tables, CSV and JSON files."""

from __future__ import annotations

import csv
import io
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tasks.io import atomic_write
from tools.machine import cpu_model, machine

__all__ = ["cpu_model", "machine"]  # re-exported: the suites and tests read them here


def say(text: str) -> None:
    """Print one line, in one write, from any thread.

    ``print`` writes the text and the newline apart, so lines of searches running at the
    same time ran into each other.
    """
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def machine_line(m: dict[str, Any]) -> str:
    """One line of :func:`machine` for the Markdown files."""
    amp = "native bf16 (bf16 autocast)" if m["cpu_bf16_native"] else "no native bf16 (fp32)"
    return (f"Machine: {m['cpu']}, {amp}, {m['torch_threads']} torch threads, "
            f"torch {m['torch']}, GPU: {m['gpu'] or 'none'}.")


def command_line(argv: Sequence[str] | None = None) -> str:
    """Return the exact command that is running (``python -m graph.bench ...``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return "python -m graph.bench " + shlex.join(args)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Return a Markdown table (cells as text; ``|`` escaped)."""
    def cell(v: Any) -> str:
        return str("" if v is None else v).replace("|", "\\|")

    out = ["| " + " | ".join(map(cell, headers)) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(out)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts; the union of their keys, in first-seen order) as CSV."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, buf.getvalue())


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON (non-JSON values as text)."""
    atomic_write(path, json.dumps(data, indent=1, default=str))


def header(title: str, command: str, mach: dict[str, Any]) -> str:
    """Return the top of every ``<suite>.md``: title, exact command and machine line."""
    return f"# {title}\n\nCommand: `{command}`\n\n{machine_line(mach)}\n"


def verdict(ok: bool | None) -> str:
    """``PASS`` / ``FAIL`` / ``n/a`` (undefined)."""
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def write_suite(out: Path, suite: str, result: dict[str, Any], command: str, *,
                rows: Callable[[dict[str, Any]], Sequence[dict[str, Any]]],
                plot: Callable[[dict[str, Any], Path], None], plot_name: str,
                markdown: Callable[[dict[str, Any], str], str]) -> None:
    """Write a suite's ``<suite>.json``, ``.csv``, ``.md`` and its plot into ``out``.

    The JSON holds the result with the command that made it; the CSV one row per
    ``rows(result)`` entry.
    """
    out.mkdir(parents=True, exist_ok=True)
    result = {**result, "command": command}
    write_json(out / f"{suite}.json", result)
    write_csv(out / f"{suite}.csv", rows(result))
    plot(result, out / plot_name)
    atomic_write(out / f"{suite}.md", markdown(result, command))
