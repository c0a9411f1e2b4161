"""The Kubernetes backend: the planner's operations carried out as Kubernetes objects.

Same protocol as the DockerBackend (:mod:`den.operator.backend`), same shared
planner (:func:`~den.operator.plan.make_plan`). What the operations mean here:

==================  =====================================================================
CreateNetwork       nothing: the agent's NetworkPolicy is written with its other objects
                    (observe sets ``policy_in_backend``: no Docker network, no network
                    container is planned; RemoveNetwork and ReloadContainer are nothing too)
CreateVolume        the PVC ``home-<sts>-0``, which the StatefulSet adopts by name
CreateContainer     apply Secret, Service, NetworkPolicy, StatefulSet (1 replica); register
                    the agent with the gateway and (``filtered``) the egress proxy
StartContainer      apply them again (heals a deleted Service, Secret or policy; replicas 1)
RemoveContainer     delete the StatefulSet (its pod goes; the PVC stays): stop, duplicates;
                    for a diverged config nothing: the CreateContainer after it rolls the pod
RemoveVolume        delete the PVC and the agent's Secret, Service and NetworkPolicy (destroy);
                    take it out of the gateway's and the proxy's Secrets
DeliverConfig       re-apply the agent's Secret (its manifest)
==================  =====================================================================

Observe is one snapshot by name and labels: the StatefulSet is the agent's
"container"; it counts as not running when it is scaled to zero or when one of
its companion objects is missing, so the plan starts it (re-applies them).
"""

from __future__ import annotations

import hashlib
import json
import secrets as random
from collections.abc import Iterator, Mapping
from typing import Any

from den.api.contract import CONTAINER_PORT, GATEWAY_TOKEN_ENV, GATEWAY_URL_ENV, TOKEN_ENV
from den.api.errors import Conflict, DenError
from den.api.resource import Agent
from den.operator import htpasswd, names
from den.operator import kubernetes_render as render
from den.operator.backend import ContainerFacts, ExecResult, Stats
from den.operator.kube import Kube, apps, core, networking
from den.operator.plan import (
    Action,
    AgentSecrets,
    DesiredContainer,
    Observed,
    ObservedContainer,
    Operation,
)
from den.operator.secrets import MissingVariable, resolve_env


def _labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def _ours(obj: Mapping[str, Any], agent_name: str, namespace: str) -> bool:
    labels = _labels(obj)
    return (labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY
            and labels.get(names.LABEL_AGENT) == agent_name
            and labels.get(names.LABEL_NAMESPACE) == namespace)


def _decode(secret: Mapping[str, Any] | None, key: str) -> str | None:
    import base64

    value = ((secret or {}).get("data") or {}).get(key)
    return base64.b64decode(value).decode() if value else None


class KubernetesBackend:
    kind = "kubernetes"

    def __init__(self, kube: Kube, operator_namespace: str, egress_blocked: tuple[str, ...] = ()) -> None:
        self.kube = kube
        self.operator_namespace = operator_namespace
        #: Networks the egress proxy never connects to besides loopback and link-local
        #: (the chart's egress.blockedDestinations: the cluster's pod and service ranges).
        self.egress_blocked = list(egress_blocked)

    # -- observe ----------------------------------------------------------------

    def observe(self, agent: Agent) -> Observed:
        ns, sts_name = agent.namespace, names.container_name(agent.name, agent.namespace)
        sts = self.kube.get(f"{apps(ns, 'statefulsets')}/{sts_name}")
        pvc = self.kube.get(f"{core(ns, 'persistentvolumeclaims')}/{render.pvc_name(sts_name)}")
        volume_exists = bool(pvc) and not pvc["metadata"].get("deletionTimestamp")
        image = agent.spec.runtime.base  # the kubelet pulls it; Den cannot see node images
        if sts is None:
            return Observed(volume_exists=volume_exists, image_id=image, policy_in_backend=True)
        if not _ours(sts, agent.name, ns):
            return Observed(volume_exists=volume_exists, image_id=image, foreign_container=True,
                            policy_in_backend=True)
        missing = [kind for kind, path in (
            ("Service", f"{core(ns, 'services')}/{sts_name}"),
            ("Secret", f"{core(ns, 'secrets')}/{sts_name}-env"),
            ("NetworkPolicy", f"{networking(ns)}/{sts_name}"),
        ) if self.kube.get(path) is None]
        replicas = int((sts.get("spec") or {}).get("replicas", 1) or 0)
        state = sts.get("status") or {}
        if missing:
            status = f"missing its {', '.join(missing)}"
        elif replicas < 1:
            status = "scaled to 0"
        else:
            status = "running" if state.get("readyReplicas") else "starting"
        container = ObservedContainer(
            id=f"{ns}/{sts_name}", name=sts_name, running=not missing and replicas >= 1,
            status=status, labels=_labels(sts), host_port=CONTAINER_PORT,
            started_at=sts["metadata"].get("creationTimestamp"),
            restart_count=self._restarts(agent),
        )
        return Observed(containers=(container,), volume_exists=volume_exists, image_id=image,
                        policy_in_backend=True)

    def _restarts(self, agent: Agent) -> int:
        pods = self.kube.list(core(agent.namespace, "pods"), render.selector(agent.name, agent.namespace))
        return sum(int(s.get("restartCount", 0)) for pod in pods
                   for s in (pod.get("status") or {}).get("containerStatuses") or [])

    # -- execute ----------------------------------------------------------------

    def execute(self, operation: Operation) -> None:
        desired = operation.container
        if operation.action in (Action.create_network, Action.remove_network, Action.reload_container):
            return  # Docker's network and proxy: a NetworkPolicy is one of the agent's objects here
        if operation.action == Action.deliver_config:
            # The manifest is in the agent's Secret, re-applied with its other objects; the
            # kubelet refreshes a mounted Secret within a minute (cron is read from it).
            desired = operation.container
            if isinstance(desired, DesiredContainer):
                agent = Agent.model_validate(desired.manifest)
                self.kube.apply(core(agent.namespace, "secrets"), render.secret(desired, agent))
            return
        if operation.action == Action.remove_container:
            if operation.reason == "config diverged":
                return  # the CreateContainer that follows patches the pod template: the pod rolls
            namespace, _, name = (operation.id or "").partition("/")
            self.kube.delete(f"{apps(namespace, 'statefulsets')}/{name}")
            return
        if not isinstance(desired, DesiredContainer):
            raise DenError(f"{operation}: the Kubernetes backend runs agents only "
                           "(the model gateway is the Helm chart's)")
        agent = Agent.model_validate(desired.manifest)
        ns = agent.namespace
        if operation.action == Action.create_volume:
            self.kube.apply(core(ns, "persistentvolumeclaims"), render.pvc(desired, agent))
        elif operation.action in (Action.create_container, Action.start_container):
            for obj in render.agent_objects(desired, agent, self.operator_namespace):
                self.kube.apply(_collection(obj, ns), obj)
            self._register_with_gateway(agent, desired.secrets)
            self._register_with_egress(agent, desired.secrets)
        elif operation.action == Action.remove_volume:
            self.kube.delete(f"{core(ns, 'persistentvolumeclaims')}/{render.pvc_name(desired.name)}")
            self.kube.delete(f"{core(ns, 'secrets')}/{render.secret_name(desired)}")
            self.kube.delete(f"{core(ns, 'services')}/{desired.name}")
            self.kube.delete(f"{networking(ns)}/{desired.name}")
            self._register_with_gateway(agent, None)
            self._register_with_egress(agent, None)

    # -- the gateway's agents.json ------------------------------------------------

    def _register_with_gateway(self, agent: Agent, values: AgentSecrets | None) -> None:
        """Put (or, with ``values=None``, take) the agent's gateway-token hash and model settings
        into the gateway's agents Secret; read-modify-write guarded by resourceVersion."""
        path = f"{core(self.operator_namespace, 'secrets')}/{render.GATEWAY_AGENTS_SECRET}"
        token = values.values.get(GATEWAY_TOKEN_ENV) if values else None
        for _attempt in range(5):
            current = self.kube.get(path)
            config = json.loads(_decode(current, "agents.json") or "{}")
            config.setdefault("agents", {})
            if "admin_token_sha256" not in config:
                config["admin_token_sha256"] = _sha256(random.token_urlsafe(32))  # kubectl-only ledger
            entries = {h: e for h, e in config["agents"].items()
                       if (e.get("namespace"), e.get("name")) != (agent.namespace, agent.name)}
            if token:
                entries[_sha256(token)] = render.gateway_entry(agent)
            if current is not None and entries == config["agents"]:
                return
            config["agents"] = entries
            body = render.gateway_agents_secret(self.operator_namespace, config)
            if self._write_secret(path, body, current):
                return
        raise DenError(f"could not update {path}: it kept changing")

    def _write_secret(self, path: str, body: dict, current: dict | None) -> bool:
        """Create the operator-namespace Secret, or patch it guarded by the resourceVersion read
        with ``current``; False when someone else changed it meanwhile (read again and retry)."""
        try:
            if current is None:
                self.kube.create(core(self.operator_namespace, "secrets"), body)
            else:
                body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
                self.kube.patch(path, body)
            return True
        except Conflict:
            return False

    # -- the egress proxy's squid.conf and passwd ---------------------------------

    def _register_with_egress(self, agent: Agent, values: AgentSecrets | None) -> None:
        """Put a filtered agent's proxy user (password hash, allowlist) into the proxy's Secret,
        or take it out (another policy, ``values=None``); then roll the proxy when what it
        runs on changed. Read-modify-write guarded by resourceVersion, like the gateway's."""
        path = f"{core(self.operator_namespace, 'secrets')}/{render.EGRESS_CONFIG_SECRET}"
        user = render.egress_user(agent)
        password = (values.values.get(EGRESS_TOKEN_ENV) if values else None)
        for _attempt in range(5):
            current = self.kube.get(path)
            clients = json.loads(_decode(current, "clients.json") or "{}")
            entries = {u: e for u, e in clients.items() if u != user}
            if password and str(agent.spec.runtime.network) == "filtered":
                old = clients.get(user, {}).get("hash", "")
                hashed = old if htpasswd.verify(password, old) else htpasswd.md5_crypt(password)
                entries[user] = {"agent": f"{agent.namespace}/{agent.name}", "hash": hashed,
                                 "allow": list(agent.spec.runtime.allow)}
            body = render.egress_config_secret(self.operator_namespace, entries, self.egress_blocked)
            if current is not None and body["data"] == current.get("data"):
                return
            if not self._write_secret(path, body, current):
                continue
            deployment = f"{apps(self.operator_namespace, 'deployments')}/{render.EGRESS}"
            if self.kube.get(deployment) is not None:  # absent: egress.enabled=false in the chart
                self.kube.patch(deployment, render.egress_restart_patch(render.egress_config_hash(body)))
            return
        raise DenError(f"could not update {path}: it kept changing")

    # -- what the CLI asks --------------------------------------------------------

    def check(self) -> None:
        self.kube.request("GET", "/version")

    def has_image(self, image: str) -> bool:
        return True  # nodes pull images; Den cannot see them

    def facts(self, agent: Agent) -> ContainerFacts | None:
        name = names.container_name(agent.name, agent.namespace)
        sts = self.kube.get(f"{apps(agent.namespace, 'statefulsets')}/{name}")
        if sts is None or not _ours(sts, agent.name, agent.namespace):
            return None
        pod = sts["spec"]["template"]["spec"]
        container = pod["containers"][0]
        security = container.get("securityContext") or {}
        return ContainerFacts(
            id=sts["metadata"].get("uid") or name, name=name, image=container.get("image"),
            state="running" if (sts.get("status") or {}).get("readyReplicas") else "not ready",
            started_at=sts["metadata"].get("creationTimestamp"), restart_count=self._restarts(agent),
            nano_cpus=None, memory_bytes=None, ports={"8800/tcp": f"service {name}:8800"},
            read_only_rootfs=security.get("readOnlyRootFilesystem"),
            cap_drop=(security.get("capabilities") or {}).get("drop"),
        )

    def stats(self, agent: Agent) -> Stats | None:
        return None  # metrics-server is optional on clusters; `kubectl top pod` when present

    def logs(self, agent: Agent, *, follow: bool, tail: int | None) -> Iterator[bytes]:
        pod = f"{names.container_name(agent.name, agent.namespace)}-0"
        query = {"tailLines": str(tail)} if tail else None
        yield self.kube.raw(f"{core(agent.namespace, 'pods')}/{pod}/log", query)

    def exec(self, agent: Agent, command: list[str]) -> ExecResult:
        raise DenError("exec on Kubernetes goes through kubectl",
                       hint=" ".join(self.exec_argv(agent, command, interactive=False, tty=False)))

    def exec_argv(self, agent: Agent, command: list[str], *, interactive: bool, tty: bool) -> list[str]:
        pod = f"{names.container_name(agent.name, agent.namespace)}-0"
        flags = (["-i"] if interactive else []) + (["-t"] if tty else [])
        return ["kubectl", "exec", *flags, "-n", agent.namespace, pod, "-c", "agent", "--", *command]


#: The agent's proxy password (also inside its HTTP_PROXY URL); kept across stop/start.
EGRESS_TOKEN_ENV = "DEN_EGRESS_TOKEN"


def _collection(obj: Mapping[str, Any], namespace: str) -> str:
    kind = obj["kind"]
    if kind == "StatefulSet":
        return apps(namespace, "statefulsets")
    if kind == "NetworkPolicy":
        return networking(namespace)
    return core(namespace, {"Secret": "secrets", "Service": "services",
                            "PersistentVolumeClaim": "persistentvolumeclaims"}[kind])


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class KubernetesReadiness:
    """Ready is what the kubelet's readiness probe (``/readyz``) says: the StatefulSet's
    ``readyReplicas``."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def ready(self, key: tuple[str, str], endpoint: str) -> bool:
        namespace, name = key
        sts = self.kube.get(f"{apps(namespace, 'statefulsets')}/{names.container_name(name, namespace)}")
        return bool(sts and int((sts.get("status") or {}).get("readyReplicas") or 0) >= 1)

    def forget(self, key: tuple[str, str]) -> None:
        """Nothing is cached: every answer is read from the StatefulSet's status."""


class KubernetesCredentials:
    """An agent's private environment on a cluster: its tokens are kept in its own Secret
    (made once, kept across stop/start), ``${VAR}`` references resolve from the operator's
    environment (the chart fills it from Secrets the user names), and the gateway URL is
    the gateway Service in the operator's namespace."""

    def __init__(self, kube: Kube, operator_namespace: str, environ: Mapping[str, str]) -> None:
        self.kube = kube
        self.operator_namespace = operator_namespace
        self.environ = environ

    def secrets_for(self, agent: Agent) -> AgentSecrets:
        try:
            env = resolve_env(agent, self.environ)
        except MissingVariable as exc:
            exc.hint = (f"add {exc.variable} to a Secret named in the Helm value operator.envFromSecrets "
                        "(the operator's environment)")
            raise
        path = f"{core(agent.namespace, 'secrets')}/{names.container_name(agent.name, agent.namespace)}-env"
        existing = json.loads(_decode(self.kube.get(path), "env.json") or "{}")
        env[GATEWAY_URL_ENV] = render.gateway_url(self.operator_namespace)
        env[GATEWAY_TOKEN_ENV] = existing.get(GATEWAY_TOKEN_ENV) or "dengw_" + random.token_urlsafe(32)
        env[TOKEN_ENV] = existing.get(TOKEN_ENV) or "den_" + random.token_urlsafe(32)
        if str(agent.spec.runtime.network) == "filtered":
            # its proxy credentials: the password is kept here, its hash in the proxy's Secret
            env[EGRESS_TOKEN_ENV] = existing.get(EGRESS_TOKEN_ENV) or random.token_urlsafe(32)
            env |= render.proxy_environment(self.operator_namespace, render.egress_user(agent),
                                            env[EGRESS_TOKEN_ENV])
        return AgentSecrets(env)

    def forget(self, agent: Agent) -> None:
        """The tokens live in the agent's Secret, which RemoveVolume (destroy) deletes."""
