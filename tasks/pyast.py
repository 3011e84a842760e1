"""``ast.parse`` behind one process-wide lock.

CPython 3.11's AST constructor keeps its recursion depth in interpreter-wide state, so two
threads parsing at once can fail with ``SystemError: AST constructor recursion depth
mismatch`` (python/cpython gh-106905). Candidate branches (graph/fanout.py) hash, gate and
read genomes of their code in concurrent threads; every parse in the product goes through
:func:`parse` (tests/test_architecture.py checks that).
"""

from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """Return ``ast.parse(source, filename)``, one thread at a time.

    Raises:
        SyntaxError: The source does not parse (as ``ast.parse``).
        ValueError: The source contains a null byte (as ``ast.parse``).
    """
    with _LOCK:
        return ast.parse(source, filename=filename)
