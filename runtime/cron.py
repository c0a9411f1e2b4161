"""The scheduler: Agentfile ``cron`` entries and the agent's own tasks, run with CronJob rules.

Two halves:

- pure rules over an injected clock (no I/O): :func:`next_run` in the entry's IANA time zone,
  :func:`missed_run` (catch-up within ``starting_deadline``), :func:`admit` (the concurrency
  policy) and :func:`min_interval` (the bound on the agent's own tasks);
- :class:`CronRunner`, which lives in the agent's event loop: it sleeps until the next due
  entry, runs its prompt (through the agent loop, a loop or the chain) in a session of its own
  under the entry's ``timeout``, writes the outcome as a memo naming the entry and keeps the
  history in :class:`CronStore` (SQLite on the volume, always used from worker threads).

Daylight saving time: a wall time that does not exist (clocks go forward) runs at the first
time after the gap, once; a wall time that happens twice (clocks go back) runs once, at its
first occurrence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from den.runtime.sqlite import open_db

log = logging.getLogger("den.runtime.cron")

#: The runner looks at the clock (and the config file) at least this often.
POLL_SECONDS = 1.0
OUTPUT_CHARS = 500

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if moment else None


def parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


@dataclass(frozen=True)
class Entry:
    """One schedule the runner keeps: declared in the Agentfile (origin ``agentfile``) or made by
    the agent with ``schedule_task`` (origin ``agent``)."""

    name: str
    schedule: str
    prompt: str
    timezone: str = "UTC"
    loop: str | None = None
    chain: bool = False
    concurrency: str = "Forbid"
    starting_deadline: int | None = 300
    timeout: int = 600
    suspend: bool = False
    history_limit: int = 20
    origin: str = "agentfile"

    @classmethod
    def from_spec(cls, spec: Any) -> Entry:
        return cls(name=spec.name, schedule=spec.schedule, prompt=spec.prompt, timezone=spec.timezone,
                   loop=str(spec.loop) if spec.loop else None, chain=spec.chain,
                   concurrency=str(spec.concurrency), starting_deadline=spec.starting_deadline,
                   timeout=spec.timeout, suspend=spec.paused, history_limit=spec.history_limit)

    @classmethod
    def from_task(cls, task: dict[str, Any]) -> Entry:
        return cls(name=task["name"], schedule=task["schedule"], prompt=task["prompt"],
                   timezone=task.get("timezone", "UTC"), suspend=bool(task.get("suspend", False)),
                   origin="agent")


# -- the rules (pure) -------------------------------------------------------------


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time: its first occurrence when it happens twice, the
    first existing time after it when the clocks skip it."""
    def exists(w: datetime) -> bool:
        return w.replace(tzinfo=zone, fold=0).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == w

    probe = wall
    for _ in range(24 * 60):
        if exists(probe):
            return probe.replace(tzinfo=zone, fold=0).astimezone(UTC)
        probe = (probe + timedelta(minutes=1)).replace(second=0, microsecond=0)
    raise ValueError(f"no valid local time after {wall} in {zone}")


def next_run(schedule: str, timezone: str, after: datetime) -> datetime:
    """The first run of ``schedule`` (read in ``timezone``) strictly after ``after`` (aware), in UTC."""
    from croniter import croniter

    zone = ZoneInfo(timezone)
    after = after.astimezone(UTC)
    local = after.astimezone(zone).replace(tzinfo=None)
    candidates = croniter(schedule, local)
    for _ in range(10_000):
        at = _instant(candidates.get_next(datetime), zone)
        if at > after:
            return at
    raise ValueError(f"{schedule!r} has no run after {iso(after)}")


def previous_run(schedule: str, timezone: str, at_or_before: datetime) -> datetime:
    """The last run of ``schedule`` at or before ``at_or_before`` (aware), in UTC."""
    from croniter import croniter

    zone = ZoneInfo(timezone)
    limit = at_or_before.astimezone(UTC)
    local = (limit + timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None)
    candidates = croniter(schedule, local)
    for _ in range(10_000):
        at = _instant(candidates.get_prev(datetime), zone)
        if at <= limit:
            return at
    raise ValueError(f"{schedule!r} has no run before {iso(limit)}")


def missed_run(entry: Entry, since: datetime, now: datetime) -> tuple[datetime | None, bool]:
    """The run that was due in ``(since, now]`` and never happened (the agent was down).

    Returns ``(scheduled, start)``: the most recent missed time and True when it is within
    ``starting_deadline`` (run it once now; no deadline: always), or the first missed time and
    False (record it as skipped), or ``(None, False)`` when nothing was missed."""
    first = next_run(entry.schedule, entry.timezone, since)
    if first > now:
        return None, False
    latest = previous_run(entry.schedule, entry.timezone, now)
    if entry.starting_deadline is None or latest >= now - timedelta(seconds=entry.starting_deadline):
        return latest, True
    return first, False


def admit(policy: str, running: int) -> str:
    """What a due run does, Kubernetes' concurrencyPolicy: ``start``, ``skip`` (Forbid while one
    runs) or ``replace`` (cancel the running one first)."""
    if not running or policy == "Allow":
        return "start"
    return "skip" if policy == "Forbid" else "replace"


def min_interval(schedule: str, timezone: str = "UTC", start: datetime | None = None, samples: int = 200) -> float:
    """The shortest gap in seconds between two runs of ``schedule`` over its next ``samples`` runs."""
    at = next_run(schedule, timezone, start or datetime(2026, 1, 1, tzinfo=UTC))
    shortest = float("inf")
    for _ in range(samples):
        following = next_run(schedule, timezone, at)
        shortest = min(shortest, (following - at).total_seconds())
        at = following
    return shortest


# -- history ----------------------------------------------------------------------


@dataclass
class RunRecord:
    entry: str
    origin: str
    trigger: str  # schedule | catch-up | manual
    scheduled: str | None
    status: str = "running"  # running | succeeded | failed | timed_out | skipped
    started: str | None = None
    finished: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    output: str = ""
    reason: str = ""
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tokens"] = self.prompt_tokens + self.completion_tokens
        return data


_COLUMNS = ("entry", "origin", "trigger", "scheduled", "status", "started", "finished", "prompt_tokens",
            "completion_tokens", "cost_usd", "output", "reason")


class CronStore:
    """Run history, when each entry was first seen and suspend/resume overrides: ``cron.db``."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_db(
            path,
            "CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, entry TEXT NOT NULL, origin TEXT NOT NULL, "
            "trigger TEXT NOT NULL, scheduled TEXT, status TEXT NOT NULL, started TEXT, finished TEXT, "
            "prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0, "
            "cost_usd REAL NOT NULL DEFAULT 0, output TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '')",
            "CREATE INDEX IF NOT EXISTS runs_entry ON runs (entry, id)",
            "CREATE TABLE IF NOT EXISTS entries (name TEXT PRIMARY KEY, first_seen TEXT NOT NULL, "
            "suspended INTEGER)",
        )
        with self._lock:  # runs a stopped agent left unfinished
            self._db.execute("UPDATE runs SET status = 'failed', reason = 'the agent stopped during the run' "
                             "WHERE status = 'running'")

    def save(self, record: RunRecord, limit: int) -> RunRecord:
        values = [getattr(record, c) for c in _COLUMNS]
        with self._lock:
            if record.id is None:
                cursor = self._db.execute(f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES "
                                          f"({', '.join('?' * len(_COLUMNS))})", values)
                record.id = int(cursor.lastrowid or 0)
                self._db.execute("DELETE FROM runs WHERE entry = ? AND id NOT IN "
                                 "(SELECT id FROM runs WHERE entry = ? ORDER BY id DESC LIMIT ?)",
                                 (record.entry, record.entry, limit))
            else:
                self._db.execute(f"UPDATE runs SET {', '.join(c + ' = ?' for c in _COLUMNS)} WHERE id = ?",
                                 [*values, record.id])
        return record

    def runs(self, entry: str | None = None, limit: int = 50) -> list[RunRecord]:
        query = f"SELECT {', '.join(_COLUMNS)}, id FROM runs"
        args: list[Any] = []
        if entry is not None:
            query += " WHERE entry = ?"
            args.append(entry)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id DESC LIMIT ?", [*args, limit]).fetchall()
        return [RunRecord(*row) for row in rows]

    def last(self, entry: str) -> RunRecord | None:
        found = self.runs(entry, 1)
        return found[0] if found else None

    def last_scheduled(self, entry: str) -> datetime | None:
        with self._lock:
            row = self._db.execute("SELECT MAX(scheduled) FROM runs WHERE entry = ? AND trigger != 'manual'",
                                   (entry,)).fetchone()
        return parse_iso(row[0]) if row and row[0] else None

    def first_seen(self, entry: str, now: datetime) -> datetime:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO entries (name, first_seen) VALUES (?, ?)", (entry, iso(now)))
            row = self._db.execute("SELECT first_seen FROM entries WHERE name = ?", (entry,)).fetchone()
        return parse_iso(row[0]) or now

    def suspended(self) -> dict[str, bool]:
        with self._lock:
            rows = self._db.execute("SELECT name, suspended FROM entries WHERE suspended IS NOT NULL").fetchall()
        return {name: bool(value) for name, value in rows}

    def set_suspended(self, entry: str, value: bool, now: datetime) -> None:
        with self._lock:
            self._db.execute("INSERT INTO entries (name, first_seen, suspended) VALUES (?, ?, ?) "
                             "ON CONFLICT(name) DO UPDATE SET suspended = excluded.suspended",
                             (entry, iso(now), int(value)))


# -- the runner -------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run produced (the executor's answer)."""

    output: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    failed: str = ""  # a reason when the run itself says it failed


Executor = Callable[[Entry, str], Awaitable[Outcome]]


class UnknownEntry(KeyError):
    pass


@dataclass
class _Slot:
    entry: Entry
    next_due: datetime | None = None
    running: dict[asyncio.Task, RunRecord] = field(default_factory=dict)


class CronRunner:
    """Runs the entries on time in the agent's event loop; every SQLite call goes to a thread."""

    def __init__(self, store: CronStore, execute: Executor, *, memos: Any = None, clock: Clock = utcnow,
                 classify: Callable[[BaseException], str | None] | None = None) -> None:
        self.store = store
        self.execute = execute
        self.memos = memos
        self.clock = clock
        self.classify = classify or (lambda exc: None)
        self.slots: dict[str, _Slot] = {}
        self._loop_task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._watchers: list[Callable[[], Awaitable[None]]] = []
        self._overrides: dict[str, bool] = {}
        self._loaded = False

    # entries

    def entries(self) -> list[Entry]:
        return [slot.entry for slot in self.slots.values()]

    def suspended(self, entry: Entry) -> bool:
        return self._overrides.get(entry.name, entry.suspend)

    async def set_entries(self, entries: Iterable[Entry]) -> None:
        """Replace the entries (start, a reloaded manifest, a task made or deleted); an unchanged
        entry keeps its next run, a changed one is rescheduled; history is never touched. Runs
        missed while the agent was down are caught up on the first call only: an entry added
        to a running agent has missed nothing."""
        now = self.clock()
        catch_up, self._loaded = not self._loaded, True
        self._overrides = await asyncio.to_thread(self.store.suspended)
        new: dict[str, _Slot] = {}
        for entry in entries:
            old = self.slots.get(entry.name)
            if old is not None and old.entry == entry:
                new[entry.name] = old
                continue
            slot = _Slot(entry, running=old.running if old else {})
            new[entry.name] = slot
            if old is None and catch_up:
                await self._catch_up(slot, now)
            slot.next_due = next_run(entry.schedule, entry.timezone, now)
        self.slots = new
        self._wake.set()

    async def _catch_up(self, slot: _Slot, now: datetime) -> None:
        entry = slot.entry
        seen = await asyncio.to_thread(self.store.first_seen, entry.name, now)
        last = await asyncio.to_thread(self.store.last_scheduled, entry.name)
        since = max(seen, last) if last else seen
        if self.suspended(entry) or since >= now:
            return
        scheduled, start = missed_run(entry, since, now)
        if scheduled is None:
            return
        if start:
            self._start(slot, scheduled, "catch-up")
        else:
            deadline = entry.starting_deadline
            await self._record_skipped(entry, scheduled, "catch-up",
                                       f"missed while the agent was not running; more than starting_deadline "
                                       f"({deadline} s) ago")

    # the clock

    async def start(self, entries: Iterable[Entry]) -> None:
        await self.set_entries(entries)
        self._loop_task = asyncio.create_task(self._loop(), name="den-cron")

    def watch(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Called on every wake-up of the runner (at least every :data:`POLL_SECONDS`)."""
        self._watchers.append(callback)

    async def _loop(self) -> None:
        while True:
            for callback in self._watchers:
                try:
                    await callback()
                except Exception:  # a bad reload must never stop the schedule
                    log.exception("cron watcher failed")
            await self.tick()
            due = [s.next_due for s in self.slots.values() if s.next_due is not None]
            delay = POLL_SECONDS
            if due:
                delay = max(0.0, min(delay, (min(due) - self.clock()).total_seconds()))
            self._wake.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that lands as
            # the wake-up fires (a reload just before stop), and stop() then waited forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def tick(self) -> None:
        """Start every entry due by now (once, however late) and schedule its next run."""
        now = self.clock()
        for slot in list(self.slots.values()):
            if slot.next_due is None or slot.next_due > now:
                continue
            scheduled = slot.next_due
            slot.next_due = next_run(slot.entry.schedule, slot.entry.timezone, now)
            if self.suspended(slot.entry):
                continue
            decision = admit(slot.entry.concurrency, len(slot.running))
            if decision == "skip":
                await self._record_skipped(slot.entry, scheduled, "schedule",
                                           "the previous run is still running (concurrency Forbid)")
                continue
            if decision == "replace":
                for task, record in list(slot.running.items()):
                    record.reason = "replaced by the next run (concurrency Replace)"
                    task.cancel()
            self._start(slot, scheduled, "schedule")

    async def stop(self) -> None:
        tasks = [t for s in self.slots.values() for t in s.running]
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # running

    def _start(self, slot: _Slot, scheduled: datetime | None, trigger: str) -> asyncio.Task:
        record = RunRecord(slot.entry.name, slot.entry.origin, trigger, iso(scheduled))
        task = asyncio.create_task(self._run(slot.entry, record), name=f"den-cron-{slot.entry.name}")
        slot.running[task] = record
        task.add_done_callback(lambda t: slot.running.pop(t, None))
        return task

    async def run_now(self, name: str) -> RunRecord:
        """Run an entry at once (suspended or not, whatever runs already) and wait for its outcome."""
        slot = self.slots.get(name)
        if slot is None:
            raise UnknownEntry(name)
        task = self._start(slot, self.clock(), "manual")
        return await asyncio.shield(task)

    async def _run(self, entry: Entry, record: RunRecord) -> RunRecord:
        record.started = iso(self.clock())
        await asyncio.to_thread(self.store.save, record, entry.history_limit)
        session = f"cron-{entry.name}-{record.id}"
        try:
            async with asyncio.timeout(entry.timeout):
                outcome = await self.execute(entry, session)
        except TimeoutError:
            record.status, record.reason = "timed_out", f"took longer than timeout ({entry.timeout} s)"
        except asyncio.CancelledError:
            record.status = "failed"
            record.reason = record.reason or "cancelled: the agent stopped during the run"
            record.finished = iso(self.clock())
            await asyncio.to_thread(self.store.save, record, entry.history_limit)
            raise
        except Exception as exc:  # the model refused (budget), failed, a bad loop...
            record.status = "failed"
            record.reason = self.classify(exc) or f"{type(exc).__name__}: {exc}"
        else:
            record.prompt_tokens, record.completion_tokens = outcome.prompt_tokens, outcome.completion_tokens
            record.cost_usd = round(outcome.cost_usd, 6)
            record.output = outcome.output[:OUTPUT_CHARS]
            record.status, record.reason = ("failed", outcome.failed) if outcome.failed else ("succeeded", "")
        record.finished = iso(self.clock())
        await asyncio.to_thread(self.store.save, record, entry.history_limit)
        if self.memos is not None:
            text = (f"cron {entry.name} ({entry.origin}) {record.status} at {record.started}: "
                    f"{record.output or record.reason}")
            await asyncio.to_thread(self.memos.write, text, f"cron,cron:{entry.name}")
        log.info("cron run", extra={"fields": {"entry": entry.name, "trigger": record.trigger,
                                               "status": record.status, "reason": record.reason}})
        return record

    async def _record_skipped(self, entry: Entry, scheduled: datetime, trigger: str, reason: str) -> None:
        now = iso(self.clock())
        record = RunRecord(entry.name, entry.origin, trigger, iso(scheduled), "skipped", now, now, reason=reason)
        await asyncio.to_thread(self.store.save, record, entry.history_limit)

    # suspend / resume

    async def set_suspended(self, name: str, value: bool) -> None:
        if name not in self.slots:
            raise UnknownEntry(name)
        await asyncio.to_thread(self.store.set_suspended, name, value, self.clock())
        self._overrides[name] = value

    # reports

    def describe(self, slot: _Slot, last: RunRecord | None) -> dict[str, Any]:
        entry = slot.entry
        suspended = self.suspended(entry)
        return {"name": entry.name, "schedule": entry.schedule, "timezone": entry.timezone,
                "prompt": entry.prompt, "origin": entry.origin, "suspended": suspended,
                "concurrency": entry.concurrency, "timeout": entry.timeout,
                "starting_deadline": entry.starting_deadline, "history_limit": entry.history_limit,
                "loop": entry.loop, "chain": entry.chain,
                "next_run": None if suspended else iso(slot.next_due),
                "running": len(slot.running),
                "last_run": (last.started or last.scheduled) if last else None,
                "last_result": last.status if last else None}

    def report(self) -> list[dict[str, Any]]:
        """Every entry with its next run and its last result (reads SQLite: call from a thread)."""
        return [self.describe(slot, self.store.last(slot.entry.name)) for slot in self.slots.values()]


def entries_for(cron_specs: Iterable[Any], tasks: Iterable[dict[str, Any]]) -> list[Entry]:
    """Declared entries first; a task never shadows a declared entry of the same name."""
    declared = [Entry.from_spec(spec) for spec in cron_specs]
    names = {e.name for e in declared}
    return declared + [Entry.from_task(t) for t in tasks if t["name"] not in names]


__all__ = ["CronRunner", "CronStore", "Entry", "Outcome", "RunRecord", "UnknownEntry", "admit", "entries_for",
           "min_interval", "missed_run", "next_run"]
