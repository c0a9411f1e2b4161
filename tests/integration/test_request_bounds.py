"""Every way in has a size bound, checked before work starts, and nothing a caller sends is a 500.

The agent refuses a body over its limit with 413 ``request_too_large`` before reading it, a
newest message that does not fit its window with 400 ``context_length_exceeded``, and text or
parameters OpenAI would refuse with a 400 naming the parameter; the gateway does the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import AUTH, TOKEN, ScriptedModel, agent_resource, free_port

MB = 1_000_000
JSON = {**AUTH, "Content-Type": "application/json"}


def words(size: int) -> str:
    return ("word " * (size // 5 + 1))[:size]


def chat(url: str, content: str | None = None, *, raw: bytes | None = None, timeout: float = 120,
         **fields) -> httpx.Response:
    body = raw if raw is not None else json.dumps(
        {"messages": [{"role": "user", "content": content}], **fields}).encode()
    return httpx.post(f"{url}/v1/chat/completions", content=body, headers=JSON, timeout=timeout)


def error_of(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.fixture
def runtime(scripted_model: ScriptedModel, serve_runtime) -> str:
    return serve_runtime(agent_resource(base_url=scripted_model.base_url))


@pytest.fixture
def wide(scripted_model: ScriptedModel, serve_runtime) -> str:
    """An agent whose model has a window of 1Mi tokens (so an 8 MiB request limit)."""
    return serve_runtime(agent_resource("wide-bot", base_url=scripted_model.base_url, context_window=1024 * 1024))


# -- sizes ------------------------------------------------------------------------------------


def test_chat_messages_of_1_8_and_32_mb_each_get_a_4xx_json_error_from_a_default_agent(runtime) -> None:
    one = error_of(response := chat(runtime, words(MB)))
    assert response.status_code == 400
    assert (one["type"], one["param"], one["code"]) == ("invalid_request_error", "messages", "context_length_exceeded")
    assert "context window of 8192 tokens" in one["message"] and "model.context_window" in one["message"]
    for size in (8 * MB, 32 * MB):
        response = chat(runtime, words(size))
        too_large = error_of(response)
        assert response.status_code == 413
        assert (too_large["type"], too_large["param"], too_large["code"]) == (
            "invalid_request_error", None, "request_too_large")
        assert "(1 MiB)" in too_large["message"] and "runtime.max_request_bytes" in too_large["message"]
    assert chat(runtime, "still answering").status_code == 200


def test_an_agent_with_a_wide_window_answers_1_mb_and_refuses_8_and_32(wide, scripted_model) -> None:
    answered = chat(wide, words(MB - 20) + " last words")
    assert answered.status_code == 200
    assert answered.json()["choices"][0]["message"]["content"].endswith("last words")
    [body] = scripted_model.chat_bodies()
    assert body["messages"][-1]["content"].endswith("last words")
    assert error_of(chat(wide, words(8 * MB)))["code"] == "context_length_exceeded"
    assert chat(wide, words(32 * MB)).status_code == 413


def test_a_chunked_body_over_the_limit_is_refused_as_it_arrives(runtime) -> None:
    piece = b" " * 65536

    def body():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(40):  # 2.5 MiB, no Content-Length
            yield piece
        yield b'"}]}'

    response = httpx.post(f"{runtime}/v1/chat/completions", content=body(), headers=JSON, timeout=60)
    assert response.status_code == 413 and error_of(response)["code"] == "request_too_large"


def test_max_request_bytes_in_the_agentfile_overrides_the_windows_rule(scripted_model, serve_runtime) -> None:
    agent = agent_resource(base_url=scripted_model.base_url)
    manifest = agent.manifest()
    manifest["spec"]["runtime"]["max_request_bytes"] = 4096
    url = serve_runtime(type(agent).model_validate(manifest))
    assert chat(url, "x" * 3000).status_code == 200
    response = chat(url, "x" * 5000)
    assert response.status_code == 413 and "(4 KiB)" in error_of(response)["message"]


def test_a_long_conversation_still_drops_its_oldest_turns_but_a_newest_message_too_long_alone_is_refused(
        scripted_model, serve_runtime) -> None:
    url = serve_runtime(agent_resource(base_url=scripted_model.base_url, context_window=2000))
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + words(400)}
               for i in range(40)]
    fits = httpx.post(f"{url}/v1/chat/completions", headers=JSON, timeout=60,
                      json={"messages": [*history, {"role": "user", "content": "the question"}]})
    assert fits.status_code == 200
    sent = scripted_model.chat_bodies()[-1]["messages"]
    assert sent[-1]["content"] == "the question" and len(sent) < 20
    too_long = httpx.post(f"{url}/v1/chat/completions", headers=JSON, timeout=60,
                          json={"messages": [*history[:2], {"role": "user", "content": words(8000)}]})
    assert too_long.status_code == 400 and error_of(too_long)["code"] == "context_length_exceeded"


def test_a_1mb_memo_is_refused_and_a_long_one_is_kept_in_chunks(runtime) -> None:
    refused = httpx.post(f"{runtime}/den/v1/memory", json={"text": words(MB)}, headers=AUTH, timeout=60)
    assert refused.status_code == 400 and error_of(refused)["param"] == "text"
    text = "".join(f"Fact {i}: the launch of rocket {i} is on day {i}. " for i in range(150))
    kept = httpx.post(f"{runtime}/den/v1/memory", json={"text": text[:7999]}, headers=AUTH, timeout=60).json()
    assert len(kept["chunks"]) >= 4 and kept["id"] == kept["chunks"][0]
    items = httpx.get(f"{runtime}/den/v1/memory", params={"limit": 200}, headers=AUTH).json()["items"]
    assert all(len(m["text"]) <= 2000 for m in items)


def test_a_run_whose_goal_does_not_fit_the_window_is_refused(runtime) -> None:
    response = httpx.post(f"{runtime}/den/v1/runs", json={"goal": words(60000)}, headers=AUTH, timeout=60)
    assert response.status_code == 400
    assert (error_of(response)["param"], error_of(response)["code"]) == ("goal", "context_length_exceeded")


def test_an_import_larger_than_a_request_is_streamed_and_a_line_longer_than_one_is_refused(runtime) -> None:
    lines = [json.dumps({"type": "memory", "id": i, "kind": "memo", "text": f"memo {i} " + "x" * 300})
             for i in range(1, 6001)]  # ~2 MB: twice the agent's request limit
    body = "\n".join(lines).encode()
    assert len(body) > 1024 * 1024
    imported = httpx.post(f"{runtime}/den/v1/memory/import", content=body, headers=AUTH, timeout=120)
    assert imported.status_code == 200 and imported.json()["memories"] == 6000
    long_line = json.dumps({"type": "memory", "id": 90000, "kind": "memo", "text": "y" * (1024 * 1024)})
    refused = httpx.post(f"{runtime}/den/v1/memory/import", content=long_line.encode(), headers=AUTH, timeout=60)
    assert refused.status_code == 413 and "line 1" in error_of(refused)["message"]


# -- what OpenAI would refuse ----------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages.0.content"),
    (b'{"messages": [{"role": "user", "content": "a\\u0000b"}]}', "messages.0.content"),
    (b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
     "messages.0.content.0.text"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "user": "\\ud83d"}', "user"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "metadata": {"k": "nul\\u0000"}}', "metadata.k"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}', "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', "temperature"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 2.5}', "temperature"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": -0.1}', "top_p"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": 3}', "n"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}', "stop"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 9}', "presence_penalty"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "seed": 1.5}', "seed"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}', "max_completion_tokens"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {}}]}',
     "tools.0.function.name"),
    (b'{"messages": [{"role": "robot", "content": "hi"}]}', "messages.0.role"),
    (b'{"messages": []}', "messages"),
])
def test_what_openai_refuses_is_a_400_naming_the_parameter(runtime, raw: bytes, param: str) -> None:
    response = chat(runtime, raw=raw)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error
    assert param.split(".")[0] in error["message"]


def test_surrogates_and_nul_say_what_is_wrong(runtime) -> None:
    surrogate = error_of(chat(runtime, raw=b'{"messages": [{"role": "user", "content": "\\ud800"}]}'))
    assert "lone UTF-16 surrogate (\\ud800)" in surrogate["message"]
    nul = error_of(chat(runtime, raw=b'{"messages": [{"role": "user", "content": "\\u0000"}]}'))
    assert "NUL" in nul["message"]
    pair = chat(runtime, raw=b'{"messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}]}')
    assert pair.status_code == 200 and pair.json()["choices"][0]["message"]["content"].endswith("smile \U0001F600")


def test_unknown_fields_and_valid_sampling_fields_are_accepted(runtime) -> None:
    response = chat(runtime, "hi", temperature=0, top_p=1, n=1, stop=["x"], seed=7, max_tokens=5,
                    frequency_penalty=-2, logit_bias={"50256": -100}, response_format={"type": "text"},
                    tools=[{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}],
                    parallel_tool_calls=False, something_new={"nested": [1, 2]})
    assert response.status_code == 200


@pytest.mark.parametrize(("raw", "says"), [
    (b"not json at all", "not valid JSON"),
    (b'{"messages": [', "not valid JSON"),
    (b"[1, 2, 3]", "valid dictionary"),
    (b'"a string"', "valid dictionary"),
    (b"", "JSON object is required"),
    (b'{"messages": [{"role": "user", "content": "caf\xe9"}]}', "not valid UTF-8"),
    (b'{"messages": "\xc3\x28"}', "not valid UTF-8"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
])
def test_a_body_that_is_not_a_json_object_is_a_400_never_a_500(runtime, raw: bytes, says: str) -> None:
    response = chat(runtime, raw=raw)
    assert response.status_code == 400, response.text
    assert says in error_of(response)["message"]


def test_den_protocol_inputs_never_answer_500(runtime) -> None:
    huge = 2 ** 80
    answers = [
        httpx.delete(f"{runtime}/den/v1/memory/{huge}", headers=AUTH),
        httpx.get(f"{runtime}/den/v1/memory", params={"offset": huge, "limit": huge}, headers=AUTH),
        httpx.get(f"{runtime}/den/v1/memory", params={"q": "x" * 12000}, headers=AUTH),
        httpx.get(f"{runtime}/den/v1/memory", params={"kind": "memo,nonsense"}, headers=AUTH),
        httpx.post(f"{runtime}/den/v1/memory", content=b'{"text": "\\ud800"}', headers=JSON),
        httpx.post(f"{runtime}/den/v1/memory", json={"text": "ok", "importance": False}, headers=AUTH),
        httpx.post(f"{runtime}/den/v1/memory/import", content=b'{"type": "memory", "id": 5, "kind": "memo", '
                                                              b'"text": "\\ud800"}', headers=AUTH),
        httpx.post(f"{runtime}/den/v1/memory/import", content=b"\xff\xfe", headers=AUTH),
        httpx.post(f"{runtime}/den/v1/tools/memo_write", content=b'{"text": "\\ud800"}', headers=JSON),
        httpx.post(f"{runtime}/den/v1/runs", content=b'{"goal": "a\\u0000"}', headers=JSON),
        httpx.get(f"{runtime}/den/v1/cron/history", params={"limit": huge}, headers=AUTH),
        httpx.get(f"{runtime}/den/v1/cron/{'n' * 5000}/runs", headers=AUTH),
    ]
    assert [a.status_code for a in answers] == [400, 200, 200, 400, 400, 400, 422, 422, 400, 400, 200, 404]
    for answer in answers:
        assert answer.headers["content-type"].startswith("application/json")
    assert httpx.post(f"{runtime}/den/v1/memory", json={"text": "still writable"}, headers=AUTH).status_code == 201


def test_a_method_not_allowed_lists_every_method_of_the_path(runtime) -> None:
    response = httpx.request("PUT", f"{runtime}/den/v1/memory", headers=AUTH)
    assert response.status_code == 405 and response.headers["allow"] == "GET, POST"
    assert error_of(response)["type"] == "invalid_request_error"


# -- the gateway ----------------------------------------------------------------------------------


def test_the_gateway_refuses_a_large_body_and_what_openai_refuses(scripted_model, serve_gateway) -> None:
    gateway = serve_gateway()
    gateway.write({"dgw_bounds": {"name": "bounded", "model": {"provider": "openai", "name": "scripted",
                                                              "base_url": scripted_model.base_url}}})
    headers = {"Authorization": "Bearer dgw_bounds", "Content-Type": "application/json"}

    def post(raw: bytes) -> httpx.Response:
        return httpx.post(f"{gateway.url}/v1/chat/completions", content=raw, headers=headers, timeout=60)

    too_large = post(b'{"messages": [{"role": "user", "content": "' + b"x" * (33 * 1024 * 1024) + b'"}]}')
    assert too_large.status_code == 413 and error_of(too_large)["code"] == "request_too_large"
    assert "DEN_GATEWAY_MAX_REQUEST_BYTES" in error_of(too_large)["message"]
    for raw, param in ((b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}', "max_tokens"),
                       (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages.0.content")):
        refused = post(raw)
        assert refused.status_code == 400 and error_of(refused)["param"] == param
    assert post(b"\xff").status_code == 400
    assert post(b'{"messages": [{"role": "user", "content": "hi"}]}').status_code == 200
    # A NUL in what the agent built (a model wrote it) is the provider's to judge: forwarded.
    assert post(b'{"messages": [{"role": "user", "content": "a\\u0000b"}]}').status_code == 200
    embeddings = httpx.post(f"{gateway.url}/v1/embeddings", json={"input": ""}, headers=headers)
    assert embeddings.status_code == 400 and error_of(embeddings)["param"] == "input"


# -- memory: what a big message costs ----------------------------------------------------------------


def _kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc (peak RSS reset)")
def test_a_1mb_message_is_answered_without_the_agent_growing_past_64mib(tmp_path, scripted_model) -> None:
    """``python -m den.runtime`` (the container's command) with a million-token window, so the
    message is answered, not refused; its peak RSS is reset after a warm-up turn and read after
    the answer and the memory's work on it (fact extraction). Before the memory's bounds, the
    same message grew the agent by ~500 MiB (wordllama embedded it whole, twice)."""
    agent = agent_resource("rss-bot", base_url=scripted_model.base_url, context_window=1_000_000)
    (tmp_path / "agent.json").write_text(json.dumps(agent.manifest()))
    (tmp_path / "env.json").write_text(json.dumps({"DEN_API_TOKEN": TOKEN}))
    port = free_port()
    env = {**os.environ, "DEN_CONFIG": str(tmp_path / "agent.json"), "DEN_ENV_FILE": str(tmp_path / "env.json"),
           "DEN_HOST": "127.0.0.1", "DEN_PORT": str(port), "DEN_HOME_DIR": str(tmp_path / "home"),
           "DEN_LOG_LEVEL": "warning"}
    process = subprocess.Popen([sys.executable, "-m", "den.runtime"], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the runtime exited"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the runtime did not become ready"
            time.sleep(0.1)
        assert chat(url, "Hello, my name is Ada.").status_code == 200  # loads the embedder, warms up
        assert httpx.post(f"{url}/den/v1/memory", json={"text": "Ada likes tea."}, headers=AUTH).status_code == 201
        time.sleep(1)
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")
        before = _kib(process.pid, "VmRSS")
        calls = len(scripted_model.all_chat_bodies())
        answered = chat(url, words(MB))
        assert answered.status_code == 200
        deadline = time.monotonic() + 30
        while len(scripted_model.all_chat_bodies()) < calls + 2:  # the turn, then fact extraction
            assert time.monotonic() < deadline, "no fact extraction call"
            time.sleep(0.1)
        time.sleep(1)
        grown = (_kib(process.pid, "VmHWM") - before) / 1024
        assert grown < 64, f"the agent grew by {grown:.1f} MiB for a 1 MB message"
    finally:
        process.terminate()
        process.wait(timeout=15)
