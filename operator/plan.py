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
    docker_network: str = names.NETWORK  # the network it joins, shared with the gateway
    manifest: dict = field(default_factory=dict, repr=False, compare=False)
    secrets: AgentSecrets = field(default_factory=lambda: AgentSecrets({}), repr=False, compare=False)


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


@dataclass(frozen=True)
class DesiredGateway:
    """The model gateway's container: one per installation."""

    name: str
    image: str
    volume: str
    network: str
    port: int
    config_dir: str  # host folder mounted read-only
    user: str
    labels: dict[str, str]
    config_hash: str


@dataclass(frozen=True)
class ObservedGateway:
    containers: tuple[ObservedContainer, ...] = ()
    volume_exists: bool = False
    network_exists: bool = False
    image_id: str | None = None


class Action(str, Enum):
    create_network = "CreateNetwork"
    create_volume = "CreateVolume"
    create_container = "CreateContainer"
    start_container = "StartContainer"
    remove_container = "RemoveContainer"
    remove_volume = "RemoveVolume"


_KINDS = {Action.create_volume: "volume", Action.remove_volume: "volume", Action.create_network: "network"}


@dataclass(frozen=True)
class Operation:
    """One backend call. ``name`` is the object's name; ``id`` pins one container (removals);
    ``container`` is what to create or start."""

    action: Action
    name: str
    reason: str
    id: str | None = None
    container: DesiredContainer | DesiredGateway | None = field(default=None, repr=False, compare=False)

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
    for container in observed.containers:
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


def config_hash(agent: Agent, image_id: str | None, secrets_digest: str = "none") -> str:
    """sha256 of what the container is made from: the spec (less desiredState), the image and
    the digest of its secrets (a rotated key or token is a change like any other)."""
    spec = agent.spec.model_dump(mode="json", exclude={"desiredState"})
    canonical = json.dumps(
        {"spec": spec, "image": image_id or agent.spec.runtime.base, "namespace": agent.namespace,
         "secrets": secrets_digest, "network": names.NETWORK},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def desired_container(agent: Agent, observed: Observed, port: int,
                      secrets: AgentSecrets | None = None) -> DesiredContainer:
    secrets = secrets or AgentSecrets({})
    digest = config_hash(agent, observed.image_id, secrets.digest())
    labels = {
        names.LABEL_AGENT: agent.name,
        names.LABEL_NAMESPACE: agent.namespace,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_CONFIG_HASH: digest,
        names.LABEL_GENERATION: str(agent.metadata.generation or 0),
    }
    manifest = agent.manifest(with_status=False)
    manifest["metadata"].pop("annotations", None)
    return DesiredContainer(
        name=names.container_name(agent.name, agent.namespace),
        image=agent.spec.runtime.base,
        volume=names.volume_name(agent.name, agent.namespace),
        port=port,
        cpu=agent.spec.runtime.cpu,
        memory_mb=agent.spec.runtime.memory,
        labels=labels,
        config_hash=digest,
        network=str(agent.spec.runtime.network),
        hostname=agent.name,
        manifest=manifest,
        secrets=secrets,
    )


def stalled_reason(agent: Agent, observed: Observed) -> tuple[str, str] | None:
    """Why nothing can be created for ``agent`` until a person acts, or None.

    The one home of the foreign-container and missing-image rules: the planner stalls on
    them and ``den up`` refuses with the same words before storing anything."""
    name = names.container_name(agent.name, agent.namespace)
    if observed.foreign_container:
        return ("NameConflict", f"a container named {name} exists and Den does not own it; "
                                "rename or remove it, or give the agent another name")
    if observed.image_id is None:
        return ("ImageMissing", f"image {agent.spec.runtime.base} not found: build it with "
                                "`make image` (hack/build-image.sh)")
    return None


def make_plan(agent: Agent, observed: Observed, desired: DesiredContainer, *, destroy: bool = False) -> Plan:
    """What to do so the world matches ``agent``: create, start, replace or remove."""
    plan = Plan()
    deleting = agent.metadata.deletionTimestamp is not None
    current = sorted(observed.containers, key=lambda c: (not c.running, c.id))
    if deleting or agent.spec.desiredState == "stopped":
        why = "agent is being deleted" if deleting else "desiredState is stopped"
        for container in current:
            plan.add(Operation(Action.remove_container, container.name, why, id=container.id))
        if deleting and destroy and observed.volume_exists:
            plan.add(Operation(Action.remove_volume, desired.volume, "destroy removes the agent's home and memory",
                               container=desired))
        return plan
    keep = current[0] if current else None
    for extra in current[1:]:
        plan.add(Operation(Action.remove_container, extra.name, "duplicate container", id=extra.id))
    needs_container = keep is None or keep.config_hash != desired.config_hash
    if needs_container:
        problem = stalled_reason(agent, observed)
        if problem:
            plan.stalled = problem
            plan.operations.clear()
            return plan
    if needs_container and not observed.network_exists:
        plan.add(Operation(Action.create_network, desired.docker_network, "not found"))
    if not observed.volume_exists:
        plan.add(Operation(Action.create_volume, desired.volume, "not found", container=desired))
    if keep is None:
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


def gateway_hash(image_id: str | None, settings: dict) -> str:
    canonical = json.dumps({"image": image_id, **settings}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def make_gateway_plan(observed: ObservedGateway, desired: DesiredGateway) -> Plan:
    """The gateway converges like an agent: network, volume, then one container with the
    right config hash. Its config files are reloaded in place, so they are not in the hash."""
    plan = Plan()
    current = sorted(observed.containers, key=lambda c: (not c.running, c.id))
    keep = current[0] if current else None
    for extra in current[1:]:
        plan.add(Operation(Action.remove_container, extra.name, "duplicate container", id=extra.id))
    needs_container = keep is None or keep.config_hash != desired.config_hash
    if needs_container and observed.image_id is None:
        plan.stalled = ("ImageMissing", f"image {desired.image} not found: build it with `make image` "
                                        "(hack/build-image.sh)")
        plan.operations.clear()
        return plan
    if not observed.network_exists:
        plan.add(Operation(Action.create_network, desired.network, "not found"))
    if not observed.volume_exists:
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
