"""``python -m graph.report``: see :mod:`graph.report.write`."""

from graph.report.write import main

raise SystemExit(main())
