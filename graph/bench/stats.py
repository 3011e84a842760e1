"""Intervals of the benchmark figures.

* :func:`t_interval`: mean with a two-sided 95 % Student-t interval,
  ``mean +- t_{0.975, n-1} * sd / sqrt(n)`` (``sd`` with ``n - 1``); undefined (None
  bounds) for fewer than two values.
* :func:`ratio_interval`: ratio of two means with a 95 % percentile bootstrap interval,
  resampling each group's values independently (search seeds are not paired across
  strategies: each strategy's policy draws differently).
* :func:`paired_difference`: per-seed differences ``a_s - b_s`` with a t interval (the
  baselines suite: the same training seed for both designs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel
from scipy import stats

#: Bootstrap draws of :func:`ratio_interval`.
BOOT_DRAWS = 10_000
LEVEL = 0.95


class Interval(BaseModel):
    """A mean (or ratio) with its 95 % interval; ``lo``/``hi`` None when undefined."""

    value: float | None
    lo: float | None = None
    hi: float | None = None
    n: int = 0
    sd: float | None = None
    method: str = ""

    def text(self, digits: int = 3) -> str:
        """``0.512 [0.480, 0.544]``, ``0.512 (n=1)`` or ``n/a``."""
        if self.value is None:
            return "n/a"
        if self.lo is None or self.hi is None:
            return f"{self.value:.{digits}f} (n={self.n})"
        return f"{self.value:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a point (undefined ones count as overlapping)."""
        if None in (self.lo, self.hi, other.lo, other.hi):
            return True
        assert self.lo is not None and self.hi is not None  # for mypy
        assert other.lo is not None and other.hi is not None
        return self.lo <= other.hi and other.lo <= self.hi


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def t_interval(values: Sequence[float | None]) -> Interval:
    """Mean of ``values`` (None and non-finite ones dropped) with its 95 % t interval."""
    xs = _clean(values)
    n = len(xs)
    if n == 0:
        return Interval(value=None, n=0, method="t")
    mean = float(np.mean(xs))
    if n < 2:
        return Interval(value=mean, n=1, method="t")
    sd = float(np.std(xs, ddof=1))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(value=mean, lo=mean - half, hi=mean + half, n=n, sd=sd, method="t")


def spread(values: Sequence[float | None]) -> Interval:
    """Mean with the standard deviation over seeds as ``sd`` (no interval bounds)."""
    xs = _clean(values)
    if not xs:
        return Interval(value=None, method="sd")
    return Interval(value=float(np.mean(xs)), n=len(xs),
                    sd=float(np.std(xs, ddof=1)) if len(xs) > 1 else None, method="sd")


def ratio_interval(a: Sequence[float | None], b: Sequence[float | None], *,
                   draws: int = BOOT_DRAWS, seed: int = 0) -> Interval:
    """``mean(a) / mean(b)`` with a 95 % percentile bootstrap interval over seeds.

    Each draw resamples ``a`` and ``b`` independently with replacement; draws whose
    ``mean(b)`` is 0 are dropped. Undefined (None) when ``mean(b)`` is 0 or a side is
    empty; no bounds with fewer than two values on a side.
    """
    xa, xb = np.asarray(_clean(a)), np.asarray(_clean(b))
    if xa.size == 0 or xb.size == 0 or xb.mean() == 0:
        return Interval(value=None, n=min(xa.size, xb.size), method="bootstrap")
    value = float(xa.mean() / xb.mean())
    if xa.size < 2 or xb.size < 2:
        return Interval(value=value, n=min(xa.size, xb.size), method="bootstrap")
    rng = np.random.default_rng(seed)
    ma = xa[rng.integers(0, xa.size, (draws, xa.size))].mean(axis=1)
    mb = xb[rng.integers(0, xb.size, (draws, xb.size))].mean(axis=1)
    keep = mb != 0
    ratios = ma[keep] / mb[keep]
    q = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(ratios, [q, 100 - q])
    return Interval(value=value, lo=float(lo), hi=float(hi),
                    n=min(xa.size, xb.size), method="bootstrap")


def paired_difference(a: Sequence[float | None], b: Sequence[float | None]) -> Interval:
    """Mean of the per-seed differences ``a_s - b_s`` with its 95 % t interval.

    Pairs where either side is missing are dropped.
    """
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)
             if x is not None and y is not None]
    out = t_interval(diffs)
    out.method = "paired t"
    return out
