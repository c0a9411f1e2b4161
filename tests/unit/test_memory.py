"""Memory: recall ranking, graph activation, facts (supersession, duplicates, guards), the budget."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from den.runtime.memory import facts
from den.runtime.memory.budget import Budget, fit, tokens
from den.runtime.memory.recall import Graph, Traits, activate, rank, rrf
from den.runtime.memory.store import MemoryStore, entities_in

NOW = datetime(2026, 12, 1, tzinfo=UTC)
FRESH = Traits(NOW.isoformat(), None, 0.5)


def test_rrf_ranks_a_memory_both_rankings_found_above_either_rankings_first() -> None:
    fused = rrf([[1, 2, 3], [4, 2, 5]])
    assert max(fused, key=fused.get) == 2
    assert fused[1] == fused[4]  # first in one ranking each: a tie


def test_rank_says_which_ranking_found_each_memory() -> None:
    traits = {i: FRESH for i in (1, 2, 3)}
    ranked = rank([1, 2], [2, 3], traits, None, 3, now=NOW)
    assert [(r.id, r.via) for r in ranked][0] == (2, "vector+keyword")
    assert {r.id: r.via for r in ranked} == {1: "vector", 2: "vector+keyword", 3: "keyword"}


def test_recency_and_importance_break_a_tie_of_ranks() -> None:
    old = Traits((NOW - timedelta(days=365)).isoformat(), None, 0.5)
    important = Traits(NOW.isoformat(), None, 1.0)
    ranked = rank([1], [2], {1: old, 2: FRESH}, None, 2, now=NOW)
    assert [r.id for r in ranked] == [2, 1]
    ranked = rank([1], [2], {1: important, 2: FRESH}, None, 2, now=NOW)
    assert [r.id for r in ranked] == [1, 2]


def hand_built_graph() -> Graph:
    # 1 "Ada lives in Paris" is recalled; 7 "Paris hosts the conference in May" shares only the
    # entity paris with it; 8 shares with 7 the entity may (two hops); 9 is unconnected.
    entities_of = {1: ["ada", "paris"], 7: ["paris", "may"], 8: ["may"], 9: ["tokyo"]}
    memories_of: dict[str, list[int]] = {}
    for memory_id, names in entities_of.items():
        for name in names:
            memories_of.setdefault(name, []).append(memory_id)
    return Graph(entities_of, memories_of)


def test_graph_activation_adds_a_memory_sharing_an_entity_that_neither_ranking_found() -> None:
    graph = hand_built_graph()
    ranked = rank([1], [1], {1: FRESH}, lambda ids: graph, 5, now=NOW)
    by_id = {r.id: r for r in ranked}
    assert by_id[1].via == "vector+keyword"
    assert by_id[7].via == "graph"
    assert by_id[7].score < by_id[1].score
    assert 9 not in by_id


def test_activation_decays_with_each_hop_and_stops_at_the_bound() -> None:
    graph = hand_built_graph()
    two = activate({1: 1.0}, lambda ids: graph, hops=2, decay=0.5)
    assert two[7] > two[8] > 0
    one = activate({1: 1.0}, lambda ids: graph, hops=1, decay=0.5)
    assert 7 in one and 8 not in one


def test_entities_are_names_not_sentence_openers() -> None:
    assert entities_in("The meeting with Ada Lovelace is in Paris.") == ["ada lovelace", "paris"]


@pytest.fixture
def store(tmp_path) -> MemoryStore:
    opened = MemoryStore(tmp_path / "memory.db")
    yield opened
    opened.close()


def decide(store: MemoryStore, *candidates: dict) -> list[facts.Decision]:
    existing = store.facts()
    return facts.decide(store, existing, facts.parse(json.dumps({"facts": list(candidates)})))


COLOUR = {"subject": "user", "predicate": "favourite colour", "object": "blue", "confidence": 0.9}


def test_an_update_supersedes_the_fact_and_keeps_its_history(store) -> None:
    [added] = decide(store, {"event": "ADD", **COLOUR})
    [updated] = decide(store, {"event": "UPDATE", "id": 0, **COLOUR, "object": "green"})
    assert updated.event == "UPDATE"
    assert [f.object for f in store.facts()] == ["green"]
    history = store.facts(history=True)
    assert [(f.object, f.status) for f in history] == [("blue", "superseded"), ("green", "current")]
    assert history[0].superseded_by == history[1].id and history[0].valid_to
    assert {m.text for m in store.list(kinds=["fact"])} == {"user favourite colour green"}


def test_saying_the_same_thing_twice_adds_no_duplicate_whatever_the_model_answers(store) -> None:
    decide(store, {"event": "ADD", **COLOUR})
    again = decide(store, {"event": "ADD", **COLOUR},
                   {"event": "ADD", "subject": "User", "predicate": "favourite colour is", "object": "Blue."})
    assert [d.event for d in again] == ["NOOP", "NOOP"]
    assert len(store.facts(history=True)) == 1


def test_an_invented_id_is_never_trusted_and_deletes_are_bounded(store) -> None:
    for n in range(4):
        decide(store, {"event": "ADD", "subject": "user", "predicate": f"pet {n}", "object": f"cat {n}"})
    decisions = decide(store, {"event": "DELETE", "id": 99}, {"event": "DELETE", "id": 0},
                       {"event": "DELETE", "id": 1}, {"event": "DELETE", "id": 2})
    assert [d.event for d in decisions] == ["NOOP", "DELETE", "DELETE", "NOOP"]
    assert len(store.facts()) == 2
    assert [f.status for f in store.facts(history=True)].count("deleted") == 2


def test_a_malformed_answer_changes_nothing(store) -> None:
    assert facts.parse("I think the user likes blue") == []
    assert facts.parse('```json\n{"facts": [{"event": "ADD", "subject": "user"}]}\n```') == []
    assert store.facts() == []


def test_a_memo_of_earlier_den_versions_is_migrated_with_its_id(tmp_path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "memory.db")
    db.execute("CREATE TABLE memos (id INTEGER PRIMARY KEY, text TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '', "
               "created TEXT NOT NULL)")
    db.execute("INSERT INTO memos VALUES (41, 'The user is called Ada.', 'name', '2026-01-01T00:00:00Z')")
    db.commit()
    db.close()
    migrated = MemoryStore(tmp_path / "memory.db")
    [memo] = migrated.list()
    assert (memo.id, memo.kind, memo.text, memo.tags) == (41, "memo", "The user is called Ada.", "name")
    assert migrated.keyword_search("Ada", 5)[0][0] == 41
    assert migrated.schema_version() == 2
    migrated.close()


def conversation(turns: int) -> list[dict]:
    talk = []
    for n in range(turns):
        talk += [{"role": "user", "content": f"question {n} " + "word " * 40},
                 {"role": "assistant", "content": f"answer {n} " + "word " * 40}]
    return talk


def test_fit_keeps_the_newest_turns_within_the_window_and_names_the_dropped_ones() -> None:
    budget = Budget.of(2000, 4096)
    assert budget.completion == 500
    head = [{"role": "system", "content": "You are Test Bot."}]
    talk = conversation(100)
    fitted = fit(head, talk, budget.prompt)
    assert tokens(fitted.messages) <= budget.prompt
    assert fitted.messages[0] == head[0] and fitted.messages[-1] == talk[-1]
    assert fitted.dropped == talk[: len(talk) - len(fitted.messages) + 1]


def test_fit_never_starts_with_a_tool_result_and_shortens_a_message_too_long_alone() -> None:
    talk = [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "x", "arguments": "{}"}}]},
            {"role": "tool", "content": "word " * 300}, {"role": "user", "content": "word " * 300}]
    fitted = fit([], talk, 500)
    assert [m["role"] for m in fitted.messages] == ["user"]
    huge = fit([], [{"role": "user", "content": "word " * 5000}], 500)
    assert tokens(huge.messages) <= 500 and huge.messages[0]["content"].endswith("word")
