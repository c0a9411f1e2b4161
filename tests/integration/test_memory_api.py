"""Memory over HTTP with the scripted model: facts recalled in a new session, supersession,
a long conversation in a small window, two agents kept apart, export and import."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from den.runtime.memory.budget import tokens
from tests.integration.conftest import AUTH, ScriptedModel, agent_resource


def agent(name: str, model: ScriptedModel, memory: dict[str, Any] | None = None, **model_fields: Any):
    base = agent_resource(name, base_url=model.base_url, **model_fields)
    spec = base.spec.model_copy(update={"memory": base.spec.memory.model_copy(update=memory or {})})
    return base.model_copy(update={"spec": spec})


def say(url: str, text: str, session: str) -> dict[str, Any]:
    response = httpx.post(f"{url}/v1/chat/completions", headers={**AUTH, "X-Den-Session": session}, timeout=60,
                          json={"model": "x", "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    return response.json()


def facts(url: str, history: bool = False) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/den/v1/memory/facts", params={"history": history}, headers=AUTH).json()["items"]


def settled(url: str, seconds: float = 20.0) -> dict[str, Any]:
    """Wait until the background consolidation of the turns so far is done; its counts."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        counts = httpx.get(f"{url}/den/v1/status", headers=AUTH).json()["memory"]["consolidation"]
        if counts == last:
            return counts
        last = counts
        time.sleep(0.3)
    raise AssertionError(f"consolidation did not settle in {seconds}s: {last}")


def wait_for(check, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


def system_of(body: dict[str, Any]) -> str:
    return body["messages"][0]["content"]


def test_a_fact_told_in_one_session_is_recalled_in_a_new_one_and_named_in_the_completion(
        scripted_model, serve_runtime) -> None:
    url = serve_runtime(agent("rememberer", scripted_model))
    say(url, "Hi! My favourite colour is blue.", "monday")
    [fact] = wait_for(lambda: facts(url))
    assert (fact["subject"], fact["predicate"], fact["object"]) == ("user", "favourite colour", "blue")
    scripted_model.clear()
    answer = say(url, "Which colour should I paint the kitchen?", "tuesday")
    system = system_of(scripted_model.chat_bodies()[-1])
    assert f"[memory {fact['memory_id']}] user favourite colour blue" in system
    assert fact["memory_id"] in answer["den"]["memories"]
    settled(url)
    [used] = [m for m in httpx.get(f"{url}/den/v1/memory", params={"kind": "fact"}, headers=AUTH).json()["items"]]
    assert used["access_count"] >= 1 and used["accessed"]
    # The old session's words are not in the new session's messages: only memory brought it back.
    assert all("blue" not in str(m["content"]) for m in scripted_model.chat_bodies()[-1]["messages"][1:])


def test_a_contradiction_supersedes_the_fact_and_repeating_it_adds_nothing(scripted_model, serve_runtime) -> None:
    url = serve_runtime(agent("changer", scripted_model))
    say(url, "My city is Lisbon.", "s")
    wait_for(lambda: facts(url))
    say(url, "We moved: my city is now Porto.", "s")
    wait_for(lambda: facts(url)[0]["object"] == "Porto")
    say(url, "Just so you know, my city is Porto.", "s")
    settled(url)
    assert [f["object"] for f in facts(url)] == ["Porto"]
    history = facts(url, history=True)
    assert [(f["object"], f["status"]) for f in history] == [("Lisbon", "superseded"), ("Porto", "current")]
    listed = httpx.get(f"{url}/den/v1/memory", params={"kind": "fact"}, headers=AUTH).json()["items"]
    assert [m["text"] for m in listed] == ["user city Porto"]
    found = httpx.get(f"{url}/den/v1/memory", params={"q": "which city"}, headers=AUTH).json()["items"]
    assert found[0]["text"] == "user city Porto" and found[0]["kind"] == "fact" and found[0]["score"] > 0


def test_two_hundred_turns_in_a_2000_token_window_never_fail_and_every_request_fits(
        scripted_model, serve_runtime, tmp_path) -> None:
    url = serve_runtime(agent("talker", scripted_model, {"fact_extraction": False}, context_window=2000,
                              max_tokens=4096), home=tmp_path)
    say(url, "Remember this: the code word is Zebra. " + "Some filler to make turns long. " * 12, "long")
    for n in range(1, 200):
        say(url, f"Turn {n}: " + "Some filler to make turns long. " * 12, "long")
    settled(url, 60)
    bodies = scripted_model.all_chat_bodies()
    assert len(bodies) > 200  # the turns and the summaries
    for body in bodies:
        words = sum(len(re.findall(r"\S+", str(m.get("content") or ""))) for m in body["messages"])
        assert words + body["max_tokens"] <= 2000, "a request did not fit the window"
        assert tokens(body["messages"]) + body["max_tokens"] <= 2000
    assert {b["max_tokens"] for b in bodies} == {500}
    summaries = httpx.get(f"{url}/den/v1/memory", params={"kind": "summary", "limit": 200}, headers=AUTH).json()
    assert summaries["items"], "old turns were not summarized"
    scripted_model.clear()
    say(url, "What was the code word?", "long")
    assert "Zebra" in system_of(scripted_model.chat_bodies()[-1])


def test_two_agents_never_see_each_others_memories_and_export_import_keeps_ids(
        scripted_model, serve_runtime, tmp_path) -> None:
    first = serve_runtime(agent("first", scripted_model), home=tmp_path / "first")
    second = serve_runtime(agent("second", scripted_model), home=tmp_path / "second")
    written = [httpx.post(f"{first}/den/v1/memory", json={"text": text}, headers=AUTH).json()
               for text in ("The launch code is Orchid.", "Grace reviews every release.")]
    assert httpx.get(f"{second}/den/v1/memory", params={"q": "launch code Orchid"}, headers=AUTH).json()["items"] == []
    scripted_model.clear()
    say(second, "What is the launch code?", "s")
    assert "Orchid" not in system_of(scripted_model.chat_bodies()[-1])

    exported = httpx.get(f"{first}/den/v1/memory/export", headers=AUTH)
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    imported = httpx.post(f"{second}/den/v1/memory/import", content=exported.content, headers=AUTH).json()
    assert imported["memories"] == 2
    for memo in written:
        [hit, *_] = httpx.get(f"{second}/den/v1/memory", params={"q": memo["text"]}, headers=AUTH).json()["items"]
        assert (hit["id"], hit["text"]) == (memo["id"], memo["text"])
    again = httpx.post(f"{second}/den/v1/memory/import", content=exported.content, headers=AUTH).json()
    assert again == {"memories": 0, "facts": 0, "skipped": 2}
    bad = httpx.post(f"{second}/den/v1/memory/import", content=b'{"type": "memory", "id": 77}\nnot json\n',
                     headers=AUTH)
    assert bad.status_code == 422 and "line 2" in bad.text


def test_forget_removes_a_memory_from_recall(scripted_model, serve_runtime) -> None:
    url = serve_runtime(agent("forgetter", scripted_model))
    memo = httpx.post(f"{url}/den/v1/memory", json={"text": "The vault PIN is 4411."}, headers=AUTH).json()
    assert httpx.delete(f"{url}/den/v1/memory/{memo['id']}", headers=AUTH).json() == {"forgotten": memo["id"]}
    assert httpx.get(f"{url}/den/v1/memory", params={"q": "vault PIN"}, headers=AUTH).json()["items"] == []
    assert httpx.delete(f"{url}/den/v1/memory/{memo['id']}", headers=AUTH).status_code == 404


def test_den_memory_adds_searches_lists_forgets_shows_facts_and_moves_memories_between_agents(
        den, den_home, scripted_model, serve_runtime, tmp_path) -> None:
    from tests.integration.test_connect import register

    source = serve_runtime(agent("source", scripted_model), home=tmp_path / "source")
    target = serve_runtime(agent("target", scripted_model), home=tmp_path / "target")
    register(den_home, "source", source)
    register(den_home, "target", target)
    added = den("memory", "source", "add", "The staging database is called Heron.")
    assert added.code == 0 and added.stdout.startswith("remembered (id "), added.output
    say(source, "My editor is Helix.", "s")
    wait_for(lambda: facts(source))
    listed = den("memory", "source")
    assert "memo" in listed.stdout and "fact" in listed.stdout and "user editor Helix" in listed.stdout
    found = den("memory", "source", "search", "which staging database")
    assert found.code == 0 and "Heron" in found.stdout and "SCORE" in found.stdout
    say(source, "My editor is now Zed.", "s")
    wait_for(lambda: facts(source)[0]["object"] == "Zed")
    current = den("memory", "source", "facts")
    assert "Zed" in current.stdout and "Helix" not in current.stdout
    history = den("memory", "source", "facts", "--history")
    assert "Helix" in history.stdout and "superseded by" in history.stdout
    exported = den("memory", "source", "export")
    assert exported.code == 0 and len(exported.stdout.splitlines()) >= 4
    imported = den("memory", "target", "import", input=exported.stdout)
    assert imported.code == 0 and "imported" in imported.stdout, imported.output
    assert "Heron" in den("memory", "target", "search", "staging database").stdout
    memo_id = added.stdout.split("id ")[1].rstrip(")\n")
    assert den("memory", "target", "forget", memo_id).code == 0
    assert "Heron" not in den("memory", "target", "search", "staging database").stdout
    missing = den("memory", "target", "forget", memo_id)
    assert missing.code != 0 and f"no memory {memo_id}" in missing.output
    assert den("memory", "target", "forget", "abc").code != 0
    inspected = den("inspect", "source")
    assert inspected.code == 0, inspected.output
    assert "memory:" in inspected.stdout and "fact: 1" in inspected.stdout and "size_bytes:" in inspected.stdout


def test_a_changed_embedding_model_re_embeds_in_the_background_and_keywords_answer_meanwhile(
        scripted_model, serve_runtime, tmp_path) -> None:
    first = serve_runtime(agent("switcher", scripted_model), home=tmp_path)
    for text in ("The boat is moored in Marseille.", "Invoices go out on the first Monday."):
        httpx.post(f"{first}/den/v1/memory", json={"text": text}, headers=AUTH)
    before = wait_for(lambda: (s := httpx.get(f"{first}/den/v1/memory/stats", headers=AUTH).json())["embedded"] == 2 and s)
    assert (before["embedding_model"], before["schema_version"]) == ("wordllama", 2)
    second = serve_runtime(agent("switcher", scripted_model, {"embedding_model": "text-embedding-3-small"}), home=tmp_path)
    assert httpx.get(f"{second}/den/v1/memory", params={"q": "invoices"}, headers=AUTH).json()["items"]
    after = wait_for(lambda: (s := httpx.get(f"{second}/den/v1/memory/stats", headers=AUTH).json())["embedded"] == 2
                     and s["embedding_model"] == "text-embedding-3-small" and s)
    assert after["total"] == 2
    embedded = [r["body"] for r in scripted_model.requests() if r["path"].endswith("/embeddings")]
    assert embedded and all(b["model"] == "text-embedding-3-small" for b in embedded)
    [hit, *_] = httpx.get(f"{second}/den/v1/memory", params={"q": "boat moored"}, headers=AUTH).json()["items"]
    assert hit["text"] == "The boat is moored in Marseille." and "vector" in hit["via"]


def test_a_streamed_answer_names_the_memories_in_its_final_den_chunk(scripted_model, serve_runtime) -> None:
    import json

    url = serve_runtime(agent("streamer", scripted_model, {"fact_extraction": False}))
    memo = httpx.post(f"{url}/den/v1/memory", json={"text": "Deploys happen on Thursdays."}, headers=AUTH).json()
    with httpx.stream("POST", f"{url}/v1/chat/completions", headers=AUTH, timeout=30,
                      json={"stream": True, "messages": [{"role": "user", "content": "When do deploys happen?"}]}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    [turn] = [e["den"] for e in events if e.get("den", {}).get("type") == "turn"]
    assert turn["memories"] == [memo["id"]]
    assert f"[memory {memo['id']}] Deploys happen on Thursdays." in system_of(scripted_model.chat_bodies()[-1])
