"""The gateway's ledger: tokens, cost, requests and refusals per agent, model and UTC day.

Kept in SQLite on the gateway's own volume (WAL). Today's totals are also
held in memory, so the budget check before each call costs a dictionary
lookup; every call's row is written before its response completes, so a
restarted gateway starts from what it has already counted.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = [
    # 1: per agent, model and day
    """
    CREATE TABLE usage (
        day TEXT NOT NULL,
        agent TEXT NOT NULL,
        model TEXT NOT NULL,
        requests INTEGER NOT NULL DEFAULT 0,
        refused INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (day, agent, model)
    )
    """,
]


def utc_day(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%d")


@dataclass
class Totals:
    requests: int = 0
    refused: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    models: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, model: str, requests: int, refused: int, prompt: int, completion: int, cost: float) -> None:
        self.requests += requests
        self.refused += refused
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.cost_usd += cost
        row = self.models.setdefault(model, {"requests": 0, "tokens": 0, "cost_usd": 0.0})
        row["requests"] += requests
        row["tokens"] += prompt + completion
        row["cost_usd"] += cost


class Ledger:
    """Durable per-agent usage; thread-safe (routes record from the event loop's threads)."""

    def __init__(self, path: Path, clock=None) -> None:
        self.path = path
        self.clock = clock or (lambda: datetime.now(UTC))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()
        self._migrate()
        self._day = ""
        self._today: dict[str, Totals] = {}
        self._load_today()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(SCHEMA):
            raise RuntimeError(f"{self.path}: ledger schema {version} is newer than this gateway's")
        for number, statement in enumerate(SCHEMA[version:], start=version + 1):
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={number}")

    def _load_today(self) -> None:
        self._day = utc_day(self.clock())
        self._today = {}
        rows = self._db.execute(
            "SELECT agent, model, requests, refused, prompt_tokens, completion_tokens, cost_usd "
            "FROM usage WHERE day = ?", (self._day,))
        for agent, model, requests, refused, prompt, completion, cost in rows:
            self._today.setdefault(agent, Totals()).add(model, requests, refused, prompt, completion, cost)

    def _roll(self) -> None:
        if utc_day(self.clock()) != self._day:
            self._load_today()

    def today(self, agent: str) -> Totals:
        with self._lock:
            self._roll()
            return self._today.get(agent) or Totals()

    def day(self) -> str:
        with self._lock:
            self._roll()
            return self._day

    def all_today(self) -> dict[str, Totals]:
        with self._lock:
            self._roll()
            return dict(self._today)

    def record(self, agent: str, model: str, *, prompt: int = 0, completion: int = 0,
               cost: float = 0.0, refused: bool = False) -> None:
        requests, refusals = (0, 1) if refused else (1, 0)
        with self._lock:
            self._roll()
            self._db.execute(
                "INSERT INTO usage (day, agent, model, requests, refused, prompt_tokens, completion_tokens, cost_usd) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, agent, model) DO UPDATE SET "
                "requests = requests + excluded.requests, refused = refused + excluded.refused, "
                "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
                "completion_tokens = completion_tokens + excluded.completion_tokens, "
                "cost_usd = cost_usd + excluded.cost_usd",
                (self._day, agent, model, requests, refusals, prompt, completion, cost))
            self._today.setdefault(agent, Totals()).add(model, requests, refusals, prompt, completion, cost)

    def close(self) -> None:
        with self._lock:
            self._db.close()
