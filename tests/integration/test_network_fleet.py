"""A fleet of 100 filtered agents fits on one machine, and leaves nothing behind.

Docker's default address pools allow only a few dozen bridge networks; Den
puts every agent on its own /16 with a fixed address instead. The agents run
a sleeping image (this test is about the network objects, not the runtime:
100 Python runtimes would take minutes to start on two cores), so each agent
gets its network container, its address, its firewall and its entry in the
egress proxy's config exactly as a real one does.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import new_installation, remove_installation
from tests.integration.test_docker_lifecycle import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FLEET = 100
SLEEPER = "den-test-sleeper:latest"


@pytest.fixture
def sleeper(docker_client, runtime_image):
    """An image that only sleeps, as an unprivileged user (built from den-egress, which
    ``make image`` builds alongside the runtime)."""
    dockerfile = b'FROM den-egress:latest\nUSER 65534\nCMD ["sleep", "infinity"]\nLABEL den.test=fleet\n'
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=SLEEPER, rm=True)
    return SLEEPER


def test_a_hundred_filtered_agents_get_unique_addresses_and_are_cleaned_up(tmp_path, docker_client, sleeper) -> None:
    from den.operator.names import Installation
    from den.operator.network import Layout

    installation = Installation(new_installation())
    home, work = tmp_path / "home", tmp_path / "agents"
    home.mkdir()
    work.mkdir()
    env = {**os.environ, "DEN_HOME": str(home), "DEN_INSTALLATION": installation.id, "NO_COLOR": "1"}
    suffix = uuid.uuid4().hex[:5]
    names = [f"fleet-{suffix}-{i}" for i in range(FLEET)]
    for i, name in enumerate(names):
        body = {"name": name, "model": {"provider": "openai", "name": "m", "base_url": "http://127.0.0.1:9/v1"},
                "runtime": {"base": sleeper, "cpu": 0.1, "memory": "32m", "network": "filtered",
                            "allow": [f"a{i}.fleet.test"]}}
        (work / f"{name}.yaml").write_text(json.dumps(body))

    def den(*args: str):
        return subprocess.run([sys.executable, "-m", "den", *args], capture_output=True, text=True, env=env,
                              timeout=300)

    operator = subprocess.Popen([sys.executable, "-m", "den", "operator", "run", "--log-file",
                                 str(home / "operator.log")], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert den("apply", "-f", str(work)).returncode == 0

        def fleet_up():  # listings only: containers come and go while the fleet converges
            rows = [r for r in docker_client.api.containers(all=True, filters={"label": "den.dev/agent"})
                    if r["Labels"]["den.dev/agent"] in names]
            nets = [r for r in rows if r["Labels"].get("den.dev/component") == "net" and r["State"] == "running"]
            agents = [r for r in rows if r["Labels"].get("den.dev/component") != "net"]
            return (nets, agents) if len(nets) == FLEET and len(agents) == FLEET else None

        nets, agents = wait_until(fleet_up, 420, 2.0)
        addresses = {r["Labels"]["den.dev/address"] for r in nets}
        network_name = installation.network
        layout = Layout(docker_client.networks.get(network_name).attrs["Labels"]["den.dev/subnet"])
        assert len(addresses) == FLEET and all(layout.holds(a) for a in addresses)
        assert len([n for n in docker_client.networks.list(names=[network_name]) if n.name == network_name]) == 1
        # Every agent lives in its network container's namespace, and the proxy knows each one.
        assert all(r["HostConfig"]["NetworkMode"].startswith("container:") for r in agents)
        config = home / "egress" / "config" / "squid.conf"
        wait_until(lambda: config.exists() and all(a in config.read_text() for a in addresses), 60)
        assert all(f"a{i}.fleet.test" in config.read_text() for i in range(FLEET))

        deleted = den("delete", "agent", *names)
        assert deleted.returncode == 0, deleted.stderr

        def all_gone() -> bool:
            listing = docker_client.api.containers
            left = [r for r in listing(all=True, filters={"label": "den.dev/agent"})
                    if r["Labels"].get("den.dev/agent") in names]
            system = listing(all=True, filters={"label": f"den.dev/installation={installation.id}"})
            network = [n for n in docker_client.api.networks(names=[network_name]) if n["Name"] == network_name]
            return not left and not system and (not network or left_by_docker_bug())

        def left_by_docker_bug() -> bool:
            """Docker can keep an endpoint no container holds (moby/moby#42119), and then refuses
            to remove the network: Den must say so once and leave it, not retry forever."""
            from den.operator.store import Store

            if docker_client.networks.get(network_name).attrs.get("Containers"):
                return False
            with Store(home / "state.db") as store:
                return any(e.reason == "NetworkLeft" for e in store.events("den-egress", "den-system"))

        wait_until(all_gone, 300, 2.0)
    finally:
        den("operator", "stop")
        if operator.poll() is None:
            operator.kill()
        remove_installation(docker_client, installation.id)
        docker_client.images.remove(SLEEPER, force=True)
