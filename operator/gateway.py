"""The model gateway as a system component: its config files, its container, its ledger.

One gateway per installation holds the provider keys and litellm. The
operator writes its config (``$DEN_HOME/gateway/agents.json``: each agent's
gateway token, as a sha256, with its model settings and budget;
``keys.json``: provider keys), mounted read-only into the gateway, which
reloads them in place; converges its container like an agent's (network,
volume for the ledger, container with a config hash; healed when removed);
and copies today's usage from the ledger into each agent's status.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from den.api.contract import provider_key_name
from den.api.resource import Agent, Usage
from den.operator import names
from den.operator.plan import (
    DesiredGateway,
    ObservedGateway,
    gateway_hash,
    make_gateway_plan,
    remove_plan,
)
from den.operator.reconcile import Result, TerminalError
from den.operator.secrets import (
    LocalCredentials,
    MissingVariable,
    admin_token,
    ensure_token,
    load_credentials,
)
from den.operator.store import Store

log = logging.getLogger("den.operator")

#: The work-queue key of the gateway (agents' namespaces are DNS labels; this one is reserved).
KEY = ("den-system", names.GATEWAY)
#: How often the gateway's ledger is copied into agents' status.
USAGE_POLL = 5.0
#: The gateway image's user; config files are given to it when Den runs as root.
IMAGE_UID = 10001


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def gateway_config(agents: Iterable[Agent], credentials: LocalCredentials) -> tuple[dict, dict]:
    """(agents.json, keys.json) for these agents: tokens as hashes, never the tokens."""
    entries, keys = {}, {provider_key_name(p): k for p, k in load_credentials().items()}
    for agent in agents:
        if agent.metadata.deletionTimestamp:
            continue
        model = agent.spec.model
        entries[_sha256(ensure_token(agent, kind="gateway"))] = {
            "namespace": agent.namespace,
            "name": agent.name,
            "model": {"provider": model.provider, "name": model.name, "base_url": model.base_url,
                      "temperature": model.temperature, "max_tokens": model.max_tokens},
            "budget": agent.spec.runtime.budget.model_dump(),
        }
        try:
            key = credentials.provider_key_for(agent)
        except MissingVariable:
            key = None
        if key:
            keys[provider_key_name(model.provider)] = key
    return {"admin_token_sha256": _sha256(admin_token()), "agents": entries}, keys


def _write_if_changed(path: Path, data: dict, owner: tuple[int, int] | None) -> bool:
    text = json.dumps(data, indent=2, sort_keys=True)
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    if owner:
        os.chown(tmp, *owner)
    os.replace(tmp, path)
    return True


def container_user() -> tuple[str, tuple[int, int] | None]:
    """Who the gateway runs as, and who must own its config files so it can read them (0600).

    As root, the files are given to the image's user; otherwise the gateway runs as the
    calling user, who already owns them."""
    if os.geteuid() == 0:
        return f"{IMAGE_UID}:{IMAGE_UID}", (IMAGE_UID, IMAGE_UID)
    return f"{os.getuid()}:{os.getgid()}", None


def write_config(agents: Iterable[Agent], credentials: LocalCredentials) -> bool:
    """Write the gateway's config folder; True when a file changed."""
    folder = names.gateway_dir()
    user, owner = container_user()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    if owner:
        os.chown(folder, *owner)
    config, keys = gateway_config(agents, credentials)
    changed = _write_if_changed(folder / "agents.json", config, owner)
    return _write_if_changed(folder / "keys.json", keys, owner) or changed


def desired_gateway(observed: ObservedGateway) -> DesiredGateway:
    user, _ = container_user()
    installation = observed.installation
    labels = {names.LABEL_COMPONENT: "gateway", **installation.labels}
    address = observed.layout.gateway if observed.layout else None
    settings = {"port": names.GATEWAY_PORT, "user": user, "config": str(names.gateway_dir()),
                "network": installation.network, "volume": installation.gateway_volume, "address": address}
    digest = gateway_hash(observed.image_id, settings)
    return DesiredGateway(
        name=installation.gateway, image=observed.image_id or names.GATEWAY_IMAGE,
        volume=installation.gateway_volume, network=installation.network,
        port=names.GATEWAY_PORT, config_dir=str(names.gateway_dir()), user=user,
        labels={**labels, names.LABEL_CONFIG_HASH: digest}, config_hash=digest, address=address,
    )


def read_ledger(endpoint: str, timeout: float = 1.0) -> dict:
    """Today's usage of every agent, from the gateway (the admin token never leaves this host)."""
    request = urllib.request.Request(f"{endpoint}/den/v1/ledger",
                                     headers={"Authorization": f"Bearer {admin_token()}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (127.0.0.1)
        return json.loads(response.read())


def usage_of(entry: dict) -> Usage:
    tokens = entry.get("tokens") or {}
    return Usage(day=str(entry.get("day", "")), requests=int(entry.get("requests") or 0),
                 refused=int(entry.get("refused") or 0), tokens=int(tokens.get("total") or 0),
                 costUsd=round(float(entry.get("cost_usd") or 0.0), 6),
                 overBudget=bool(entry.get("over_budget")))


class GatewayReconciler:
    """Converges the gateway; runs under the same work queue as the agents (key :data:`KEY`)."""

    def __init__(self, store: Store, backend, credentials: LocalCredentials) -> None:
        self.store = store
        self.backend = backend
        self.credentials = credentials

    def reconcile(self) -> Result:
        agents = self.store.list()
        if write_config(agents, self.credentials):
            log.info("gateway config written (%d agents)", len(agents))
        observed = self.backend.observe_gateway()
        if not agents:  # nothing to serve: the first agent brings it up, the last takes it away
            plan = remove_plan(observed, "no agent needs it")
        else:
            plan = make_gateway_plan(observed, desired_gateway(observed))
        if plan.stalled:
            raise TerminalError(*plan.stalled)
        for operation in plan.operations:
            self.backend.execute(operation)
            self.store.record_event(KEY, operation.action.value, f"{operation.target} ({operation.reason})")
            log.info("gateway %s", operation)
        if plan.incomplete:
            return Result(requeue_after=0.0)
        if plan.operations:
            return Result(requeue_after=0.5)
        if not agents:
            return Result()
        self._copy_usage(agents)
        return Result(requeue_after=USAGE_POLL)

    def _copy_usage(self, agents: list[Agent]) -> None:
        endpoint = self.backend.gateway_endpoint()
        if endpoint is None:
            return
        try:
            ledger = read_ledger(endpoint)
        except Exception as exc:  # starting, restarting: the next pass tries again
            log.debug("gateway ledger not readable yet: %s", exc)
            return
        by_agent = {entry.get("agent"): entry for entry in ledger.get("agents", [])}
        for agent in agents:
            entry = by_agent.get(agent.key)
            if entry is None or agent.status is None:
                continue
            usage = usage_of(entry)
            if agent.status.usage != usage:
                status = agent.status.model_copy(update={"usage": usage})
                self.store.update_status(agent.name, agent.namespace, status)

    def record_failure(self, error: Exception) -> None:
        reason = error.reason if isinstance(error, TerminalError) else "ReconcileError"
        self.store.record_event(KEY, reason, str(error) or type(error).__name__, type_="Warning")
