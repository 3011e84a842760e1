"""The circuit breaker that stops calling an LLM which keeps failing."""

from __future__ import annotations

import threading
from typing import Any


class CircuitBreaker:
    """Stops calling an LLM that keeps failing.

    After ``threshold`` consecutive failed calls (each a call whose retries and re-asks
    were exhausted) the breaker opens and stays open for the rest of the process: the
    roles use their heuristic brains (``action="heuristic"``) or the run stops after the
    current step (``action="stop"``). A success resets the count. ``threshold=None``
    disables it. Thread-safe.
    """

    ACTIONS = ("heuristic", "stop")

    def __init__(self, threshold: int | None = 3, action: str = "heuristic") -> None:
        """Create a closed breaker.

        Raises:
            ValueError: An unknown action or a threshold below 1.
        """
        if action not in self.ACTIONS:
            raise ValueError(f"circuit breaker action must be one of {self.ACTIONS}, "
                             f"got {action!r}")
        if threshold is not None and threshold < 1:
            raise ValueError(f"circuit breaker threshold must be >= 1 or none, got {threshold}")
        self.threshold = threshold
        self.action = action
        self.consecutive = 0
        self.is_open = False
        self.last_error: str | None = None
        self.opened_by: str | None = None
        self.skipped = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Tell whether a call may be made (counts the calls skipped while open)."""
        with self._lock:
            if self.is_open:
                self.skipped += 1
            return not self.is_open

    def success(self) -> None:
        """Record a successful call."""
        with self._lock:
            self.consecutive = 0

    def failure(self, error: str, role: str = "") -> bool:
        """Record a failed call; return True when this failure opened the breaker."""
        with self._lock:
            self.consecutive += 1
            self.last_error = error
            if self.is_open or self.threshold is None or self.consecutive < self.threshold:
                return False
            self.is_open, self.opened_by = True, role
            return True

    def describe(self) -> str:
        """One sentence for the console and the summary."""
        then = ("later LLM steps use the heuristic brain" if self.action == "heuristic"
                else "the run stops after the current step")
        return (f"LLM circuit breaker opened after {self.consecutive} consecutive failed "
                f"calls ({then}); last error: {(self.last_error or '')[:200]}")

    def report(self) -> dict[str, Any]:
        """JSON-ready state for summary.json and the trace."""
        return {"threshold": self.threshold, "action": self.action, "open": self.is_open,
                "consecutive_failures": self.consecutive, "opened_by": self.opened_by,
                "skipped_calls": self.skipped, "last_error": self.last_error,
                "message": self.describe() if self.is_open else None}

