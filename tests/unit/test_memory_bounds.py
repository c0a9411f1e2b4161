"""The memory never embeds, indexes or searches a long text whole (runtime/memory/chunks.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from den.api.agentfile import MemorySpec
from den.runtime.memory.agent import AgentMemory
from den.runtime.memory.budget import message_tokens, shorten, text_tokens
from den.runtime.memory.chunks import (
    CHUNK_CHARS,
    EMBED_CHARS,
    QUERY_CHARS,
    chunks,
    count_words,
    query_of,
    terms,
)
from den.runtime.memory.embed import WordLlamaEmbedder
from den.runtime.memory.store import MemoryStore


class RecordingEmbedder:
    """Deterministic vectors; remembers the longest text it was given."""

    name = "recording"

    def __init__(self) -> None:
        self.longest = 0
        self.calls = 0

    def dimension(self) -> int:
        return 8

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        self.longest = max([self.longest, *(len(t) for t in texts)])
        return [[1.0 if (len(t) + i) % 2 else -1.0 for i in range(8)] for t in texts]


@pytest.fixture
def memory(tmp_path):
    embedder = RecordingEmbedder()
    memory = AgentMemory(tmp_path / "memory.db", MemorySpec(), embedder)
    yield memory, embedder
    memory.close()


def test_a_short_text_is_one_chunk_exactly_as_given() -> None:
    assert chunks("  The cat is called Miso.  ") == ["  The cat is called Miso.  "]


def test_a_long_text_is_cut_after_sentences_into_pieces_no_longer_than_a_chunk() -> None:
    sentence = "Ada wrote the first program for the analytical engine. "
    text = sentence * 200
    pieces = chunks(text)
    assert len(pieces) > 1
    assert all(len(p) <= CHUNK_CHARS for p in pieces)
    assert all(p.endswith("engine.") for p in pieces)
    assert " ".join(pieces).split() == text.split()


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab .\n"), min_size=0, max_size=9000), st.integers(20, 3000))
def test_chunks_keep_every_word_and_respect_the_size(text: str, size: int) -> None:
    pieces = chunks(text, size)
    assert all(len(p) <= size for p in pieces)
    if len(text) > size:
        assert all(p.strip() == p and p for p in pieces)
        joined = "".join(pieces).replace(" ", "").replace("\n", "")
        assert joined == text.replace(" ", "").replace("\n", "")


def test_recall_searches_for_the_end_of_a_long_question_from_a_word_start() -> None:
    question = "filler " * 20000 + "where does Ada live?"
    query = query_of(question)
    assert len(query) <= QUERY_CHARS and query.endswith("where does Ada live?")
    assert query.startswith("filler ")
    assert query_of("short question") == "short question"


def test_keyword_search_takes_at_most_64_distinct_words() -> None:
    text = " ".join(f"word{i} word{i}" for i in range(1000))
    found = terms(text)
    assert found == [f"word{i}" for i in range(64)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "bb", " ", "  ", "\n", "\t", "c c", "x" * 70000]), max_size=12))
def test_words_are_counted_as_split_counts_them_a_slice_at_a_time(parts: list[str]) -> None:
    text = "".join(parts)
    assert count_words(text) == len(text.split())


def test_a_one_megabyte_message_is_estimated_and_shortened_without_splitting_it_whole() -> None:
    text = "word " * 210000
    assert text_tokens(text) == 280000
    assert message_tokens({"role": "user", "content": text}) == 280004
    short = shorten({"role": "user", "content": text + "the question?"}, 500)
    assert short["content"].endswith("word the question?")
    assert message_tokens(short) <= 500 + 20


def test_the_wordllama_embedder_cuts_what_it_is_given_to_a_chunk() -> None:
    embedder = WordLlamaEmbedder()
    long, cut = embedder.embed(["word " * 100000, ("word " * 100000)[:EMBED_CHARS]])
    assert long == cut


def test_a_long_memo_is_kept_as_chunks_each_embedded_alone(memory) -> None:
    memory, embedder = memory
    text = "".join(f"Launch {i} is on day {i}. " for i in range(300))
    written = memory.write_all(text)
    assert len(written) == len(chunks(text)) > 1
    assert all(len(m.text) <= CHUNK_CHARS for m in written)
    assert memory.write(text).id == written[0].id  # the same words again: nothing new
    memory.index_pending()
    assert embedder.longest <= CHUNK_CHARS
    assert memory.count() == len(written)


def test_recall_with_a_megabyte_question_embeds_only_its_end(memory) -> None:
    memory, embedder = memory
    memory.write("The vault PIN is 4411.")
    memory.index_pending()
    found = memory.recall("noise " * 200000 + "what is the vault PIN?", 5)
    assert [m.text for m in found] == ["The vault PIN is 4411."]
    assert embedder.longest <= QUERY_CHARS


def test_an_imported_long_memory_is_chunked_and_importing_it_again_adds_nothing(memory, tmp_path) -> None:
    memory, embedder = memory
    text = "".join(f"Grace reviews release {i} on a Friday. " for i in range(200))
    record = {"type": "memory", "id": 41, "kind": "memo", "text": text, "tags": "", "source": "api",
              "created": "2026-12-01T00:00:00Z", "importance": 0.5, "active": True, "entities": ["grace"]}
    fact = {"type": "fact", "id": 5, "memory_id": 41, "subject": "grace", "predicate": "reviews",
            "object": "releases", "confidence": 0.9, "valid_from": "2026-12-01T00:00:00Z", "valid_to": None,
            "superseded_by": None, "status": "current", "source": ""}
    added = memory.import_records([json.loads(json.dumps(record)), fact])
    assert added == {"memories": len(chunks(text)), "facts": 1, "skipped": 0}
    stored = memory.list(100)
    assert all(len(m.text) <= CHUNK_CHARS for m in stored)
    assert memory.store.get([41])[41].text == chunks(text)[0]
    again = memory.import_records([record, fact])
    assert again == {"memories": 0, "facts": 0, "skipped": len(chunks(text)) + 1}
    memory.index_pending()
    assert embedder.longest <= CHUNK_CHARS


def test_a_write_that_fails_midway_is_rolled_back_and_the_store_keeps_working(tmp_path) -> None:
    store = MemoryStore(tmp_path / "memory.db")
    with pytest.raises(OverflowError):
        store.forget(2 ** 80)
    memory = store.add("still writable")
    assert store.forget(memory.id) and store.count() == 0
    store.close()


def test_what_no_embedding_provider_takes_is_sent_as_spaces() -> None:
    from den.runtime.memory.embed import bounded

    assert bounded(["a\x00b\ud800c", "x" * 5000]) == ["a b c", "x" * EMBED_CHARS]
