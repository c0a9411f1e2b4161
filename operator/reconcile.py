"""The reconcile loop: re-read, observe once, plan, execute, report status.

``Reconciler.reconcile(namespace, name)`` gets only the key, re-reads the
agent from the store every time, takes one observed snapshot per pass, never
branches on create vs update, and returns "requeue after N" instead of
sleeping (controller-runtime's contract). The same function runs under the
local operator and (with the Kubernetes backend) under kopf.

Credentials are the reconciler's too: every pass resolves the agent's token
and ``runtime.env`` (:class:`~den.operator.secrets.LocalCredentials`), and
their digest is part of the config hash, so a rotated key or token replaces
the container like any other change. An unresolvable ``${VAR}`` leaves the
agent Pending with a condition that names it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from den.api.agentfile import cron_digest
from den.api.errors import DenError
from den.api.netpolicy import reaches
from den.api.resource import Agent, AgentStatus, Backoff, Condition, NetworkStatus, now
from den.operator import names
from den.operator.backend import Backend, PortTaken
from den.operator.cron import CronReport, cron_status
from den.operator.network import choose_address
from den.operator.plan import (
    Action,
    AgentSecrets,
    DesiredContainer,
    Observed,
    Plan,
    choose_port,
    desired_container,
    make_config_plan,
    make_plan,
)
from den.operator.secrets import MissingVariable
from den.operator.store import Store

log = logging.getLogger("den.operator")

READY_POLL = 0.5
CRASH_POLL = 2.0
#: Seconds a delivered manifest has to be noticed by the agent (it looks every second)
#: before the same cron section is delivered again: passes come faster than that (every
#: status write wakes one), and each would otherwise copy it again.
DELIVERY_PATIENCE = 5.0
#: Ports found taken by other programs are skipped within one reconcile, this many times.
PORT_ATTEMPTS = 5

Key = tuple[str, str]


@dataclass(frozen=True)
class Result:
    requeue_after: float | None = None


class TerminalError(DenError):
    """Nothing will change by retrying until a person acts (recorded, retried only slowly)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Credentials(Protocol):
    def secrets_for(self, agent: Agent) -> AgentSecrets: ...

    def forget(self, agent: Agent) -> None: ...


class Readiness(Protocol):
    def ready(self, key: Key, endpoint: str) -> bool: ...

    def forget(self, key: Key) -> None:
        """Drop what was seen of ``key``: its container was just replaced or started."""


def set_condition(status: AgentStatus, previous: AgentStatus | None, type_: str, value: str,
                  reason: str, message: str, generation: int | None) -> None:
    """Add a condition, keeping lastTransitionTime when its status did not change."""
    old = previous.condition(type_) if previous else None
    changed_at = old.lastTransitionTime if old and old.status == value else now()
    status.conditions = [c for c in status.conditions if c.type != type_]
    status.conditions.append(
        Condition(type=type_, status=value, reason=reason, message=message,
                  lastTransitionTime=changed_at, observedGeneration=generation)
    )


def network_status(agent: Agent, address: str | None) -> NetworkStatus:
    """The effective policy as status shows it; the egress counts carry over (the egress
    reconciler adds to them from the proxy's log)."""
    previous = agent.status.network if agent.status and agent.status.network else None
    policy = str(agent.spec.runtime.network)
    return NetworkStatus(policy=policy, reaches=reaches(policy), address=address or (previous.address if previous else None),
                         allow=list(agent.spec.runtime.allow),
                         allowed=previous.allowed if previous else 0, refused=previous.refused if previous else 0,
                         lastRefused=previous.lastRefused if previous else None)


class Reconciler:
    def __init__(self, store: Store, backend: Backend, *, credentials: Credentials,
                 readiness: Readiness, cron_report: CronReport | None = None,
                 endpoint: Callable[[Agent, int], str] | None = None, gateway_url: str | None = None) -> None:
        self.store = store
        #: ``(endpoint, token) -> GET /den/v1/cron`` of a ready agent (the controller passes
        #: :func:`den.operator.cron.fetch_cron`); None: status.cron is not reported.
        self.cron_report = cron_report
        # Where clients reach an agent and where it reaches the gateway: 127.0.0.1 and the den
        # network locally; a Service and the gateway's Service on Kubernetes.
        self.endpoint = endpoint or (lambda agent, port: f"http://127.0.0.1:{port}")
        self.gateway_url = gateway_url or names.gateway_url()
        self.backend = backend
        self.credentials = credentials
        self.readiness = readiness
        # Ports other workers are giving out right now: not yet in any snapshot. Only in-flight
        # claims live here; what exists is always observed.
        self._claims: dict[int, Key] = {}
        self._address_claims: dict[str, Key] = {}
        self._claims_lock = threading.Lock()
        #: The cron digest last delivered to each agent, and when (``clock``'s seconds).
        self._delivered: dict[str, tuple[str, float]] = {}
        self.clock: Callable[[], float] = time.monotonic

    def _claim(self, key: Key, agent: Agent, observed, avoid: set[int]) -> int:
        with self._claims_lock:
            others = {port for port, owner in self._claims.items() if owner != key}
            port = choose_port(agent, observed, frozenset(avoid | others))
            self._claims[port] = key
            return port

    def _claim_address(self, key: Key, agent: Agent, observed: Observed) -> str | None:
        """The agent's address on Den's network: the one its network container has, else the
        one its status recorded, else the lowest free (other workers' in-flight claims too)."""
        if observed.layout is None:
            return None
        with self._claims_lock:
            others = {a for a, owner in self._address_claims.items() if owner != key}
            current = next((c.labels.get(names.LABEL_ADDRESS) for c in observed.net_containers
                            if c.labels.get(names.LABEL_ADDRESS)), None)
            recorded = agent.status.network.address if agent.status and agent.status.network else None
            address = choose_address(observed.layout, observed.used_addresses | others, current or recorded)
            self._address_claims[address] = key
            return address

    def _release(self, port: int, key: Key, address: str | None = None) -> None:
        with self._claims_lock:
            if self._claims.get(port) == key:
                del self._claims[port]
            if address and self._address_claims.get(address) == key:
                del self._address_claims[address]

    def _event(self, agent: Agent, reason: str, message: str, type_: str = "Normal") -> None:
        log.info("%s %s: %s", agent.key, reason, message)
        self.store.record_event(agent, reason, message, type_=type_)

    def _ready(self, agent: Agent, endpoint: str) -> bool:
        return self.readiness.ready((agent.namespace, agent.name), endpoint)

    # -- the loop ---------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> Result:
        agent = self.store.find(name, namespace)
        if agent is None:
            return Result()
        deleting = agent.metadata.deletionTimestamp is not None
        if not deleting and names.FINALIZER not in agent.metadata.finalizers:
            agent = self.store.add_finalizer(name, namespace, names.FINALIZER)
        destroy = names.FINALIZER_DESTROY in agent.metadata.finalizers
        running = not deleting and agent.spec.desiredState == "running"
        secrets = AgentSecrets({})
        if running:
            try:
                secrets = self.credentials.secrets_for(agent)
            except MissingVariable as exc:
                return self._report_missing(agent, exc)
        key = (namespace, name)
        avoid: set[int] = set()
        for _attempt in range(PORT_ATTEMPTS):
            observed = self.backend.observe(agent)
            port = self._claim(key, agent, observed, avoid)
            address = self._claim_address(key, agent, observed) if running else None
            try:
                desired = desired_container(agent, observed, port, secrets, address)
                plan = make_plan(agent, observed, desired, destroy=destroy)
                if plan.stalled:
                    raise TerminalError(*plan.stalled)
                self._execute(agent, plan)
                break
            except PortTaken as exc:
                avoid.add(exc.port)
                self._event(agent, "PortTaken", f"{exc}; trying the next port", "Warning")
            finally:
                self._release(port, key, address)
        else:
            raise DenError(f"no free port for {agent.key} after {PORT_ATTEMPTS} tries: {sorted(avoid)} are taken")
        if deleting:
            # Finalizers go only once a pass observes nothing left: the next pass, at once.
            return Result(requeue_after=0.0) if plan.operations else self._finish_delete(agent, destroy)
        if plan.incomplete:  # Den's network was just made: plan the rest against it, at once
            return Result(requeue_after=0.0)
        restarts = max((c.restart_count for c in observed.containers), default=0)
        cron, delivered = self._sync_cron(agent, desired)
        result = self._report(agent, desired.port, restarts, address, cron)
        return Result(requeue_after=1.0) if delivered and result.requeue_after is None else result

    def _sync_cron(self, agent: Agent, desired: DesiredContainer) -> tuple[tuple | None, bool]:
        """Read the ready agent's cron report; deliver the manifest when its cron section changed."""
        endpoint = self.endpoint(agent, desired.port)
        if agent.spec.desiredState != "running" or self.cron_report is None or not self._ready(agent, endpoint):
            return None, False
        report = self.cron_report(endpoint, desired.secrets.token)
        if report is None:
            return None, False
        plan = make_config_plan(agent, desired, report.get("digest"))
        if plan:
            wanted, at = cron_digest(agent.spec.cron), self.clock()
            last = self._delivered.get(agent.key)
            if last is None or last[0] != wanted or at - last[1] >= DELIVERY_PATIENCE:
                self._execute(agent, plan)
                self._delivered[agent.key] = (wanted, at)
        else:
            self._delivered.pop(agent.key, None)
        return cron_status(report), bool(plan)

    def _execute(self, agent: Agent, plan: Plan) -> None:
        for operation in plan.operations:
            self.backend.execute(operation)
            if operation.action in (Action.create_container, Action.start_container):
                # What the prober saw was the previous container's: a new one is probed afresh.
                self.readiness.forget((agent.namespace, agent.name))
            self._event(agent, operation.action.value, f"{operation.target} ({operation.reason})")

    def _finish_delete(self, agent: Agent, destroy: bool) -> Result:
        self._delivered.pop(agent.key, None)
        if destroy:
            self.credentials.forget(agent)
        for finalizer in (names.FINALIZER_DESTROY, names.FINALIZER):
            if finalizer in agent.metadata.finalizers:
                agent = self.store.remove_finalizer(agent.name, agent.namespace, finalizer)
        log.info("%s deleted", agent.key)
        return Result()

    # -- status -----------------------------------------------------------------

    def _new_status(self, agent: Agent, port: int | None) -> AgentStatus:
        previous = agent.status
        return AgentStatus(phase="Pending", observedGeneration=agent.metadata.generation,
                           port=port if port is not None else (previous.port if previous else None),
                           gateway=self.gateway_url,
                           usage=previous.usage if previous else None,
                           network=previous.network if previous else None,
                           cron=list(previous.cron) if previous else [],
                           nextRun=previous.nextRun if previous else None)

    def _write_status(self, agent: Agent, status: AgentStatus) -> None:
        previous = agent.status
        if previous is None or previous.phase != status.phase:
            self._event(agent, status.phase, f"phase {status.phase}")
        self.store.update_status(agent.name, agent.namespace, status)

    def _report_missing(self, agent: Agent, error: MissingVariable) -> Result:
        previous, generation = agent.status, agent.metadata.generation
        status = self._new_status(agent, None)
        message = f"{error.message} ({error.hint})"
        set_condition(status, previous, "Ready", "False", "MissingVariable", message, generation)
        set_condition(status, previous, "Stalled", "True", "MissingVariable", message, generation)
        old = previous.condition("Stalled") if previous else None
        if not old or old.message != message:
            self._event(agent, "MissingVariable", message, "Warning")
        self._write_status(agent, status)
        return Result()  # credentials changes and the resync bring it back

    def _report(self, agent: Agent, port: int, restarts: int = 0, address: str | None = None,
                cron: tuple | None = None) -> Result:
        previous, generation = agent.status, agent.metadata.generation
        status = self._new_status(agent, port)
        status.network = network_status(agent, address)
        if cron is not None:
            status.cron, status.nextRun = cron
        requeue: float | None = None
        if agent.spec.desiredState == "stopped":
            status.phase = "Stopped"
            set_condition(status, previous, "Ready", "False", "Stopped", "desiredState is stopped", generation)
            set_condition(status, previous, "Reconciling", "False", "Stopped", "", generation)
        else:
            endpoint = self.endpoint(agent, port)
            status.endpoint = endpoint
            if self._ready(agent, endpoint):
                status.phase = "Running"
                set_condition(status, previous, "Ready", "True", "Serving", f"answering on {endpoint}", generation)
                set_condition(status, previous, "Reconciling", "False", "Converged", "", generation)
            elif restarts:
                status.phase = "Starting"
                message = f"the container keeps exiting ({restarts} restarts); see `den logs {agent.name}`"
                set_condition(status, previous, "Ready", "False", "CrashLoop", message, generation)
                set_condition(status, previous, "Reconciling", "True", "CrashLoop", message, generation)
                requeue = CRASH_POLL
            else:
                status.phase = "Starting"
                set_condition(status, previous, "Ready", "False", "Starting", "waiting for /readyz", generation)
                set_condition(status, previous, "Reconciling", "True", "Starting", "container starting", generation)
                requeue = READY_POLL
        set_condition(status, previous, "Stalled", "False", "AsExpected", "", generation)
        set_condition(status, previous, "Degraded", "False", "AsExpected", "", generation)
        self._write_status(agent, status)
        return Result(requeue_after=requeue)

    def record_failure(self, namespace: str, name: str, error: Exception, retries: int, delay: float) -> None:
        """Status and an event for a failed reconcile (the driver owns the backoff)."""
        agent = self.store.find(name, namespace)
        if agent is None:
            return
        previous, generation = agent.status, agent.metadata.generation
        terminal = isinstance(error, TerminalError)
        reason = error.reason if terminal else "ReconcileError"
        message = str(error) or type(error).__name__
        status = previous.model_copy(deep=True) if previous else AgentStatus()
        status.phase = "Failed"
        set_condition(status, previous, "Ready", "False", reason, message, generation)
        set_condition(status, previous, "Degraded", "True", reason, message, generation)
        set_condition(status, previous, "Stalled", "True" if terminal else "False",
                      reason if terminal else "Retrying", message if terminal else "", generation)
        status.backoff = Backoff(retries=retries, nextRetrySeconds=round(delay, 1))
        old = previous.condition("Degraded") if previous else None
        if not old or old.status != "True" or old.message != message:
            self._event(agent, reason, message, "Warning")
        self.store.update_status(name, namespace, status)
