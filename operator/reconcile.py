"""The reconcile loop: re-read, observe, plan, execute, report status.

``Reconciler.reconcile(namespace, name)`` gets only the key, re-reads the
agent from the store every time, never branches on create vs update, and
returns "requeue after N" instead of sleeping (controller-runtime's
contract). The same function runs under the local operator and (with the
Kubernetes backend) under kopf.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from den.api.errors import DenError
from den.api.resource import Agent, AgentStatus, Condition, now
from den.operator import names
from den.operator.plan import Action, DesiredContainer, Observed, desired_container, make_plan
from den.operator.store import Store

log = logging.getLogger("den.operator")

FIRST_PORT = 8800
READY_POLL = 0.5


@dataclass(frozen=True)
class Result:
    requeue_after: float | None = None


class TerminalError(DenError):
    """Nothing will change by retrying (recorded, retried only slowly)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _http_ready(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/readyz", timeout=1.0) as response:  # noqa: S310
            return response.status == 200
    except Exception:
        return False


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


class Reconciler:
    def __init__(
        self,
        store: Store,
        backend,
        *,
        runtime_env: Callable[[Agent], Mapping[str, str]],
        ready_check: Callable[[str], bool] = _http_ready,
    ) -> None:
        self.store = store
        self.backend = backend
        self.runtime_env = runtime_env
        self.ready_check = ready_check

    # -- helpers ----------------------------------------------------------------

    def _event(self, agent: Agent, reason: str, message: str, type_: str = "Normal") -> None:
        log.info("%s %s: %s", agent.key, reason, message)
        self.store.record_event(agent, reason, message, type_=type_)

    def _choose_port(self, agent: Agent, observed: Observed, avoid: set[int]) -> int:
        for container in observed.containers:
            if container.host_port and container.host_port not in avoid:
                return container.host_port
        used = self.backend.used_ports(exclude_agent=agent) | avoid
        recorded = getattr(agent.status, "port", None) if agent.status else None
        if isinstance(recorded, int) and recorded not in used and self.backend.port_free(recorded):
            return recorded
        port = FIRST_PORT
        while port in used or not self.backend.port_free(port):
            port += 1
        return port

    # -- the loop ---------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> Result:
        agent = self.store.find(name, namespace)
        if agent is None:
            return Result()
        deleting = agent.metadata.deletionTimestamp is not None
        if not deleting and names.FINALIZER not in agent.metadata.finalizers:
            agent = self.store.add_finalizer(name, namespace, names.FINALIZER)
        destroy = names.FINALIZER_DESTROY in agent.metadata.finalizers
        avoid: set[int] = set()
        for _attempt in range(5):
            observed = self.backend.observe(agent)
            port = self._choose_port(agent, observed, avoid)
            desired = desired_container(agent, observed, port)
            plan = make_plan(agent, observed, desired, destroy=destroy)
            if plan.blocked:
                raise TerminalError("NameConflict", plan.blocked)
            needs_image = any(op.action == Action.create_container for op in plan.operations)
            if needs_image and observed.image_id is None:
                raise TerminalError(
                    "ImageMissing",
                    f"image {desired.image} not found: build it with `make image` "
                    "(hack/build-image.sh)",
                )
            try:
                self._execute(agent, plan, desired)
                break
            except Exception as exc:
                if type(exc).__name__ != "PortTaken":
                    raise
                avoid.add(port)
                self._event(agent, "PortTaken", f"port {port} is in use; trying the next one", "Warning")
        else:
            raise DenError(f"no free port found for {agent.key}")
        if deleting:
            return self._finish_delete(agent, destroy)
        restarts = max((c.restart_count for c in observed.containers), default=0)
        return self._report(agent, desired, restarts)

    def _execute(self, agent: Agent, plan, desired: DesiredContainer) -> None:
        env: Mapping[str, str] = {}
        if any(op.action == Action.create_container for op in plan.operations):
            env = self.runtime_env(agent)
        for operation in plan.operations:
            self.backend.execute(operation, agent, desired, env)
            self._event(agent, operation.action.value, f"{operation.target} ({operation.reason})")

    def _finish_delete(self, agent: Agent, destroy: bool) -> Result:
        observed = self.backend.observe(agent)
        if observed.containers or (destroy and observed.volume_exists):
            return Result(requeue_after=READY_POLL)
        for finalizer in (names.FINALIZER_DESTROY, names.FINALIZER):
            if finalizer in agent.metadata.finalizers:
                agent = self.store.remove_finalizer(agent.name, agent.namespace, finalizer)
        log.info("%s deleted", agent.key)
        return Result()

    def _report(self, agent: Agent, desired: DesiredContainer, restarts: int = 0) -> Result:
        previous = agent.status
        generation = agent.metadata.generation
        status = AgentStatus(
            phase="Pending", observedGeneration=generation, endpoint=None,
            cron=list(previous.cron) if previous else [],
        )
        status.port = desired.port  # type: ignore[attr-defined]
        requeue: float | None = None
        if agent.spec.desiredState == "stopped":
            status.phase = "Stopped"
            set_condition(status, previous, "Ready", "False", "Stopped", "desiredState is stopped", generation)
            set_condition(status, previous, "Reconciling", "False", "Stopped", "", generation)
        else:
            endpoint = f"http://127.0.0.1:{desired.port}"
            status.endpoint = endpoint
            if self.ready_check(endpoint):
                status.phase = "Running"
                set_condition(status, previous, "Ready", "True", "Serving", f"answering on {endpoint}", generation)
                set_condition(status, previous, "Reconciling", "False", "Converged", "", generation)
            elif restarts:
                status.phase = "Starting"
                message = f"the container keeps exiting ({restarts} restarts); see `den logs {agent.name}`"
                set_condition(status, previous, "Ready", "False", "CrashLoop", message, generation)
                set_condition(status, previous, "Reconciling", "True", "CrashLoop", message, generation)
                requeue = 2.0
            else:
                status.phase = "Starting"
                set_condition(status, previous, "Ready", "False", "Starting", "waiting for /readyz", generation)
                set_condition(status, previous, "Reconciling", "True", "Starting", "container starting", generation)
                requeue = READY_POLL
        set_condition(status, previous, "Degraded", "False", "AsExpected", "", generation)
        if previous is None or previous.phase != status.phase:
            self._event(agent, status.phase, f"phase {status.phase}")
        self.store.update_status(agent.name, agent.namespace, status)
        return Result(requeue_after=requeue)

    def record_failure(self, namespace: str, name: str, error: Exception, retries: int, delay: float) -> None:
        """Status and an event for a failed reconcile (the driver owns the backoff)."""
        agent = self.store.find(name, namespace)
        if agent is None:
            return
        previous = agent.status
        reason = error.reason if isinstance(error, TerminalError) else "ReconcileError"
        message = str(error) or type(error).__name__
        status = previous.model_copy(deep=True) if previous else AgentStatus()
        status.phase = "Failed"
        generation = agent.metadata.generation
        set_condition(status, previous, "Ready", "False", reason, message, generation)
        set_condition(status, previous, "Degraded", "True", reason, message, generation)
        status.backoff = {"retries": retries, "nextRetrySeconds": round(delay, 1)}  # type: ignore[attr-defined]
        old = previous.condition("Degraded") if previous else None
        if not old or old.status != "True" or old.message != message:
            self._event(agent, reason, message, "Warning")
        self.store.update_status(name, namespace, status)
