"""The backend protocol: what the reconciler and the CLI need from Docker or Kubernetes.

Backends are two implementations of this one small protocol
(:class:`~den.operator.docker_backend.DockerBackend` today, a Kubernetes one
next). The planner never imports a backend and backends never import each
other. Errors the reconciler reacts to are types defined here, so it can
catch them by type.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from den.api.errors import DenError
from den.api.resource import Agent
from den.operator.plan import Observed, Operation


class StaleEndpoints(DenError):
    """Docker refuses to remove a network for endpoints no container holds (a Docker bug,
    moby/moby#42119: only a restart of the engine clears them)."""

    def __init__(self, network: str, network_id: str) -> None:
        super().__init__(f"Docker keeps an endpoint on network {network} that no container holds "
                         "(moby/moby#42119); the network is left in place",
                         hint="it is harmless; a restart of Docker removes it")
        self.network_id = network_id


class PortTaken(DenError):
    """The host port was taken by something that is not Den between observe and start."""

    def __init__(self, port: int) -> None:
        super().__init__(f"port {port} on 127.0.0.1 is in use by another program")
        self.port = port


@dataclass(frozen=True)
class ContainerFacts:
    """What ``den inspect`` shows of an agent's container (or pod)."""

    id: str
    name: str
    image: str | None
    state: str
    started_at: str | None
    restart_count: int
    nano_cpus: int | None
    memory_bytes: int | None
    ports: dict | None
    read_only_rootfs: bool | None
    cap_drop: list[str] | None


@dataclass(frozen=True)
class Stats:
    """One sample of a running agent's resource use (``den status``)."""

    cpu_percent: float
    memory_used: int
    memory_limit: int
    started_at: str | None


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


@runtime_checkable
class Backend(Protocol):
    """Observe one agent in one snapshot; carry out one operation per call; answer the CLI."""

    #: "docker" or "kubernetes": shown to users.
    kind: str

    def observe(self, agent: Agent) -> Observed:
        """Everything that exists for ``agent`` (found by labels), in one snapshot."""

    def execute(self, operation: Operation) -> None:
        """Carry out one operation, idempotently. Raises :class:`PortTaken` when the host
        port turns out to be held by another program."""

    def check(self) -> None:
        """Raise :class:`~den.api.errors.BackendUnavailable` when the engine cannot be reached."""

    def has_image(self, image: str) -> bool:
        """Whether ``image`` is present where agents are started."""

    def facts(self, agent: Agent) -> ContainerFacts | None:
        """The agent's container, or None when it has none (or the name is not Den's)."""

    def stats(self, agent: Agent) -> Stats | None:
        """A resource sample of the agent's running container, or None when it is not running."""

    def logs(self, agent: Agent, *, follow: bool, tail: int | None) -> Iterator[bytes]:
        """The agent's log stream."""

    def exec(self, agent: Agent, command: list[str]) -> ExecResult:
        """Run ``command`` in the agent's container and wait for it."""

    def exec_argv(self, agent: Agent, command: list[str], *, interactive: bool, tty: bool) -> list[str]:
        """The argv of an interactive exec (run by the CLI in place of itself)."""
