"""The memory of one agent: its store, its embedder, recall, facts and summaries.

Everything here is synchronous (SQLite, the embedder): async callers use a
worker thread. The memo API of earlier Den versions (``write``, ``search``,
``list``, ``recent``, ``count``) keeps working over the new store.

Vectors are made in a background thread (the indexer): a write returns once
it is durable, recall indexes what is still pending (a few at a time) before
it searches, and until a memory has its vector it is found by keywords. When
the embedding model changes, the vectors are dropped and remade in the
background; recall meanwhile works on keywords.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from den.api.agentfile import MemorySpec
from den.runtime.memory import facts as facts_mod
from den.runtime.memory.chunks import chunks, query_of
from den.runtime.memory.embed import Embedder, EmbedError
from den.runtime.memory.recall import Graph, Traits, rank
from den.runtime.memory.store import Fact, Memory, MemoryStore

log = logging.getLogger("den.runtime.memory")

RECALL_INDEX_BATCH = 64
INDEX_BATCH = 128


class AgentMemory:
    def __init__(self, store: Path | Any, spec: MemorySpec | None = None, embedder: Embedder | None = None) -> None:
        """``store``: a path (the SQLite store there) or an open store (SQLite or Postgres)."""
        self.spec = spec or MemorySpec()
        self.store = MemoryStore(store) if isinstance(store, Path) else store
        self.embedder = embedder if self.spec.semantic_recall else None
        self._index_lock = threading.Lock()
        self._wake = threading.Event()
        self._indexer: threading.Thread | None = None
        self._model_ready = False
        self._pending = True  # memories may be waiting for vectors (cleared when none are)
        self._closed = False
        if self.embedder is not None and self.store.vectors:
            self._index_soon()

    # -- the memo API -------------------------------------------------------------

    def write(self, text: str, tags: str = "", *, kind: str = "memo", source: str = "memo",
              importance: float = 0.5) -> Memory:
        """Remember ``text``; the same words again return the memory already kept. A text longer
        than :data:`~den.runtime.memory.chunks.CHUNK_CHARS` is kept as several memories (see
        :meth:`write_all`): the first is returned."""
        return self.write_all(text, tags, kind=kind, source=source, importance=importance)[0]

    def write_all(self, text: str, tags: str = "", *, kind: str = "memo", source: str = "memo",
                  importance: float = 0.5) -> list[Memory]:
        """Remember ``text`` as one memory per chunk (one for a short text), in order."""
        written = []
        for piece in chunks(text):
            memory = self.store.find_exact(piece, kind)
            if memory is None:
                memory = self.store.add(piece, kind=kind, tags=tags, source=source, importance=importance)
                self._pending = True
            written.append(memory)
        self._index_soon()
        return written

    def search(self, query: str, limit: int = 10, kinds: Sequence[str] | None = None) -> list[Memory]:
        """Hybrid recall (vectors and keywords, fused; graph activation), best first, with scores."""
        return self.recall(query, limit, kinds=kinds)

    def list(self, limit: int = 50, offset: int = 0, kinds: Sequence[str] | None = None) -> list[Memory]:
        return self.store.list(limit, offset, kinds)

    def recent(self, limit: int = 10) -> list[Memory]:
        return self.store.list(limit, 0, ("memo", "fact"))

    def count(self) -> int:
        return self.store.count()

    def forget(self, memory_id: int) -> bool:
        return self.store.forget(memory_id)

    # -- recall ----------------------------------------------------------------------

    def recall(self, query: str, limit: int, *, kinds: Sequence[str] | None = None,
               mode: str = "hybrid", touch: bool = False) -> list[Memory]:
        """``mode``: hybrid (the default), vector or keyword (for measuring one half alone). A long
        ``query`` is searched for by its end (:func:`~den.runtime.memory.chunks.query_of`)."""
        query = query_of(query)
        if limit <= 0 or not query.strip():
            return []
        depth = max(limit * 4, 20)
        keyword = [i for i, _ in self.store.keyword_search(query, depth, kinds)] if mode != "vector" else []
        vector: list[int] = []
        if mode != "keyword":
            vector = [i for i, _ in self._vector_search(query, depth, kinds)]
        candidates = self.store.get(list(dict.fromkeys([*vector, *keyword])))
        traits = {i: Traits(m.created, m.accessed, m.importance) for i, m in candidates.items()}

        def expand(ids: Iterable[int]) -> Graph:
            found = self.store.neighbourhood(ids)
            if kinds:  # only reach memories of the kinds asked for
                wanted = self.store.get([i for ms in found.memories_of.values() for i in ms])
                found.memories_of = {e: [i for i in ms if i in wanted and wanted[i].kind in kinds]
                                     for e, ms in found.memories_of.items()}
            return Graph(found.entities_of, found.memories_of)

        ranked = rank(vector, keyword, traits, expand if mode == "hybrid" else None, limit)
        found = self.store.get([r.id for r in ranked])
        result = []
        for r in ranked:
            if r.id in found:
                memory = found[r.id]
                memory.score, memory.via = round(r.score, 6), r.via
                result.append(memory)
        if touch:
            self.store.touch([m.id for m in result])
        return result

    def _vector_search(self, query: str, depth: int, kinds: Sequence[str] | None) -> list[tuple[int, float]]:
        if self.embedder is None or not self.store.vectors:
            return []
        try:
            self._ensure_model()
            if self._pending:
                self.index_pending(RECALL_INDEX_BATCH)
            [vector] = self.embedder.embed([query])
        except EmbedError as exc:
            log.warning("vector recall unavailable, keywords only: %s", exc)
            return []
        return self.store.vector_search(vector, depth, kinds)

    # -- the indexer ---------------------------------------------------------------------

    def _ensure_model(self) -> None:
        if self._model_ready or self.embedder is None:
            return
        with self._index_lock:
            if not self._model_ready:
                if self.store.use_embedding_model(self.embedder.name, self.embedder.dimension()):
                    log.info("embedding model is now %s: re-embedding every memory in the background",
                             self.embedder.name)
                self._model_ready = True

    def index_pending(self, limit: int | None = None) -> int:
        """Embed memories that have no vector from the current model (up to ``limit``)."""
        if self.embedder is None or not self.store.vectors:
            return 0
        self._ensure_model()
        done = 0
        with self._index_lock:
            while limit is None or done < limit:
                batch = self.store.unembedded(min(INDEX_BATCH, (limit - done) if limit else INDEX_BATCH))
                if not batch:
                    self._pending = False
                    break
                vectors = self.embedder.embed([text for _, text in batch])
                self.store.put_embeddings(self.embedder.name, [(i, v) for (i, _), v in zip(batch, vectors, strict=True)])
                done += len(batch)
        return done

    def _index_soon(self) -> None:
        if self.embedder is None or not self.store.vectors or self._closed:
            return
        self._wake.set()
        if self._indexer is None:
            self._indexer = threading.Thread(target=self._index_forever, name="den-memory-indexer", daemon=True)
            self._indexer.start()

    def _index_forever(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            try:
                self.index_pending()
            except Exception as exc:  # an embedder outage: keywords meanwhile, retry on the next write
                log.warning("embedding memories failed (recall uses keywords meanwhile): %s", exc)

    def indexed(self) -> bool:
        """True when every active memory has a vector from the current model."""
        return self.embedder is None or not self.store.vectors or not self.store.unembedded(1)

    # -- facts ----------------------------------------------------------------------------

    def facts(self, history: bool = False) -> list[Fact]:
        return self.store.facts(history)

    def nearest_facts(self, text: str, limit: int = 10) -> list[Fact]:
        """Current facts nearest ``text`` (hybrid recall over fact memories)."""
        memories = self.recall(text, limit, kinds=("fact",))
        by_memory = {f.memory_id: f for f in self.store.facts_for_memories([m.id for m in memories])}
        return [by_memory[m.id] for m in memories if m.id in by_memory]

    def apply_facts(self, existing: Sequence[Fact], reply: str, source: str = "") -> list[facts_mod.Decision]:
        decisions = facts_mod.decide(self.store, existing, facts_mod.parse(reply), source=source)
        if any(d.fact is not None for d in decisions):
            self._pending = True
            self._index_soon()
        return decisions

    # -- the rest of the interface -------------------------------------------------------------

    def add(self, text: str, *, kind: str = "memo", tags: str = "", source: str = "api",
            importance: float = 0.5) -> Memory:
        return self.write(text, tags, kind=kind, source=source, importance=importance)

    def export(self) -> Iterable[dict[str, Any]]:
        return self.store.export()

    def import_records(self, records: Iterable[dict[str, Any]]) -> dict[str, int]:
        """Records of an export; a memory whose text is longer than a chunk is imported as
        several (the first keeps its id, facts point to it; the others get new ids)."""
        added = self.store.import_records(chunked_records(records))
        self._pending = True
        self._index_soon()
        return added

    def stats(self) -> dict[str, Any]:
        return {"counts": self.store.counts(), "total": self.store.count(),
                "facts": len(self.store.facts()), "size_bytes": self.store.size_bytes(),
                "schema_version": self.store.schema_version(),
                "embedding_model": self.store.meta("embedding_model"),
                "embedded": self.store.embedded_count(), "vectors": self.store.vectors}

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._indexer is not None:
            self._indexer.join(timeout=5)
        self.store.close()


def chunked_records(records: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """``records`` with each long memory text split into chunks: the first chunk keeps the
    record's id, the others follow as records with ``id`` None (the store assigns one). Each
    chunk's entities are found in its own text."""
    for record in records:
        text = record.get("text")
        if record.get("type") != "memory" or not isinstance(text, str):
            yield record
            continue
        pieces = chunks(text)
        if len(pieces) == 1:
            yield record
            continue
        for index, piece in enumerate(pieces):
            yield {**record, "id": record.get("id") if index == 0 else None, "text": piece, "entities": None}
