"""The scripted model: deterministic rules, tool calls, streaming, embeddings, the request log."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import httpx
import pytest

from den.runtime.scripted_model import (
    EMBEDDING_DIMENSIONS,
    answer,
    create_scripted_app,
    embed,
    load_rules,
    parse_rules,
    split_words,
)
from tests.conftest import serve_app

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def server_url():
    with serve_app(create_scripted_app()) as url:
        yield url


@pytest.fixture
def client(server_url: str):
    """A client of the shared scripted model, whose request log starts empty."""
    with httpx.Client(base_url=server_url, timeout=10) as http:
        http.delete("/requests")
        yield http


@pytest.fixture
def serve():
    """Serve a scripted model made for one test; returns a client of it."""
    with contextlib.ExitStack() as stack:

        def start(**options) -> httpx.Client:
            url = stack.enter_context(serve_app(create_scripted_app(**options)))
            return stack.enter_context(httpx.Client(base_url=url, timeout=10))

        yield start


def chat(client: httpx.Client, *messages: dict, **extra) -> dict:
    response = client.post("/v1/chat/completions", json={"model": "scripted", "messages": list(messages), **extra})
    assert response.status_code == 200, response.text
    return response.json()


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def events(client: httpx.Client, body: dict) -> list:
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    return [line.removeprefix("data: ") for line in lines]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_a_plain_message_is_greeted_and_repeated(client) -> None:
    reply = chat(client, {"role": "system", "content": "Be nice."}, user("first"), user("what is 2+2?"))
    choice = reply["choices"][0]
    assert choice["message"] == {"role": "assistant",
                                 "content": "Hello from the scripted model. You said: what is 2+2?"}
    assert choice["finish_reason"] == "stop"
    assert reply["object"] == "chat.completion"


def test_the_response_echoes_the_requested_model(client) -> None:
    reply = client.post("/v1/chat/completions",
                        json={"model": "gpt-pretend", "messages": [user("hi")]}).json()
    assert reply["model"] == "gpt-pretend"


def test_usage_counts_the_words_of_all_messages_and_of_the_answer(client) -> None:
    reply = chat(client, {"role": "system", "content": "You are terse."}, user("one two three"))
    # prompt: 3 + 3 words; answer: "Hello from the scripted model. You said: one two three"
    assert reply["usage"] == {"prompt_tokens": 6, "completion_tokens": 10, "total_tokens": 16}


def test_a_tool_directive_for_an_offered_tool_is_a_tool_call(client) -> None:
    reply = chat(client, user('TOOL:get_weather {"city": "Paris"}'), tools=[WEATHER_TOOL])
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


def test_a_tool_directive_for_a_tool_not_offered_is_answered_as_text(client) -> None:
    reply = chat(client, user('TOOL:get_weather {"city": "Paris"}'))
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["choices"][0]["message"]["content"].startswith("Hello from the scripted model.")


def test_tool_arguments_that_are_not_json_are_passed_through_as_written() -> None:
    reply = answer({"messages": [user("TOOL:get_weather {city: Paris")], "tools": [WEATHER_TOOL]}, [])
    assert reply.tool_name == "get_weather" and reply.tool_arguments == "{city: Paris"


def test_a_tool_directive_without_arguments_calls_with_an_empty_object() -> None:
    reply = answer({"messages": [user("TOOL:get_weather")], "tools": [WEATHER_TOOL]}, [])
    assert reply.tool_arguments == "{}"


def test_a_tool_result_is_answered_with_its_content(client) -> None:
    call = chat(client, user('TOOL:get_weather {"city": "Paris"}'), tools=[WEATHER_TOOL])
    message = call["choices"][0]["message"]
    reply = chat(
        client,
        user('TOOL:get_weather {"city": "Paris"}'),
        message,
        {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "sunny, 21 C"},
        tools=[WEATHER_TOOL],
    )
    assert reply["choices"][0]["message"]["content"] == "Tool result: sunny, 21 C"


def test_echo_system_answers_with_the_system_prompt_verbatim(client) -> None:
    prompt = "You are Test Bot.\n\nTone: formal."
    reply = chat(client, {"role": "system", "content": prompt}, user("ECHO SYSTEM"))
    assert reply["choices"][0]["message"]["content"] == prompt


def test_echo_system_without_a_system_prompt_says_so(client) -> None:
    assert chat(client, user("ECHO SYSTEM"))["choices"][0]["message"]["content"] == "(no system prompt)"


def test_content_given_as_parts_is_read_as_text(client) -> None:
    reply = chat(client, {"role": "user", "content": [{"type": "text", "text": "in"}, {"type": "text", "text": "parts"}]})
    assert reply["choices"][0]["message"]["content"].endswith("You said: in parts")


def test_rules_are_tried_first_and_expand_groups(serve) -> None:
    client = serve(rules=[{"match": r"capital of (\w+)", "reply": r"I do not know \1."}])
    assert chat(client, user("What is the capital of France?"))["choices"][0]["message"]["content"] == (
        "I do not know France."
    )
    assert chat(client, user("ECHO SYSTEM"))["choices"][0]["message"]["content"] == "(no system prompt)"


def test_rules_are_loaded_from_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("- match: '(?i)ping'\n  reply: pong\n")
    [rule] = load_rules(path)
    assert answer({"messages": [user("PING?")]}, [rule]).content == "pong"


def test_a_rule_with_a_bad_regex_is_refused_with_its_position() -> None:
    with pytest.raises(ValueError, match=r"rule 1: 'match' is not a valid regular expression"):
        parse_rules([{"match": "ok", "reply": "fine"}, {"match": "(", "reply": "x"}])


def test_a_rules_file_that_is_not_a_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("match: x\nreply: y\n")
    with pytest.raises(ValueError, match="expected a list"):
        load_rules(path)


def test_word_pieces_join_back_to_the_text() -> None:
    for text in ("Hello there, world", "  leading and trailing  ", "one", ""):
        assert "".join(split_words(text)) == text
    assert split_words("a b c") == ["a ", "b ", "c"]


def test_streaming_sends_the_answer_word_by_word_then_finish_reason_and_usage(client) -> None:
    data = events(client, {"model": "scripted", "messages": [user("stream this please")], "stream": True,
                           "stream_options": {"include_usage": True}})
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "scripted" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    pieces = [p for p in contents if p]
    assert len(pieces) == 10
    assert "".join(pieces) == "Hello from the scripted model. You said: stream this please"
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "stop" and not any(finish[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 10


def test_streaming_without_include_usage_sends_no_usage_chunk(client) -> None:
    data = events(client, {"model": "scripted", "messages": [user("hi")], "stream": True})
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["choices"] and "usage" not in c for c in chunks)


def test_a_streamed_tool_call_reassembles_to_the_arguments(client) -> None:
    data = events(client, {"model": "scripted", "messages": [user('TOOL:get_weather {"city": "Oslo"}')],
                           "tools": [WEATHER_TOOL], "stream": True})
    chunks = [json.loads(d) for d in data[:-1]]
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"city": "Oslo"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_embeddings_are_deterministic_unit_vectors_of_dimension_384(client) -> None:
    body = client.post("/v1/embeddings", json={"model": "emb", "input": ["the cat sat", "the cat sat", "x"]}).json()
    vectors = [d["embedding"] for d in body["data"]]
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and body["model"] == "emb"
    assert all(len(v) == EMBEDDING_DIMENSIONS for v in vectors)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0) for v in vectors)
    assert vectors[0] == vectors[1] == embed("the cat sat")
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}


def test_texts_sharing_words_are_closer_than_unrelated_texts() -> None:
    base = embed("the quarterly sales report for europe")
    related = embed("sales report europe")
    unrelated = embed("my cat likes sunny windowsills")
    assert cosine(base, related) > 0.5
    assert cosine(base, related) > cosine(base, unrelated) + 0.3


def test_embeddings_as_base64_decode_to_the_same_vector(client) -> None:
    from openai import OpenAI

    openai = OpenAI(base_url=f"{str(client.base_url).rstrip('/')}/v1", api_key="anything")
    result = openai.embeddings.create(model="scripted", input="hello world")  # the client asks for base64
    assert client.get("/requests").json()[-1]["body"]["encoding_format"] == "base64"
    assert result.data[0].embedding == pytest.approx(embed("hello world"), abs=1e-6)


def test_embeddings_honour_dimensions(client) -> None:
    body = client.post("/v1/embeddings", json={"input": "short", "dimensions": 64}).json()
    assert len(body["data"][0]["embedding"]) == 64
    assert client.post("/v1/embeddings", json={"input": "x", "dimensions": 1000}).status_code == 400


def test_the_request_log_keeps_bodies_and_paths_without_credentials_and_can_be_cleared(client) -> None:
    chat(client, user("logged"), temperature=0.3)
    client.post("/v1/embeddings", json={"input": "e"}, headers={"Authorization": "Bearer sk-secret",
                                                                 "X-Api-Key": "also-secret"})
    log = client.get("/requests").json()
    assert [(e["method"], e["path"]) for e in log] == [("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings")]
    assert log[0]["body"]["messages"] == [user("logged")] and log[0]["body"]["temperature"] == 0.3
    assert "sk-secret" not in json.dumps(log) and "also-secret" not in json.dumps(log)
    assert all("authorization" not in {h.lower() for h in e["headers"]} for e in log)
    assert client.delete("/requests").json() == {"cleared": 2}
    assert client.get("/requests").json() == []


def test_the_request_log_is_also_written_to_a_file(serve, tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    client = serve(log_path=path)
    chat(client, user("one"))
    chat(client, user("two"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [entry["body"]["messages"][0]["content"] for entry in lines] == ["one", "two"]


def test_models_lists_the_scripted_model(client) -> None:
    assert client.get("/v1/models").json()["data"][0]["id"] == "scripted"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"messages": []}', b'{"model": "x"}'])
def test_a_bad_chat_body_is_a_400_with_an_openai_error(client, body: bytes) -> None:
    response = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_the_fact_rule_adds_updates_skips_and_deletes_against_the_numbered_facts() -> None:
    from den.runtime.memory.facts import prompt
    from den.runtime.memory.store import Fact
    from den.runtime.scripted_model import answer

    known = [Fact(9, 1, "user", "city", "Lisbon", 0.9, "t"), Fact(4, 2, "user", "pet", "a cat", 0.9, "t")]

    def decided(text: str) -> list[dict]:
        body = {"messages": prompt(known, [{"role": "user", "content": "my city is Oslo (old news)"},
                                           {"role": "user", "content": text}])}
        return json.loads(answer(body, []).content)["facts"]

    assert decided("My city is now Porto. My editor is Helix!") == [
        {"event": "UPDATE", "id": 0, "subject": "user", "predicate": "city", "object": "Porto", "confidence": 0.9},
        {"event": "ADD", "subject": "user", "predicate": "editor", "object": "Helix", "confidence": 0.9}]
    assert decided("As I said, my city is Lisbon.") == [{"event": "NOOP", "id": 0}]
    assert decided("Please forget my pet.") == [{"event": "DELETE", "id": 1}]
    assert decided("Nice weather today.") == []


def test_a_body_over_the_scripted_models_limit_is_a_413_and_never_logged(serve) -> None:
    client = serve(max_request_bytes=4096)
    refused = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 5000}]})
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "request_too_large"
    assert client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}).is_success
    assert [r["body"]["messages"][0]["content"] for r in client.get("/requests").json()] == ["hi"]
