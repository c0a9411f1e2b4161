"""Conversations persisted on the agent's volume, so a restarted agent continues them."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from den.runtime.sqlite import open_db

MAX_MESSAGES = 200  # oldest turns are dropped past this, keeping the context bounded


class Sessions:
    """``max_bytes``: a session keeps its newest messages up to this much JSON (the agent's
    request limit: what a client could send in one request), so loading one stays bounded."""

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = open_db(
            path,
            "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, updated REAL NOT NULL, messages TEXT NOT NULL)",
        )

    def load(self, session_id: str) -> list[dict[str, Any]]:
        with self._lock:
            row = self._db.execute("SELECT messages FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return json.loads(row[0]) if row else []

    def save(self, session_id: str, messages: list[dict[str, Any]]) -> None:
        kept = [json.dumps(m) for m in messages if m.get("role") != "system"][-MAX_MESSAGES:]
        if self.max_bytes is not None:
            total = sum(len(m) + 2 for m in kept)
            while len(kept) > 1 and total > self.max_bytes:
                total -= len(kept.pop(0)) + 2
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET updated = excluded.updated, "
                "messages = excluded.messages",
                (session_id, time.time(), "[" + ", ".join(kept) + "]"),
            )

    def reset(self, session_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])

    def merge(self, session_id: str, incoming: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conversation to answer: clients that resend the history replace it;
        clients that send only the new turn get it appended to what is stored."""
        stored = self.load(session_id)
        plain = [m for m in incoming if m.get("role") != "system"]
        if stored and plain[: len(stored)] == stored:
            return incoming
        if stored and len(plain) >= len(stored) and plain[0] == stored[0]:
            return incoming
        return stored + incoming
