"""``python -m graph.trace``: see :mod:`graph.trace.cli`."""

from graph.trace.cli import main

raise SystemExit(main())
