"""Installations on one engine: each DEN_HOME has its own gateway, proxy, network and names.

Three installations share the engine here (as a demo's, a suite's and a second checkout's
would): two each run an agent called ``hello``, the third is an idle operator. None may stop,
replace or count another's objects. And an installation made before installations existed
(Den's short names, no installation label) is upgraded in place, memory and all.
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

from tests.conftest import new_installation, remove_installation
from tests.integration.test_docker_lifecycle import scripted, wait_until

__all__ = ["scripted"]  # a fixture used by name below

pytestmark = [pytest.mark.docker, pytest.mark.slow]


class Home:
    """One installation: a DEN_HOME, its id, and the real `den` command run in it."""

    def __init__(self, root: Path, installation: str | None) -> None:
        from den.operator.names import DEFAULT_INSTALLATION, Installation

        self.path = root
        self.path.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "DEN_HOME": str(root), "NO_COLOR": "1", "COLUMNS": "200"}
        self.env.pop("DEN_INSTALLATION", None)
        if installation:
            self.env["DEN_INSTALLATION"] = installation
        self.installation = Installation(installation or DEFAULT_INSTALLATION)

    def den(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "den", *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def agentfile(self, name: str, model_url: str) -> Path:
        body = {"name": name, "model": {"provider": "openai", "name": "scripted", "base_url": model_url},
                "runtime": {"cpu": 0.5, "memory": "256m", "network": "none"}}
        path = self.path / f"{name}.Agentfile"
        path.write_text(json.dumps(body))
        return path

    def ask(self, name: str, text: str) -> str:
        api = json.loads(self.den("api", name, "-o", "json").stdout)
        reply = httpx.post(f"{api['endpoint']}/v1/chat/completions", timeout=30,
                           headers={"Authorization": f"Bearer {api['token']}"},
                           json={"model": name, "messages": [{"role": "user", "content": text}]})
        assert reply.status_code == 200, reply.text
        return reply.json()["choices"][0]["message"]["content"]

    def ids(self, docker_client) -> dict[str, str]:
        """Its running containers and its network, by name -> id."""
        found = {c.name: c.id for c in docker_client.containers.list(
            filters={"label": f"den.dev/installation={self.installation.id}"})}
        network = docker_client.networks.get(self.installation.network)
        return {**found, f"network:{network.name}": network.id}

    def stop(self) -> None:
        self.den("operator", "stop")
        from den.operator.controller import OperatorLock

        pid = OperatorLock(self.path / "operator.lock").holder()
        if pid and pid > 0:
            os.kill(pid, 9)


@pytest.fixture
def homes(tmp_path: Path, docker_client, runtime_image):
    made: list[Home] = []

    def make(label: str, installation: str | None = "new") -> Home:
        home = Home(tmp_path / label, new_installation() if installation == "new" else installation)
        made.append(home)
        return home

    yield make
    for home in made:
        home.stop()
    for home in made:
        remove_installation(docker_client, home.installation.id)


def test_two_installations_each_run_hello_and_an_idle_operator_touches_neither(
        homes, docker_client, scripted) -> None:
    one, two, idle = homes("one"), homes("two"), homes("idle")
    operator = subprocess.Popen([sys.executable, "-m", "den", "operator", "run", "--log-file",
                                 str(idle.path / "operator.log")], env=idle.env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for home in (one, two):
            up = home.den("up", str(home.agentfile("hello", scripted["container_url"])))
            assert up.returncode == 0, up.stdout + up.stderr
        assert "You said: one" in one.ask("hello", "one")
        assert "You said: two" in two.ask("hello", "two")
        before = {"one": one.ids(docker_client), "two": two.ids(docker_client)}
        assert set(before["one"]) == {one.installation.container_name("hello"),
                                      one.installation.net_container_name("hello"), one.installation.gateway,
                                      one.installation.egress, f"network:{one.installation.network}"}
        assert not set(before["one"]) & set(before["two"])

        # The idle operator resyncs every 10 s: across two of its passes, both installations keep
        # every container and answer throughout.
        deadline, asks = time.monotonic() + 25, 0
        while time.monotonic() < deadline:
            asks += 1
            assert "You said: still" in one.ask("hello", "still")
            assert "You said: still" in two.ask("hello", "still")
            time.sleep(1)
        assert {"one": one.ids(docker_client), "two": two.ids(docker_client)} == before
        assert operator.poll() is None

        for home in (one, two):  # each status shows its own agent, gateway and installation
            status = json.loads(home.den("status", "-o", "json").stdout)
            assert [a["name"] for a in status["agents"]] == ["hello"]
            assert status["installation"] == home.installation.id
            assert status["gateway"]["name"] == home.installation.gateway
            assert status["gateway"]["phase"] == "Running"
        # Each gateway counts only its own installation's requests: one asks ten more times, and
        # two's ledger (a turn may cost it a memory call too, never more) does not see them.
        for _ in range(10):
            one.ask("hello", "more")
        asked = {"one": 2 + 10 + asks, "two": 1 + asks}
        used = {label: json.loads(h.den("status", "-o", "json").stdout)["agents"][0]["usage"]["requests"]
                for label, h in (("one", one), ("two", two))}
        assert used["one"] >= asked["one"]
        assert asked["two"] <= used["two"] <= 2 * asked["two"] < asked["one"] + asked["two"]

        destroyed = two.den("destroy", "hello", "--yes")
        assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
        wait_until(lambda: not docker_client.api.containers(  # a listing: they are going meanwhile
            all=True, filters={"label": f"den.dev/installation={two.installation.id}"}), 60, 0.5)
        wait_until(lambda: not docker_client.networks.list(names=[two.installation.network]), 30, 0.5)
        assert not docker_client.volumes.list(filters={"label": f"den.dev/installation={two.installation.id}",
                                                       "name": two.installation.volume_name("hello")})
        assert one.ids(docker_client) == before["one"]
        assert "You said: after" in one.ask("hello", "after")
    finally:
        operator.terminate()
        operator.wait(timeout=20)


def _default_installation_in_use(docker_client) -> bool:
    """Objects of this engine's default installation (or an earlier Den's): not the test's to take."""
    for container in docker_client.containers.list(all=True, filters={"label": "app.kubernetes.io/managed-by=den"}):
        if container.labels.get("den.dev/installation", "default") == "default":
            return True
    return any(n.name == "den" for n in docker_client.networks.list(names=["den"]))


def test_an_installation_from_before_installations_is_upgraded_and_remembers(
        homes, docker_client, runtime_image, scripted) -> None:
    if _default_installation_in_use(docker_client):
        pytest.skip("this engine has a default Den installation of its own; the upgrade test would share it")
    import sqlite3

    from den.operator.names import Installation

    name = f"up-{os.urandom(3).hex()}"
    old = Installation()  # the names an earlier Den used
    # An earlier Den's installation: its agent ran, learned something and went down.
    home = homes("old", installation="default")
    path = home.agentfile(name, scripted["container_url"])
    up = home.den("up", str(path))
    assert up.returncode == 0, up.stdout + up.stderr
    assert home.den("memory", name, "--add", "The upgrade keeps my memory.").returncode == 0
    assert home.den("down", name).returncode == 0
    home.stop()
    for component in ("gateway", "egress"):  # an earlier Den left its system parts by these names
        for container in docker_client.containers.list(all=True, filters={"name": f"^/den-{component}$"}):
            container.remove(force=True)
    # ... with no installation label on its volume (re-made unlabelled, same data) and a store
    # of schema 1 that has never heard of installations.
    volume = old.volume_name(name)
    legacy = {"den.dev/agent": name, "den.dev/namespace": "default", "den.dev/component": "agent",
              "app.kubernetes.io/managed-by": "den"}
    def copy(source: str, target: str) -> None:
        helper = docker_client.containers.run(
            runtime_image, ["sh", "-c", "cp -a /from/. /to/"], user="0", network_mode="none", detach=True,
            volumes={source: {"bind": "/from"}, target: {"bind": "/to"}}, tmpfs={"/den": ""})
        try:
            assert helper.wait(timeout=60)["StatusCode"] == 0, helper.logs()
        finally:
            helper.remove(force=True, v=True)

    docker_client.volumes.create(f"{volume}-copy", labels={"den.dev/installation": "default"})
    copy(volume, f"{volume}-copy")
    docker_client.volumes.get(volume).remove()
    docker_client.volumes.create(volume, labels=legacy)
    copy(f"{volume}-copy", volume)
    docker_client.volumes.get(f"{volume}-copy").remove()
    db = sqlite3.connect(home.path / "state.db")
    db.executescript("DROP TABLE settings; DELETE FROM den_migrations WHERE version > 1;")
    db.close()

    # The upgrade: this Den, with no DEN_INSTALLATION, on that home.
    home.env.pop("DEN_INSTALLATION")
    try:
        up = home.den("up", str(path))
        assert up.returncode == 0, up.stdout + up.stderr
        status = json.loads(home.den("status", "-o", "json").stdout)
        assert status["installation"] == "default"
        mounts = docker_client.containers.get(old.container_name(name)).attrs["Mounts"]
        assert [m["Name"] for m in mounts if m["Destination"] == "/den"] == [volume]
        assert "The upgrade keeps my memory." in home.den("memory", name).stdout
    finally:
        home.stop()
        for container in docker_client.containers.list(all=True, filters={"label": f"den.dev/agent={name}"}):
            container.remove(force=True)
        for leftover in docker_client.volumes.list(filters={"name": volume}):
            leftover.remove(force=True)
