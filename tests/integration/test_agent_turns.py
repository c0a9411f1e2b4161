"""What makes the runtime an agent, over real HTTP: sessions, checks, tokens, turn metadata."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from den.api.resource import Agent
from tests.conftest import serve_app
from tests.integration.conftest import AUTH, TOKEN, ScriptedModel, agent_resource


def with_spec(agent: Agent, **spec) -> Agent:
    data = agent.model_dump(mode="json")
    data["spec"].update(spec)
    return Agent.model_validate(data)


def ask(url: str, text: str, headers: dict | None = None, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": text}], **body},
                      headers={**AUTH, **(headers or {})}, timeout=30)


def test_a_named_session_continues_after_the_agent_restarts(scripted_model: ScriptedModel, tmp_path: Path) -> None:
    from den.runtime.app import create_app

    agent = agent_resource(base_url=scripted_model.base_url)
    with serve_app(create_app(agent, env={"DEN_API_TOKEN": TOKEN}, home=tmp_path)) as first:
        assert ask(first, "My name is Ada.", {"X-Den-Session": "s1"}).status_code == 200
    with serve_app(create_app(agent, env={"DEN_API_TOKEN": TOKEN}, home=tmp_path)) as second:
        scripted_model.clear()
        reply = ask(second, "What is my name?", user="s1")
        assert reply.status_code == 200
        sent = scripted_model.chat_bodies()[-1]["messages"]
        texts = [m.get("content") for m in sent]
        assert "My name is Ada." in texts and texts[-1] == "What is my name?"
        assert any(m["role"] == "assistant" for m in sent)
        status = httpx.get(f"{second}/den/v1/status", headers=AUTH).json()
        assert status["sessions"] == 1
    assert (tmp_path / ".den" / "sessions.db").exists()


def test_a_failing_check_makes_the_agent_revise_and_the_retry_limit_holds(scripted_model, serve_runtime) -> None:
    agent = with_spec(
        agent_resource(base_url=scripted_model.base_url),
        checks=[{"name": "cites-a-url", "description": "Cites a source URL.", "kind": "regex",
                 "pattern": "https?://", "max_retries": 2}],
    )
    url = serve_runtime(agent)
    scripted_model.clear()
    body = ask(url, "Tell me something.").json()
    meta = body["den"]
    assert meta["stop_reason"] == "checks_failed" and meta["revisions"] == 2
    assert [c["passed"] for c in meta["checks"]] == [False, False, False]
    bodies = scripted_model.chat_bodies()
    assert len(bodies) == 3
    assert "did not pass these checks" in bodies[-1]["messages"][-1]["content"]
    assert httpx.get(f"{url}/den/v1/status", headers=AUTH).json()["checks"]["failed"] == 3


def test_a_passing_check_lets_the_first_answer_out(scripted_model, serve_runtime) -> None:
    agent = with_spec(
        agent_resource(base_url=scripted_model.base_url),
        checks=[{"name": "greets", "description": "Greets.", "kind": "regex", "pattern": "^Hello"}],
    )
    url = serve_runtime(agent)
    meta = ask(url, "hi").json()["den"]
    assert meta["stop_reason"] == "stop" and meta["revisions"] == 0 and meta["checks"][0]["passed"]


def test_without_the_token_every_endpoint_but_health_is_401(scripted_model, serve_runtime) -> None:
    url = serve_runtime(agent_resource(base_url=scripted_model.base_url), env={"DEN_API_TOKEN": "t0ken"})
    assert ask(url, "hi").status_code == 401
    assert httpx.get(f"{url}/den/v1/status", headers=AUTH).status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{url}/healthz").status_code == 200
    for path in ("/docs", "/openapi.json", "/no/such/path"):
        assert httpx.get(f"{url}{path}").status_code == 401, path
    good = ask(url, "hi", {"Authorization": "Bearer t0ken"})
    assert good.status_code == 200 and "You said: hi" in good.json()["choices"][0]["message"]["content"]


def test_an_agent_with_no_token_fails_closed_on_every_route_but_health(scripted_model, tmp_path: Path) -> None:
    from den.runtime.app import create_app

    agent = agent_resource(base_url=scripted_model.base_url)
    data = agent.model_dump(mode="json")
    data["spec"]["tools"] = ["shell_exec"]
    pwned = tmp_path / "pwned"  # this test's own: a leftover from another run cannot fail it
    with serve_app(create_app(Agent.model_validate(data), env={}, home=tmp_path)) as url:
        ran = httpx.post(f"{url}/den/v1/tools/shell_exec", json={"command": f"touch {pwned}"})
        assert ran.status_code == 503 and "no credentials yet" in ran.json()["error"]["message"]
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/den/v1/status"),
                             ("GET", "/den/v1/memory"), ("GET", "/openapi.json"), ("GET", "/docs")):
            answered = httpx.request(method, f"{url}{path}", headers={"Authorization": "Bearer x"}, json={})
            assert answered.status_code == 503, (method, path)
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/readyz").status_code in (200, 503)
    assert not pwned.exists()


def test_a_streamed_turn_ends_with_its_den_metadata(scripted_model, serve_runtime) -> None:
    url = serve_runtime(agent_resource(base_url=scripted_model.base_url))
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30, headers=AUTH,
                      json={"stream": True, "messages": [{"role": "user", "content": "stream it"}]}) as response:
        events = [json.loads(line[5:]) for line in response.iter_lines()
                  if line.startswith("data:") and "[DONE]" not in line]
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in events if c.get("choices"))
    assert "You said: stream it" in text
    last = events[-1]
    assert last["den"]["type"] == "turn" and last["den"]["stop_reason"] == "stop"
    assert last["choices"][0]["finish_reason"] == "stop"


def test_the_openapi_document_describes_the_whole_api(scripted_model, serve_runtime) -> None:
    url = serve_runtime(agent_resource(base_url=scripted_model.base_url))
    assert httpx.get(f"{url}/openapi.json").status_code == 401
    paths = httpx.get(f"{url}/openapi.json", headers=AUTH).json()["paths"]
    for path in ("/v1/chat/completions", "/v1/models", "/den/v1/status", "/den/v1/memory",
                 "/den/v1/tools", "/den/v1/tools/{name}", "/den/v1/runs", "/healthz", "/readyz"):
        assert path in paths, path
