"""The one way the runtime opens its SQLite files on the agent's volume."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_db(path: Path, *schema: str) -> sqlite3.Connection:
    """A WAL-mode connection with ``schema`` statements applied (each ``CREATE ... IF NOT EXISTS``).

    Routes and tools use it from worker threads, never on the event loop, so it is not tied
    to the thread that opened it: the store that owns it serialises every use with its own lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in schema:
        db.execute(statement)
    return db
