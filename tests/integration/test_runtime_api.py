"""The runtime's HTTP API, end to end: the official OpenAI client -> runtime -> scripted model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.integration.conftest import (
    AUTH,
    TOKEN,
    ScriptedModel,
    agent_resource,
    free_port,
    is_memory_call,
)


@pytest.fixture
def runtime(scripted_model: ScriptedModel, serve_runtime) -> str:
    return serve_runtime(agent_resource(base_url=scripted_model.base_url))


def client_of(url: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)


def test_a_plain_completion_is_answered_by_the_agents_model_under_the_agents_name(runtime) -> None:
    answer = client_of(runtime).chat.completions.create(
        model="whatever-the-client-says", messages=[{"role": "user", "content": "ping"}]
    )
    assert answer.choices[0].message.content == "Hello from the scripted model. You said: ping"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "test-bot"
    assert answer.id.startswith("chatcmpl-")
    assert answer.usage.completion_tokens == 8 and answer.usage.prompt_tokens > 1


def test_a_streamed_completion_arrives_in_chunks_that_join_to_the_plain_answer(runtime) -> None:
    client = client_of(runtime)
    messages = [{"role": "user", "content": "stream please"}]
    plain = client.chat.completions.create(model="test-bot", messages=messages).choices[0].message.content
    chunks = list(client.chat.completions.create(
        model="test-bot", messages=messages, stream=True, stream_options={"include_usage": True}
    ))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1
    assert "".join(pieces) == plain
    assert {c.model for c in chunks} == {"test-bot"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 9


def test_the_model_gets_the_agentfile_prompt_sampling_and_every_request_message(runtime, scripted_model) -> None:
    conversation = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    client_of(runtime).chat.completions.create(model="x", messages=conversation, max_tokens=500)
    [body] = scripted_model.chat_bodies()
    system = body["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You are Test Bot.")
    assert "Tone: formal." in system["content"]
    assert body["messages"][1:] == conversation
    assert body["temperature"] == 0.3 and body["max_tokens"] == 123
    assert body["model"] == "scripted"


def test_the_system_prompt_reaches_the_model_verbatim(runtime) -> None:
    answer = client_of(runtime).chat.completions.create(
        model="test-bot", messages=[{"role": "user", "content": "ECHO SYSTEM"}]
    )
    assert answer.choices[0].message.content.startswith("You are Test Bot.\n\nTone: formal.")


def test_an_agent_with_the_default_personality_is_answered(scripted_model, serve_runtime) -> None:
    from den.api.resource import Agent

    agent = Agent.model_validate({"metadata": {"name": "plain"}, "spec": {"model": {
        "provider": "openai", "name": "scripted", "base_url": scripted_model.base_url}}})
    answer = client_of(serve_runtime(agent)).chat.completions.create(
        model="plain", messages=[{"role": "user", "content": "ECHO SYSTEM"}]
    )
    assert answer.choices[0].message.content.startswith("You are a helpful assistant.\n\nTone: neutral.")


def test_models_lists_the_agent_as_its_only_model(runtime) -> None:
    models = client_of(runtime).models.list()
    assert [m.id for m in models.data] == ["test-bot"]
    assert models.data[0].owned_by == "den"


def test_status_counts_requests_and_tokens(runtime) -> None:
    before = httpx.get(f"{runtime}/den/v1/status", headers=AUTH).json()
    assert before["requests"] == 0 and before["tokens"] == {"prompt": 0, "completion": 0, "total": 0}
    client = client_of(runtime)
    plain = client.chat.completions.create(model="test-bot", messages=[{"role": "user", "content": "one"}])
    list(client.chat.completions.create(model="test-bot", messages=[{"role": "user", "content": "two"}],
                                        stream=True))
    status = httpx.get(f"{runtime}/den/v1/status", headers=AUTH).json()
    assert status["name"] == "test-bot" and status["namespace"] == "default"
    assert status["model"] == "openai/scripted" and status["generation"] == 3
    assert status["uptime_seconds"] >= 0
    assert status["requests"] == 2
    assert status["tokens"]["completion"] == plain.usage.completion_tokens * 2
    assert status["tokens"]["prompt"] == plain.usage.prompt_tokens * 2
    assert status["tokens"]["total"] == status["tokens"]["prompt"] + status["tokens"]["completion"]


def test_a_body_that_is_not_json_is_a_400_not_a_500(runtime) -> None:
    response = httpx.post(f"{runtime}/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json", **AUTH})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "not valid JSON" in error["message"]


@pytest.mark.parametrize(("body", "mentions"), [
    ({"model": "x"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"messages": "hello"}, "messages"),
])
def test_a_malformed_request_is_a_400_naming_the_field(runtime, body: dict, mentions: str) -> None:
    response = httpx.post(f"{runtime}/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 400
    assert mentions in response.json()["error"]["message"]


def test_an_unreachable_model_is_a_502_with_an_openai_error(scripted_model, serve_runtime) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    runtime = serve_runtime(agent_resource(base_url=dead), env={"OPENAI_API_KEY": "sk-test-SECRET-123"})
    for stream in (False, True):
        response = httpx.post(f"{runtime}/v1/chat/completions", timeout=60, headers=AUTH,
                              json={"messages": [{"role": "user", "content": "hi"}], "stream": stream})
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["type"] == "upstream_error" and "model provider failed" in error["message"]
        assert "SECRET" not in response.text
    status = httpx.get(f"{runtime}/den/v1/status", headers=AUTH).json()
    assert status["requests"] == 2 and status["errors"] == 2


def test_health_answers_at_once_and_readiness_follows(runtime) -> None:
    assert httpx.get(f"{runtime}/healthz").json() == {"status": "ok"}
    deadline = time.monotonic() + 60
    while (ready := httpx.get(f"{runtime}/readyz")).status_code != 200:
        assert ready.status_code == 503 and ready.json() == {"status": "starting"}
        assert time.monotonic() < deadline, "the runtime never became ready"
        time.sleep(0.1)
    assert ready.json() == {"status": "ready"}


def test_a_request_id_is_returned_and_an_incoming_one_honoured(runtime) -> None:
    generated = httpx.get(f"{runtime}/healthz").headers["x-request-id"]
    assert len(generated) == 32
    given = httpx.get(f"{runtime}/healthz", headers={"X-Request-ID": "req-abc.123"})
    assert given.headers["x-request-id"] == "req-abc.123"
    odd = httpx.get(f"{runtime}/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert odd.headers["x-request-id"] != "bad id with spaces"


def test_the_provider_key_from_the_environment_is_used(scripted_model, serve_runtime) -> None:
    runtime = serve_runtime(agent_resource(base_url=scripted_model.base_url), env={"OPENAI_API_KEY": "sk-abc"})
    client_of(runtime).chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    from den.runtime.scripted_model import credential_fingerprint

    # The scripted model logs a fingerprint of the key it received, never the key itself.
    [entry] = [r for r in scripted_model.requests() if r["path"].endswith("/chat/completions")
               and not is_memory_call(r["body"])]
    assert entry["credential"] == credential_fingerprint("sk-abc")
    assert "sk-abc" not in json.dumps(entry)


@pytest.mark.slow
def test_python_m_den_runtime_serves_the_agent_and_never_logs_the_env_file(
    tmp_path: Path, scripted_model: ScriptedModel
) -> None:
    config = tmp_path / "agent.json"
    config.write_text(json.dumps(agent_resource(base_url=scripted_model.base_url).manifest()))
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"OPENAI_API_KEY": "sk-never-LOGGED-42", "MY_SETTING": "on",
                                    "DEN_API_TOKEN": TOKEN}))
    port = free_port()
    env = {**os.environ, "DEN_CONFIG": str(config), "DEN_ENV_FILE": str(env_file), "DEN_HOST": "127.0.0.1",
           "DEN_PORT": str(port), "DEN_HOME_DIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "den.runtime"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the runtime did not become ready"
            time.sleep(0.1)
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        answer = client_of(url).chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content.endswith("You said: hi")
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=15)
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert lines, "the runtime logged nothing"
    assert all({"ts", "level", "msg", "agent"} <= set(line) and line["agent"] == "test-bot" for line in lines)
    assert any(line["msg"] == "completion" and line.get("request_id") for line in lines)
    assert "sk-never-LOGGED-42" not in output
    assert process.returncode in (0, -15)


def test_python_m_den_runtime_with_a_missing_config_exits_with_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "DEN_CONFIG": str(tmp_path / "absent.json"), "DEN_ENV_FILE": str(tmp_path / "none")}
    done = subprocess.run([sys.executable, "-m", "den.runtime"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    [line] = done.stdout.splitlines()
    assert json.loads(line)["level"] == "error" and "absent.json: no such file" in line
