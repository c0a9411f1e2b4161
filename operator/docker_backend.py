"""The Docker backend: one snapshot to observe, one Docker API call per operation.

Everything Den owns carries the ``den.dev/agent`` label; nothing is found by
name alone. The docker SDK is imported lazily. Implements
:class:`den.operator.backend.Backend`.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from den.api.contract import CONFIG_DIR, CONFIG_FILE, CONTAINER_PORT, ENV_FILE, HOME_DIR
from den.api.errors import BackendUnavailable, DenError
from den.api.resource import Agent
from den.operator import names
from den.operator.backend import ContainerFacts, ExecResult, PortTaken, StaleEndpoints, Stats
from den.operator.network import RULES_LOADED, Layout, choose_subnet, host_routes, netns_command
from den.operator.plan import (
    Action,
    DesiredContainer,
    DesiredGateway,
    DesiredNetContainer,
    Observed,
    ObservedContainer,
    ObservedGateway,
    Operation,
)

RUNTIME_UID = 10001
#: Serialises network creation among the operator's workers (see DockerBackend._create_network).
_NETWORK_LOCK = threading.Lock()
#: How long a network container may take to load its rules.
RULES_TIMEOUT = 20.0


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
    folder_name = CONFIG_DIR.removeprefix(HOME_DIR + "/")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        folder = tarfile.TarInfo(folder_name)
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o700
        folder.uid = folder.gid = RUNTIME_UID
        folder.mtime = int(time.time())
        archive.addfile(folder)
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path.removeprefix(HOME_DIR + "/"))
            info.size = len(data)
            info.mode = mode
            info.uid = info.gid = RUNTIME_UID
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _made_by_den(component: str, installation: names.Installation) -> list[str]:
    """Label filters for the containers an installation made of a component. The images carry
    ``den.dev/component`` too (a container inherits its image's labels: a ``docker build``
    step or a ``docker run den-gateway``), so only the labels Den sets at creation tell."""
    return [f"{names.LABEL_COMPONENT}={component}", f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}",
            *installation.label_filter]


def _host_port(attrs: Mapping[str, Any]) -> int | None:
    bindings = (attrs.get("HostConfig", {}).get("PortBindings") or {}).get(f"{CONTAINER_PORT}/tcp") or []
    if bindings and bindings[0].get("HostPort"):
        return int(bindings[0]["HostPort"])
    return None


def _is_port_conflict(error: Exception) -> bool:
    text = str(error).lower()
    return "already allocated" in text or "address already in use" in text


class DockerBackend:
    """One installation's agents as containers on the local Docker Engine. It observes, adopts
    and removes only what carries its own installation label (:class:`names.Installation`)."""

    kind = "docker"

    def __init__(self, client: Any | None = None, installation: names.Installation | None = None,
                 image_pins: Callable[[], Mapping[str, str]] | None = None) -> None:
        self._client = client
        self.installation = installation or names.Installation()
        #: System images ``den up`` pinned (tag -> id), read on every observation.
        self.image_pins = image_pins or dict

    def system_image(self, tag: str) -> str | None:
        """The id of a system image (gateway, egress): the pinned one while it exists, else the tag's."""
        pinned = self.image_pins().get(tag)
        if pinned and self.image_id(pinned) == pinned:
            return pinned
        return self.image_id(tag)

    def _containers(self, filters: list[str], *, running_only: bool = False) -> list[Any]:
        """This installation's containers matching label filters (inspected)."""
        found = self.client.containers.list(all=not running_only, filters={"label": filters}, ignore_removed=True)
        return [c for c in found if self.installation.owns(c.labels)]

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect()
        return self._client

    def check(self) -> None:
        self.client  # noqa: B018 (connect() raises BackendUnavailable with a clear message)

    # -- observe ----------------------------------------------------------------

    def observe(self, agent: Agent) -> Observed:
        """One sparse listing of Den's agent containers (this agent's, and the ports and
        addresses of the others, from their labels), then only this agent's own containers
        inspected; the volume, the images, the network: everything the planner needs."""
        import docker.errors

        client = self.client
        installation = self.installation
        mine, nets, used, addresses = [], [], set(), set()
        for row in client.api.containers(all=True, filters={"label": names.LABEL_AGENT}):
            labels = row.get("Labels") or {}
            is_net = labels.get(names.LABEL_COMPONENT) == names.COMPONENT_NET
            ours = installation.owns(labels)
            if (ours and labels.get(names.LABEL_AGENT) == agent.name
                    and labels.get(names.LABEL_NAMESPACE, "default") == agent.namespace):
                try:
                    container = client.containers.get(row["Id"])
                except docker.errors.NotFound:
                    continue
                (nets if is_net else mine).append(self._observed(container))
                continue
            for port in row.get("Ports") or []:  # host ports are the engine's: every installation's count
                if port.get("PublicPort") and port.get("PrivatePort") == CONTAINER_PORT:
                    used.add(int(port["PublicPort"]))
            if ours and is_net and labels.get(names.LABEL_ADDRESS):
                addresses.add(labels[names.LABEL_ADDRESS])
        name = installation.container_name(agent.name, agent.namespace)
        foreign = False
        if not any(c.name == name for c in mine):
            try:
                client.containers.get(name)
                foreign = True
            except docker.errors.NotFound:
                pass
        try:
            client.volumes.get(installation.volume_name(agent.name, agent.namespace))
            volume = True
        except docker.errors.NotFound:
            volume = False
        layout, stale, exists = self.network_state()
        return Observed(containers=tuple(mine), volume_exists=volume, image_id=self.agent_image(agent),
                        foreign_container=foreign, used_ports=frozenset(used), network_exists=exists,
                        layout=layout, network_stale=stale, net_containers=tuple(nets),
                        used_addresses=frozenset(addresses), net_image_id=self.system_image(names.EGRESS_IMAGE),
                        installation=installation)

    def agent_image(self, agent: Agent) -> str | None:
        """The image id the agent runs: the one ``den up`` pinned (while it names the same base and
        the image exists), else what its base resolves to now."""
        base = agent.spec.runtime.base
        pinned = (agent.metadata.annotations or {}).get(names.ANNOTATION_IMAGE, "")
        name, _, image_id = pinned.rpartition("@")
        if name == base and image_id.startswith("sha256:") and self.image_id(image_id) == image_id:
            return image_id
        return self.image_id(base)

    def image_id(self, image: str) -> str | None:
        import docker.errors

        try:
            return self.client.images.get(image).id
        except docker.errors.ImageNotFound:
            return None

    def _network_exists(self, name: str) -> bool:
        return any(n.name == name for n in self.client.networks.list(names=[name]))

    def network_state(self) -> tuple[Layout | None, bool, bool]:
        """(layout, stale, exists) of Den's network: stale when a network of that name was
        made without Den's subnet (an earlier Den): the planner replaces it."""
        network = self.installation.network
        found = [n for n in self.client.networks.list(names=[network]) if n.name == network]
        if not found:
            return None, False, False
        labels = found[0].attrs.get("Labels") or {}
        subnet = labels.get(names.LABEL_SUBNET)
        if not subnet:
            return None, True, True
        return Layout(subnet), False, True

    def observe_gateway(self) -> ObservedGateway:
        """The gateway's container(s), volume, network and image, in one snapshot."""
        return self.observe_system("gateway", names.GATEWAY_IMAGE, self.installation.gateway_volume)

    def observe_system(self, component: str, image: str, volume: str | None = None) -> ObservedGateway:
        """A system component's container(s), volume, image and Den's network."""
        import docker.errors

        client = self.client
        found = self._containers(_made_by_den(component, self.installation))
        volume_exists = False
        if volume:
            try:
                client.volumes.get(volume)
                volume_exists = True
            except docker.errors.NotFound:
                pass
        layout, stale, exists = self.network_state()
        return ObservedGateway(containers=tuple(self._observed(c) for c in found), volume_exists=volume_exists,
                               network_exists=exists, image_id=self.system_image(image), layout=layout,
                               network_stale=stale, installation=self.installation)

    def net_containers(self) -> list[dict[str, str]]:
        """Every agent's network container, as its labels (address, policy, allowlist): one
        sparse listing, no inspection (the egress proxy's config is made from these)."""
        rows = self.client.api.containers(
            all=True, filters={"label": _made_by_den(names.COMPONENT_NET, self.installation)})
        return [dict(row.get("Labels") or {}) for row in rows if self.installation.owns(row.get("Labels"))]

    def den_containers_on_network(self) -> int:
        """How many containers are attached to Den's network (it is removed only when none)."""
        import docker.errors

        try:
            network = self.client.networks.get(self.installation.network)
        except docker.errors.NotFound:
            return 0
        return len(network.attrs.get("Containers") or {})

    def gateway_endpoint(self) -> str | None:
        """The gateway's API on 127.0.0.1 (for the CLI), when its container runs."""
        found = self._containers(_made_by_den("gateway", self.installation), running_only=True)
        for container in found:
            ports = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(
                f"{names.GATEWAY_PORT}/tcp") or []
            if ports and ports[0].get("HostPort"):
                return f"http://127.0.0.1:{ports[0]['HostPort']}"
        return None

    @staticmethod
    def _observed(container: Any) -> ObservedContainer:
        attrs = container.attrs
        state = attrs.get("State", {})
        return ObservedContainer(
            id=container.id,
            name=container.name,
            running=bool(state.get("Running")) and not state.get("Restarting"),
            status=state.get("Status", "unknown"),
            labels=dict(container.labels or {}),
            host_port=_host_port(attrs),
            started_at=state.get("StartedAt"),
            restart_count=int(attrs.get("RestartCount", 0) or 0),
        )

    # -- execute ----------------------------------------------------------------

    def execute(self, operation: Operation) -> None:
        """Carry out one operation with one Docker API call (plus the config copy on create,
        and the wait for a network container's rules on start)."""
        import docker.errors

        client = self.client
        desired = operation.container
        if operation.action == Action.create_network:
            self._create_network(operation.name)
        elif operation.action == Action.remove_network:
            self._remove_network(operation.name)
        elif operation.action == Action.create_volume:
            assert desired is not None, "CreateVolume carries the desired container (for its labels)"
            owner = (names.LABEL_AGENT, names.LABEL_NAMESPACE, names.LABEL_COMPONENT)
            client.volumes.create(name=operation.name,
                                  labels={**{k: desired.labels[k] for k in owner if k in desired.labels},
                                          **self.installation.labels})
        elif operation.action == Action.create_container:
            assert desired is not None, "CreateContainer carries the desired container"
            if isinstance(desired, DesiredGateway):
                self._create_system(desired)
            elif isinstance(desired, DesiredNetContainer):
                self._create_net(desired)
            else:
                self._create(desired)
        elif operation.action == Action.start_container:
            container = client.containers.get(operation.name)
            try:
                container.start()
            except docker.errors.APIError as exc:
                if not _is_port_conflict(exc):
                    raise
                container.remove(force=True)
                port = desired.port if isinstance(desired, DesiredContainer | DesiredNetContainer) else 0
                raise PortTaken(port) from None
            if isinstance(desired, DesiredNetContainer):
                self._wait_for_rules(container)
        elif operation.action == Action.reload_container:
            try:
                client.containers.get(operation.name).kill(signal="SIGHUP")
            except docker.errors.APIError:  # not running: it reads the config when it starts
                pass
        elif operation.action == Action.remove_container:
            try:
                client.containers.get(operation.id or operation.name).remove(force=True)
            except docker.errors.NotFound:
                pass
        elif operation.action == Action.deliver_config:
            assert isinstance(desired, DesiredContainer), "DeliverConfig carries the desired container"
            self._deliver_config(operation.name, desired)
        elif operation.action == Action.remove_volume:
            try:
                client.volumes.get(operation.name).remove(force=True)
            except docker.errors.NotFound:
                pass

    @staticmethod
    def _wait_for_rules(container: Any) -> None:
        """The agent may join only once the firewall is in force (fail closed)."""
        deadline = time.monotonic() + RULES_TIMEOUT
        while time.monotonic() < deadline:
            if RULES_LOADED.encode() in container.logs(stdout=True, stderr=True):
                return
            container.reload()
            if container.status in ("exited", "dead"):
                break
            time.sleep(0.05)
        output = container.logs(tail=20).decode(errors="replace").strip()
        container.remove(force=True)
        raise DenError(f"network container {container.name} did not load its firewall rules: {output or 'no output'}")

    def _create_network(self, name: str) -> None:
        """Create Den's network once, on a subnet of its own (so addresses can be fixed and
        pools do not run out). Docker 20.10 does not make ``check_duplicate`` atomic, so two
        workers creating it at once make two networks of one name (and every container start
        then fails as "ambiguous"): creation is serialised in this process, and duplicates made
        by another process are removed, keeping the oldest."""
        import os

        import docker.errors
        import docker.types

        with _NETWORK_LOCK:
            lost: list[str] = []  # subnets another installation took between our look and our create
            while not self._network_exists(name):
                taken = host_routes() + lost
                for network in self.client.networks.list():
                    for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
                        if config.get("Subnet"):
                            taken.append(config["Subnet"])
                layout = Layout(choose_subnet(taken, os.environ.get("DEN_SUBNET")))
                ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                    subnet=layout.subnet, gateway=layout.host, iprange=layout.dynamic_range)])
                try:
                    self.client.networks.create(name, driver="bridge", check_duplicate=True, ipam=ipam,
                                                labels={**self.installation.labels,
                                                        names.LABEL_SUBNET: layout.subnet})
                except docker.errors.APIError as exc:
                    if exc.status_code == 409:  # another process of this installation made it first
                        break
                    if "overlap" not in str(exc).lower() or len(lost) >= 5 or os.environ.get("DEN_SUBNET"):
                        raise
                    lost.append(layout.subnet)
            found = [n for n in self.client.networks.list(names=[name]) if n.name == name]
            for extra in sorted(found, key=lambda n: n.attrs.get("Created", ""))[1:]:
                try:
                    extra.remove()
                except docker.errors.APIError:  # in use: the oldest is the one to remove then
                    pass

    def _remove_network(self, name: str) -> None:
        """Remove a network of Den's name, disconnecting whatever is still attached."""
        import docker.errors

        with _NETWORK_LOCK:
            for network in [n for n in self.client.networks.list(names=[name]) if n.name == name]:
                network.reload()
                for container_id in network.attrs.get("Containers") or {}:
                    try:
                        network.disconnect(container_id, force=True)
                    except docker.errors.APIError:
                        pass
                try:
                    network.remove()
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    network.reload()
                    if "active endpoint" in str(exc) and not network.attrs.get("Containers"):
                        raise StaleEndpoints(name, network.id) from exc
                    raise

    def _endpoint(self, network: str, address: str | None) -> dict:
        return {network: self.client.api.create_endpoint_config(ipv4_address=address)} if address else {}

    def _create_net(self, desired: DesiredNetContainer) -> None:
        """The network container: NET_ADMIN only long enough to load the rules (it drops every
        capability with setpriv before it sleeps); the port is published here."""
        self.client.containers.create(
            image=desired.image,
            entrypoint=netns_command(desired.ruleset),  # no init: after exec, PID 1 is the unprivileged sleep
            command=[],
            name=desired.name,
            labels=desired.labels,
            detach=True,
            ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", desired.port)},
            environment={"DEN_NFT_RULES": desired.ruleset},
            cap_drop=["ALL"],
            cap_add=["NET_ADMIN", "SETUID", "SETGID", "SETPCAP"],
            security_opt=["no-new-privileges"],
            read_only=True,
            mem_limit="32m",
            pids_limit=16,
            restart_policy={"Name": "unless-stopped"},
            extra_hosts=desired.hosts,
            hostname=desired.labels.get(names.LABEL_AGENT) or desired.name,
            network=desired.network,
            networking_config=self._endpoint(desired.network, desired.address),
        )

    def _create(self, desired: DesiredContainer) -> None:
        joined = desired.docker_network.startswith("container:")
        # In its network container's namespace, the agent has no ports, hosts or hostname of
        # its own (Docker refuses them): those belong to the network container.
        placement: dict[str, Any] = {"network_mode": desired.docker_network} if joined else {
            "ports": {f"{CONTAINER_PORT}/tcp": ("127.0.0.1", desired.port)},
            "extra_hosts": {"host.docker.internal": "host-gateway"},
            "hostname": desired.hostname or desired.name,
            "network": desired.docker_network,
        }
        container = self.client.containers.create(
            image=desired.image,
            name=desired.name,
            labels=desired.labels,
            detach=True,
            **placement,
            volumes={desired.volume: {"bind": HOME_DIR, "mode": "rw"}},
            nano_cpus=int(desired.cpu * 1_000_000_000),
            mem_limit=f"{desired.memory_mb}m",
            memswap_limit=f"{desired.memory_mb}m",
            pids_limit=512,
            restart_policy={"Name": "unless-stopped"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            tmpfs={"/tmp": "rw,size=64m"},
            environment={
                "DEN_CONFIG": CONFIG_FILE,
                "DEN_ENV_FILE": ENV_FILE,
                "DEN_PORT": str(CONTAINER_PORT),
                "HOME": HOME_DIR,
                **desired.environment,
            },
        )
        files = {
            CONFIG_FILE: (json.dumps(desired.manifest, indent=2).encode(), 0o644),
            ENV_FILE: (json.dumps(dict(desired.secrets.values)).encode(), 0o600),
        }
        container.put_archive(HOME_DIR, _tar(files))

    def _deliver_config(self, name: str, desired: DesiredContainer) -> None:
        """Copy the manifest into the running container (the agent reloads its cron entries)."""
        manifest = json.dumps(desired.manifest, indent=2).encode()
        self.client.containers.get(name).put_archive(HOME_DIR, _tar({CONFIG_FILE: (manifest, 0o644)}))

    def _create_system(self, desired: DesiredGateway) -> None:
        """The model gateway or the egress proxy: unprivileged, read-only, a fixed address."""
        volumes = {desired.config_dir: {"bind": names.GATEWAY_CONFIG_MOUNT, "mode": "ro"}}
        environment = {"HOME": "/tmp"}
        ports: dict[str, Any] = {}
        if desired.labels.get(names.LABEL_COMPONENT) == "gateway":
            volumes[desired.volume] = {"bind": names.GATEWAY_DATA_MOUNT, "mode": "rw"}
            environment |= {"DEN_GATEWAY_CONFIG_DIR": names.GATEWAY_CONFIG_MOUNT,
                            "DEN_GATEWAY_DATA": names.GATEWAY_DATA_MOUNT,
                            "DEN_GATEWAY_PORT": str(desired.port)}
            ports = {f"{desired.port}/tcp": ("127.0.0.1", None)}  # for the CLI only; agents use the network
        else:
            volumes = {desired.config_dir: {"bind": names.EGRESS_CONFIG_MOUNT, "mode": "ro"}}
            if desired.log_dir:
                volumes[desired.log_dir] = {"bind": names.EGRESS_LOG_MOUNT, "mode": "rw"}
        self.client.containers.create(
            image=desired.image,
            name=desired.name,
            labels=desired.labels,
            detach=True,
            user=desired.user,
            ports=ports,
            volumes=volumes,
            mem_limit="1g",
            pids_limit=256,
            restart_policy={"Name": "unless-stopped"},
            extra_hosts={"host.docker.internal": "host-gateway"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            tmpfs={"/tmp": "rw,size=64m"},
            environment=environment,
            hostname=desired.name,
            network=desired.network,
            networking_config=self._endpoint(desired.network, desired.address),
        )

    # -- facts for the CLI --------------------------------------------------------

    def has_image(self, image: str) -> bool:
        import docker.errors

        try:
            self.client.images.get(image)
            return True
        except docker.errors.ImageNotFound:
            return False

    def _container(self, agent: Agent) -> Any | None:
        import docker.errors

        try:
            found = self.client.containers.get(self.installation.container_name(agent.name, agent.namespace))
        except docker.errors.NotFound:
            return None
        labels = found.labels or {}
        return found if labels.get(names.LABEL_AGENT) == agent.name and self.installation.owns(labels) else None

    def facts(self, agent: Agent) -> ContainerFacts | None:
        container = self._container(agent)
        if container is None:
            return None
        attrs = container.attrs
        host = attrs.get("HostConfig", {})
        ports = host.get("PortBindings")
        if not ports and str(host.get("NetworkMode", "")).startswith("container:"):
            import docker.errors

            try:  # published by its network container
                holder = self.client.containers.get(
                    self.installation.net_container_name(agent.name, agent.namespace))
                ports = holder.attrs.get("HostConfig", {}).get("PortBindings")
            except docker.errors.NotFound:
                ports = None
        return ContainerFacts(
            id=container.short_id,
            name=container.name,
            image=(container.labels or {}).get(names.LABEL_IMAGE) or attrs.get("Config", {}).get("Image"),
            state=attrs.get("State", {}).get("Status", "unknown"),
            started_at=attrs.get("State", {}).get("StartedAt"),
            restart_count=int(attrs.get("RestartCount") or 0),
            nano_cpus=host.get("NanoCpus"),
            memory_bytes=host.get("Memory"),
            ports=ports,
            read_only_rootfs=host.get("ReadonlyRootfs"),
            cap_drop=host.get("CapDrop"),
        )

    def stats(self, agent: Agent) -> Stats | None:
        """CPU %, memory used/limit and uptime of the agent's running container."""
        container = self._container(agent)
        if container is None or container.status != "running":
            return None
        return self._stats(container)

    def gateway_stats(self) -> Stats | None:
        """The same sample for the model gateway's container."""
        found = self._containers(_made_by_den("gateway", self.installation), running_only=True)
        return self._stats(found[0]) if found else None

    @staticmethod
    def _stats(container: Any) -> Stats:
        raw = container.stats(stream=False)
        cpu = raw.get("cpu_stats", {})
        pre = raw.get("precpu_stats", {})
        cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
        system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        cpus = cpu.get("online_cpus") or 1
        percent = (cpu_delta / system_delta) * cpus * 100 if system_delta > 0 and cpu_delta > 0 else 0.0
        memory = raw.get("memory_stats", {})
        used = memory.get("usage", 0) - (memory.get("stats", {}) or {}).get("inactive_file", 0)
        return Stats(cpu_percent=round(percent, 1), memory_used=max(0, used),
                     memory_limit=memory.get("limit", 0),
                     started_at=container.attrs.get("State", {}).get("StartedAt"))

    def _running(self, agent: Agent) -> Any:
        container = self._container(agent)
        if container is None or container.status != "running":
            raise DenError(f"agent {agent.name} is not running", hint=f"den up … then den exec {agent.name} -- …")
        return container

    def logs(self, agent: Agent, *, follow: bool, tail: int | None) -> Iterator[bytes]:
        container = self._container(agent)
        if container is None:
            raise DenError(f"agent {agent.name} has no container (is it up?)", hint="den up … or den status")
        return container.logs(stream=True, follow=follow, tail=tail if tail is not None else "all")

    def exec(self, agent: Agent, command: list[str]) -> ExecResult:
        result = self._running(agent).exec_run(command, demux=True)
        stdout, stderr = result.output if isinstance(result.output, tuple) else (result.output, None)
        return ExecResult(exit_code=result.exit_code or 0, stdout=stdout or b"", stderr=stderr or b"")

    def exec_argv(self, agent: Agent, command: list[str], *, interactive: bool, tty: bool) -> list[str]:
        container = self._running(agent)
        flags = "-" + ("i" if interactive else "") + ("t" if tty else "")
        return ["docker", "exec", flags, container.name, *command]


def local_backend() -> DockerBackend:
    """The Docker backend of this ``$DEN_HOME``'s installation (its id is in the state store)."""
    from den.operator.store import installation_of

    return DockerBackend(installation=installation_of())


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
