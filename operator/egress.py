"""The egress proxy as a system component: its config, its container, its counts.

One proxy per installation (``den-egress``, squid) is the only way out for
``filtered`` agents. The operator generates ``$DEN_HOME/egress/squid.conf``
from the agents' network containers as they are observed (each carries its
address and allowlist in labels), mounts it read-only into the proxy and has
squid re-read it in place (SIGHUP) when it changes; converges the proxy's
container like the gateway's (fixed address on Den's network, healed when
removed, removed with the last agent, and Den's network with it); and folds
the proxy's access log into each agent's ``status.network`` and events.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from den.operator import names
from den.operator.backend import StaleEndpoints
from den.operator.gateway import container_user
from den.operator.network import (
    EgressClient,
    blocked_destinations,
    host_addresses,
    parse_access_log,
    squid_config,
)
from den.operator.plan import (
    Action,
    DesiredGateway,
    ObservedGateway,
    Operation,
    gateway_hash,
    make_gateway_plan,
    remove_plan,
)
from den.operator.reconcile import Result, TerminalError
from den.operator.store import Store

log = logging.getLogger("den.operator")

KEY = ("den-system", names.EGRESS)
#: How often the access log is folded into status while nothing else happens.
LOG_POLL = 5.0
#: Largest slice of the access log read in one pass.
LOG_CHUNK = 4 * 1024 * 1024
#: A proxy younger than this is not sent SIGHUP (squid installs its handlers as it starts).
RELOAD_SETTLE = 2.0


def clients_of(net_labels: list[dict[str, str]]) -> list[EgressClient]:
    """The filtered agents the proxy serves, from their network containers' labels."""
    clients = []
    for labels in net_labels:
        if labels.get(names.LABEL_POLICY) != "filtered" or not labels.get(names.LABEL_ADDRESS):
            continue
        allow = tuple(a for a in labels.get(names.LABEL_ALLOW, "").split(",") if a)
        agent = f"{labels.get(names.LABEL_NAMESPACE, 'default')}/{labels.get(names.LABEL_AGENT, '?')}"
        clients.append(EgressClient(agent=agent, address=labels[names.LABEL_ADDRESS], allow=allow))
    return clients


def desired_egress(observed: ObservedGateway) -> DesiredGateway:
    user, _ = container_user()
    folder = names.egress_dir()
    installation = observed.installation
    address = observed.layout.egress if observed.layout else None
    settings = {"user": user, "config": str(folder), "network": installation.network, "address": address}
    digest = gateway_hash(observed.image_id, settings)
    labels = {names.LABEL_COMPONENT: "egress", **installation.labels, names.LABEL_CONFIG_HASH: digest}
    return DesiredGateway(name=installation.egress, image=observed.image_id or names.EGRESS_IMAGE, volume=None,
                          network=installation.network,
                          port=names.EGRESS_PORT, config_dir=str(folder / "config"), user=user, labels=labels,
                          config_hash=digest, address=address, log_dir=str(folder / "log"))


def write_config(text: str) -> bool:
    """Write squid.conf (and make the log folder the proxy writes); True when it changed."""
    folder = names.egress_dir()
    _, owner = container_user()
    for sub, mode in (("config", 0o755), ("log", 0o700)):
        path = folder / sub
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        if owner:
            os.chown(path, *owner)
    target = folder / "config" / "squid.conf"
    if target.exists() and target.read_text() == text:
        return False
    tmp = target.with_name("squid.conf.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return True


class EgressReconciler:
    """Converges the proxy; runs under the same work queue as the agents (key :data:`KEY`)."""

    def __init__(self, store: Store, backend) -> None:
        self.store = store
        self.backend = backend
        self._hosts: list[str] | None = None
        self._reload_pending = False
        self._stale_reported: set[str] = set()  # networks Docker would not remove (reported once)

    def reconcile(self) -> Result:
        agents = self.store.list()
        observed = self.backend.observe_system("egress", names.EGRESS_IMAGE)
        if not agents:
            return self._remove_all(observed)
        if observed.layout is None:
            plan = make_gateway_plan(observed, desired_egress(observed))  # makes the network first
        else:
            if self._hosts is None:
                self._hosts = host_addresses()
            text = squid_config(clients_of(self.backend.net_containers()),
                                blocked_destinations(observed.layout, self._hosts))
            self._reload_pending |= write_config(text)
            plan = make_gateway_plan(observed, desired_egress(observed))
            running = [c for c in observed.containers if c.running]
            if self._reload_pending and running and not plan.operations:
                if _seconds_since(running[0].started_at) < RELOAD_SETTLE:
                    return Result(requeue_after=RELOAD_SETTLE)  # squid dies of a SIGHUP while starting
                plan.add(Operation(Action.reload_container, running[0].name, "squid.conf changed"))
                self._reload_pending = False
            elif not running:
                self._reload_pending = False  # it reads the config as it starts
        if plan.stalled:
            raise TerminalError(*plan.stalled)
        for operation in plan.operations:
            self.backend.execute(operation)
            if operation.action != Action.reload_container:
                self.store.record_event(KEY, operation.action.value, f"{operation.target} ({operation.reason})")
            log.info("egress %s", operation)
        if plan.incomplete:
            return Result(requeue_after=0.0)
        self._fold_log(agents)
        return Result(requeue_after=LOG_POLL)

    def _remove_all(self, observed: ObservedGateway) -> Result:
        """No agent left: the proxy goes, and Den's network once nothing is attached to it."""
        for operation in remove_plan(observed, "no agent needs it").operations:
            self.backend.execute(operation)
            self.store.record_event(KEY, operation.action.value, f"{operation.target} ({operation.reason})")
        if observed.network_exists:
            if self.backend.den_containers_on_network():
                return Result(requeue_after=1.0)  # the gateway is on its way out
            try:
                self.backend.execute(Operation(Action.remove_network, observed.installation.network,
                                               "no agent needs it"))
            except StaleEndpoints as exc:
                # Not retried every few seconds: the resync tries again, quietly, and the next
                # agent simply uses the network.
                if exc.network_id not in self._stale_reported:
                    self._stale_reported.add(exc.network_id)
                    log.warning("%s (%s)", exc.message, exc.hint)
                    self.store.record_event(KEY, "NetworkLeft", f"{exc.message} ({exc.hint})", type_="Warning")
                return Result()
            self.store.record_event(KEY, "RemoveNetwork",
                                    f"network:{observed.installation.network} (no agent needs it)")
        return Result()

    # -- counts --------------------------------------------------------------------

    def _read_new_lines(self) -> list[str]:
        """Lines appended to the access log since the last pass (a cursor file remembers
        where; a log that shrank was replaced and is read from the start)."""
        folder = names.egress_dir()
        path, cursor_path = folder / "log" / "access.log", folder / "access.cursor"
        try:
            size = path.stat().st_size
        except OSError:
            return []
        cursor = _read_cursor(cursor_path)
        start = cursor if cursor <= size else 0
        if start == size:
            return []
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(LOG_CHUNK)
        complete = data[: data.rfind(b"\n") + 1]
        cursor_path.write_text(str(start + len(complete)))
        return complete.decode(errors="replace").splitlines()

    def _fold_log(self, agents) -> None:
        """Add the log's new lines to each agent's running totals (a file beside the log), then
        make every agent's ``status.network`` show its totals. Level-triggered: a count lost to
        a status write racing the agent's own reconcile is put back on the next pass."""
        totals_path = names.egress_dir() / "counts.json"
        totals = _read_json(totals_path)
        by_address = {a.status.network.address: a for a in agents
                      if a.status and a.status.network and a.status.network.address}
        lines = self._read_new_lines()
        for address, entry in parse_access_log(lines).items():
            agent = by_address.get(address)
            if agent is None:
                continue
            total = totals.setdefault(agent.key, {"allowed": 0, "refused": 0, "lastRefused": None})
            total["allowed"] += entry.allowed
            total["refused"] += entry.refused
            total["lastRefused"] = entry.last_refused or total["lastRefused"]
            if entry.allowed:
                self.store.record_event(agent, "EgressAllowed",
                                        f"{entry.allowed} connection(s) through the egress proxy")
            for host, count in sorted(entry.refused_hosts.items()):
                self.store.record_event(agent, "EgressRefused", f"blocked by network policy: {host} ({count}x)",
                                        type_="Warning")
        if lines:
            totals = {key: value for key, value in totals.items() if key in {a.key for a in agents}}
            tmp = totals_path.with_name("counts.json.tmp")
            tmp.write_text(json.dumps(totals))
            os.replace(tmp, totals_path)
        for agent in agents:
            network = agent.status.network if agent.status else None
            total = totals.get(agent.key)
            if network is None or total is None:
                continue
            wanted = network.model_copy(update=total)
            if wanted != network:
                self.store.update_status(agent.name, agent.namespace,
                                         agent.status.model_copy(update={"network": wanted}))

    def record_failure(self, error: Exception) -> None:
        reason = error.reason if isinstance(error, TerminalError) else "ReconcileError"
        self.store.record_event(KEY, reason, str(error) or type(error).__name__, type_="Warning")


def _seconds_since(started_at: str | None) -> float:
    """Seconds since Docker's ``StartedAt`` (RFC 3339 with nanoseconds), or a large number."""
    from datetime import UTC, datetime

    if not started_at:
        return 1e9
    try:
        stamp = datetime.fromisoformat(started_at[:26].rstrip("Z") + "+00:00")
    except ValueError:
        return 1e9
    return (datetime.now(UTC) - stamp).total_seconds()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_cursor(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0

