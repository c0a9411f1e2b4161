"""Tasks the agent schedules for itself (``schedule_task``), kept on its volume.

Declared cron entries and these tasks are run by the scheduler of the cron
issue; this module validates and persists them, and lists them.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from den.api.agentfile import validate_cron
from den.api.resource import now
from den.runtime.sqlite import open_db


class TaskScheduler:
    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_db(path, "CREATE TABLE IF NOT EXISTS tasks (name TEXT PRIMARY KEY, body TEXT NOT NULL)")

    def schedule(self, name: str, schedule: str, prompt: str) -> dict[str, Any]:
        from croniter import croniter

        validate_cron(schedule)
        task = {"name": name, "schedule": schedule, "prompt": prompt, "created": now(),
                "next_run": croniter(schedule, time.time()).get_next(float)}
        with self._lock:
            self._db.execute("INSERT INTO tasks VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET body = excluded.body",
                             (name, json.dumps(task)))
        return task

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(r[0]) for r in self._db.execute("SELECT body FROM tasks ORDER BY name")]
