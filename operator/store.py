"""The local state store: Agent resources in SQLite with Kubernetes semantics.

- every object has a ``uid``; ``generation`` moves only when the spec changes;
- every write takes the next value of one monotonically increasing
  ``resourceVersion``; a write that carries a stale one raises
  :class:`~den.api.errors.Conflict` (optimistic concurrency);
- status is written separately from spec (``update_status``);
- delete with finalizers only sets ``deletionTimestamp``; removing the last
  finalizer deletes;
- labels and label selectors; an event log; ``watch(since)`` over a change log.

One SQLite file under ``$DEN_HOME`` in WAL mode with ``synchronous=FULL``:
every multi-row change is one ``BEGIN IMMEDIATE`` transaction, so a writer
killed mid-change leaves nothing half-done, and an acknowledged write is on
disk. Several processes (the CLI and the operator) share the file safely.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from den.api.errors import AlreadyExists, Conflict, DenError, NotFound
from den.api.resource import Agent, AgentStatus, now
from den.operator.names import DEFAULT_INSTALLATION, Installation, check_installation_id
from den.operator.selectors import Selector, parse_selector

ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]
ApplyAction = Literal["created", "configured", "unchanged"]
#: How many changes ``watch`` can replay; older ones are compacted away.
CHANGE_LOG_KEEP = 5000
EVENTS_KEEP = 20000


@dataclass(frozen=True)
class Change:
    resource_version: int
    type: ChangeType
    agent: Agent


@dataclass(frozen=True)
class Event:
    id: int
    time: str
    namespace: str
    name: str
    type: str
    reason: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "namespace": self.namespace,
            "name": self.name,
            "type": self.type,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True)
class ApplyResult:
    agent: Agent
    action: ApplyAction | Literal["pruned"]


class Expired(DenError):
    """``watch`` was asked for changes older than the change log keeps: relist."""


class StoreError(DenError):
    pass


# Numbered migrations, each applied once in its own transaction (like sqlite-utils').
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial",
        """
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO counters VALUES ('resourceVersion', 0);
        CREATE TABLE resources (
            uid TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            generation INTEGER NOT NULL,
            resource_version INTEGER NOT NULL,
            created TEXT NOT NULL,
            deleted TEXT,
            labels TEXT NOT NULL,
            body TEXT NOT NULL,
            status TEXT,
            UNIQUE (kind, namespace, name)
        );
        CREATE TABLE changes (
            resource_version INTEGER PRIMARY KEY,
            type TEXT NOT NULL,
            kind TEXT NOT NULL,
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            object TEXT NOT NULL
        );
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time TEXT NOT NULL,
            kind TEXT NOT NULL,
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            uid TEXT,
            type TEXT NOT NULL,
            reason TEXT NOT NULL,
            message TEXT NOT NULL
        );
        CREATE INDEX events_by_object ON events (namespace, name, id);
        """,
    ),
    (
        2,
        "settings",
        """
        CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        """,
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class Store:
    """Agent resources with Kubernetes semantics in one SQLite file."""

    kind = "Agent"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._db = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._migrate()

    # -- plumbing -------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable write: ``BEGIN IMMEDIATE`` ... ``COMMIT``."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
                self._changed.notify_all()

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS den_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied TEXT NOT NULL)"
            )
            done = {row[0] for row in self._db.execute("SELECT version FROM den_migrations")}
            if done and max(done) > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer Den (schema {max(done)}, "
                    f"this one knows {SCHEMA_VERSION})",
                    hint="upgrade den-agent",
                )
            for version, name, sql in MIGRATIONS:
                if version in done:
                    continue
                with self.transaction() as db:
                    if db.execute(
                        "SELECT 1 FROM den_migrations WHERE version = ?", (version,)
                    ).fetchone():
                        continue  # another process migrated first
                    for statement in filter(str.strip, sql.split(";")):
                        db.execute(statement)
                    if version == 2 and done:  # a store made before installations: the default one
                        db.execute("INSERT INTO settings VALUES ('installation', ?)", (DEFAULT_INSTALLATION,))
                    db.execute(
                        "INSERT INTO den_migrations VALUES (?, ?, ?)", (version, name, now())
                    )

    # -- the installation -------------------------------------------------------

    @property
    def installation(self) -> Installation:
        """This store's installation (its namespace on the engine), chosen once and recorded.

        ``DEN_INSTALLATION`` names it when the store is new (or has no agent yet); a store
        made before installations existed is the default one (Den's short names, so its
        agents, volumes and memory are found again); any other new store takes an id derived
        from its path (stable: the same ``$DEN_HOME`` finds its objects again)."""
        cached = getattr(self, "_installation", None)
        if cached is not None:
            return cached
        wanted = requested_installation()
        recorded = self._setting("installation")
        if recorded and wanted in (None, recorded):  # the common case: a read, no write lock
            self._installation = Installation(recorded)
            return self._installation
        with self.transaction() as db:
            row = db.execute("SELECT value FROM settings WHERE name = 'installation'").fetchone()
            recorded = row[0] if row else None
            if recorded and wanted and wanted != recorded:
                if db.execute("SELECT 1 FROM resources LIMIT 1").fetchone():
                    raise StoreError(
                        f"{self.path.parent} is installation {recorded!r}, but DEN_INSTALLATION says {wanted!r}",
                        hint="unset DEN_INSTALLATION, or remove this installation's agents first "
                             "(an installation's objects on the engine are named after it)")
                recorded = None
            if recorded is None:
                recorded = wanted or new_installation_id(self.path)
                db.execute("INSERT OR REPLACE INTO settings VALUES ('installation', ?)", (recorded,))
        self._installation = Installation(recorded)
        return self._installation

    def heartbeat(self) -> None:
        """The operator's "I looked" (each resync): what ``den get`` shows as last seen when no
        operator runs. A setting, not a change: watchers are not woken by it."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES ('operator.heartbeat', ?)", (now(),))

    def last_heartbeat(self) -> str | None:
        return self._setting("operator.heartbeat")

    def mark_synced(self) -> None:
        """A starting operator has reconciled everything once: statuses are its own from now on."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES ('operator.synced', ?)", (now(),))

    def synced_since(self, stamp: str) -> bool:
        synced = self._setting("operator.synced")
        return synced is not None and synced >= stamp

    def _setting(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def image_pins(self) -> dict[str, str]:
        """System images pinned by ``den up`` (tag -> image id): the gateway and the proxy this
        installation runs until the next ``den up``, whatever retags the names meanwhile."""
        with self._lock:
            rows = self._db.execute("SELECT name, value FROM settings WHERE name LIKE 'image:%'").fetchall()
        return {row[0].removeprefix("image:"): row[1] for row in rows}

    def pin_images(self, pins: dict[str, str]) -> None:
        with self.transaction() as db:
            for tag, image_id in pins.items():
                db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (f"image:{tag}", image_id))

    def _next_rv(self, db: sqlite3.Connection) -> int:
        db.execute("UPDATE counters SET value = value + 1 WHERE name = 'resourceVersion'")
        row = db.execute("SELECT value FROM counters WHERE name = 'resourceVersion'").fetchone()
        return int(row[0])

    def resource_version(self) -> int:
        """The store's current resourceVersion (the last one any write took)."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM counters WHERE name = 'resourceVersion'"
            ).fetchone()
            return int(row[0])

    @staticmethod
    def _to_agent(row: sqlite3.Row) -> Agent:
        body = json.loads(row["body"])
        meta = body["metadata"]
        meta.update(
            uid=row["uid"],
            generation=row["generation"],
            resourceVersion=str(row["resource_version"]),
            creationTimestamp=row["created"],
        )
        if row["deleted"]:
            meta["deletionTimestamp"] = row["deleted"]
        if row["status"]:
            body["status"] = json.loads(row["status"])
        return Agent.model_validate(body)

    @staticmethod
    def _body(agent: Agent) -> str:
        data = agent.model_dump(mode="json", exclude={"status"})
        for server_field in ("uid", "generation", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
            data["metadata"].pop(server_field, None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def _row(self, db: sqlite3.Connection, namespace: str, name: str) -> sqlite3.Row | None:
        return db.execute(
            "SELECT * FROM resources WHERE kind = ? AND namespace = ? AND name = ?",
            (self.kind, namespace, name),
        ).fetchone()

    def _record_change(self, db: sqlite3.Connection, rv: int, type_: ChangeType, agent: Agent) -> None:
        db.execute(
            "INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?)",
            (rv, type_, self.kind, agent.namespace, agent.name, agent.model_dump_json()),
        )
        db.execute("DELETE FROM changes WHERE resource_version <= ?", (rv - CHANGE_LOG_KEEP,))

    def _write(self, db: sqlite3.Connection, agent: Agent, *, generation: int, rv: int,
               status: AgentStatus | None, deleted: str | None) -> Agent:
        meta = agent.metadata
        db.execute(
            "UPDATE resources SET generation = ?, resource_version = ?, deleted = ?, labels = ?, "
            "body = ?, status = ? WHERE uid = ?",
            (
                generation,
                rv,
                deleted,
                json.dumps(meta.labels, sort_keys=True),
                self._body(agent),
                status.model_dump_json() if status else None,
                meta.uid,
            ),
        )
        row = self._row(db, agent.namespace, agent.name)
        assert row is not None
        stored = self._to_agent(row)
        self._record_change(db, rv, "MODIFIED", stored)
        return stored

    def _remove(self, db: sqlite3.Connection, row: sqlite3.Row) -> Agent:
        agent = self._to_agent(row)
        rv = self._next_rv(db)
        db.execute("DELETE FROM resources WHERE uid = ?", (row["uid"],))
        gone = agent.model_copy(
            update={"metadata": agent.metadata.model_copy(update={"resourceVersion": str(rv)})}
        )
        self._record_change(db, rv, "DELETED", gone)
        return gone

    @staticmethod
    def _check_rv(row: sqlite3.Row, expected: str | int | None, what: str) -> None:
        if expected is not None and str(row["resource_version"]) != str(expected):
            raise Conflict(
                f"agent {row['namespace']}/{row['name']}: {what} with resourceVersion {expected}, "
                f"but it is now {row['resource_version']}: the object has been modified; "
                "read it again and retry"
            )

    # -- reads ------------------------------------------------------------------

    def get(self, name: str, namespace: str = "default") -> Agent:
        with self._lock:
            row = self._row(self._db, namespace, name)
        if row is None:
            raise NotFound(f'agent "{name}" not found in namespace "{namespace}"')
        return self._to_agent(row)

    def find(self, name: str, namespace: str = "default") -> Agent | None:
        with self._lock:
            row = self._row(self._db, namespace, name)
        return self._to_agent(row) if row else None

    def list(self, namespace: str | None = None, selector: str | Selector | None = None) -> list[Agent]:
        """Agents, optionally in one namespace and matching a label selector."""
        match = parse_selector(selector) if isinstance(selector, str) else selector
        query = "SELECT * FROM resources WHERE kind = ?"
        args: list[Any] = [self.kind]
        if namespace is not None:
            query += " AND namespace = ?"
            args.append(namespace)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY namespace, name", args).fetchall()
        agents = [self._to_agent(row) for row in rows]
        if match is not None:
            agents = [a for a in agents if match.matches(a.metadata.labels)]
        return agents

    # -- writes -----------------------------------------------------------------

    def create(self, agent: Agent) -> Agent:
        with self.transaction() as db:
            return self._create(db, agent)

    def _create(self, db: sqlite3.Connection, agent: Agent) -> Agent:
        if self._row(db, agent.namespace, agent.name) is not None:
            raise AlreadyExists(f'agent "{agent.name}" already exists in namespace "{agent.namespace}"')
        rv = self._next_rv(db)
        meta = agent.metadata.model_copy(update={"uid": str(uuid.uuid4()), "deletionTimestamp": None})
        fresh = agent.model_copy(update={"metadata": meta, "status": None})
        db.execute(
            "INSERT INTO resources (uid, kind, namespace, name, generation, resource_version, created, "
            "deleted, labels, body, status) VALUES (?, ?, ?, ?, 1, ?, ?, NULL, ?, ?, NULL)",
            (meta.uid, self.kind, meta.namespace, meta.name, rv, now(),
             json.dumps(meta.labels, sort_keys=True), self._body(fresh)),
        )
        row = self._row(db, meta.namespace, meta.name)
        assert row is not None
        stored = self._to_agent(row)
        self._record_change(db, rv, "ADDED", stored)
        return stored

    def apply(self, agent: Agent) -> ApplyResult:
        """Create, or update spec/labels/annotations; unchanged input writes nothing."""
        with self.transaction() as db:
            return self._apply(db, agent)

    def _apply(self, db: sqlite3.Connection, agent: Agent) -> ApplyResult:
        row = self._row(db, agent.namespace, agent.name)
        if row is None:
            return ApplyResult(self._create(db, agent), "created")
        current = self._to_agent(row)
        if current.metadata.deletionTimestamp:
            raise Conflict(f"agent {current.key} is being deleted; wait for it to go, then apply again")
        spec_changed = current.spec != agent.spec
        meta_changed = (current.metadata.labels, current.metadata.annotations) != (
            agent.metadata.labels,
            agent.metadata.annotations,
        )
        if not spec_changed and not meta_changed:
            return ApplyResult(current, "unchanged")
        meta = current.metadata.model_copy(
            update={"labels": dict(agent.metadata.labels), "annotations": dict(agent.metadata.annotations)}
        )
        updated = current.model_copy(update={"metadata": meta, "spec": agent.spec})
        stored = self._write(
            db, updated, generation=row["generation"] + (1 if spec_changed else 0),
            rv=self._next_rv(db), status=current.status, deleted=row["deleted"],
        )
        return ApplyResult(stored, "configured")

    def apply_all(
        self,
        agents: Iterable[Agent],
        *,
        prune_selector: str | None = None,
        dry_run: bool = False,
    ) -> list[ApplyResult]:
        """Apply many agents in one transaction (all or nothing).

        With ``prune_selector``, agents matching it that are not in ``agents``
        are deleted in the same transaction (``den apply --prune``).
        With ``dry_run`` the transaction is rolled back: the results say what
        would happen and nothing is stored.
        """
        wanted = list(agents)
        results: list[ApplyResult] = []

        class _DryRun(Exception):
            pass

        try:
            with self.transaction() as db:
                for agent in wanted:
                    results.append(self._apply(db, agent))
                if prune_selector is not None:
                    keep = {a.key for a in wanted}
                    match = parse_selector(prune_selector)
                    for row in db.execute(
                        "SELECT * FROM resources WHERE kind = ? ORDER BY namespace, name", (self.kind,)
                    ).fetchall():
                        existing = self._to_agent(row)
                        if existing.key not in keep and match.matches(existing.metadata.labels):
                            results.append(ApplyResult(self._delete(db, row, None), "pruned"))
                if dry_run:
                    raise _DryRun
        except _DryRun:
            pass
        return results

    def update(self, agent: Agent) -> Agent:
        """Replace spec, labels, annotations and finalizers; requires a current resourceVersion."""
        with self.transaction() as db:
            row = self._row(db, agent.namespace, agent.name)
            if row is None:
                raise NotFound(f'agent "{agent.name}" not found in namespace "{agent.namespace}"')
            self._check_rv(row, agent.metadata.resourceVersion, "update")
            current = self._to_agent(row)
            meta = current.metadata.model_copy(
                update={
                    "labels": dict(agent.metadata.labels),
                    "annotations": dict(agent.metadata.annotations),
                    "finalizers": list(agent.metadata.finalizers),
                }
            )
            if row["deleted"] and not meta.finalizers:
                return self._remove(db, row)
            changed = current.spec != agent.spec
            if not changed and meta == current.metadata:
                return current
            updated = current.model_copy(update={"metadata": meta, "spec": agent.spec})
            return self._write(
                db, updated, generation=row["generation"] + (1 if changed else 0),
                rv=self._next_rv(db), status=current.status, deleted=row["deleted"],
            )

    def mutate(
        self, name: str, namespace: str, change: Callable[[Agent], Agent], *, retries: int = 5
    ) -> Agent:
        """Read, change and update, retrying on Conflict (a client's usual loop)."""
        for attempt in range(retries):
            try:
                return self.update(change(self.get(name, namespace)))
            except Conflict:
                if attempt == retries - 1:
                    raise
        raise AssertionError("unreachable")

    def update_status(
        self,
        name: str,
        namespace: str,
        status: AgentStatus,
        *,
        resource_version: str | int | None = None,
    ) -> Agent:
        """Write status only (the status subresource); spec and generation are untouched."""
        with self.transaction() as db:
            row = self._row(db, namespace, name)
            if row is None:
                raise NotFound(f'agent "{name}" not found in namespace "{namespace}"')
            self._check_rv(row, resource_version, "status update")
            current = self._to_agent(row)
            if current.status == status:
                return current
            return self._write(
                db, current, generation=row["generation"], rv=self._next_rv(db),
                status=status, deleted=row["deleted"],
            )

    def delete(self, name: str, namespace: str = "default", *, resource_version: str | None = None) -> Agent:
        """Delete; with finalizers only mark ``deletionTimestamp`` (the finalizer owner finishes)."""
        with self.transaction() as db:
            row = self._row(db, namespace, name)
            if row is None:
                raise NotFound(f'agent "{name}" not found in namespace "{namespace}"')
            return self._delete(db, row, resource_version)

    def _delete(self, db: sqlite3.Connection, row: sqlite3.Row, resource_version: str | None) -> Agent:
        self._check_rv(row, resource_version, "delete")
        current = self._to_agent(row)
        if not current.metadata.finalizers:
            return self._remove(db, row)
        if row["deleted"]:
            return current
        return self._write(
            db, current, generation=row["generation"], rv=self._next_rv(db),
            status=current.status, deleted=now(),
        )

    def add_finalizer(self, name: str, namespace: str, finalizer: str) -> Agent:
        def change(agent: Agent) -> Agent:
            if finalizer in agent.metadata.finalizers:
                return agent
            meta = agent.metadata.model_copy(update={"finalizers": [*agent.metadata.finalizers, finalizer]})
            return agent.model_copy(update={"metadata": meta})

        return self.mutate(name, namespace, change)

    def remove_finalizer(self, name: str, namespace: str, finalizer: str) -> Agent:
        """Remove one finalizer; when it was the last one of a deleted object, the object goes."""

        def change(agent: Agent) -> Agent:
            kept = [f for f in agent.metadata.finalizers if f != finalizer]
            meta = agent.metadata.model_copy(update={"finalizers": kept})
            return agent.model_copy(update={"metadata": meta})

        return self.mutate(name, namespace, change)

    # -- events -----------------------------------------------------------------

    def record_event(
        self, agent: Agent | tuple[str, str], reason: str, message: str, *, type_: str = "Normal"
    ) -> None:
        if isinstance(agent, Agent):
            namespace, name, uid = agent.namespace, agent.name, agent.metadata.uid
        else:
            namespace, name = agent
            uid = None
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO events (time, kind, namespace, name, uid, type, reason, message) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (now(), self.kind, namespace, name, uid, type_, reason, message),
            )
            db.execute("DELETE FROM events WHERE id <= ?", ((cursor.lastrowid or 0) - EVENTS_KEEP,))

    def events(self, name: str | None = None, namespace: str | None = None, *, limit: int = 100) -> list[Event]:
        query = "SELECT * FROM events WHERE 1 = 1"
        args: list[Any] = []
        if name is not None:
            query += " AND name = ?"
            args.append(name)
        if namespace is not None:
            query += " AND namespace = ?"
            args.append(namespace)
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [
            Event(r["id"], r["time"], r["namespace"], r["name"], r["type"], r["reason"], r["message"])
            for r in reversed(rows)
        ]

    # -- watch ------------------------------------------------------------------

    def changes_since(self, resource_version: int) -> list[Change]:
        with self._lock:
            oldest = self._db.execute("SELECT MIN(resource_version) FROM changes").fetchone()[0]
            if oldest is not None and resource_version < oldest - 1:
                raise Expired(f"resourceVersion {resource_version} is too old; list again")
            rows = self._db.execute(
                "SELECT * FROM changes WHERE resource_version > ? ORDER BY resource_version",
                (resource_version,),
            ).fetchall()
        return [
            Change(r["resource_version"], r["type"], Agent.model_validate_json(r["object"])) for r in rows
        ]

    def _data_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def wait_for_change(self, since: int, timeout: float) -> bool:
        """Block until the store's resourceVersion passes ``since`` (any process) or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.resource_version() > since:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                # Writers in this process notify at once; other processes are seen by polling.
                self._changed.wait(min(remaining, 0.05))

    def watch(self, since: int = 0, *, timeout: float | None = None) -> Iterator[Change]:
        """Yield every change after ``since``, blocking for new ones until ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = since
        while True:
            for change in self.changes_since(cursor):
                cursor = change.resource_version
                yield change
            remaining = 3600.0 if deadline is None else deadline - time.monotonic()
            changed = remaining > 0 and self.wait_for_change(cursor, remaining)
            if not changed and deadline is not None:
                return


def requested_installation() -> str | None:
    """``DEN_INSTALLATION``, checked, or None."""
    import os

    wanted = os.environ.get("DEN_INSTALLATION") or None
    return check_installation_id(wanted, "DEN_INSTALLATION") if wanted else None


def new_installation_id(path: Path) -> str:
    """The id a new store at ``path`` takes: 6 hex digits of the sha256 of its folder."""
    import hashlib

    return hashlib.sha256(str(Path(path).parent.resolve()).encode()).hexdigest()[:6]


def installation_of(path: Path | None = None) -> Installation:
    """The installation of the store at ``path``, without creating one that does not exist
    (what it would be: a command refused before storing anything leaves no store behind)."""
    from den.operator.names import state_db_path

    path = Path(path or state_db_path())
    if not path.exists():
        return Installation(requested_installation() or new_installation_id(path))
    with Store(path) as store:
        return store.installation


def open_store(path: Path | None = None) -> Store:
    from den.operator.names import state_db_path

    return Store(path or state_db_path())
