"""Desired + observed -> a plan: pure data, no I/O (compose's reconcile.go shape).

``make_plan`` never talks to Docker or Kubernetes. A plan is a list of
operations that carry the data a backend needs (names, ids, the desired
container) and have a readable text form that planner tests compare with the
expected one, so those tests read like a spec and need no Docker. The host
port is chosen here too, from the observed snapshot (:func:`choose_port`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from den.api.contract import TOKEN_ENV
from den.api.resource import Agent
from den.operator import names
from den.operator.network import Layout, nft_ruleset

#: Agents' API ports on 127.0.0.1 are handed out from here up.
FIRST_PORT = 8800
LAST_PORT = 65535


class AgentSecrets:
    """Environment variables delivered privately to one agent: its API token and resolved
    ``runtime.env``. Never printed; compared through a digest keyed by the agent's token, so
    the digest in a label tells nothing about the values."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = MappingProxyType(dict(values))

    @property
    def values(self) -> Mapping[str, str]:
        return self._values

    @property
    def token(self) -> str | None:
        return self._values.get(TOKEN_ENV)

    def digest(self) -> str:
        if not self._values:
            return "none"
        canonical = json.dumps(dict(self._values), sort_keys=True, separators=(",", ":")).encode()
        key = (self.token or "den").encode()
        return hmac.new(key, canonical, hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"AgentSecrets({sorted(self._values)})"



@dataclass(frozen=True)
class DesiredContainer:
    """Everything a backend needs to create the agent's container."""

    name: str
    image: str
    volume: str
    port: int
    cpu: float
    memory_mb: int
    labels: dict[str, str]
    config_hash: str
    network: str  # the Agentfile's policy: none | filtered | host
    hostname: str = ""
    docker_network: str = names.NETWORK  # "container:<its network container>" under Den's topology
    environment: dict[str, str] = field(default_factory=dict)  # proxy variables (filtered)
    net: DesiredNetContainer | None = field(default=None, compare=False)
    manifest: dict = field(default_factory=dict, repr=False, compare=False)
    secrets: AgentSecrets = field(default_factory=lambda: AgentSecrets({}), repr=False, compare=False)


@dataclass(frozen=True)
class DesiredNetContainer:
    """The agent's network container (the pod's "pause" container): it owns the network
    namespace, the fixed address, the published port and the firewall rules."""

    name: str
    image: str
    address: str
    port: int
    network: str  # Den's Docker network
    policy: str
    ruleset: str
    hosts: dict[str, str]  # /etc/hosts entries the agent sees (the gateway, the proxy)
    labels: dict[str, str]
    config_hash: str


@dataclass(frozen=True)
class ObservedContainer:
    id: str
    name: str
    running: bool
    status: str
    labels: dict[str, str]
    host_port: int | None
    started_at: str | None = None
    restart_count: int = 0

    @property
    def config_hash(self) -> str | None:
        return self.labels.get(names.LABEL_CONFIG_HASH)


@dataclass(frozen=True)
class Observed:
    """One snapshot of what exists for one agent, found by labels, taken once per pass."""

    containers: tuple[ObservedContainer, ...] = ()
    volume_exists: bool = False
    image_id: str | None = None  # None: the image is not present
    foreign_container: bool = False  # a container with our name that Den does not own
    used_ports: frozenset[int] = frozenset()  # host ports other Den agents hold (running or not)
    network_exists: bool = True  # the agents' network (backends always observe it)
    #: Den's network layout (its subnet); None when the network is missing or not Den's shape.
    layout: Layout | None = None
    network_stale: bool = False  # a network of Den's name made without Den's subnet: replaced
    net_containers: tuple[ObservedContainer, ...] = ()  # the agent's network container(s)
    used_addresses: frozenset[str] = frozenset()  # addresses other agents' network containers hold
    net_image_id: str | None = None  # den-egress (network containers); None: not present
    #: The backend enforces runtime.network itself (Kubernetes: a NetworkPolicy per agent), so
    #: the plan makes neither Den's Docker network nor a network container.
    policy_in_backend: bool = False
    #: Whose names and labels to plan with (the backend observes one installation).
    installation: names.Installation = names.Installation()


@dataclass(frozen=True)
class DesiredGateway:
    """A system container (the model gateway, the egress proxy): one per installation."""

    name: str
    image: str
    volume: str | None  # None: no volume of its own
    network: str
    port: int
    config_dir: str  # host folder mounted read-only
    user: str
    labels: dict[str, str]
    config_hash: str
    address: str | None = None  # its fixed address on Den's network
    log_dir: str | None = None  # host folder mounted read-write (the proxy's access log)


@dataclass(frozen=True)
class ObservedGateway:
    containers: tuple[ObservedContainer, ...] = ()
    volume_exists: bool = False
    network_exists: bool = False
    image_id: str | None = None
    layout: Layout | None = None
    network_stale: bool = False
    installation: names.Installation = names.Installation()


class Action(str, Enum):
    create_network = "CreateNetwork"
    remove_network = "RemoveNetwork"
    reload_container = "ReloadContainer"  # re-read its config in place (SIGHUP)
    create_volume = "CreateVolume"
    create_container = "CreateContainer"
    start_container = "StartContainer"
    remove_container = "RemoveContainer"
    remove_volume = "RemoveVolume"
    deliver_config = "DeliverConfig"


_KINDS = {Action.create_volume: "volume", Action.remove_volume: "volume", Action.create_network: "network",
          Action.remove_network: "network"}


@dataclass(frozen=True)
class Operation:
    """One backend call. ``name`` is the object's name; ``id`` pins one container (removals);
    ``container`` is what to create or start."""

    action: Action
    name: str
    reason: str
    id: str | None = None
    container: DesiredContainer | DesiredNetContainer | DesiredGateway | None = field(
        default=None, repr=False, compare=False)

    @property
    def target(self) -> str:
        kind = _KINDS.get(self.action, "container")
        return f"{kind}:{self.name}" + (f"#{self.id[:12]}" if self.id else "")

    def __str__(self) -> str:
        return f"{self.action.value} {self.target}: {self.reason}"


@dataclass
class Plan:
    operations: list[Operation] = field(default_factory=list)
    #: Nothing can be done until a person acts: (reason, message), e.g. a foreign container.
    stalled: tuple[str, str] | None = None
    #: More to plan once these operations are done (Den's network had to be made first).
    incomplete: bool = False

    def add(self, operation: Operation) -> None:
        self.operations.append(operation)

    def __str__(self) -> str:
        if self.stalled:
            return f"stalled: {self.stalled[0]}: {self.stalled[1]}"
        return "\n".join(str(op) for op in self.operations) or "nothing to do"

    def __bool__(self) -> bool:
        return bool(self.operations)


def choose_port(agent: Agent, observed: Observed, avoid: frozenset[int] = frozenset()) -> int:
    """The agent's host port, from the snapshot alone: the one its container has, else the one
    its status recorded, else the lowest free from :data:`FIRST_PORT`. ``avoid`` holds ports
    found taken by something that is not Den (the backend reports those when it starts)."""
    taken = observed.used_ports | avoid
    for container in (*observed.net_containers, *observed.containers):
        if container.host_port and container.host_port not in taken:
            return container.host_port
    recorded = agent.status.port if agent.status else None
    if recorded and recorded not in taken:
        return recorded
    port = FIRST_PORT
    while port in taken:
        port += 1
    if port > LAST_PORT:
        raise ValueError("no host port left")
    return port


def config_hash(agent: Agent, image_id: str | None, secrets_digest: str = "none", net_hash: str = "",
                network: str = names.NETWORK) -> str:
    """sha256 of what the container is made from: the spec (less desiredState, and less cron,
    which is delivered to the running agent: :func:`make_config_plan`), the image, the digest
    of its secrets (a rotated key or token is a change like any other) and its network
    container's hash (a new policy is a new namespace to join)."""
    spec = agent.spec.model_dump(mode="json", exclude={"desiredState", "cron"})
    canonical = json.dumps(
        {"spec": spec, "image": image_id or agent.spec.runtime.base, "namespace": agent.namespace,
         "secrets": secrets_digest, "network": network, "net": net_hash},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def proxy_environment(policy: str) -> dict[str, str]:
    """What sends a filtered agent's HTTP clients (its tools, curl, pip, Python) through the
    egress proxy. Clients that ignore these get nowhere: the firewall lets them reach only
    the proxy and the gateway."""
    if policy != "filtered":
        return {}
    proxy = f"http://{names.EGRESS}:{names.EGRESS_PORT}"
    no_proxy = f"{names.GATEWAY},localhost,127.0.0.1"
    return {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "https_proxy": proxy,
            "NO_PROXY": no_proxy, "no_proxy": no_proxy}


def desired_net(agent: Agent, observed: Observed, port: int, address: str) -> DesiredNetContainer:
    assert observed.layout is not None, "the network container needs Den's network layout"
    layout = observed.layout
    installation = observed.installation
    policy = str(agent.spec.runtime.network)
    ruleset = nft_ruleset(policy, address, layout)
    hosts = {names.GATEWAY: layout.gateway, names.EGRESS: layout.egress}
    allow = ",".join(agent.spec.runtime.allow) if policy == "filtered" else ""
    canonical = json.dumps({"image": observed.net_image_id, "ruleset": ruleset, "port": port, "address": address,
                            "hosts": hosts, "allow": allow, "subnet": layout.subnet},
                           sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
    labels = {
        names.LABEL_AGENT: agent.name,
        names.LABEL_NAMESPACE: agent.namespace,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_COMPONENT: names.COMPONENT_NET,
        names.LABEL_INSTALLATION: installation.id,
        names.LABEL_CONFIG_HASH: digest,
        names.LABEL_ADDRESS: address,
        names.LABEL_POLICY: policy,
        names.LABEL_ALLOW: allow,
    }
    return DesiredNetContainer(
        name=installation.net_container_name(agent.name, agent.namespace),
        image=observed.net_image_id or names.EGRESS_IMAGE,
        address=address, port=port, network=installation.network, policy=policy, ruleset=ruleset,
        hosts=hosts, labels=labels, config_hash=digest,
    )


def desired_container(agent: Agent, observed: Observed, port: int,
                      secrets: AgentSecrets | None = None, address: str | None = None) -> DesiredContainer:
    """The agent's container and, once Den's network exists (``observed.layout``) and an
    ``address`` is chosen, its network container."""
    secrets = secrets or AgentSecrets({})
    net = desired_net(agent, observed, port, address) if observed.layout and address else None
    installation = observed.installation
    digest = config_hash(agent, observed.image_id, secrets.digest(), net.config_hash if net else "",
                         installation.network)
    labels = {
        names.LABEL_AGENT: agent.name,
        names.LABEL_NAMESPACE: agent.namespace,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_COMPONENT: names.COMPONENT_AGENT,
        names.LABEL_INSTALLATION: installation.id,
        #: What the Agentfile asked for; the container runs the image id it was planned with.
        names.LABEL_IMAGE: agent.spec.runtime.base,
        names.LABEL_CONFIG_HASH: digest,
        names.LABEL_GENERATION: str(agent.metadata.generation or 0),
    }
    manifest = agent.manifest(with_status=False)
    manifest["metadata"].pop("annotations", None)
    policy = str(agent.spec.runtime.network)
    return DesiredContainer(
        name=installation.container_name(agent.name, agent.namespace),
        # The image id the plan was made with, not a tag another checkout's build can move.
        image=observed.image_id or agent.spec.runtime.base,
        volume=installation.volume_name(agent.name, agent.namespace),
        port=port,
        cpu=agent.spec.runtime.cpu,
        memory_mb=agent.spec.runtime.memory,
        labels=labels,
        config_hash=digest,
        network=policy,
        hostname=agent.name,
        docker_network=f"container:{net.name}" if net else installation.network,
        environment=proxy_environment(policy),
        net=net,
        manifest=manifest,
        secrets=secrets,
    )


def stalled_reason(agent: Agent, observed: Observed) -> tuple[str, str] | None:
    """Why nothing can be created for ``agent`` until a person acts, or None.

    The one home of the foreign-container and missing-image rules: the planner stalls on
    them and ``den up`` refuses with the same words before storing anything."""
    name = observed.installation.container_name(agent.name, agent.namespace)
    if observed.foreign_container:
        return ("NameConflict", f"a container named {name} exists and Den does not own it; "
                                "rename or remove it, or give the agent another name")
    if observed.image_id is None:
        return ("ImageMissing", f"image {agent.spec.runtime.base} not found: build it with "
                                "`make image` (hack/build-image.sh)")
    if observed.layout is not None and observed.net_image_id is None:
        return ("ImageMissing", f"image {names.EGRESS_IMAGE} (network containers and the egress "
                                "proxy) not found: build it with `make image`")
    return None


def _running_first(containers: tuple[ObservedContainer, ...]) -> list[ObservedContainer]:
    return sorted(containers, key=lambda c: (not c.running, c.id))


def make_plan(agent: Agent, observed: Observed, desired: DesiredContainer, *, destroy: bool = False) -> Plan:
    """What to do so the world matches ``agent``: its network container first, then its own
    container; create, start, replace or remove. Den's network comes before either: while it
    is missing (or not of Den's shape) the plan only makes it and is ``incomplete``."""
    plan = Plan()
    deleting = agent.metadata.deletionTimestamp is not None
    current = _running_first(observed.containers)
    nets = _running_first(observed.net_containers)
    if deleting or agent.spec.desiredState == "stopped":
        why = "agent is being deleted" if deleting else "desiredState is stopped"
        for container in current + nets:  # the agent before the namespace it lives in
            plan.add(Operation(Action.remove_container, container.name, why, id=container.id))
        if deleting and destroy and observed.volume_exists:
            plan.add(Operation(Action.remove_volume, desired.volume, "destroy removes the agent's home and memory",
                               container=desired))
        return plan
    keep = current[0] if current else None
    for extra in current[1:]:
        plan.add(Operation(Action.remove_container, extra.name, "duplicate container", id=extra.id))
    net = desired.net
    keep_net = nets[0] if nets else None
    for extra in nets[1:]:
        plan.add(Operation(Action.remove_container, extra.name, "duplicate network container", id=extra.id))
    net_ok = observed.policy_in_backend or (net is not None and keep_net is not None and keep_net.running
                                            and keep_net.config_hash == net.config_hash)
    needs_container = keep is None or keep.config_hash != desired.config_hash or not net_ok
    if needs_container:
        problem = stalled_reason(agent, observed)
        if problem:
            plan.stalled = problem
            plan.operations.clear()
            return plan
    if not observed.policy_in_backend and (observed.layout is None or net is None):
        if observed.network_stale:
            plan.add(Operation(Action.remove_network, observed.installation.network,
                               "made without Den's subnet (an earlier Den): replaced"))
        plan.add(Operation(Action.create_network, observed.installation.network, "not found" if not observed.network_stale
                           else "replaced with Den's subnet"))
        plan.incomplete = True
        return plan
    if not observed.volume_exists:
        plan.add(Operation(Action.create_volume, desired.volume, "not found", container=desired))
    if not net_ok:
        why = ("not found" if keep_net is None else
               "config diverged" if keep_net.config_hash != net.config_hash else f"container is {keep_net.status}")
        if keep is not None:
            plan.add(Operation(Action.remove_container, keep.name, f"network container {why}", id=keep.id))
        if keep_net is not None:
            plan.add(Operation(Action.remove_container, keep_net.name, why, id=keep_net.id))
        plan.add(Operation(Action.create_container, net.name, why, container=net))
        plan.add(Operation(Action.start_container, net.name, "created", container=net))
        plan.add(Operation(Action.create_container, desired.name, f"network container {why}", container=desired))
        plan.add(Operation(Action.start_container, desired.name, "created", container=desired))
    elif keep is None:
        plan.add(Operation(Action.create_container, desired.name, "not found", container=desired))
        plan.add(Operation(Action.start_container, desired.name, "created", container=desired))
    elif keep.config_hash != desired.config_hash:
        plan.add(Operation(Action.remove_container, keep.name, "config diverged", id=keep.id))
        plan.add(Operation(Action.create_container, desired.name, "config diverged", container=desired))
        plan.add(Operation(Action.start_container, desired.name, "created", container=desired))
    elif not keep.running and keep.status != "restarting":  # Docker's restart policy owns restarts
        plan.add(Operation(Action.start_container, desired.name, f"container is {keep.status}",
                           container=desired))
    return plan


def make_config_plan(agent: Agent, desired: DesiredContainer, running_digest: str | None) -> Plan:
    """Deliver the manifest to the running agent when the cron section it runs
    (``running_digest``, from its ``GET /den/v1/cron``) is not the Agentfile's."""
    from den.api.agentfile import cron_digest

    plan = Plan()
    wanted = cron_digest(agent.spec.cron)
    if running_digest is not None and running_digest != wanted:
        plan.add(Operation(Action.deliver_config, desired.name,
                           f"cron changed (agent runs {running_digest}, Agentfile {wanted})", container=desired))
    return plan


def gateway_hash(image_id: str | None, settings: dict) -> str:
    canonical = json.dumps({"image": image_id, **settings}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def make_gateway_plan(observed: ObservedGateway, desired: DesiredGateway) -> Plan:
    """A system container converges like an agent: network, volume, then one container with
    the right config hash. Its config files are reloaded in place, so they are not in the hash."""
    plan = Plan()
    current = _running_first(observed.containers)
    keep = current[0] if current else None
    for extra in current[1:]:
        plan.add(Operation(Action.remove_container, extra.name, "duplicate container", id=extra.id))
    needs_container = keep is None or keep.config_hash != desired.config_hash
    if needs_container and observed.image_id is None:
        plan.stalled = ("ImageMissing", f"image {desired.image} not found: build it with `make image` "
                                        "(hack/build-image.sh)")
        plan.operations.clear()
        return plan
    if observed.layout is None:
        if observed.network_stale:
            plan.add(Operation(Action.remove_network, desired.network, "made without Den's subnet: replaced"))
        plan.add(Operation(Action.create_network, desired.network, "not found"))
        plan.incomplete = True
        return plan
    if desired.volume and not observed.volume_exists:
        plan.add(Operation(Action.create_volume, desired.volume, "not found", container=desired))
    if keep is None:
        plan.add(Operation(Action.create_container, desired.name, "not found", container=desired))
        plan.add(Operation(Action.start_container, desired.name, "created", container=desired))
    elif keep.config_hash != desired.config_hash:
        plan.add(Operation(Action.remove_container, keep.name, "config diverged", id=keep.id))
        plan.add(Operation(Action.create_container, desired.name, "config diverged", container=desired))
        plan.add(Operation(Action.start_container, desired.name, "created", container=desired))
    elif not keep.running and keep.status != "restarting":
        plan.add(Operation(Action.start_container, desired.name, f"container is {keep.status}",
                           container=desired))
    return plan


def remove_plan(observed: ObservedGateway, why: str) -> Plan:
    """Remove a system component's containers (no agent needs it any more)."""
    plan = Plan()
    for container in observed.containers:
        plan.add(Operation(Action.remove_container, container.name, why, id=container.id))
    return plan
