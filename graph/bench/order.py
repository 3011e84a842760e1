"""The order in which the search suite's pool starts its searches.

Seed-major (every strategy's seed 1 before any seed 2, see
:func:`graph.bench.search.plan_search`), and within a seed the costliest strategy first:
the one whose finished searches took the longest on average (plan order while none has
finished). The shortest search then comes last and the short ones fill the other cores
while a long one runs, so the suite's end, where a core idles because nothing is left to
start, is shorter. Random search is usually the long one: it draws designs from the whole
Choices, up to 40 times the Template's training cost. It cannot help when one search
outlasts the rest of its seed together (at ccd063a the last random search took 19 min,
the other two 13 min together). The order changes only wall time: every search is its
own process with its own seeds.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar


class Spec(Protocol):
    """What the order needs to know of a planned search."""

    @property
    def strategy(self) -> str: ...  # noqa: D102

    @property
    def seed(self) -> int: ...  # noqa: D102


S = TypeVar("S", bound=Spec)
R = TypeVar("R")


class CostliestFirst(Generic[S]):
    """Hands out planned searches seed-major, each seed's costliest strategy first.

    Args:
        specs: The searches in plan order (seed-major).
    """

    def __init__(self, specs: Sequence[S]) -> None:
        self._left = list(specs)
        self._walls: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    def cost(self, strategy: str) -> float:
        """Mean wall seconds of the strategy's finished searches (inf: none yet)."""
        walls = self._walls[strategy]
        return sum(walls) / len(walls) if walls else math.inf

    def take(self) -> S | None:
        """Return the next search to start (None: all started)."""
        with self._lock:
            if not self._left:
                return None
            seed = self._left[0].seed
            group = [s for s in self._left if s.seed == seed]
            # max() keeps the first of equals: plan order among strategies not yet seen.
            spec = max(group, key=lambda s: self.cost(s.strategy))
            self._left.remove(spec)
            return spec

    def done(self, spec: S, wall_s: float) -> None:
        """Record a finished search's wall time."""
        with self._lock:
            self._walls[spec.strategy].append(wall_s)

    def cancel(self) -> None:
        """Start nothing more (a search failed)."""
        with self._lock:
            self._left.clear()


def run_in_order(specs: Sequence[S], task: Callable[[S], R], jobs: int) -> list[R]:
    """Run ``task`` on every spec, ``jobs`` at a time in :class:`CostliestFirst` order.

    Returns:
        The results in plan order (the order of ``specs``).
    """
    order: CostliestFirst[S] = CostliestFirst(specs)
    results: dict[int, R] = {}  # by id(spec): a spec need not be hashable

    def worker() -> None:
        while (spec := order.take()) is not None:
            t0 = time.monotonic()
            try:
                results[id(spec)] = task(spec)
            except BaseException:
                order.cancel()  # the other workers finish their search, start no new one
                raise
            order.done(spec, time.monotonic() - t0)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for f in [pool.submit(worker) for _ in range(max(1, jobs))]:
            f.result()  # a failed search fails the suite with its own error
    return [results[id(s)] for s in specs]
