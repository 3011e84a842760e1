"""Side-by-side timing of the one-vs-rest rate gaps: fairlearn's functions against ours.

``python -m evaluation.bench_rates [--n 600] [--repeat 7]`` draws a validation-sized split
(8 classes, an age-like attribute of three groups), then alternately times

* ``fairlearn``: :func:`fairlearn_summaries`, fairlearn's
  ``demographic_parity_difference`` and ``equalized_odds_difference`` called per class
  (what :func:`evaluation.rates.rate_gaps` did before), and
* ``rates``: :func:`evaluation.rates.rate_gaps`, which evaluates the same two definitions
  from the per-group rates it already computes,

checks that both give the same numbers, and prints the CPU model, the medians and their
ratio (numpy and pandas only: no torch, so no bf16 question).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

from evaluation.rates import rate_classes, rate_gaps
from tasks.host import cpu_model


def fairlearn_summaries(yt: np.ndarray, yp: np.ndarray, names: np.ndarray,
                        num_classes: int) -> tuple[float | None, float | None]:
    """Macro-averaged fairlearn DPD and EOD over :func:`evaluation.rates.rate_classes`.

    The reference the fast path is held to (tests and this benchmark).
    """
    classes = rate_classes(yt, names, num_classes) if len(np.unique(names)) >= 2 else []
    if not classes:
        return None, None
    dpd, eod = [], []
    for c in classes:
        t, p = (yt == c).astype(np.int64), (yp == c).astype(np.int64)
        dpd.append(float(demographic_parity_difference(t, p, sensitive_features=names)))
        eod.append(float(equalized_odds_difference(t, p, sensitive_features=names)))
    return float(np.mean(dpd)), float(np.mean(eod))


def sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a split of ``n`` samples: 8 classes, three groups, the third predicted worse."""
    rng = np.random.default_rng(seed)
    yt = rng.integers(0, 8, n)
    names = rng.choice(np.array(["<40", "40-59", ">=60"]), n)
    noise = rng.random(n) < np.where(names == ">=60", 0.5, 0.3)
    return yt, np.where(noise, rng.integers(0, 8, n), yt), names


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 when both paths agree, 1 otherwise."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=600, help="samples (a validation split)")
    ap.add_argument("--repeat", type=int, default=7, help="alternating timed calls of each")
    args = ap.parse_args(argv)
    yt, yp, names = sample(args.n)
    times: dict[str, list[float]] = {"fairlearn": [], "rates": []}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ref = fairlearn_summaries(yt, yp, names, 8)
        times["fairlearn"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours = rate_gaps(yt, yp, names, 8)
        times["rates"].append(time.perf_counter() - t0)
    got = (ours["demographic_parity_difference"], ours["equalized_odds_difference"])
    same = all(abs(a - b) < 1e-12 for a, b in zip(ref, got, strict=True)
               if a is not None and b is not None) and (None in ref) == (None in got)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{cpu_model()}, fp64 NumPy, {args.n} samples, 8 classes, 3 groups, "
          f"median of {args.repeat} alternating calls:")
    for k, v in med.items():
        print(f"  {k:9s} {v * 1000:8.1f} ms")
    print(f"  speed-up  {med['fairlearn'] / med['rates']:.0f}x; same numbers: {same} "
          f"(DPD {got[0]:.4f}, EOD {got[1]:.4f})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
