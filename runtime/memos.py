"""The agent's memos: SQLite with FTS5 keyword search, on the agent's volume.

The interface (write, search, list, recent, count) is what context building
and the memo tools use; semantic recall (sqlite-vec) will sit behind it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from den.api.resource import now
from den.runtime.sqlite import open_db


@dataclass
class Memo:
    id: int
    text: str
    tags: str
    created: str

    def as_dict(self) -> dict:
        return asdict(self)


class SqliteMemos:
    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_db(
            path,
            "CREATE TABLE IF NOT EXISTS memos (id INTEGER PRIMARY KEY, text TEXT NOT NULL, "
            "tags TEXT NOT NULL DEFAULT '', created TEXT NOT NULL)",
            "CREATE VIRTUAL TABLE IF NOT EXISTS memos_fts USING fts5(text, content='memos', content_rowid='id')",
            "CREATE TRIGGER IF NOT EXISTS memos_ai AFTER INSERT ON memos BEGIN "
            "INSERT INTO memos_fts(rowid, text) VALUES (new.id, new.text); END",
        )

    def write(self, text: str, tags: str = "") -> Memo:
        created = now()
        with self._lock:
            cursor = self._db.execute("INSERT INTO memos (text, tags, created) VALUES (?, ?, ?)",
                                      (text, tags, created))
        return Memo(int(cursor.lastrowid or 0), text, tags, created)

    def search(self, query: str, limit: int = 10) -> list[Memo]:
        words = re.findall(r"\w+", query.lower())
        if not words:
            return []
        match = " OR ".join(f'"{w}"' for w in words)
        with self._lock:
            rows = self._db.execute(
                "SELECT m.id, m.text, m.tags, m.created FROM memos_fts f JOIN memos m ON m.id = f.rowid "
                "WHERE memos_fts MATCH ? ORDER BY bm25(memos_fts) LIMIT ?", (match, limit)).fetchall()
        return [Memo(*row) for row in rows]

    def list(self, limit: int = 50, offset: int = 0) -> list[Memo]:
        with self._lock:
            rows = self._db.execute("SELECT id, text, tags, created FROM memos ORDER BY id DESC LIMIT ? OFFSET ?",
                                    (limit, offset)).fetchall()
        return [Memo(*row) for row in rows]

    def recent(self, limit: int = 10) -> list[Memo]:
        return self.list(limit)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM memos").fetchone()[0])
