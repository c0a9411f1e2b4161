"""The Docker backend: one snapshot to observe, one Docker API call per operation.

Everything Den owns carries the ``den.dev/agent`` label; nothing is found by
name alone. The docker SDK is imported lazily.
"""

from __future__ import annotations

import io
import json
import socket
import tarfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

from den.api.errors import BackendUnavailable, DenError
from den.api.resource import Agent
from den.operator import names
from den.operator.plan import (
    CONTAINER_PORT,
    Action,
    DesiredContainer,
    Observed,
    ObservedContainer,
    Operation,
)

RUNTIME_UID = 10001
CONFIG_DIR = "/den/.den"


class PortTaken(DenError):
    """The host port was taken between choosing it and starting the container."""


def _docker_host() -> str:
    import os

    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def connect() -> Any:
    """A docker client that has answered a ping, or :class:`BackendUnavailable`."""
    try:
        import docker

        client = docker.from_env(timeout=60)
        client.ping()
        return client
    except Exception as exc:  # the SDK raises several unrelated types here
        raise BackendUnavailable(
            f"cannot reach Docker at {_docker_host()}: is it running? ({type(exc).__name__})",
            hint="start the Docker Engine (e.g. sudo systemctl start docker) or set DOCKER_HOST",
        ) from None


def _tar(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        folder = tarfile.TarInfo(".den")
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o700
        folder.uid = folder.gid = RUNTIME_UID
        folder.mtime = int(time.time())
        archive.addfile(folder)
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(f".den/{name}")
            info.size = len(data)
            info.mode = mode
            info.uid = info.gid = RUNTIME_UID
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class DockerBackend:
    """Agents as containers on the local Docker Engine."""

    def __init__(self, client: Any | None = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect()
        return self._client

    # -- observe ----------------------------------------------------------------

    def observe(self, agent: Agent) -> Observed:
        import docker.errors

        client = self.client
        found = client.containers.list(
            all=True,
            filters={"label": [f"{names.LABEL_AGENT}={agent.name}", f"{names.LABEL_NAMESPACE}={agent.namespace}"]},
        )
        containers = tuple(self._observed(c) for c in found)
        name = names.container_name(agent.name, agent.namespace)
        foreign = False
        if not any(c.name == name for c in containers):
            try:
                client.containers.get(name)
                foreign = True
            except docker.errors.NotFound:
                pass
        try:
            client.volumes.get(names.volume_name(agent.name, agent.namespace))
            volume = True
        except docker.errors.NotFound:
            volume = False
        try:
            image_id = client.images.get(agent.spec.runtime.base).id
        except docker.errors.ImageNotFound:
            image_id = None
        return Observed(containers=containers, volume_exists=volume, image_id=image_id, foreign_container=foreign)

    @staticmethod
    def _observed(container: Any) -> ObservedContainer:
        attrs = container.attrs
        state = attrs.get("State", {})
        port = None
        bindings = (attrs.get("HostConfig", {}).get("PortBindings") or {}).get(f"{CONTAINER_PORT}/tcp") or []
        if bindings and bindings[0].get("HostPort"):
            port = int(bindings[0]["HostPort"])
        return ObservedContainer(
            id=container.id,
            name=container.name,
            running=bool(state.get("Running")) and not state.get("Restarting"),
            status=state.get("Status", "unknown"),
            labels=dict(container.labels or {}),
            host_port=port,
            started_at=state.get("StartedAt"),
            restart_count=int(attrs.get("RestartCount", 0) or 0),
        )

    def used_ports(self, *, exclude_agent: Agent | None = None) -> set[int]:
        """Host ports already given to other Den containers (running or not)."""
        used: set[int] = set()
        for container in self.client.containers.list(all=True, filters={"label": names.LABEL_AGENT}):
            labels = container.labels or {}
            if exclude_agent is not None and (
                labels.get(names.LABEL_AGENT) == exclude_agent.name
                and labels.get(names.LABEL_NAMESPACE) == exclude_agent.namespace
            ):
                continue
            port = self._observed(container).host_port
            if port:
                used.add(port)
        return used

    @staticmethod
    def port_free(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    # -- execute ----------------------------------------------------------------

    def execute(
        self, operation: Operation, agent: Agent, desired: DesiredContainer, env: Mapping[str, str]
    ) -> None:
        """Carry out one operation with one Docker API call (plus the config copy on create)."""
        import docker.errors

        client = self.client
        if operation.action == Action.create_volume:
            client.volumes.create(
                name=desired.volume,
                labels={
                    names.LABEL_AGENT: agent.name,
                    names.LABEL_NAMESPACE: agent.namespace,
                    names.LABEL_MANAGED_BY: names.MANAGED_BY,
                },
            )
        elif operation.action == Action.create_container:
            self._create(agent, desired, env)
        elif operation.action == Action.start_container:
            container = client.containers.get(desired.name)
            try:
                container.start()
            except docker.errors.APIError as exc:
                text = str(exc).lower()
                if "already allocated" in text or "address already in use" in text:
                    container.remove(force=True)
                    raise PortTaken(f"port {desired.port} is taken") from None
                raise
        elif operation.action == Action.remove_container:
            target = operation.target.split(":", 1)[1]
            name, _, short_id = target.partition("#")
            try:
                client.containers.get(short_id or name).remove(force=True)
            except docker.errors.NotFound:
                pass
        elif operation.action == Action.remove_volume:
            try:
                client.volumes.get(desired.volume).remove(force=True)
            except docker.errors.NotFound:
                pass

    def _create(self, agent: Agent, desired: DesiredContainer, env: Mapping[str, str]) -> None:
        manifest = agent.manifest(with_status=False)
        manifest["metadata"].pop("annotations", None)
        container = self.client.containers.create(
            image=desired.image,
            name=desired.name,
            labels=desired.labels,
            detach=True,
            ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", desired.port)},
            volumes={desired.volume: {"bind": "/den", "mode": "rw"}},
            nano_cpus=int(desired.cpu * 1_000_000_000),
            mem_limit=f"{desired.memory_mb}m",
            memswap_limit=f"{desired.memory_mb}m",
            pids_limit=512,
            restart_policy={"Name": "unless-stopped"},
            extra_hosts={"host.docker.internal": "host-gateway"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            tmpfs={"/tmp": "rw,size=64m"},
            environment={
                "DEN_CONFIG": f"{CONFIG_DIR}/agent.json",
                "DEN_ENV_FILE": f"{CONFIG_DIR}/env.json",
                "DEN_PORT": str(CONTAINER_PORT),
                "HOME": "/den",
            },
            hostname=agent.name,
        )
        files = {
            "agent.json": (json.dumps(manifest, indent=2).encode(), 0o644),
            "env.json": (json.dumps(dict(env)).encode(), 0o600),
        }
        container.put_archive("/den", _tar(files))

    # -- facts for the CLI --------------------------------------------------------

    def container(self, agent: Agent) -> Any | None:
        import docker.errors

        try:
            found = self.client.containers.get(names.container_name(agent.name, agent.namespace))
        except docker.errors.NotFound:
            return None
        labels = found.labels or {}
        return found if labels.get(names.LABEL_AGENT) == agent.name else None

    def stats(self, agent: Agent) -> dict[str, Any] | None:
        """CPU %, memory used/limit and uptime of the agent's running container."""
        container = self.container(agent)
        if container is None or container.status != "running":
            return None
        raw = container.stats(stream=False)
        cpu = raw.get("cpu_stats", {})
        pre = raw.get("precpu_stats", {})
        cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
        system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        cpus = cpu.get("online_cpus") or 1
        percent = (cpu_delta / system_delta) * cpus * 100 if system_delta > 0 and cpu_delta > 0 else 0.0
        memory = raw.get("memory_stats", {})
        used = memory.get("usage", 0) - (memory.get("stats", {}) or {}).get("inactive_file", 0)
        return {
            "cpu_percent": round(percent, 1),
            "memory_used": max(0, used),
            "memory_limit": memory.get("limit", 0),
            "started_at": container.attrs.get("State", {}).get("StartedAt"),
        }

    def logs(self, agent: Agent, *, follow: bool, tail: int | None) -> Iterator[bytes]:
        container = self.container(agent)
        if container is None:
            raise DenError(f"agent {agent.name} has no container (is it up?)", hint="den up … or den status")
        return container.logs(stream=True, follow=follow, tail=tail if tail is not None else "all")


def host_gateway_ip(client: Any | None = None) -> str:
    """The host's address on Docker's default bridge: where ``host.docker.internal`` points.

    Docker reports it as the bridge's IPAM gateway; some engines leave that
    out, and then it is the first address of the bridge's subnet.
    """
    import ipaddress

    client = client or connect()
    config = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    return str(next(ipaddress.ip_network(config["Subnet"], strict=False).hosts()))
