"""The model gateway over real HTTP: official OpenAI client -> agent -> gateway -> scripted model.

The agent holds only its gateway token; the gateway holds the provider key,
picks the upstream from the agent's settings, meters every call in its
ledger and refuses calls over budget. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import json

import httpx
import pytest
from openai import OpenAI

from den.runtime.scripted_model import credential_fingerprint
from tests.integration.conftest import AUTH, TOKEN, ScriptedModel, agent_resource, is_memory_call

GATEWAY_TOKEN = "dengw_test-token"
KEY = "sk-gateway-only-3c9e"


def entry(scripted: ScriptedModel, agent: str = "test-bot", budget: dict | None = None, **model) -> dict:
    """One agent's line in the gateway's config, as the operator writes it."""
    settings = {"provider": "openai", "name": "scripted", "base_url": scripted.base_url,
                "temperature": 0.3, "max_tokens": 123, **model}
    return {"name": agent, "model": settings, "budget": budget or {}}


@pytest.fixture
def gateway(scripted_model: ScriptedModel, serve_gateway):
    started = serve_gateway()
    started.write({GATEWAY_TOKEN: entry(scripted_model)}, {"OPENAI_API_KEY": KEY})
    return started


def agent_via(gateway, serve_runtime, memory: dict | None = None, **model) -> str:
    """An agent whose only credentials are its API token and its gateway token."""
    env = {"DEN_API_TOKEN": TOKEN, "DEN_GATEWAY_URL": gateway.base_url, "DEN_GATEWAY_TOKEN": GATEWAY_TOKEN}
    agent = agent_resource(tools=["memo_write", "memo_search"], **model)
    if memory:
        spec = agent.spec.model_copy(update={"memory": agent.spec.memory.model_copy(update=memory)})
        agent = agent.model_copy(update={"spec": spec})
    return serve_runtime(agent, env=env)


def client_of(url: str, key: str = TOKEN) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def chat_requests(scripted: ScriptedModel) -> list[dict]:
    """The agent's turns (not its memory's background calls)."""
    return [r for r in scripted.requests() if r["path"].endswith("/chat/completions") and not is_memory_call(r["body"])]


def test_the_openai_client_through_agent_and_gateway_plain_streamed_and_with_tools(
        gateway, serve_runtime, scripted_model) -> None:
    # The agent's own Agentfile says nothing of the upstream: the gateway decides it.
    agent = agent_via(gateway, serve_runtime, memory={"fact_extraction": False})
    client = client_of(agent)
    plain = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "ping"}])
    assert plain.choices[0].message.content.endswith("You said: ping")
    assert plain.usage.completion_tokens == 8
    asked = 'TOOL:memo_write {"text": "through the gateway"}\nTOOL:memo_search {"query": "gateway"}'
    chunks = list(client.chat.completions.create(model="x", stream=True, messages=[{"role": "user", "content": asked}],
                                                 stream_options={"include_usage": True}))
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "through the gateway" in answer
    assert chunks[-1].usage.total_tokens > 0
    sent = chat_requests(scripted_model)
    assert len(sent) >= 4
    # Every call reached the model with the key only the gateway holds, and the Agentfile's settings.
    assert {r["credential"] for r in sent} == {credential_fingerprint(KEY)}
    assert all(r["body"]["temperature"] == 0.3 and r["body"]["max_tokens"] == 123 for r in sent)
    assert any(r["body"].get("tools") for r in sent) and any(r["body"].get("stream") for r in sent)
    status = httpx.get(f"{agent}/den/v1/status", headers=AUTH).json()
    assert status["usage"]["source"] == "gateway"
    assert status["usage"]["requests"] == len(sent)
    assert status["usage"]["tokens"]["total"] == sum(
        row["tokens"] for row in status["usage"]["models"].values())


def test_the_gateway_ignores_the_model_and_upstream_a_caller_asks_for(gateway, scripted_model) -> None:
    response = httpx.post(f"{gateway.base_url}/chat/completions", timeout=10,
                          headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"},
                          json={"model": "gpt-4o", "base_url": "http://127.0.0.1:1/v1", "api_base": "http://x",
                                "messages": [{"role": "user", "content": "hi"}], "temperature": 1.5})
    assert response.status_code == 200, response.text
    [sent] = chat_requests(scripted_model)
    assert sent["body"]["model"] == "scripted" and sent["body"]["temperature"] == 1.5
    assert sent["credential"] == credential_fingerprint(KEY)


@pytest.mark.parametrize("header", [None, "Bearer dengw_not-a-token", f"Bearer {KEY}"])
def test_a_call_without_a_known_gateway_token_is_401(gateway, scripted_model, header) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in (("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings"), ("GET", "/v1/models"),
                         ("GET", "/den/v1/usage")):
        response = httpx.request(method, f"{gateway.url}{path}", headers=headers, timeout=10,
                                 json={"messages": [{"role": "user", "content": "hi"}], "input": "x"})
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{gateway.url}/den/v1/ledger", headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"}).status_code == 401
    assert chat_requests(scripted_model) == []


def test_over_a_token_budget_the_agent_reports_the_refusal_and_the_ledger_survives_a_restart(
        scripted_model, serve_gateway, serve_runtime, tmp_path) -> None:
    data = tmp_path / "ledger-volume"
    first = serve_gateway(data=data)
    first.write({GATEWAY_TOKEN: entry(scripted_model, budget={"tokens_per_day": 5})}, {"OPENAI_API_KEY": KEY})
    agent = agent_via(first, serve_runtime, memory={"fact_extraction": False})  # its call would count too
    client = client_of(agent)
    assert client.chat.completions.create(model="x", messages=[{"role": "user", "content": "spend"}])
    refused = httpx.post(f"{agent}/v1/chat/completions", headers=AUTH, timeout=10,
                         json={"messages": [{"role": "user", "content": "more"}]})
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["type"] == "budget_exceeded"
    assert "runtime.budget.tokens_per_day is 5" in error["message"] and "test-bot" in error["message"]
    streamed = httpx.post(f"{agent}/v1/chat/completions", headers=AUTH, timeout=10,
                          json={"stream": True, "messages": [{"role": "user", "content": "more"}]})
    assert streamed.status_code == 429 and streamed.json()["error"]["type"] == "budget_exceeded"
    assert len(chat_requests(scripted_model)) == 1  # the refused calls never left the gateway
    [row] = first.ledger()["agents"]
    assert row["agent"] == "default/test-bot" and row["refused"] == 2 and row["over_budget"] is True
    assert row["tokens"]["total"] > 5 and row["budget"]["tokens_per_day"] == 5
    status = httpx.get(f"{agent}/den/v1/status", headers=AUTH).json()
    assert status["usage"]["over_budget"] is True and status["usage"]["refused"] == 2
    # A second gateway on the same volume (a restart) starts from what the first counted.
    second = serve_gateway(data=data)
    assert second.ledger()["agents"][0]["tokens"] == row["tokens"]
    again = httpx.post(f"{second.base_url}/chat/completions", timeout=10,
                       headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"},
                       json={"messages": [{"role": "user", "content": "after restart"}]})
    assert again.status_code == 429


def test_a_dollar_budget_is_priced_from_litellms_local_price_map(scripted_model, serve_gateway) -> None:
    gateway = serve_gateway()
    # gpt-4o-mini has a price in litellm's map; the scripted model answers for it at base_url.
    gateway.write({GATEWAY_TOKEN: entry(scripted_model, agent="priced", name="gpt-4o-mini",
                                        budget={"usd_per_day": 0.000001})}, {"OPENAI_API_KEY": KEY})
    headers = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
    body = {"messages": [{"role": "user", "content": "a question with a price " * 20}]}
    first = httpx.post(f"{gateway.base_url}/chat/completions", headers=headers, json=body, timeout=30)
    assert first.status_code == 200, first.text
    assert first.json()["usage"]["cost_usd"] > 0
    second = httpx.post(f"{gateway.base_url}/chat/completions", headers=headers, json=body, timeout=30)
    assert second.status_code == 429 and "usd_per_day" in second.json()["error"]["message"]
    [row] = gateway.ledger()["agents"]
    assert row["cost_usd"] > 0 and row["models"]["gpt-4o-mini"]["requests"] == 1


def test_a_rotated_key_reaches_the_next_call_without_a_restart(gateway, scripted_model) -> None:
    headers = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{gateway.base_url}/chat/completions", headers=headers, json=body).status_code == 200
    gateway.write({GATEWAY_TOKEN: entry(scripted_model)}, {"OPENAI_API_KEY": "sk-rotated-1d2e"})
    assert httpx.post(f"{gateway.base_url}/chat/completions", headers=headers, json=body).status_code == 200
    assert [r["credential"] for r in chat_requests(scripted_model)] == [
        credential_fingerprint(KEY), credential_fingerprint("sk-rotated-1d2e")]


def test_an_unreachable_provider_is_a_502_that_never_shows_the_key(scripted_model, serve_gateway,
                                                                  serve_runtime) -> None:
    from tests.conftest import free_port

    gateway = serve_gateway()
    dead = f"http://127.0.0.1:{free_port()}/v1?key={KEY}"
    gateway.write({GATEWAY_TOKEN: entry(scripted_model, base_url=dead)}, {"OPENAI_API_KEY": KEY})
    agent = agent_via(gateway, serve_runtime)
    response = httpx.post(f"{agent}/v1/chat/completions", headers=AUTH, timeout=30,
                          json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"
    assert KEY not in response.text and "cannot be reached" in response.text


def test_embeddings_and_models_are_served_for_the_calling_agent(gateway, scripted_model) -> None:
    client = OpenAI(base_url=gateway.base_url, api_key=GATEWAY_TOKEN, max_retries=0)
    vectors = client.embeddings.create(model="text-embedding-3-small", input=["one " * 100, "two " * 100])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) > 0
    [sent] = [r for r in scripted_model.requests() if r["path"].endswith("/embeddings")]
    assert sent["body"]["model"] == "text-embedding-3-small" and sent["credential"] == credential_fingerprint(KEY)
    assert [m.id for m in client.models.list()] == ["scripted"]
    # Counted and priced as the embedding model that was called, not as the agent's chat model.
    [row] = gateway.ledger()["agents"]
    assert row["models"]["text-embedding-3-small"]["requests"] == 1
    assert row["models"]["text-embedding-3-small"]["cost_usd"] > 0 and row["tokens"]["completion"] == 0


def test_litellm_translates_when_direct_forwarding_is_off(scripted_model, serve_gateway) -> None:
    gateway = serve_gateway(direct=False)
    gateway.write({GATEWAY_TOKEN: entry(scripted_model)}, {"OPENAI_API_KEY": KEY})
    client = OpenAI(base_url=gateway.base_url, api_key=GATEWAY_TOKEN, max_retries=0)
    plain = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "via litellm"}])
    assert plain.choices[0].message.content.endswith("You said: via litellm")
    chunks = list(client.chat.completions.create(
        model="x", stream=True, messages=[{"role": "user", "content": 'TOOL!:file_read {"path": "a"}'}],
        tools=[{"type": "function", "function": {"name": "file_read", "parameters": {"type": "object"}}}]))
    calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "file_read"
    assert {r["credential"] for r in chat_requests(scripted_model)} == {credential_fingerprint(KEY)}
    [row] = gateway.ledger()["agents"]
    assert row["requests"] == 2 and row["tokens"]["total"] > 0


def test_the_ledger_lists_every_agent_and_needs_the_admin_token(gateway, scripted_model) -> None:
    other = "dengw_other"
    gateway.write({GATEWAY_TOKEN: entry(scripted_model), other: entry(scripted_model, agent="other-bot")},
                  {"OPENAI_API_KEY": KEY})
    for token in (GATEWAY_TOKEN, other, other):
        httpx.post(f"{gateway.base_url}/chat/completions", headers={"Authorization": f"Bearer {token}"},
                   json={"messages": [{"role": "user", "content": "hi"}]}).raise_for_status()
    rows = {row["agent"]: row for row in gateway.ledger()["agents"]}
    assert rows["default/test-bot"]["requests"] == 1 and rows["default/other-bot"]["requests"] == 2
    assert json.dumps(rows).count(KEY) == 0
