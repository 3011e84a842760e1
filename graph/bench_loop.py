"""``python -m graph.bench_loop``: kept name of the loop benchmark (now :mod:`graph.bench.loop`).

``python -m graph.bench pipeline`` runs it together with the evaluation-pipeline benchmark.
"""

from __future__ import annotations

from graph.bench.loop import main

if __name__ == "__main__":
    raise SystemExit(main())
