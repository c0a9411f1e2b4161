"""Agents on the real Docker Engine: up, chat, down, up, destroy, drift, faults.

Every test gets its own DEN_HOME (so its own store and operator), a unique
agent name, and a scripted model server the container reaches as
host.docker.internal. Teardown stops the operator and removes everything
labelled with the test's agent names, even when the test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import remove_installation

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def gateway_ip(docker_client) -> str:
    from den.operator.docker_backend import host_gateway_ip

    return host_gateway_ip(docker_client)


@pytest.fixture
def scripted(docker_client):
    """The scripted model, listening on the Docker bridge gateway (this machine only)."""
    from den.runtime.scripted_model import create_scripted_app
    from tests.conftest import serve_app

    host = gateway_ip(docker_client)
    with serve_app(create_scripted_app(), host=host) as url:
        port = int(url.rsplit(":", 1)[1])
        yield {"host_url": url, "container_url": f"http://host.docker.internal:{port}/v1"}


@pytest.fixture
def world(den, den_home: Path, tmp_path: Path, docker_client, runtime_image, scripted, installation):
    """Names, an Agentfile writer and a cleanup that runs even when the test fails."""
    made: list[str] = []

    def agentfile(name: str | None = None, **overrides) -> tuple[str, Path]:
        name = name or f"t-{uuid.uuid4().hex[:8]}"
        made.append(name)
        model = {"provider": "openai", "name": "scripted", "base_url": scripted["container_url"],
                 "temperature": overrides.pop("temperature", 0.3), "max_tokens": 123}
        body = {
            "name": name,
            "model": model,
            "identity": {"system_prompt": "You are Test Bot."},
            "runtime": {"cpu": 0.5, "memory": "256m", "network": "host", **overrides.pop("runtime", {})},
            **overrides,
        }
        path = tmp_path / f"{name}.Agentfile"
        path.write_text(json.dumps(body))
        return name, path

    yield {"agentfile": agentfile, "scripted": scripted, "installation": installation}
    stop_operator(den, den_home)
    for name in made:  # containers a test made by hand under an agent's name
        for container in docker_client.containers.list(
                all=True, filters={"name": f"^/{installation.container_name(name)}$"}):
            container.remove(force=True, v=True)
    remove_installation(docker_client, installation.id)


def stop_operator(den, den_home: Path) -> None:
    """``den operator stop``; should that fail (say, a source tree caught mid-edit), the pid its
    lock file holds: an operator left behind would act on the next test's containers."""
    from den.operator.controller import OperatorLock

    den("operator", "stop")
    pid = OperatorLock(den_home / "operator.lock").holder()
    if pid and pid > 0:
        os.kill(pid, signal.SIGKILL)


def agent_json(den, name: str) -> dict:
    result = den("get", "agent", name, "-o", "json")
    assert result.code == 0, result.output
    return json.loads(result.stdout)


def wait_until(check, timeout: float = 30.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def is_ready(den, name: str, container_id: str | None = None, docker_client=None, container_name: str = "") -> bool:
    status = agent_json(den, name).get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
    if not ready:
        return False
    if container_id and docker_client:
        current = docker_client.containers.get(container_name)
        return current.id != container_id and current.status == "running"
    return True


def test_up_serves_the_openai_api_with_the_agentfile_settings(den, world, docker_client) -> None:
    from openai import OpenAI

    name, path = world["agentfile"]()
    up = den("up", str(path), "--timeout", "90")
    assert up.code == 0, up.output
    endpoint = agent_json(den, name)["status"]["endpoint"]
    assert endpoint.startswith("http://127.0.0.1:") and endpoint in up.stdout
    token = json.loads(den("api", name, "-o", "json").stdout)["token"]
    assert httpx.post(f"{endpoint}/v1/chat/completions", json={}).status_code == 401
    assert httpx.get(f"{endpoint}/healthz").status_code == 200
    client = OpenAI(base_url=f"{endpoint}/v1", api_key=token)
    answer = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "ping"}])
    assert "You said: ping" in answer.choices[0].message.content
    chunks = client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "stream please"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "You said: stream please" in text
    log = httpx.get(f"{world['scripted']['host_url']}/requests").json()
    sent = [r["body"] for r in log if r["path"].endswith("/chat/completions")
            and not str(r["body"]["messages"][0].get("content")).startswith("DEN-")]  # not the memory's calls
    assert sent and all(b["messages"][0] == {"role": "system", "content": sent[0]["messages"][0]["content"]} for b in sent)
    assert "You are Test Bot." in sent[0]["messages"][0]["content"]
    assert sent[0]["temperature"] == 0.3 and sent[0]["max_tokens"] == 123
    attrs = docker_client.containers.get(world["installation"].container_name(name)).attrs
    assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
    assert attrs["HostConfig"]["Memory"] == 256 * 1024 * 1024
    holder = docker_client.containers.get(world["installation"].net_container_name(name)).attrs
    assert attrs["HostConfig"]["NetworkMode"] == f"container:{holder['Id']}"  # its network container's namespace
    binding = holder["HostConfig"]["PortBindings"]["8800/tcp"][0]
    assert binding["HostIp"] == "127.0.0.1" and not attrs["HostConfig"]["PortBindings"]
    assert attrs["Config"]["User"] in ("10001", "den", "10001:10001")
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    status = json.loads(den("status", "-o", "json").stdout)
    row = next(a for a in status["agents"] if a["name"] == name)
    assert row["phase"] == "Running" and row["memory_limit"] == 256 * 1024 * 1024 and row["memory_used"] > 0
    assert status["operator"]["pid"]
    logs = den("logs", name, "--tail", "20")
    lines = [json.loads(line) for line in logs.stdout.splitlines() if line.startswith("{")]
    assert lines and all(line["agent"] == name for line in lines)
    inspected = den("inspect", name)
    assert inspected.code == 0 and "readOnlyRootfs: true" in inspected.stdout
    assert token not in inspected.stdout and "DEN_API_TOKEN" in inspected.stdout
    api = json.loads(den("api", name, "-o", "json").stdout)
    assert api["base_url"] == f"{endpoint}/v1" and token in api["curl"]


def test_down_keeps_the_volume_up_remembers_destroy_removes_everything(den, world, docker_client, den_home) -> None:
    name, path = world["agentfile"]()
    assert den("up", str(path)).code == 0
    wrote = den("exec", name, "--", "sh", "-c", "echo remembered > /den/note.txt")
    assert wrote.code == 0, wrote.output
    assert den("exec", name, "--", "sh", "-c", "exit 7").code == 7
    down = den("down", name)
    assert down.code == 0, down.output
    assert not docker_client.containers.list(all=True, filters={"label": f"den.dev/agent={name}"})
    assert docker_client.volumes.get(world["installation"].volume_name(name))
    assert den("up", str(path)).code == 0
    again = den("exec", name, "--", "cat", "/den/note.txt")
    assert again.code == 0 and again.stdout.strip() == "remembered"
    gone = den("destroy", name, "--yes")
    assert gone.code == 0, gone.output
    assert not docker_client.containers.list(all=True, filters={"label": f"den.dev/agent={name}"})
    assert not docker_client.volumes.list(filters={"label": f"den.dev/agent={name}"})
    assert den("get", "agent", name).code == 3


def test_drift_heals_and_a_spec_change_replaces_the_container(den, world, docker_client) -> None:
    name, path = world["agentfile"]()
    assert den("up", str(path)).code == 0
    first = docker_client.containers.get(world["installation"].container_name(name))
    first.remove(force=True)
    started = time.monotonic()
    wait_until(lambda: is_ready(den, name, first.id, docker_client, world["installation"].container_name(name)), timeout=10)
    assert time.monotonic() - started < 10
    second = docker_client.containers.get(world["installation"].container_name(name))
    second.stop(timeout=1)
    wait_until(lambda: docker_client.containers.get(world["installation"].container_name(name)).status == "running"
               and is_ready(den, name), timeout=10)
    _, changed = world["agentfile"](name, temperature=0.9)
    assert den("up", str(changed)).code == 0
    resource = agent_json(den, name)
    assert resource["metadata"]["generation"] == 2
    assert resource["status"]["observedGeneration"] == 2
    replaced = docker_client.containers.get(world["installation"].container_name(name))
    assert replaced.id != second.id
    assert sorted(c.name for c in docker_client.containers.list(all=True, filters={"label": f"den.dev/agent={name}"})) \
        == [world["installation"].container_name(name), world["installation"].net_container_name(name)]


def test_a_killed_operator_leaves_agents_serving_and_restarts_without_duplicates(den, world, docker_client, den_home) -> None:
    name, path = world["agentfile"]()
    assert den("up", str(path)).code == 0
    endpoint = agent_json(den, name)["status"]["endpoint"]
    pid = int((den_home / "operator.lock").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert httpx.get(f"{endpoint}/healthz").status_code == 200
    assert den("operator", "status").code == 1
    assert den("up", str(path)).code == 0
    assert den("operator", "status").code == 0
    assert sorted(c.name for c in docker_client.containers.list(all=True, filters={"label": f"den.dev/agent={name}"})) \
        == [world["installation"].container_name(name), world["installation"].net_container_name(name)]
    assert [a["metadata"]["name"] for a in json.loads(den("get", "agents", "-o", "json").stdout)["items"]] == [name]


def test_a_taken_port_moves_the_agent_to_the_next_free_one(den, world) -> None:
    holders = []
    port = 8800
    try:
        while len(holders) < 1:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen()
                holders.append(sock)
            except OSError:
                sock.close()
            port += 1
        taken = holders[0].getsockname()[1]
        name, path = world["agentfile"]()
        assert den("up", str(path)).code == 0
        endpoint = agent_json(den, name)["status"]["endpoint"]
        assert not endpoint.endswith(f":{taken}")
        assert httpx.get(f"{endpoint}/healthz").status_code == 200
        # Nothing probed the port before planning: Docker refused it at start and the agent moved.
        events = den("events", name).stdout
        if taken == 8800:
            assert "PortTaken" in events and "port 8800 on 127.0.0.1 is in use" in events
    finally:
        for sock in holders:
            sock.close()


def test_a_foreign_container_with_the_name_is_refused_not_hijacked(den, world, docker_client, den_home) -> None:
    name, path = world["agentfile"]()
    foreign = docker_client.containers.create("den-runtime:latest", name=world["installation"].container_name(name), command=["true"])
    result = den("up", str(path))
    assert result.code != 0 and "Den does not own it" in result.stderr
    assert den("get", "agent", name).code == 3
    foreign.reload()
    assert foreign.labels == {} or "den.dev/agent" not in foreign.labels


def test_invalid_input_and_unreachable_docker_change_nothing(den, world, den_home, tmp_path) -> None:
    bad = tmp_path / "bad.Agentfile"
    bad.write_text("name: Bad Name\nmodel: {provider: openai, name: x}\n")
    result = den("up", str(bad))
    assert result.code == 1 and "name" in result.stderr
    assert not (den_home / "state.db").exists()
    name, path = world["agentfile"]()
    env_result = subprocess.run(
        [sys.executable, "-m", "den", "up", str(path)], capture_output=True, text=True,
        env={**os.environ, "DEN_HOME": str(den_home), "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert env_result.returncode == 5
    assert "cannot reach Docker at unix:///nonexistent/docker.sock: is it running?" in env_result.stderr
    assert not (den_home / "state.db").exists()


def test_provider_keys_never_reach_the_store_the_log_or_docker_inspect(den, world, docker_client, den_home) -> None:
    assert den("auth", "openai", "--stdin", input="sk-test-SECRETKEY-123\n").code == 0
    assert oct((den_home / "credentials").stat().st_mode & 0o777) == "0o600"
    listed = den("auth", "list")
    assert "SECRETKEY" not in listed.stdout and "openai" in listed.stdout
    name, path = world["agentfile"](runtime={"env": {"MY_TOKEN": "${DEN_TEST_TOKEN}"}})
    os.environ["DEN_TEST_TOKEN"] = "tok-SECRET-456"
    try:
        assert den("up", str(path)).code == 0
    finally:
        del os.environ["DEN_TEST_TOKEN"]
    for file in (den_home / "state.db", den_home / "operator.log"):
        data = file.read_bytes()
        assert b"SECRETKEY" not in data and b"tok-SECRET-456" not in data, file
    for sidecar in den_home.glob("state.db-*"):
        assert b"SECRETKEY" not in sidecar.read_bytes()
    env = docker_client.containers.get(world["installation"].container_name(name)).attrs["Config"]["Env"]
    assert not any("SECRET" in item for item in env)
    inside = den("exec", name, "--", "python3", "-c",
                 "import json;e=json.load(open('/den/.den/env.json'));print(sorted(e), e['MY_TOKEN'])")
    # The agent gets its own variables and tokens; the provider key stays in the gateway.
    assert inside.stdout.strip() == ("['DEN_API_TOKEN', 'DEN_GATEWAY_TOKEN', 'DEN_GATEWAY_URL', 'MY_TOKEN'] "
                                     "tok-SECRET-456")
    for sidecar in den_home.glob("env/*.json"):
        assert oct(sidecar.stat().st_mode & 0o777) == "0o600"
    (den_home / "credentials").chmod(0o644)
    refused = den("auth", "list")
    assert refused.code != 0 and "readable by others" in refused.stderr


@pytest.fixture
def never_ready_image(docker_client, runtime_image):
    """The runtime image with a command that never serves: built from whichever base made it."""
    tag = f"den-test-never-ready:{uuid.uuid4().hex[:8]}"
    holder = docker_client.containers.create(runtime_image, command=["true"], labels={"den.dev/test": "1"})
    try:
        holder.commit(repository=tag.split(":")[0], tag=tag.split(":")[1],
                      changes=['CMD ["sleep", "3600"]'])
    finally:
        holder.remove(force=True, v=True)
    yield tag
    docker_client.images.remove(tag, force=True)


def test_up_that_never_gets_ready_times_out_with_conditions_and_events(den, world, never_ready_image) -> None:
    name, path = world["agentfile"](runtime={"base": never_ready_image})
    result = den("up", str(path), "--timeout", "6")
    assert result.code == 6, result.output
    assert f"agent {name} is not Ready after 6s" in result.stderr
    assert "Ready=False" in result.stderr and "event Normal StartContainer" in result.stderr
    assert "keeps exiting" in result.stderr or "waiting for /readyz" in result.stderr


def test_a_missing_image_is_refused_with_how_to_build_it(den, world, den_home) -> None:
    name, path = world["agentfile"](runtime={"base": "den-no-such-image:1"})
    result = den("up", str(path))
    assert result.code == 1 and "image den-no-such-image:1 not found" in result.stderr
    assert "make image" in result.stderr
    assert not (den_home / "state.db").exists()


def test_an_agent_in_a_container_uses_tools_and_answers_den_connect(den, world) -> None:
    from openai import OpenAI

    name, path = world["agentfile"](tools=["file_write", "file_read", "memo_write"])
    assert den("up", str(path)).code == 0
    api = json.loads(den("api", name, "-o", "json").stdout)
    client = OpenAI(base_url=api["base_url"], api_key=api["token"])
    asked = ('TOOL:file_write {"path": "hello.txt", "content": "written inside the den"}\n'
             'TOOL:file_read {"path": "hello.txt"}')
    answer = client.chat.completions.create(model=name, messages=[{"role": "user", "content": asked}])
    assert answer.choices[0].message.content == "Tool result: written inside the den"
    stored = den("exec", name, "--", "cat", "/den/workspace/hello.txt")
    assert stored.stdout == "written inside the den"
    streamed = client.chat.completions.create(model=name, stream=True,
                                              messages=[{"role": "user", "content": asked}])
    assert "written inside the den" in "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    connected = den("connect", name, "-m", "are you there?")
    assert connected.code == 0, connected.output
    assert connected.stdout.strip() == "Hello from the scripted model. You said: are you there?"
    remembered = den("memory", name, "--add", "Den agents remember.")
    assert remembered.code == 0 and "remembered" in remembered.stdout
    assert "Den agents remember." in den("memory", name).stdout


def operator_in_background(den_home: Path) -> subprocess.Popen:
    """`den operator run` as a GitOps setup would have it: started before anything is applied."""
    log = open(den_home / "operator.log", "a")  # noqa: SIM115 (closed with the process)
    den_home.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "-m", "den", "operator", "run"], stdout=log, stderr=log,
                               env={**os.environ, "DEN_HOME": str(den_home)}, start_new_session=True)
    wait_until(lambda: (den_home / "operator.lock").exists() and (den_home / "operator.lock").read_text(), 10)
    return process


def test_an_applied_agent_fails_closed_and_answers_with_the_token_den_api_shows(den, world, den_home) -> None:
    den_home.mkdir(parents=True, exist_ok=True)
    operator = operator_in_background(den_home)
    try:
        name, path = world["agentfile"](tools=["shell_exec"])
        assert den("apply", "-f", str(path)).code == 0
        wait_until(lambda: is_ready(den, name), timeout=60)
        endpoint = agent_json(den, name)["status"]["endpoint"]
        attack = httpx.post(f"{endpoint}/den/v1/tools/shell_exec", json={"command": "id"})
        assert attack.status_code == 401 and "uid=" not in attack.text
        assert httpx.post(f"{endpoint}/v1/chat/completions", json={}).status_code == 401
        token = json.loads(den("api", name, "-o", "json").stdout)["token"]
        assert token.startswith("den_")
        ran = httpx.post(f"{endpoint}/den/v1/tools/shell_exec", json={"command": "id -u"},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert ran.status_code == 200 and ran.json()["content"].strip().endswith("10001")
    finally:
        operator.terminate()
        operator.wait(timeout=15)


def test_a_key_rotated_with_den_auth_reaches_the_running_agent(den, world, den_home, docker_client) -> None:
    """The key lives in the gateway, which reloads it in place: the agent's next call carries the
    new key and the agent's container is not even replaced."""
    from den.runtime.scripted_model import credential_fingerprint

    assert den("auth", "openai", "--stdin", input="sk-first-KEY-1\n").code == 0
    name, path = world["agentfile"]()
    assert den("up", str(path)).code == 0
    api = json.loads(den("api", name, "-o", "json").stdout)
    headers = {"Authorization": f"Bearer {api['token']}"}
    log_url = f"{world['scripted']['host_url']}/requests"

    def ask_and_fingerprint() -> str | None:
        try:
            httpx.post(f"{api['base_url']}/chat/completions", headers=headers, timeout=30,
                       json={"messages": [{"role": "user", "content": "which key?"}]})
        except httpx.TransportError:
            return None
        sent = [r for r in httpx.get(log_url).json() if r["path"].endswith("/chat/completions")]
        return sent[-1]["credential"] if sent else None

    assert ask_and_fingerprint() == credential_fingerprint("sk-first-KEY-1")
    agent_id = docker_client.containers.get(world["installation"].container_name(name)).id
    assert den("auth", "openai", "--stdin", input="sk-second-KEY-2\n").code == 0
    wait_until(lambda: ask_and_fingerprint() == credential_fingerprint("sk-second-KEY-2"), timeout=60, interval=0.5)
    assert json.loads(den("api", name, "-o", "json").stdout)["token"] == api["token"]
    assert docker_client.containers.get(world["installation"].container_name(name)).id == agent_id
    assert not any(e for e in den("events", name).stdout.splitlines() if "config diverged" in e)


def test_an_unresolved_variable_is_a_pending_condition_naming_it(den, world, den_home, docker_client) -> None:
    name, path = world["agentfile"](runtime={"env": {"SEARCH_KEY": "${DEN_TEST_UNSET_VARIABLE}"}})
    os.environ.pop("DEN_TEST_UNSET_VARIABLE", None)
    result = den("up", str(path), "--timeout", "30")
    assert result.code != 0 and "${DEN_TEST_UNSET_VARIABLE}" in result.stderr
    status = agent_json(den, name)["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert status["phase"] == "Pending" and ready["reason"] == "MissingVariable"
    assert "DEN_TEST_UNSET_VARIABLE" in ready["message"]
    assert not docker_client.containers.list(all=True, filters={"label": f"den.dev/agent={name}"})


def test_a_container_removed_while_no_operator_runs_is_not_shown_running(den, world, den_home, docker_client) -> None:
    name, path = world["agentfile"]()
    assert den("up", str(path)).code == 0
    stop_operator(den, den_home)
    docker_client.containers.get(world["installation"].container_name(name)).remove(force=True)
    listed = den("get", "agents").stdout
    row = next(line for line in listed.splitlines() if line.startswith(name))
    assert "Unknown (operator not running, last seen" in row, listed
    status = json.loads(den("status", "-o", "json").stdout)
    assert status["agents"][0]["phase"] == "Unknown" and "operator not running" in status["agents"][0]["stale"]
    assert den("up", str(path)).code == 0  # starts the operator, which heals it
    assert agent_json(den, name)["status"]["phase"] == "Running"
    assert "Unknown" not in den("get", "agents").stdout
