"""The memory store on PostgreSQL with pgvector (``memory.backend: postgres``).

The same interface as :class:`den.runtime.memory.store.MemoryStore` (one
contract test suite runs on both): ``memories`` with a generated
``tsvector`` (GIN; ``ts_rank_cd`` for the keyword ranking), ``embeddings``
with a pgvector ``vector`` column (exact cosine ``<=>``), ``entities``,
``facts`` with their history, ``embed_queue``, ``summarized``,
``memory_meta`` and numbered ``_migrations``. The DSN comes from
``DEN_MEMORY_DSN`` in ``runtime.env``; psycopg is imported only when this
backend is chosen. One connection, serialised by a lock, autocommit with
explicit transactions: a write that returned is committed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from den.api.resource import now
from den.runtime.memory.chunks import terms
from den.runtime.memory.store import (
    KINDS,
    STOP_WORDS,
    Fact,
    Memory,
    Neighbourhood,
    entities_in,
    norm,
)

DSN_ENV = "DEN_MEMORY_DSN"

MIGRATIONS: list[tuple[str, list[str]]] = [
    ("memories", [
        "CREATE EXTENSION IF NOT EXISTS vector",
        "CREATE TABLE IF NOT EXISTS memories (id BIGSERIAL PRIMARY KEY, kind TEXT NOT NULL DEFAULT 'memo', "
        "text TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '', source TEXT NOT NULL DEFAULT '', "
        "created TEXT NOT NULL, accessed TEXT, access_count INTEGER NOT NULL DEFAULT 0, "
        "importance REAL NOT NULL DEFAULT 0.5, active BOOLEAN NOT NULL DEFAULT TRUE, "
        "text_norm TEXT NOT NULL DEFAULT '', "
        "tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED)",
        "CREATE INDEX IF NOT EXISTS memories_tsv ON memories USING GIN (tsv)",
        "CREATE INDEX IF NOT EXISTS memories_norm ON memories (text_norm)",
        "CREATE TABLE IF NOT EXISTS embeddings (memory_id BIGINT PRIMARY KEY, model TEXT NOT NULL, "
        "dim INTEGER NOT NULL, created TEXT NOT NULL, vector VECTOR NOT NULL)",
        "CREATE TABLE IF NOT EXISTS embed_queue (memory_id BIGINT PRIMARY KEY)",
        "CREATE TABLE IF NOT EXISTS memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS entities (memory_id BIGINT NOT NULL, entity TEXT NOT NULL, "
        "PRIMARY KEY (memory_id, entity))",
        "CREATE INDEX IF NOT EXISTS entities_entity ON entities (entity)",
        "CREATE TABLE IF NOT EXISTS facts (id BIGSERIAL PRIMARY KEY, memory_id BIGINT NOT NULL, "
        "subject TEXT NOT NULL, predicate TEXT NOT NULL, object TEXT NOT NULL, confidence REAL NOT NULL, "
        "valid_from TEXT NOT NULL, valid_to TEXT, superseded_by BIGINT, "
        "status TEXT NOT NULL DEFAULT 'current', source TEXT NOT NULL DEFAULT '')",
        "CREATE TABLE IF NOT EXISTS summarized (digest TEXT PRIMARY KEY, memory_id BIGINT)",
    ]),
    ("memos into memories", []),  # SQLite's migration 2; nothing to migrate on a new Postgres store
]

_COLUMNS = "id, kind, text, tags, source, created, accessed, access_count, importance, active"
_FACT_COLUMNS = ("id, memory_id, subject, predicate, object, confidence, valid_from, valid_to, "
                 "superseded_by, status, source")


def _vector(values: Sequence[float]) -> str:
    return "[" + ",".join(f"{float(v):.7g}" for v in values) + "]"


class PostgresStore:
    vectors = True

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.dsn = dsn
        self._lock = threading.RLock()
        self._db = psycopg.connect(dsn, autocommit=True)
        self._migrate()

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            cursor = self._db.execute(sql, list(args))
            return cursor.fetchall() if cursor.description else []

    # -- schema ------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS _migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                             "applied TEXT NOT NULL)")
            done = {r[0] for r in self._db.execute("SELECT id FROM _migrations").fetchall()}
            for number, (name, statements) in enumerate(MIGRATIONS, start=1):
                if number in done:
                    continue
                with self._db.transaction():
                    for statement in statements:
                        self._db.execute(statement)
                    self._db.execute("INSERT INTO _migrations VALUES (%s, %s, %s)", (number, name, now()))

    def schema_version(self) -> int:
        return int(self._q("SELECT COALESCE(MAX(id), 0) FROM _migrations")[0][0])

    def meta(self, key: str) -> str | None:
        rows = self._q("SELECT value FROM memory_meta WHERE key = %s", (key,))
        return rows[0][0] if rows else None

    def use_embedding_model(self, model: str, dim: int) -> bool:
        with self._lock:
            if (self.meta("embedding_model"), self.meta("embedding_dim")) == (model, str(dim)):
                return False
            with self._db.transaction():
                self._db.execute("DELETE FROM embeddings")
                self._db.execute("INSERT INTO embed_queue SELECT id FROM memories WHERE active ON CONFLICT DO NOTHING")
                for key, value in (("embedding_model", model), ("embedding_dim", str(dim))):
                    self._db.execute("INSERT INTO memory_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                                     "SET value = excluded.value", (key, value))
            return True

    # -- writing -------------------------------------------------------------------

    def add(self, text: str, *, kind: str = "memo", tags: str = "", source: str = "",
            importance: float = 0.5, entities: Iterable[str] = (), created: str | None = None,
            memory_id: int | None = None) -> Memory:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        created = created or now()
        names = list(dict.fromkeys([*(norm(e) for e in entities), *entities_in(text)]))
        with self._lock, self._db.transaction():
            row = self._db.execute(
                "INSERT INTO memories (kind, text, tags, source, created, importance, text_norm) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (kind, text, tags, source, created, importance, norm(text))).fetchone()
            new_id = int(row[0])
            self._db.execute("INSERT INTO embed_queue VALUES (%s) ON CONFLICT DO NOTHING", (new_id,))
            self._link(new_id, names)
        return Memory(new_id, kind, text, tags, source, created, importance=importance)

    def _link(self, memory_id: int, names: Iterable[str]) -> None:
        for name in names:
            if name:
                self._db.execute("INSERT INTO entities VALUES (%s, %s) ON CONFLICT DO NOTHING", (memory_id, name))

    def link(self, memory_id: int, *names: str) -> None:
        with self._lock:
            self._link(memory_id, [norm(n) for n in names])

    def find_exact(self, text: str, kind: str | None = None) -> Memory | None:
        sql = f"SELECT {_COLUMNS} FROM memories WHERE text_norm = %s AND active"
        args: list[Any] = [norm(text)]
        if kind:
            sql += " AND kind = %s"
            args.append(kind)
        rows = self._q(sql + " LIMIT 1", args)
        return self._memory(rows[0]) if rows else None

    def forget(self, memory_id: int) -> bool:
        with self._lock, self._db.transaction():
            gone = self._db.execute("DELETE FROM memories WHERE id = %s", (memory_id,)).rowcount
            for table in ("entities", "embeddings", "embed_queue"):
                self._db.execute(f"DELETE FROM {table} WHERE memory_id = %s", (memory_id,))
            self._db.execute("UPDATE facts SET status = 'deleted', valid_to = %s WHERE memory_id = %s "
                             "AND status = 'current'", (now(), memory_id))
        return bool(gone)

    def touch(self, ids: Sequence[int]) -> None:
        if ids:
            self._q("UPDATE memories SET accessed = %s, access_count = access_count + 1 WHERE id = ANY(%s)",
                    (now(), list(ids)))

    # -- embeddings ------------------------------------------------------------------

    def unembedded(self, limit: int = 256) -> list[tuple[int, str]]:
        return [(int(r[0]), r[1]) for r in self._q(
            "SELECT m.id, m.text FROM embed_queue q JOIN memories m ON m.id = q.memory_id "
            "ORDER BY q.memory_id LIMIT %s", (limit,))]

    def put_embeddings(self, model: str, rows: Sequence[tuple[int, Sequence[float]]]) -> int:
        with self._lock:
            if self.meta("embedding_model") != model:
                return 0
            stamp, stored = now(), 0
            with self._db.transaction():
                for memory_id, vector in rows:
                    self._db.execute("DELETE FROM embed_queue WHERE memory_id = %s", (memory_id,))
                    if not self._db.execute("SELECT 1 FROM memories WHERE id = %s", (memory_id,)).fetchone():
                        continue
                    self._db.execute(
                        "INSERT INTO embeddings VALUES (%s, %s, %s, %s, %s::vector) ON CONFLICT (memory_id) "
                        "DO UPDATE SET model = excluded.model, dim = excluded.dim, created = excluded.created, "
                        "vector = excluded.vector", (memory_id, model, len(vector), stamp, _vector(vector)))
                    stored += 1
        return stored

    def embedded_count(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM embeddings")[0][0])

    # -- searching --------------------------------------------------------------------

    def keyword_search(self, query: str, limit: int, kinds: Sequence[str] | None = None) -> list[tuple[int, float]]:
        words = terms(query)
        words = [w for w in words if w not in STOP_WORDS] or words
        if not words:
            return []
        tsquery = " | ".join(words)
        sql = ("SELECT id, ts_rank_cd(tsv, q) AS r FROM memories, to_tsquery('simple', %s) q "
               "WHERE tsv @@ q AND active")
        args: list[Any] = [tsquery]
        if kinds:
            sql += " AND kind = ANY(%s)"
            args.append(list(kinds))
        return [(int(r[0]), -float(r[1])) for r in self._q(sql + " ORDER BY r DESC, id DESC LIMIT %s", [*args, limit])]

    def vector_search(self, vector: Sequence[float], limit: int,
                      kinds: Sequence[str] | None = None) -> list[tuple[int, float]]:
        sql = ("SELECT e.memory_id, e.vector <=> %s::vector AS d FROM embeddings e JOIN memories m "
               "ON m.id = e.memory_id WHERE m.active AND e.dim = %s")
        args: list[Any] = [_vector(vector), len(vector)]
        if kinds:
            sql += " AND m.kind = ANY(%s)"
            args.append(list(kinds))
        return [(int(r[0]), float(r[1])) for r in self._q(sql + " ORDER BY d LIMIT %s", [*args, limit])]

    def neighbourhood(self, ids: Iterable[int], limit_per_entity: int = 50) -> Neighbourhood:
        ids = list(ids)
        graph = Neighbourhood()
        if not ids:
            return graph
        for memory_id, entity in self._q("SELECT memory_id, entity FROM entities WHERE memory_id = ANY(%s)", (ids,)):
            graph.entities_of.setdefault(int(memory_id), []).append(entity)
        for entity in {e for names in graph.entities_of.values() for e in names}:
            graph.memories_of[entity] = [int(r[0]) for r in self._q(
                "SELECT e.memory_id FROM entities e JOIN memories m ON m.id = e.memory_id "
                "WHERE e.entity = %s AND m.active ORDER BY e.memory_id DESC LIMIT %s", (entity, limit_per_entity))]
        return graph

    # -- reading ------------------------------------------------------------------------

    @staticmethod
    def _memory(row: Sequence[Any]) -> Memory:
        return Memory(int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], int(row[7]),
                      float(row[8]), bool(row[9]))

    def get(self, ids: Sequence[int]) -> dict[int, Memory]:
        if not ids:
            return {}
        return {int(r[0]): self._memory(r) for r in self._q(
            f"SELECT {_COLUMNS} FROM memories WHERE id = ANY(%s)", (list(ids),))}

    def list(self, limit: int = 50, offset: int = 0, kinds: Sequence[str] | None = None,
             include_inactive: bool = False) -> list[Memory]:
        sql = f"SELECT {_COLUMNS} FROM memories WHERE TRUE"
        args: list[Any] = []
        if not include_inactive:
            sql += " AND active"
        if kinds:
            sql += " AND kind = ANY(%s)"
            args.append(list(kinds))
        return [self._memory(r) for r in self._q(sql + " ORDER BY id DESC LIMIT %s OFFSET %s", [*args, limit, offset])]

    def counts(self) -> dict[str, int]:
        return {k: int(n) for k, n in self._q("SELECT kind, COUNT(*) FROM memories WHERE active GROUP BY kind")}

    def count(self) -> int:
        return sum(self.counts().values())

    def size_bytes(self) -> int:
        tables = ("memories", "embeddings", "entities", "facts", "embed_queue", "summarized", "memory_meta")
        return int(self._q("SELECT " + " + ".join(f"pg_total_relation_size('{t}')" for t in tables))[0][0])

    # -- facts ------------------------------------------------------------------------------

    @staticmethod
    def _fact(row: Sequence[Any]) -> Fact:
        return Fact(int(row[0]), int(row[1]), row[2], row[3], row[4], float(row[5]), row[6], row[7],
                    int(row[8]) if row[8] is not None else None, row[9], row[10])

    def facts(self, history: bool = False) -> list[Fact]:
        where = "" if history else " WHERE status = 'current'"
        return [self._fact(r) for r in self._q(f"SELECT {_FACT_COLUMNS} FROM facts{where} ORDER BY id")]

    def fact(self, fact_id: int) -> Fact | None:
        rows = self._q(f"SELECT {_FACT_COLUMNS} FROM facts WHERE id = %s", (fact_id,))
        return self._fact(rows[0]) if rows else None

    def facts_for_memories(self, memory_ids: Sequence[int]) -> list[Fact]:
        if not memory_ids:
            return []
        return [self._fact(r) for r in self._q(
            f"SELECT {_FACT_COLUMNS} FROM facts WHERE status = 'current' AND memory_id = ANY(%s)", (list(memory_ids),))]

    def add_fact(self, subject: str, predicate: str, obj: str, confidence: float, source: str = "",
                 supersedes: int | None = None) -> Fact:
        memory = self.add(f"{subject} {predicate} {obj}", kind="fact", source=source,
                          importance=0.5 + 0.5 * confidence, entities=[subject, obj])
        stamp = now()
        with self._lock, self._db.transaction():
            fact_id = int(self._db.execute(
                "INSERT INTO facts (memory_id, subject, predicate, object, confidence, valid_from, source) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (memory.id, subject, predicate, obj, confidence, stamp, source)).fetchone()[0])
            if supersedes is not None:
                old = self._db.execute("SELECT memory_id FROM facts WHERE id = %s", (supersedes,)).fetchone()
                self._db.execute("UPDATE facts SET status = 'superseded', superseded_by = %s, valid_to = %s "
                                 "WHERE id = %s AND status = 'current'", (fact_id, stamp, supersedes))
                if old:
                    self._db.execute("UPDATE memories SET active = FALSE WHERE id = %s", (old[0],))
        return Fact(fact_id, memory.id, subject, predicate, obj, confidence, stamp, source=source)

    def invalidate_fact(self, fact_id: int) -> bool:
        with self._lock, self._db.transaction():
            row = self._db.execute("SELECT memory_id FROM facts WHERE id = %s AND status = 'current'",
                                   (fact_id,)).fetchone()
            if not row:
                return False
            self._db.execute("UPDATE facts SET status = 'deleted', valid_to = %s WHERE id = %s", (now(), fact_id))
            self._db.execute("UPDATE memories SET active = FALSE WHERE id = %s", (row[0],))
        return True

    # -- summaries of dropped turns -----------------------------------------------------------

    def summarized(self, digests: Sequence[str]) -> set[str]:
        if not digests:
            return set()
        return {r[0] for r in self._q("SELECT digest FROM summarized WHERE digest = ANY(%s)", (list(digests),))}

    def mark_summarized(self, digests: Sequence[str], memory_id: int | None) -> None:
        with self._lock, self._db.transaction():
            for digest in digests:
                self._db.execute("INSERT INTO summarized VALUES (%s, %s) ON CONFLICT DO NOTHING", (digest, memory_id))

    # -- export / import ---------------------------------------------------------------------------

    def export(self) -> Iterable[dict[str, Any]]:
        memories = [self._memory(r) for r in self._q(f"SELECT {_COLUMNS} FROM memories ORDER BY id")]
        links: dict[int, list[str]] = {}
        for memory_id, entity in self._q("SELECT memory_id, entity FROM entities ORDER BY memory_id, entity"):
            links.setdefault(int(memory_id), []).append(entity)
        facts = [self._fact(r) for r in self._q(f"SELECT {_FACT_COLUMNS} FROM facts ORDER BY id")]
        for memory in memories:
            yield {"type": "memory", **memory.as_dict(), "entities": links.get(memory.id, [])}
        for fact in facts:
            yield {"type": "fact", **asdict(fact)}

    def import_records(self, records: Iterable[dict[str, Any]]) -> dict[str, int]:
        added = {"memories": 0, "facts": 0, "skipped": 0}
        with self._lock, self._db.transaction():
            for record in records:
                kind = record.get("type")
                if kind == "memory":
                    if record.get("kind") not in KINDS or not isinstance(record.get("text"), str):
                        raise ValueError(f"not a memory record: {str(record)[:200]}")
                    if self._imported_already(record):
                        added["skipped"] += 1
                        continue
                    values = (record["kind"], record["text"], record.get("tags", ""), record.get("source", ""),
                              record.get("created") or now(), record.get("accessed"),
                              int(record.get("access_count", 0)), float(record.get("importance", 0.5)),
                              bool(record.get("active", True)), norm(record["text"]))
                    if record["id"] is None:  # a chunk of a long memory (agent.chunked_records): a new id
                        columns = _COLUMNS.split(", ", 1)[1]
                        row = self._db.execute(f"INSERT INTO memories ({columns}, text_norm) "
                                               f"VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id", values)
                        memory_id = int(row.fetchone()[0])
                    else:
                        memory_id = int(record["id"])
                        self._db.execute(f"INSERT INTO memories ({_COLUMNS}, text_norm) "
                                         f"VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", (memory_id, *values))
                    self._db.execute("INSERT INTO embed_queue VALUES (%s) ON CONFLICT DO NOTHING", (memory_id,))
                    self._link(memory_id, record.get("entities") or entities_in(record["text"]))
                    added["memories"] += 1
                elif kind == "fact":
                    if self._db.execute("SELECT 1 FROM facts WHERE id = %s", (record["id"],)).fetchone():
                        added["skipped"] += 1
                        continue
                    self._db.execute(
                        f"INSERT INTO facts ({_FACT_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                        tuple(record[k] for k in ("id", "memory_id", "subject", "predicate", "object", "confidence",
                                                  "valid_from", "valid_to", "superseded_by", "status", "source")))
                    added["facts"] += 1
                else:
                    raise ValueError(f"expected records of type memory or fact, got {kind!r}")
            # Imported ids are kept: move the sequences past them.
            for table in ("memories", "facts"):
                self._db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                 f"GREATEST((SELECT COALESCE(MAX(id), 0) FROM {table}), 1))")
        return added

    def _imported_already(self, record: dict[str, Any]) -> bool:
        """As :meth:`den.runtime.memory.store.MemoryStore._imported_already`."""
        if record.get("id") is None:
            return bool(self._db.execute("SELECT 1 FROM memories WHERE text_norm = %s AND kind = %s",
                                         (norm(record["text"]), record["kind"])).fetchone())
        return bool(self._db.execute("SELECT 1 FROM memories WHERE id = %s", (record["id"],)).fetchone())

    def close(self) -> None:
        with self._lock:
            self._db.close()
