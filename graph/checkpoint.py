"""The SQLite checkpointer of a run, reviving the state's typed records on resume.

LangGraph's serializer revives pydantic objects only from modules it is told to trust
(``allowed_msgpack_modules``); anything else comes back as a plain dict with an
"unregistered type" warning. The state holds :class:`~agents.records.Candidate` and
:class:`~agents.records.Note` objects, so they are allowlisted here (docs/architecture.md).
"""

from __future__ import annotations

import sqlite3

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from agents.records import RECORD_TYPES


def serializer() -> JsonPlusSerializer:
    """Return the checkpoint serializer: msgpack, trusting exactly the state's record types."""
    return JsonPlusSerializer(
        allowed_msgpack_modules=[(t.__module__, t.__name__) for t in RECORD_TYPES])


def make_checkpointer(conn: sqlite3.Connection) -> SqliteSaver:
    """Return the run's ``SqliteSaver`` on ``conn`` (``checkpoints.sqlite``)."""
    return SqliteSaver(conn, serde=serializer())
