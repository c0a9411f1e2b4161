"""Cron entries, reported and delivered: the reconciler's side of the agent's scheduler.

The scheduler runs inside the agent (``den.runtime.cron``), so schedules keep running while
the operator is down. Each pass, once the agent is ready, the reconciler reads
``GET /den/v1/cron`` (:func:`fetch_cron`), copies it into ``status.cron``
(:func:`cron_status`), and when the digest of the cron section the agent runs differs from
the Agentfile's, delivers the manifest again (``DeliverConfig``, see
:func:`den.operator.plan.make_config_plan`); the agent notices the new file and reloads its
entries without a restart, keeping their history.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

from den.api.resource import CronStatus

FETCH_TIMEOUT = 2.0

CronReport = Callable[[str, "str | None"], "dict[str, Any] | None"]


def fetch_cron(endpoint: str, token: str | None, timeout: float = FETCH_TIMEOUT) -> dict[str, Any] | None:
    """The agent's ``GET /den/v1/cron``, or None when it does not answer it."""
    request = urllib.request.Request(f"{endpoint}/den/v1/cron",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (127.0.0.1)
            data = json.loads(response.read())
    except Exception:  # refused, 401, 404 (an older runtime), timed out: nothing to report
        return None
    return data if isinstance(data, dict) and isinstance(data.get("entries"), list) else None


def cron_status(report: dict[str, Any]) -> tuple[list[CronStatus], str | None]:
    """``status.cron`` and ``status.nextRun`` (the soonest) from the agent's report."""
    items = [CronStatus(name=str(e.get("name")), schedule=str(e.get("schedule", "")),
                        nextRun=e.get("next_run"), lastRun=e.get("last_run"), lastResult=e.get("last_result"),
                        origin=str(e.get("origin", "agentfile")), suspended=bool(e.get("suspended")))
             for e in report.get("entries", []) if isinstance(e, dict)]
    upcoming = sorted(c.nextRun for c in items if c.nextRun)
    return items, (upcoming[0] if upcoming else None)
