"""The model gateway on real Docker: keys live only in the gateway, budgets hold, it heals.

The agent's model calls go agent -> den-gateway (its per-agent gateway
token) -> the scripted model (the provider key). Each test has its own
DEN_HOME, operator and agents; the gateway, its volume and the network are
removed afterwards (the ``world`` fixture).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import docker.errors
import httpx
import pytest

from tests.integration.test_docker_lifecycle import (
    agent_json,
    is_ready,
    scripted,
    wait_until,
    world,
)

__all__ = ["scripted", "world"]  # fixtures used by name below

pytestmark = [pytest.mark.docker, pytest.mark.slow]

KEY_IN_AUTH = "sk-auth-KNOWNKEY-7f3a9c"
KEY_IN_ENV = "sk-env-KNOWNKEY-b41d0e"


def api_of(den, name: str) -> dict:
    return json.loads(den("api", name, "-o", "json").stdout)


def ask(api: dict, text: str, **body) -> httpx.Response:
    return httpx.post(f"{api['base_url']}/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {api['token']}"},
                      json={"messages": [{"role": "user", "content": text}], **body})


def test_provider_keys_live_in_the_gateway_only(den, world, den_home, docker_client) -> None:
    from openai import OpenAI

    from den.runtime.scripted_model import credential_fingerprint

    assert den("auth", "openai", "--stdin", input=KEY_IN_AUTH + "\n").code == 0
    name, path = world["agentfile"](tools=["shell_exec", "file_write", "file_read"],
                                    runtime={"env": {"OPENAI_API_KEY": "${OPENAI_API_KEY}", "MODE": "test"}})
    up = subprocess.run([sys.executable, "-m", "den", "up", str(path)], capture_output=True, text=True,
                        timeout=180, env={**os.environ, "DEN_HOME": str(den_home), "OPENAI_API_KEY": KEY_IN_ENV})
    assert up.returncode == 0, up.stdout + up.stderr
    api = api_of(den, name)
    client = OpenAI(base_url=api["base_url"], api_key=api["token"], max_retries=0)
    plain = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "ping"}])
    assert plain.choices[0].message.content.endswith("You said: ping")
    asked = 'TOOL:file_write {"path": "a.txt", "content": "through the gateway"}\nTOOL:file_read {"path": "a.txt"}'
    streamed = client.chat.completions.create(model=name, stream=True, messages=[{"role": "user", "content": asked}])
    assert "through the gateway" in "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    # The gateway's calls carry the key from den up's environment; nothing reaches the model without it.
    sent = [r for r in httpx.get(f"{world['scripted']['host_url']}/requests").json()
            if r["path"].endswith("/chat/completions")]
    assert len(sent) >= 4 and {r["credential"] for r in sent} == {credential_fingerprint(KEY_IN_ENV)}

    container = docker_client.containers.get(world["installation"].container_name(name))
    secrets = (KEY_IN_AUTH, KEY_IN_ENV, "KNOWNKEY")
    inspected = json.dumps(container.attrs)
    assert not any(s in inspected for s in secrets)
    attack = ("env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; cat /den/.den/env.json; "
              "grep -rIl KNOWNKEY / --exclude-dir=proc --exclude-dir=sys 2>/dev/null; echo done")
    ran = httpx.post(f"{api['endpoint']}/den/v1/tools/shell_exec", json={"command": attack, "timeout": 60},
                     headers={"Authorization": f"Bearer {api['token']}"}, timeout=90)
    assert ran.status_code == 200 and "done" in ran.json()["content"]
    assert "KNOWNKEY" not in ran.json()["content"]
    inside = den("exec", name, "--", "sh", "-c", "cat /den/.den/env.json")
    delivered = json.loads(inside.stdout)
    assert delivered["MODE"] == "test" and "OPENAI_API_KEY" not in delivered
    assert delivered["DEN_GATEWAY_URL"] == "http://den-gateway:8900/v1"
    exported = b"".join(container.export())
    assert b"KNOWNKEY" not in exported
    image_layers = subprocess.run(["docker", "save", container.image.id], capture_output=True, timeout=300).stdout
    assert image_layers and b"KNOWNKEY" not in image_layers
    for file in [den_home / "state.db", den_home / "operator.log", *den_home.glob("state.db-*")]:
        assert b"KNOWNKEY" not in file.read_bytes(), file
    inspected_cli = den("inspect", name)
    assert "KNOWNKEY" not in inspected_cli.stdout and "MODE" in inspected_cli.stdout
    gateway = docker_client.containers.get(world["installation"].gateway)
    keys = gateway.exec_run(["cat", "/etc/den-gateway/keys.json"]).output.decode()
    assert KEY_IN_ENV in keys
    assert not any(s in json.dumps(gateway.attrs["Config"]["Env"]) for s in secrets)


def test_a_budget_of_a_few_tokens_refuses_the_next_call_and_survives_a_gateway_restart(
        den, world, docker_client) -> None:
    name, path = world["agentfile"](runtime={"budget": {"tokens_per_day": 5}})
    assert den("up", str(path)).code == 0
    api = api_of(den, name)
    first = ask(api, "spend some tokens")
    assert first.status_code == 200, first.text
    refused = ask(api, "and some more")
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["type"] == "budget_exceeded" and "tokens_per_day" in error["message"]

    def gateway_row():
        status = json.loads(den("status", "-o", "json").stdout)
        row = next(a for a in status["agents"] if a["name"] == name)
        return row if row["usage"] and row["usage"]["refused"] >= 1 else None

    row = wait_until(gateway_row, timeout=20)
    assert row["usage"]["tokens"] > 5 and row["usage"]["overBudget"] is True
    assert "refused" in den("status").stdout
    wait_until(lambda: (agent_json(den, name)["status"].get("usage") or {}).get("refused", 0) >= 1, timeout=20)
    docker_client.containers.get(world["installation"].gateway).restart(timeout=5)
    wait_until(lambda: ask(api, "after the restart").status_code == 429, timeout=30, interval=0.5)


def test_a_removed_gateway_heals_and_agents_answer_again_without_a_restart(den, world, docker_client) -> None:
    name, path = world["agentfile"]()
    assert den("up", str(path)).code == 0
    api = api_of(den, name)
    assert ask(api, "before").status_code == 200
    agent_id = docker_client.containers.get(world["installation"].container_name(name)).id
    # A container of the user's from the gateway image carries the image's den.dev/component
    # label: Den must neither adopt it as its gateway nor remove it as a duplicate.
    mine = docker_client.containers.run("den-gateway:latest", ["sleep", "300"], detach=True,
                                        network_mode="none", labels={"den.test": "users-own"})
    try:
        docker_client.containers.get(world["installation"].gateway).remove(force=True)
        removed = time.monotonic()
        wait_until(lambda: ask(api, "after").status_code == 200, timeout=30, interval=0.3)
        healed_in = time.monotonic() - removed
        assert healed_in < 30
        assert docker_client.containers.get(world["installation"].container_name(name)).id == agent_id
        assert is_ready(den, name)
        running = docker_client.containers.list(filters={"label": "den.test=users-own"})
        assert [c.id for c in running] == [mine.id], "Den removed a container it did not make"
        assert docker_client.containers.get(world["installation"].gateway).labels["app.kubernetes.io/managed-by"] == "den"
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            mine.remove(force=True, v=True)
