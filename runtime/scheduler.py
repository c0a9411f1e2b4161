"""Tasks the agent schedules for itself (``schedule_task``), kept on its volume.

The tasks live in ``/den/.den/schedule.db`` and survive restarts; the cron runner
(:mod:`den.runtime.cron`) runs them next to the Agentfile's entries, marked origin
``agent``. They are bounded by ``runtime.max_tasks`` and ``runtime.task_min_interval``;
a request beyond them is refused with a message that says which bound and by how much.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from den.api.agentfile import validate_cron, validate_timezone
from den.api.resource import now
from den.runtime.sqlite import open_db


class TaskError(ValueError):
    """A task the agent may not have: the message is for the model."""


class TaskScheduler:
    def __init__(self, path: Path, *, max_tasks: int = 10, min_interval: int = 300,
                 reserved: Callable[[], set[str]] = set) -> None:
        self._lock = threading.Lock()
        self._db = open_db(path, "CREATE TABLE IF NOT EXISTS tasks (name TEXT PRIMARY KEY, body TEXT NOT NULL)")
        self.max_tasks = max_tasks
        self.min_interval = min_interval
        self.reserved = reserved  # names of the Agentfile's entries
        #: Awaited by the tool after a change, so the runner picks the change up at once.
        self.changed: Callable[[], Awaitable[None]] | None = None

    def _get(self, name: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT body FROM tasks WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def schedule(self, name: str, schedule: str, prompt: str, timezone: str = "UTC") -> dict[str, Any]:
        """Create the task, or update the one of that name."""
        from den.runtime.cron import min_interval

        if name in self.reserved():
            raise TaskError(f"{name!r} is an entry of the Agentfile's cron section; choose another name")
        try:
            schedule = validate_cron(schedule)
            timezone = validate_timezone(timezone)
        except ValueError as exc:
            raise TaskError(str(exc)) from None
        gap = min_interval(schedule, timezone)
        if gap < self.min_interval:
            raise TaskError(f"{schedule!r} runs every {int(gap)} s at the shortest; tasks may run at most every "
                            f"{self.min_interval} s (runtime.task_min_interval)")
        with self._lock:
            old = self._get(name)
            if old is None:
                count = int(self._db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])
                if count >= self.max_tasks:
                    raise TaskError(f"you already have {count} tasks, the most allowed (runtime.max_tasks = "
                                    f"{self.max_tasks}); delete one first (action delete) or update one")
            task = {"name": name, "schedule": schedule, "timezone": timezone, "prompt": prompt,
                    "created": old["created"] if old else now(), "updated": now(), "origin": "agent"}
            self._db.execute("INSERT INTO tasks VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET body = excluded.body",
                             (name, json.dumps(task)))
        return task

    def delete(self, name: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM tasks WHERE name = ?", (name,)).rowcount > 0

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(r[0]) for r in self._db.execute("SELECT body FROM tasks ORDER BY name")]
