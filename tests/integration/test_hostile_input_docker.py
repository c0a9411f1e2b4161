"""One request must never take an agent down: attacks from a token holder, against a real
container on its default limits (512 MB)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.test_docker_lifecycle import scripted, world

__all__ = ["scripted", "world"]  # fixtures used by name below

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MB = 1024 * 1024


def test_huge_messages_and_a_huge_memo_are_answered_or_refused_and_the_agent_never_restarts(
        den, world, docker_client) -> None:
    name, path = world["agentfile"](tools=["memo_write"], runtime={"memory": "512m"})
    assert den("up", str(path)).code == 0
    api = json.loads(den("api", name, "-o", "json").stdout)
    headers = {"Authorization": f"Bearer {api['token']}"}
    container = docker_client.containers.get(world["installation"].container_name(name))
    started = container.attrs["State"]["StartedAt"]

    def chat(content: str) -> httpx.Response:
        return httpx.post(f"{api['base_url']}/chat/completions", headers=headers, timeout=120,
                          json={"model": name, "messages": [{"role": "user", "content": content}]})

    for size in (1 * MB, 8 * MB, 32 * MB):  # ordinary words, a pasted log or document
        reply = chat("word " * (size // 5))
        assert reply.status_code == 200 or 400 <= reply.status_code < 500, (size, reply.status_code)
        assert "error" in reply.json() or reply.json()["choices"], size
        if reply.status_code >= 400:
            assert reply.json()["error"]["code"] in ("request_too_large", "context_length_exceeded")
    memo = httpx.post(f"{api['endpoint']}/den/v1/tools/memo_write", headers=headers, timeout=120,
                      json={"text": "note " * (MB // 5)})
    assert memo.status_code < 500, memo.text
    for bad, param in ((json.dumps({"messages": [{"role": "user", "content": "\ud800"}]}), "messages"),
                       (json.dumps({"messages": [{"role": "user", "content": "a\u0000b"}]}), "messages"),
                       (json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": -5}), "max_tokens"),
                       (json.dumps({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
                        "temperature")):
        refused = httpx.post(f"{api['base_url']}/chat/completions", timeout=30, content=bad,
                             headers={**headers, "Content-Type": "application/json"})
        assert refused.status_code == 400, (bad[:80], refused.text)
        assert refused.json()["error"]["param"].startswith(param)

    container.reload()
    assert container.attrs["State"]["StartedAt"] == started and not container.attrs["State"]["OOMKilled"]
    assert container.attrs["RestartCount"] == 0
    assert "You said: still here?" in chat("still here?").json()["choices"][0]["message"]["content"]
