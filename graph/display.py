"""Progress display: a rich live table on a terminal, plain lines otherwise.

Shows the round, each candidate's stage (designing / gating / fixing / training epoch k /
done / failed) and the best design so far. Training progress comes from the sandbox's
``on_event`` events.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


class PlainDisplay:
    """Plain progress lines (``--quiet``, non-TTY, CI)."""

    def __init__(self, quiet: bool = False, out: TextIO | None = None) -> None:
        """Print to ``out`` (stderr by default); ``quiet`` prints only key lines."""
        self.quiet = quiet
        self.out = out or sys.stderr
        self._last_epoch: dict[str, Any] = {}

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def start(self) -> None:
        """Nothing to set up."""

    def stop(self) -> None:
        """Nothing to tear down."""

    def round(self, n: int, iter_max: int) -> None:
        """Show that a new designer round starts."""
        if not self.quiet:
            self._print(f"round {n}/{iter_max}")

    def stage(self, candidate: str, stage: str, detail: str = "") -> None:
        """Show that a candidate moved to ``stage``."""
        if stage.startswith("origin:"):
            return
        final = stage in ("done", "failed")
        if final or not self.quiet:
            self._print(f"  {candidate}: {stage}{(' - ' + detail) if detail else ''}")

    def progress(self, candidate: str, event: dict[str, Any]) -> None:
        """Show a training progress event from the worker."""
        epoch = event.get("epoch")
        if epoch is not None and self._last_epoch.get(candidate) != epoch and not self.quiet:
            self._last_epoch[candidate] = epoch
            self._print(f"  {candidate}: training epoch {epoch}")

    def best(self, line: str) -> None:
        """Show the new best design."""
        self._print(f"  best: {line}")

    def message(self, text: str) -> None:
        """Any other note."""
        self._print(text)


class Display(PlainDisplay):
    """Rich live table of the search."""

    def __init__(self, console: Console | None = None) -> None:
        """Draw on ``console`` (stderr by default)."""
        super().__init__(quiet=False)
        self.console = console or Console(stderr=True)
        self._rows: dict[str, list[str]] = {}
        self._round = "prepare"
        self._best = "-"
        self._notes: list[str] = []
        self._t0 = time.monotonic()
        self._live = Live(self._render(), console=self.console, refresh_per_second=4,
                          transient=False)

    def _render(self) -> Group:
        table = Table(title=f"FL-NAS  {self._round}  ({time.monotonic() - self._t0:.0f}s)",
                      expand=False)
        for col in ("candidate", "origin", "stage", "result"):
            table.add_column(col)
        for cid, row in list(self._rows.items())[-14:]:
            style = {"done": "green", "failed": "red"}.get(row[1].split(" ")[0], "")
            table.add_row(cid, row[0], Text(row[1], style=style), row[2])
        return Group(table, Text(f"best: {self._best}", style="bold"),
                     *(Text(n, style="dim") for n in self._notes[-3:]))

    def _refresh(self) -> None:
        self._live.update(self._render())

    def start(self) -> None:
        """Start the live view."""
        self._live.start()

    def stop(self) -> None:
        """Stop the live view (leaves the last frame on screen)."""
        self._refresh()
        self._live.stop()

    def round(self, n: int, iter_max: int) -> None:
        """Show that a new designer round starts."""
        self._round = f"round {n}/{iter_max}"
        self._refresh()

    def stage(self, candidate: str, stage: str, detail: str = "") -> None:
        """Show that a candidate moved to ``stage``."""
        row = self._rows.setdefault(candidate, ["", "", ""])
        if stage.startswith("origin:"):
            row[0] = stage.split(":", 1)[1]
        else:
            row[1] = stage
            if detail:
                row[2] = detail[:70]
        self._refresh()

    def progress(self, candidate: str, event: dict[str, Any]) -> None:
        """Show the training epoch from a worker event."""
        epoch = event.get("epoch")
        if epoch is not None:
            total = event.get("epochs")
            self.stage(candidate, f"training epoch {epoch}" + (f"/{total}" if total else ""))

    def best(self, line: str) -> None:
        """Show the new best design."""
        self._best = line
        self._refresh()

    def message(self, text: str) -> None:
        """Add a note under the table."""
        self._notes.append(text)
        self._refresh()
