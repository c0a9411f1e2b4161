"""One agent's memory store: SQLite on its volume (``/den/.den/memory.db``).

Tables (numbered migrations, each in its own transaction, recorded in
``_migrations`` like sqlite-utils' migrations):

- ``memories``: every memory (kind memo | fact | message | summary), its text,
  tags, source (session / turn / tool), created, accessed, access count,
  importance and whether it is active (a superseded fact's memory is not).
- ``memories_fts``: FTS5 over the text (BM25 keyword search).
- ``embeddings``: each memory's vector (float32) with the model and dimension
  it came from (``memory_meta`` names the current model); ``vec_memories``:
  a sqlite-vec ``vec0`` index of the binary-quantized vectors (a Hamming-distance
  shortlist, rescored with exact cosine on ``embeddings``).
- ``facts``: subject / predicate / object with confidence, ``valid_from``,
  ``valid_to``, ``superseded_by`` and a status (current | superseded |
  deleted); history is kept, never overwritten.
- ``entities``: memory -> entity links, the memory graph's edges.

WAL, ``synchronous=FULL``: a write that returned is on disk. The store is
plain functions over one connection serialised by a lock; recall ranking is
in :mod:`den.runtime.memory.recall`, with no SQL.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from den.api.resource import now
from den.runtime.memory.chunks import terms

KINDS = ("memo", "fact", "message", "summary")
RESCORE_FACTOR = 10  # binary-quantized shortlist: this many times the asked-for count ...
RESCORE_MIN = 400  # ... and no fewer, rescored with exact cosine
#: Words too common to narrow a keyword search (they would make BM25 rank half the store).
STOP_WORDS = frozenset(["a", "an", "and", "are", "as", "at", "be", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "how", "i", "if", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "should", "so", "that", "the", "their", "them", "then", "there", "these", "they", "this", "to", "was", "we", "were", "what", "when", "where", "which", "who", "why", "will", "with", "would", "you", "your"])
SCHEMA_VERSION = 2


def sqlite_module() -> Any:
    """``pysqlite3`` where it is installed (the host's Python cannot load extensions), else ``sqlite3``."""
    try:
        import pysqlite3.dbapi2 as module  # type: ignore[import-not-found]
    except ImportError:
        import sqlite3 as module
    return module


def load_vec(db: Any) -> bool:
    """Load sqlite-vec into ``db``; False when this SQLite cannot (recall is keyword-only then)."""
    try:
        import importlib.util
        import os

        # sqlite_vec's own load() means importing it, and it imports numpy (~15 MiB): find its
        # loadable extension without importing the package.
        found = importlib.util.find_spec("sqlite_vec")
        if found is None or not found.submodule_search_locations:
            return False
        db.enable_load_extension(True)
        db.load_extension(os.path.join(list(found.submodule_search_locations)[0], "vec0"))
        db.enable_load_extension(False)
        return True
    except Exception:  # no sqlite_vec, or an sqlite3 built without extension loading
        return False


@dataclass
class Memory:
    id: int
    kind: str
    text: str
    tags: str = ""
    source: str = ""
    created: str = ""
    accessed: str | None = None
    access_count: int = 0
    importance: float = 0.5
    active: bool = True
    score: float | None = None
    via: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.score is None:
            data.pop("score")
            data.pop("via")
        return data


@dataclass
class Fact:
    id: int
    memory_id: int
    subject: str
    predicate: str
    object: str
    confidence: float
    valid_from: str
    valid_to: str | None = None
    superseded_by: int | None = None
    status: str = "current"
    source: str = ""

    @property
    def text(self) -> str:
        return f"{self.subject} {self.predicate} {self.object}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": self.text}


class BitIndex:
    """The sign bits of every vector (binary quantization) in one numpy matrix, for the shortlist."""

    def __init__(self, ids: list[int], bits: Any) -> None:
        import numpy as np

        self._np = np
        self.ids = np.asarray(ids, dtype=np.int64)
        self.bits = bits
        self.removed: set[int] = set()
        self._extra_ids: list[int] = []
        self._extra_bits: list[Any] = []

    @classmethod
    def load(cls, db: Any) -> BitIndex:
        import numpy as np

        ids, rows = [], []
        for memory_id, blob in db.execute("SELECT memory_id, embedding_bits FROM vec_memories"):
            ids.append(int(memory_id))
            rows.append(np.frombuffer(blob, dtype=np.uint8))
        width = len(rows[0]) if rows else 0
        bits = np.vstack(rows) if rows else np.zeros((0, width), dtype=np.uint8)
        return cls(ids, bits)

    def _quantize(self, vector: Sequence[float]) -> Any:
        np = self._np
        # sqlite-vec's vec_quantize_binary: bit i of byte j is element 8j+i > 0 (little-endian bits)
        return np.packbits(np.asarray(vector, dtype=np.float32) > 0, bitorder="little")

    def add(self, memory_id: int, vector: Sequence[float]) -> None:
        self.removed.discard(memory_id)
        self._extra_ids.append(memory_id)
        self._extra_bits.append(self._quantize(vector))

    def remove(self, memory_id: int) -> None:
        self.removed.add(memory_id)

    def _compact(self) -> None:
        np = self._np
        if self._extra_ids:
            fresh = set(self._extra_ids)
            keep = ~np.isin(self.ids, list(fresh))
            base = self.bits[keep] if len(self.bits) else np.zeros((0, len(self._extra_bits[0])), dtype=np.uint8)
            self.ids = np.concatenate([self.ids[keep], np.asarray(self._extra_ids, dtype=np.int64)])
            self.bits = np.vstack([base, *self._extra_bits])
            self._extra_ids, self._extra_bits = [], []

    def nearest(self, vector: Sequence[float], count: int) -> list[int]:
        np = self._np
        self._compact()
        if not len(self.ids):
            return []
        query = self._quantize(vector)
        distance = np.unpackbits(self.bits ^ query, axis=1).sum(axis=1, dtype=np.uint16) \
            if not hasattr(np, "bitwise_count") else np.bitwise_count(self.bits ^ query).sum(axis=1, dtype=np.uint16)
        count = min(count + len(self.removed), len(distance))
        top = np.argpartition(distance, count - 1)[:count] if count < len(distance) else np.arange(len(distance))
        top = top[np.argsort(distance[top], kind="stable")]
        return [int(i) for i in self.ids[top] if int(i) not in self.removed]


@dataclass
class Neighbourhood:
    """What graph activation needs: each memory's entities and each entity's memories."""

    entities_of: dict[int, list[str]] = field(default_factory=dict)
    memories_of: dict[str, list[int]] = field(default_factory=dict)


def norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


_CAPITALISED = re.compile(r"\b([A-Z][\w'-]+(?:\s+[A-Z][\w'-]+)*)")
_NOT_ENTITIES = frozenset({"i", "the", "a", "an", "my", "we", "you", "he", "she", "it", "they", "this",
                           "that", "what", "when", "where", "who", "how", "yes", "no", "ok", "hello", "hi"})


def entities_in(text: str) -> list[str]:
    """Names in a text: capitalised words and runs of them (``Ada Lovelace``), lowercased."""
    found: list[str] = []
    for match in _CAPITALISED.findall(text):
        name = norm(match)
        words = name.split()
        while words and words[0] in _NOT_ENTITIES:
            words = words[1:]
        name = " ".join(words)
        if name and name not in found:
            found.append(name)
    return found


def pack(vector: Sequence[float]) -> bytes:
    return struct.pack(f"{len(vector)}f", *vector)


MIGRATIONS: list[tuple[str, list[str]]] = [
    ("memories", [
        "CREATE TABLE IF NOT EXISTS memories (id INTEGER PRIMARY KEY, kind TEXT NOT NULL DEFAULT 'memo', "
        "text TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '', source TEXT NOT NULL DEFAULT '', "
        "created TEXT NOT NULL, accessed TEXT, access_count INTEGER NOT NULL DEFAULT 0, "
        "importance REAL NOT NULL DEFAULT 0.5, active INTEGER NOT NULL DEFAULT 1, "
        "text_norm TEXT NOT NULL DEFAULT '')",
        "CREATE INDEX IF NOT EXISTS memories_kind ON memories(kind, active)",
        "CREATE INDEX IF NOT EXISTS memories_norm ON memories(text_norm)",
        "CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(text, content='memories', content_rowid='id')",
        "CREATE TRIGGER IF NOT EXISTS memories_ai AFTER INSERT ON memories BEGIN "
        "INSERT INTO memories_fts(rowid, text) VALUES (new.id, new.text); END",
        "CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN "
        "INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
        "CREATE TABLE IF NOT EXISTS embeddings (memory_id INTEGER PRIMARY KEY, model TEXT NOT NULL, "
        "dim INTEGER NOT NULL, created TEXT NOT NULL, vector BLOB NOT NULL)",
        "CREATE TABLE IF NOT EXISTS memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS entities (memory_id INTEGER NOT NULL, entity TEXT NOT NULL, "
        "PRIMARY KEY (memory_id, entity)) WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS entities_entity ON entities(entity)",
        "CREATE TABLE IF NOT EXISTS facts (id INTEGER PRIMARY KEY, memory_id INTEGER NOT NULL, "
        "subject TEXT NOT NULL, predicate TEXT NOT NULL, object TEXT NOT NULL, confidence REAL NOT NULL, "
        "valid_from TEXT NOT NULL, valid_to TEXT, superseded_by INTEGER, "
        "status TEXT NOT NULL DEFAULT 'current', source TEXT NOT NULL DEFAULT '')",
        "CREATE INDEX IF NOT EXISTS facts_key ON facts(subject, predicate, status)",
        "CREATE TABLE IF NOT EXISTS summarized (digest TEXT PRIMARY KEY, memory_id INTEGER)",
        # Memories waiting for a vector from the current model (so finding them never scans).
        "CREATE TABLE IF NOT EXISTS embed_queue (memory_id INTEGER PRIMARY KEY)",
        "CREATE TRIGGER IF NOT EXISTS memories_queue AFTER INSERT ON memories BEGIN "
        "INSERT OR IGNORE INTO embed_queue VALUES (new.id); END",
    ]),
    # The keyword-only memos of earlier Den versions become memories of kind memo, ids kept.
    ("memos into memories", ["__migrate_memos__"]),
]


class MemoryStore:
    """The SQLite store. Every method takes the lock: routes and tools call it from worker threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        sqlite3 = sqlite_module()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self.vectors = load_vec(self._db)
        self._bits: BitIndex | None = None  # loaded on the first vector search
        self._migrate()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back when anything raises: a transaction left
        open made every later write fail ("cannot start a transaction within a transaction")."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- schema ------------------------------------------------------------------

    def _migrate(self) -> None:
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                   "applied TEXT NOT NULL)")
        done = {row[0] for row in db.execute("SELECT id FROM _migrations")}
        for number, (name, statements) in enumerate(MIGRATIONS, start=1):
            if number in done:
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    if statement == "__migrate_memos__":
                        self._migrate_memos()
                    else:
                        db.execute(statement)
                db.execute("INSERT INTO _migrations VALUES (?, ?, ?)", (number, name, now()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _migrate_memos(self) -> None:
        db = self._db
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'memos'").fetchone():
            return
        for memo_id, text, tags, created in db.execute("SELECT id, text, tags, created FROM memos").fetchall():
            db.execute("INSERT INTO memories (id, kind, text, tags, source, created, text_norm) "
                       "VALUES (?, 'memo', ?, ?, 'memo', ?, ?)", (memo_id, text, tags, created, norm(text)))
            self._link(memo_id, entities_in(text))
        db.execute("DROP TRIGGER IF EXISTS memos_ai")
        db.execute("DROP TABLE IF EXISTS memos_fts")
        db.execute("DROP TABLE memos")

    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM _migrations").fetchone()[0])

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM memory_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def use_embedding_model(self, model: str, dim: int) -> bool:
        """Make ``model`` (``dim`` dimensions) the one vectors come from; True when it changed (every
        vector is dropped then, and the memories wait to be embedded again)."""
        if not self.vectors:
            return False
        with self._lock:
            current = (self.meta("embedding_model"), self.meta("embedding_dim"))
            if current == (model, str(dim)):
                self._db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS vec_memories USING vec0("
                                 f"memory_id INTEGER PRIMARY KEY, embedding_bits bit[{dim}])")
                return False
            with self._transaction() as db:
                db.execute("DROP TABLE IF EXISTS vec_memories")
                db.execute(f"CREATE VIRTUAL TABLE vec_memories USING vec0("
                           f"memory_id INTEGER PRIMARY KEY, embedding_bits bit[{dim}])")
                db.execute("DELETE FROM embeddings")
                db.execute("INSERT OR IGNORE INTO embed_queue SELECT id FROM memories WHERE active = 1")
                db.execute("INSERT OR REPLACE INTO memory_meta VALUES ('embedding_model', ?)", (model,))
                db.execute("INSERT OR REPLACE INTO memory_meta VALUES ('embedding_dim', ?)", (str(dim),))
            self._bits = None
            return True

    # -- writing -------------------------------------------------------------------

    def add(self, text: str, *, kind: str = "memo", tags: str = "", source: str = "",
            importance: float = 0.5, entities: Iterable[str] = (), created: str | None = None,
            memory_id: int | None = None) -> Memory:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        created = created or now()
        names = list(dict.fromkeys([*(norm(e) for e in entities), *entities_in(text)]))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "INSERT INTO memories (id, kind, text, tags, source, created, importance, text_norm) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (memory_id, kind, text, tags, source, created, importance, norm(text)))
                new_id = int(cursor.lastrowid or 0)
                self._link(new_id, names)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Memory(new_id, kind, text, tags, source, created, importance=importance)

    def _link(self, memory_id: int, names: Iterable[str]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO entities VALUES (?, ?)",
                             [(memory_id, n) for n in names if n])

    def link(self, memory_id: int, *names: str) -> None:
        with self._lock:
            self._link(memory_id, [norm(n) for n in names])

    def find_exact(self, text: str, kind: str | None = None) -> Memory | None:
        """An active memory with the same words (case and punctuation aside)."""
        sql = "SELECT * FROM memories WHERE text_norm = ? AND active = 1"
        args: list[Any] = [norm(text)]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        with self._lock:
            row = self._db.execute(sql + " LIMIT 1", args).fetchone()
        return self._memory(row) if row else None

    def forget(self, memory_id: int) -> bool:
        with self._transaction() as db:
            gone = db.execute("DELETE FROM memories WHERE id = ?", (memory_id,)).rowcount
            db.execute("DELETE FROM entities WHERE memory_id = ?", (memory_id,))
            db.execute("DELETE FROM embeddings WHERE memory_id = ?", (memory_id,))
            db.execute("DELETE FROM embed_queue WHERE memory_id = ?", (memory_id,))
            if self._has_vec_table():
                db.execute("DELETE FROM vec_memories WHERE memory_id = ?", (memory_id,))
            db.execute("UPDATE facts SET status = 'deleted', valid_to = ? WHERE memory_id = ? "
                       "AND status = 'current'", (now(), memory_id))
            if self._bits is not None:
                self._bits.remove(memory_id)
        return bool(gone)

    def touch(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._lock:
            self._db.executemany("UPDATE memories SET accessed = ?, access_count = access_count + 1 WHERE id = ?",
                                 [(now(), i) for i in ids])

    # -- embeddings ------------------------------------------------------------------

    def _has_vec_table(self) -> bool:
        return bool(self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'vec_memories'").fetchone())

    def unembedded(self, limit: int = 256) -> list[tuple[int, str]]:
        """Active memories waiting for a vector from the current model, oldest first."""
        with self._lock:
            return [(int(r[0]), r[1]) for r in self._db.execute(
                "SELECT m.id, m.text FROM embed_queue q JOIN memories m ON m.id = q.memory_id "
                "ORDER BY q.memory_id LIMIT ?", (limit,))]

    def put_embeddings(self, model: str, rows: Sequence[tuple[int, Sequence[float]]]) -> int:
        """Store vectors from ``model``; skipped when the model is no longer the current one."""
        with self._lock:
            if not self.vectors or self.meta("embedding_model") != model or not self._has_vec_table():
                return 0
            stamp = now()
            stored = []
            with self._transaction() as db:
                for memory_id, vector in rows:
                    db.execute("DELETE FROM embed_queue WHERE memory_id = ?", (memory_id,))
                    if not db.execute("SELECT 1 FROM memories WHERE id = ?", (memory_id,)).fetchone():
                        continue  # forgotten meanwhile
                    db.execute("DELETE FROM vec_memories WHERE memory_id = ?", (memory_id,))
                    blob = pack(vector)
                    db.execute("INSERT INTO vec_memories(memory_id, embedding_bits) "
                               "VALUES (?, vec_quantize_binary(?))", (memory_id, blob))
                    db.execute("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)",
                               (memory_id, model, len(vector), stamp, blob))
                    stored.append((memory_id, vector))
            if self._bits is not None:
                for memory_id, vector in stored:
                    self._bits.add(memory_id, vector)
        return len(stored)

    def embedded_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    # -- searching --------------------------------------------------------------------

    def keyword_search(self, query: str, limit: int, kinds: Sequence[str] | None = None) -> list[tuple[int, float]]:
        """(id, bm25) best first; any of the query's words matches (its first
        :data:`~den.runtime.memory.chunks.QUERY_TERMS` distinct words)."""
        words = terms(query)
        words = [w for w in words if w not in STOP_WORDS] or words
        if not words:
            return []
        match = " OR ".join(f'"{w}"' for w in words)
        with self._lock:
            # FTS5's own rank order (no join inside the ranking query: it is much faster), then
            # only active memories of the kinds asked for.
            ranked = self._db.execute("SELECT rowid, rank FROM memories_fts WHERE memories_fts MATCH ? "
                                      "ORDER BY rank LIMIT ?", (match, limit * (4 if kinds else 2))).fetchall()
            if not ranked:
                return []
            ids = [r[0] for r in ranked]
            sql = f"SELECT id, kind FROM memories WHERE active = 1 AND id IN ({','.join('?' * len(ids))})"
            allowed = {int(r[0]) for r in self._db.execute(sql, ids) if not kinds or r[1] in kinds}
        return [(int(i), float(score)) for i, score in ranked if i in allowed][:limit]

    def vector_search(self, vector: Sequence[float], limit: int,
                      kinds: Sequence[str] | None = None) -> list[tuple[int, float]]:
        """(id, cosine distance) nearest first; empty while there is no vector index.

        Two steps, as sqlite-vec suggests for large tables: a shortlist by Hamming distance of
        the binary-quantized vectors (``vec_memories``, held in memory as a bit matrix: 32 bytes
        a memory, a 100k scan in a few milliseconds, where vec0's own bit KNN took 30 ms), then
        exact cosine (``vec_distance_cosine``) on the shortlist."""
        with self._lock:
            if not self.vectors or not self._has_vec_table():
                return []
            query = pack(vector)
            shortlist = max(RESCORE_MIN, limit * RESCORE_FACTOR) * (3 if kinds else 1)
            if self._bits is None:
                self._bits = BitIndex.load(self._db)
            ids = self._bits.nearest(vector, shortlist)
            if not ids:
                return []
            rows = self._db.execute(
                f"SELECT e.memory_id, vec_distance_cosine(e.vector, ?) AS d, m.kind, m.active "
                f"FROM embeddings e JOIN memories m ON m.id = e.memory_id "
                f"WHERE e.memory_id IN ({','.join('?' * len(ids))}) ORDER BY d",
                (query, *ids)).fetchall()
        found = [(int(r[0]), float(r[1])) for r in rows if r[3] and (not kinds or r[2] in kinds)]
        return found[:limit]

    def neighbourhood(self, ids: Iterable[int], limit_per_entity: int = 50) -> Neighbourhood:
        """Entities of ``ids`` and the active memories sharing each of them (one graph hop)."""
        ids = list(ids)
        graph = Neighbourhood()
        if not ids:
            return graph
        with self._lock:
            marks = ",".join("?" * len(ids))
            for memory_id, entity in self._db.execute(
                    f"SELECT memory_id, entity FROM entities WHERE memory_id IN ({marks})", ids):
                graph.entities_of.setdefault(int(memory_id), []).append(entity)
            for entity in {e for names in graph.entities_of.values() for e in names}:
                graph.memories_of[entity] = [int(r[0]) for r in self._db.execute(
                    "SELECT e.memory_id FROM entities e JOIN memories m ON m.id = e.memory_id "
                    "WHERE e.entity = ? AND m.active = 1 ORDER BY e.memory_id DESC LIMIT ?",
                    (entity, limit_per_entity))]
        return graph

    # -- reading ------------------------------------------------------------------------

    _COLUMNS = "id, kind, text, tags, source, created, accessed, access_count, importance, active"

    @staticmethod
    def _memory(row: Sequence[Any]) -> Memory:
        return Memory(int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], int(row[7]),
                      float(row[8]), bool(row[9]))

    def get(self, ids: Sequence[int]) -> dict[int, Memory]:
        if not ids:
            return {}
        with self._lock:
            rows = self._db.execute(f"SELECT {self._COLUMNS} FROM memories WHERE id IN "
                                    f"({','.join('?' * len(ids))})", list(ids)).fetchall()
        return {int(r[0]): self._memory(r) for r in rows}

    def list(self, limit: int = 50, offset: int = 0, kinds: Sequence[str] | None = None,
             include_inactive: bool = False) -> list[Memory]:
        sql = f"SELECT {self._COLUMNS} FROM memories WHERE 1=1"
        args: list[Any] = []
        if not include_inactive:
            sql += " AND active = 1"
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += list(kinds)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ? OFFSET ?", [*args, limit, offset]).fetchall()
        return [self._memory(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT kind, COUNT(*) FROM memories WHERE active = 1 GROUP BY kind").fetchall()
        return {kind: int(n) for kind, n in rows}

    def count(self) -> int:
        return sum(self.counts().values())

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            candidate = self.path.with_name(self.path.name + suffix)
            if candidate.exists():
                total += candidate.stat().st_size
        return total

    # -- facts ------------------------------------------------------------------------------

    @staticmethod
    def _fact(row: Sequence[Any]) -> Fact:
        return Fact(int(row[0]), int(row[1]), row[2], row[3], row[4], float(row[5]), row[6], row[7],
                    row[8], row[9], row[10])

    def facts(self, history: bool = False) -> list[Fact]:
        sql = "SELECT * FROM facts" + ("" if history else " WHERE status = 'current'")
        with self._lock:
            return [self._fact(r) for r in self._db.execute(sql + " ORDER BY id")]

    def fact(self, fact_id: int) -> Fact | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM facts WHERE id = ?", (fact_id,)).fetchone()
        return self._fact(row) if row else None

    def facts_for_memories(self, memory_ids: Sequence[int]) -> list[Fact]:
        if not memory_ids:
            return []
        with self._lock:
            return [self._fact(r) for r in self._db.execute(
                f"SELECT * FROM facts WHERE status = 'current' AND memory_id IN ({','.join('?' * len(memory_ids))})",
                list(memory_ids))]

    def current_fact(self, subject: str, predicate: str) -> Fact | None:
        with self._lock:
            rows = self._db.execute("SELECT * FROM facts WHERE status = 'current'").fetchall()
        for row in rows:
            if norm(row[2]) == norm(subject) and norm(row[3]) == norm(predicate):
                return self._fact(row)
        return None

    def add_fact(self, subject: str, predicate: str, obj: str, confidence: float, source: str = "",
                 supersedes: int | None = None) -> Fact:
        """A current fact (and its memory); ``supersedes`` a current fact, which keeps its row."""
        text = f"{subject} {predicate} {obj}"
        memory = self.add(text, kind="fact", source=source, importance=0.5 + 0.5 * confidence,
                          entities=[subject, obj])
        stamp = now()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO facts (memory_id, subject, predicate, object, confidence, valid_from, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (memory.id, subject, predicate, obj, confidence, stamp, source))
            fact_id = int(cursor.lastrowid or 0)
            if supersedes is not None:
                old = db.execute("SELECT memory_id FROM facts WHERE id = ?", (supersedes,)).fetchone()
                db.execute("UPDATE facts SET status = 'superseded', superseded_by = ?, valid_to = ? "
                           "WHERE id = ? AND status = 'current'", (fact_id, stamp, supersedes))
                if old:
                    db.execute("UPDATE memories SET active = 0 WHERE id = ?", (old[0],))
        return Fact(fact_id, memory.id, subject, predicate, obj, confidence, stamp, source=source)

    def invalidate_fact(self, fact_id: int) -> bool:
        with self._lock:
            row = self._db.execute("SELECT memory_id FROM facts WHERE id = ? AND status = 'current'",
                                   (fact_id,)).fetchone()
            if not row:
                return False
            with self._transaction() as db:
                db.execute("UPDATE facts SET status = 'deleted', valid_to = ? WHERE id = ?", (now(), fact_id))
                db.execute("UPDATE memories SET active = 0 WHERE id = ?", (row[0],))
        return True

    # -- summaries of dropped turns -----------------------------------------------------------

    def summarized(self, digests: Sequence[str]) -> set[str]:
        if not digests:
            return set()
        with self._lock:
            return {r[0] for r in self._db.execute(
                f"SELECT digest FROM summarized WHERE digest IN ({','.join('?' * len(digests))})", list(digests))}

    def mark_summarized(self, digests: Sequence[str], memory_id: int | None) -> None:
        with self._lock:
            self._db.executemany("INSERT OR IGNORE INTO summarized VALUES (?, ?)", [(d, memory_id) for d in digests])

    # -- export / import ---------------------------------------------------------------------------

    def export(self) -> Iterable[dict[str, Any]]:
        """Every memory (with its entities) and every fact, history included, as JSON-ready dicts."""
        with self._lock:
            memories = [self._memory(r) for r in self._db.execute(
                f"SELECT {self._COLUMNS} FROM memories ORDER BY id")]
            links: dict[int, list[str]] = {}
            for memory_id, entity in self._db.execute("SELECT memory_id, entity FROM entities"):
                links.setdefault(int(memory_id), []).append(entity)
            facts = [self._fact(r) for r in self._db.execute("SELECT * FROM facts ORDER BY id")]
        for memory in memories:
            yield {"type": "memory", **memory.as_dict(), "entities": links.get(memory.id, [])}
        for fact in facts:
            yield {"type": "fact", **asdict(fact)}

    def import_records(self, records: Iterable[dict[str, Any]]) -> dict[str, int]:
        """Records from :meth:`export` (ids kept; a memory whose id exists already is skipped)."""
        added = {"memories": 0, "facts": 0, "skipped": 0}
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for record in records:
                    kind = record.get("type")
                    if kind == "memory":
                        if record.get("kind") not in KINDS or not isinstance(record.get("text"), str):
                            raise ValueError(f"not a memory record: {json.dumps(record, default=str)[:200]}")
                        if self._imported_already(record):
                            added["skipped"] += 1
                            continue
                        cursor = self._db.execute(
                            f"INSERT INTO memories ({self._COLUMNS}, text_norm) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                            (record["id"], record["kind"], record["text"], record.get("tags", ""),
                             record.get("source", ""), record.get("created") or now(), record.get("accessed"),
                             int(record.get("access_count", 0)), float(record.get("importance", 0.5)),
                             int(bool(record.get("active", True))), norm(record["text"])))
                        memory_id = int(record["id"]) if record["id"] is not None else int(cursor.lastrowid or 0)
                        self._link(memory_id, record.get("entities") or entities_in(record["text"]))
                        added["memories"] += 1
                    elif kind == "fact":
                        if self._db.execute("SELECT 1 FROM facts WHERE id = ?", (record["id"],)).fetchone():
                            added["skipped"] += 1
                            continue
                        self._db.execute(
                            "INSERT INTO facts VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                            tuple(record[k] for k in ("id", "memory_id", "subject", "predicate", "object",
                                                      "confidence", "valid_from", "valid_to", "superseded_by",
                                                      "status", "source")))
                        added["facts"] += 1
                    else:
                        raise ValueError(f"expected records of type memory or fact, got {kind!r}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added

    def _imported_already(self, record: dict[str, Any]) -> bool:
        """A record with an id is there when its id is; one without (a chunk of a long memory,
        see :func:`den.runtime.memory.agent.chunked_records`) when the same words are."""
        if record.get("id") is None:
            return bool(self._db.execute("SELECT 1 FROM memories WHERE text_norm = ? AND kind = ?",
                                         (norm(record["text"]), record["kind"])).fetchone())
        return bool(self._db.execute("SELECT 1 FROM memories WHERE id = ?", (record["id"],)).fetchone())

    def close(self) -> None:
        with self._lock:
            self._db.close()
