"""Desired + observed -> a plan: pure data, no I/O (compose's reconcile.go shape).

``make_plan`` never talks to Docker or Kubernetes. A plan has a readable text
form that planner tests compare with the expected one, so those tests read
like a spec and need no Docker.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum

from den.api.resource import Agent
from den.operator import names

CONTAINER_PORT = 8800


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
    network: str


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
    """One snapshot of what exists for one agent, found by labels."""

    containers: tuple[ObservedContainer, ...] = ()
    volume_exists: bool = False
    image_id: str | None = None  # None: the image is not present
    foreign_container: bool = False  # a container with our name that Den does not own


class Action(str, Enum):
    create_volume = "CreateVolume"
    create_container = "CreateContainer"
    start_container = "StartContainer"
    remove_container = "RemoveContainer"
    remove_volume = "RemoveVolume"


@dataclass(frozen=True)
class Operation:
    action: Action
    target: str
    reason: str

    def __str__(self) -> str:
        return f"{self.action.value} {self.target}: {self.reason}"


@dataclass
class Plan:
    operations: list[Operation] = field(default_factory=list)
    blocked: str | None = None  # a terminal reason nothing can be done (e.g. a foreign container)

    def add(self, action: Action, target: str, reason: str) -> None:
        self.operations.append(Operation(action, target, reason))

    def __str__(self) -> str:
        if self.blocked:
            return f"blocked: {self.blocked}"
        return "\n".join(str(op) for op in self.operations) or "nothing to do"

    def __bool__(self) -> bool:
        return bool(self.operations)


def config_hash(agent: Agent, image_id: str | None) -> str:
    """sha256 of what the container is made from: the spec (less desiredState) and the image."""
    spec = agent.spec.model_dump(mode="json", exclude={"desiredState"})
    canonical = json.dumps(
        {"spec": spec, "image": image_id or agent.spec.runtime.base, "namespace": agent.namespace},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def desired_container(agent: Agent, observed: Observed, port: int) -> DesiredContainer:
    digest = config_hash(agent, observed.image_id)
    labels = {
        names.LABEL_AGENT: agent.name,
        names.LABEL_NAMESPACE: agent.namespace,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_CONFIG_HASH: digest,
        names.LABEL_GENERATION: str(agent.metadata.generation or 0),
    }
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
    )


def make_plan(agent: Agent, observed: Observed, desired: DesiredContainer, *, destroy: bool = False) -> Plan:
    """What to do so the world matches ``agent``: create, start, replace or remove."""
    plan = Plan()
    container_target = f"container:{desired.name}"
    volume_target = f"volume:{desired.volume}"
    deleting = agent.metadata.deletionTimestamp is not None
    if observed.foreign_container and not deleting:
        plan.blocked = (
            f"a container named {desired.name} exists and Den does not own it; "
            "rename or remove it, or give the agent another name"
        )
        return plan
    current = sorted(observed.containers, key=lambda c: (not c.running, c.id))
    if deleting or agent.spec.desiredState == "stopped":
        why = "agent is being deleted" if deleting else "desiredState is stopped"
        for container in current:
            plan.add(Action.remove_container, f"container:{container.name}", why)
        if deleting and destroy and observed.volume_exists:
            plan.add(Action.remove_volume, volume_target, "destroy removes the agent's home and memory")
        return plan
    keep = current[0] if current else None
    for extra in current[1:]:
        plan.add(Action.remove_container, f"container:{extra.name}#{extra.id[:12]}", "duplicate container")
    if not observed.volume_exists:
        plan.add(Action.create_volume, volume_target, "not found")
    if keep is None:
        plan.add(Action.create_container, container_target, "not found")
        plan.add(Action.start_container, container_target, "created")
    elif keep.config_hash != desired.config_hash:
        plan.add(Action.remove_container, container_target, "config diverged")
        plan.add(Action.create_container, container_target, "config diverged")
        plan.add(Action.start_container, container_target, "created")
    elif not keep.running and keep.status != "restarting":  # Docker's restart policy owns restarts
        plan.add(Action.start_container, container_target, f"container is {keep.status}")
    return plan
