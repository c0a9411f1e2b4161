"""Memory in a real container: a fact told before `den down` is in the context after `den up`.

The agent runs the image's wordllama embedder and sqlite-vec (Debian's
Python loads the extension), with the scripted model behind the gateway.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.test_docker_lifecycle import scripted, wait_until, world

__all__ = ["scripted", "world"]  # fixtures used by name below

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def api_of(den, name: str) -> dict:
    return json.loads(den("api", name, "-o", "json").stdout)


def ask(api: dict, text: str, session: str) -> dict:
    response = httpx.post(f"{api['base_url']}/chat/completions", timeout=60,
                          headers={"Authorization": f"Bearer {api['token']}", "X-Den-Session": session},
                          json={"messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    return response.json()


def ready(api: dict) -> bool:
    try:
        return httpx.get(api["base_url"].removesuffix("/v1") + "/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def memory(api: dict, path: str) -> dict:
    root = api["base_url"].removesuffix("/v1")
    return httpx.get(f"{root}/den/v1/memory{path}", timeout=30,
                     headers={"Authorization": f"Bearer {api['token']}"}).json()


def test_a_fact_told_before_down_is_recalled_after_up_in_a_new_session(den, world, docker_client) -> None:
    name, path = world["agentfile"]()
    assert den("up", str(path)).code == 0
    api = api_of(den, name)
    ask(api, "Please note: my favourite drink is mate.", "before")
    [fact] = wait_until(lambda: memory(api, "/facts")["items"], timeout=60)
    stats = memory(api, "/stats")
    assert stats["vectors"] is True and stats["embedding_model"] == "wordllama"
    assert den("down", name).code == 0
    assert den("up", str(path)).code == 0
    api = api_of(den, name)
    # `den up` has been seen to return while the new container was still starting (connection
    # reset, empty log): wait for its own readiness before asking.
    wait_until(lambda: ready(api), timeout=60)
    log = f"{world['scripted']['host_url']}/requests"
    httpx.delete(log)
    try:
        answer = ask(api, "What should I drink this afternoon?", "after")
    except httpx.HTTPError as exc:
        found = docker_client.containers.list(all=True, filters={"label": f"den.dev/agent={name}"})
        detail = [(c.name, c.status, c.attrs["State"], c.logs(tail=40).decode(errors="replace")) for c in found]
        raise AssertionError(f"{exc}; the agent's containers: {detail}") from None
    bodies = [r["body"] for r in httpx.get(log).json() if r["path"].endswith("/chat/completions")
              and not r["body"]["messages"][0]["content"].startswith("DEN-")]
    system = bodies[-1]["messages"][0]["content"]
    assert f"[memory {fact['memory_id']}] user favourite drink mate" in system
    assert fact["memory_id"] in answer["den"]["memories"]
    assert "mate" not in json.dumps(bodies[-1]["messages"][1:])  # only memory brought it back
    hit = memory(api, "?q=beverage+mate")["items"][0]
    assert hit["id"] == fact["memory_id"] and "vector" in hit["via"]
