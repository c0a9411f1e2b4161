"""What an Agent becomes on Kubernetes, as plain dicts: pure functions, no I/O.

From the planner's :class:`~den.operator.plan.DesiredContainer` and the Agent:

- a **Secret** ``<name>-env``: ``env.json`` (the agent's API token, its gateway
  token, the resolved ``runtime.env``) and ``agent.json`` (its manifest), mounted
  read-only at ``/etc/den`` (``DEN_ENV_FILE``, ``DEN_CONFIG``);
- a **StatefulSet** of one replica with a ``home`` volumeClaimTemplate at
  ``/den``, the config hash as a label and a pod-template annotation (a changed
  hash rolls the pod), CPU and memory from ``runtime``, and the same hardening
  as on Docker (non-root, read-only root filesystem, ALL capabilities dropped,
  seccomp RuntimeDefault, no service-account token, an emptyDir ``/tmp``);
- a **Service** on 8800;
- a **NetworkPolicy** from ``runtime.network``.

Every object is labelled like the Docker containers and owned by the Agent
(garbage collection). The model gateway's and the egress proxy's objects are in
the Helm chart; what the operator writes for them is the gateway's agents Secret
(:func:`gateway_agents_secret`), the proxy's config Secret
(:func:`egress_config_secret`: squid.conf and the htpasswd file of the filtered
agents' proxy credentials) and the proxy Deployment's config checksum
(:func:`egress_restart_patch`, which rolls the proxy pod when that Secret changes).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from den.api.contract import CONTAINER_PORT, HOME_DIR
from den.api.resource import Agent
from den.operator import names
from den.operator.htpasswd import passwd_file
from den.operator.network import EgressClient, squid_config
from den.operator.plan import DesiredContainer

#: Where the agent's Secret is mounted.
CONFIG_MOUNT = "/etc/den"
#: The agent image's user (runtime/Dockerfile).
AGENT_UID = 10001
#: The PVC every agent gets for /den (not in the Agentfile yet: docs/limits.md).
HOME_SIZE = "1Gi"
HOME_TEMPLATE = "home"
#: Pods with this label (in the agent's namespace) may call agents' APIs.
CLIENT_LABEL = "den.dev/client"
GATEWAY_AGENTS_SECRET = "den-gateway-agents"
EGRESS_PROXY_PORT = 3128
#: The egress proxy's Deployment and Service (the chart's) and the Secret the operator writes.
EGRESS = names.EGRESS
EGRESS_CONFIG_SECRET = "den-egress-config"
EGRESS_PASSWD = f"{names.EGRESS_CONFIG_MOUNT}/passwd"
#: What the proxy never connects to on a cluster, whatever a name resolves to: loopback,
#: link-local (cloud metadata), multicast; the chart adds the cluster's own ranges.
EGRESS_ALWAYS_BLOCKED = ("127.0.0.0/8", "0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "::1", "fe80::/10")


def selector(agent_name: str, namespace: str) -> dict[str, str]:
    return {names.LABEL_AGENT: agent_name, names.LABEL_NAMESPACE: namespace}


def object_name(desired: DesiredContainer) -> str:
    return desired.name


def secret_name(desired: DesiredContainer) -> str:
    return f"{desired.name}-env"


def pvc_name(sts_name: str) -> str:
    """The claim the StatefulSet's volumeClaimTemplate makes (and adopts when it exists)."""
    return f"{HOME_TEMPLATE}-{sts_name}-0"


def gateway_url(operator_namespace: str) -> str:
    return f"http://{names.GATEWAY}.{operator_namespace}.svc:{names.GATEWAY_PORT}/v1"


def owner_reference(agent: Agent) -> dict[str, Any]:
    return {"apiVersion": agent.apiVersion, "kind": agent.kind, "name": agent.name,
            "uid": agent.metadata.uid or "", "controller": True, "blockOwnerDeletion": True}


def _meta(name: str, desired: DesiredContainer, agent: Agent, *, owned: bool = True) -> dict[str, Any]:
    labels = {k: v for k, v in desired.labels.items() if k != names.LABEL_GENERATION}
    meta: dict[str, Any] = {"name": name, "namespace": agent.namespace, "labels": labels}
    if owned and agent.metadata.uid:
        meta["ownerReferences"] = [owner_reference(agent)]
    return meta


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def cpu_quantity(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def secret(desired: DesiredContainer, agent: Agent) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": _meta(secret_name(desired), desired, agent),
        "type": "Opaque",
        "data": {
            "env.json": _b64(json.dumps(dict(desired.secrets.values), sort_keys=True)),
            "agent.json": _b64(json.dumps(desired.manifest, indent=2)),
        },
    }


def pvc(desired: DesiredContainer, agent: Agent) -> dict[str, Any]:
    """The agent's home, made before the StatefulSet (which adopts it by name). Not owned by
    the Agent: it outlives a stop and goes only through the destroy finalizer."""
    meta = _meta(pvc_name(desired.name), desired, agent, owned=False)
    meta["labels"] = {k: v for k, v in meta["labels"].items() if k != names.LABEL_CONFIG_HASH}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": HOME_SIZE}}}}


def statefulset(desired: DesiredContainer, agent: Agent, *, replicas: int = 1) -> dict[str, Any]:
    match = selector(agent.name, agent.namespace)
    pod_labels = {**match, names.LABEL_MANAGED_BY: names.MANAGED_BY}
    memory = f"{desired.memory_mb}Mi"
    container = {
        "name": "agent",
        "image": desired.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "DEN_CONFIG", "value": f"{CONFIG_MOUNT}/agent.json"},
            {"name": "DEN_ENV_FILE", "value": f"{CONFIG_MOUNT}/env.json"},
            {"name": "DEN_PORT", "value": str(CONTAINER_PORT)},
            {"name": "HOME", "value": HOME_DIR},
        ],
        "resources": {"requests": {"cpu": cpu_quantity(desired.cpu), "memory": memory},
                      "limits": {"cpu": cpu_quantity(desired.cpu), "memory": memory}},
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": AGENT_UID, "runAsGroup": AGENT_UID,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "privileged": False, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"},
                           "periodSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                          "initialDelaySeconds": 10, "periodSeconds": 10},
        "volumeMounts": [
            {"name": HOME_TEMPLATE, "mountPath": HOME_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
        ],
    }
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": _meta(desired.name, desired, agent),
        "spec": {
            "replicas": replicas,
            "serviceName": desired.name,
            "selector": {"matchLabels": match},
            "podManagementPolicy": "Parallel",
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": {
                "metadata": {"labels": pod_labels,
                             "annotations": {names.LABEL_CONFIG_HASH: desired.config_hash}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 10,
                    "securityContext": {
                        "runAsNonRoot": True, "runAsUser": AGENT_UID, "runAsGroup": AGENT_UID,
                        "fsGroup": AGENT_UID, "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                        # 0440: the files' group is the fsGroup (10001), the agent's own
                        {"name": "config", "secret": {"secretName": secret_name(desired), "defaultMode": 0o440}},
                    ],
                },
            },
            "volumeClaimTemplates": [{
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": HOME_TEMPLATE, "labels": match},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": HOME_SIZE}}},
            }],
        },
    }


def service(desired: DesiredContainer, agent: Agent) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(desired.name, desired, agent),
        "spec": {"type": "ClusterIP", "selector": selector(agent.name, agent.namespace),
                 "ports": [{"name": "http", "port": CONTAINER_PORT, "targetPort": "http", "protocol": "TCP"}]},
    }


def _in_operator_namespace(operator_namespace: str, pods: dict[str, str]) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}},
            "podSelector": {"matchLabels": pods}}


DNS = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
               "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
       "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def network_policy(desired: DesiredContainer, agent: Agent, operator_namespace: str) -> dict[str, Any]:
    """``none``: egress only to the model gateway (and cluster DNS, to find it); ``filtered``:
    the gateway and the egress proxy; ``host``: unrestricted. Ingress on 8800 only from the
    operator's namespace and from pods labelled ``den.dev/client: "true"``."""
    gateway = {"to": [_in_operator_namespace(operator_namespace, {names.LABEL_COMPONENT: "gateway"})],
               "ports": [{"protocol": "TCP", "port": names.GATEWAY_PORT}]}
    proxy = {"to": [_in_operator_namespace(operator_namespace, {names.LABEL_COMPONENT: "egress-proxy"})],
             "ports": [{"protocol": "TCP", "port": EGRESS_PROXY_PORT}]}
    egress: list[dict[str, Any]]
    if desired.network == "host":
        egress = [{}]
    elif desired.network == "filtered":
        egress = [DNS, gateway, proxy]
    else:
        egress = [DNS, gateway]
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(desired.name, desired, agent),
        "spec": {
            "podSelector": {"matchLabels": selector(agent.name, agent.namespace)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}}},
                         {"podSelector": {"matchLabels": {CLIENT_LABEL: "true"}}}],
                "ports": [{"protocol": "TCP", "port": CONTAINER_PORT}],
            }],
            "egress": egress,
        },
    }


def agent_objects(desired: DesiredContainer, agent: Agent, operator_namespace: str) -> list[dict[str, Any]]:
    """Everything CreateContainer writes, in the order it writes it."""
    return [secret(desired, agent), service(desired, agent),
            network_policy(desired, agent, operator_namespace), statefulset(desired, agent)]


def gateway_entry(agent: Agent) -> dict[str, Any]:
    """The gateway's view of one agent (its token goes in by hash, next to this)."""
    model = agent.spec.model
    return {"namespace": agent.namespace, "name": agent.name,
            "model": {"provider": model.provider, "name": model.name, "base_url": model.base_url,
                      "temperature": model.temperature, "max_tokens": model.max_tokens},
            "budget": agent.spec.runtime.budget.model_dump(mode="json")}


def gateway_agents_secret(operator_namespace: str, config: dict[str, Any]) -> dict[str, Any]:
    """The gateway's ``agents.json`` (token hashes only), mounted into the gateway pod."""
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": GATEWAY_AGENTS_SECRET, "namespace": operator_namespace,
                         "labels": {names.LABEL_COMPONENT: "gateway", names.LABEL_MANAGED_BY: names.MANAGED_BY}},
            "type": "Opaque",
            "data": {"agents.json": _b64(json.dumps(config, indent=2, sort_keys=True))}}


# -- the egress proxy ---------------------------------------------------------------


def egress_user(agent: Agent) -> str:
    """The agent's proxy user name: ``<namespace>.<name>`` (a namespace has no dots, so it is unique)."""
    return f"{agent.namespace}.{agent.name}"


def egress_host(operator_namespace: str) -> str:
    return f"{EGRESS}.{operator_namespace}.svc"


def proxy_environment(operator_namespace: str, user: str, password: str) -> dict[str, str]:
    """What sends a filtered agent's HTTP clients through the proxy, its credentials in the URL;
    the gateway (and loopback) bypass it."""
    proxy = f"http://{user}:{password}@{egress_host(operator_namespace)}:{EGRESS_PROXY_PORT}"
    no_proxy = f"{names.GATEWAY}.{operator_namespace}.svc,localhost,127.0.0.1"
    return {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "https_proxy": proxy,
            "NO_PROXY": no_proxy, "no_proxy": no_proxy}


def egress_files(clients: dict[str, dict[str, Any]], blocked: list[str]) -> dict[str, str]:
    """squid.conf and passwd from ``clients`` (user -> {agent, hash, allow})."""
    entries = [EgressClient(agent=c["agent"], user=user, allow=tuple(c.get("allow") or ()))
               for user, c in clients.items()]
    conf = squid_config(entries, [*EGRESS_ALWAYS_BLOCKED, *blocked], passwd_file=EGRESS_PASSWD,
                        access_log="stdio:/dev/stdout")
    return {"squid.conf": conf, "passwd": passwd_file({user: c["hash"] for user, c in clients.items()})}


def egress_config_secret(operator_namespace: str, clients: dict[str, dict[str, Any]],
                         blocked: list[str]) -> dict[str, Any]:
    """The proxy's Secret (password hashes, so a Secret): ``clients.json`` (the operator's
    ledger: user -> agent, MD5-crypt hash, allowlist), ``squid.conf`` and ``passwd`` from it."""
    files = {"clients.json": json.dumps(clients, indent=2, sort_keys=True), **egress_files(clients, blocked)}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": EGRESS_CONFIG_SECRET, "namespace": operator_namespace,
                         "labels": {names.LABEL_COMPONENT: "egress-proxy", names.LABEL_MANAGED_BY: names.MANAGED_BY}},
            "type": "Opaque",
            "data": {name: _b64(text) for name, text in files.items()}}


def egress_config_hash(secret: dict[str, Any]) -> str:
    """What the proxy runs on: squid.conf and passwd (not the ledger's formatting)."""
    import hashlib

    data = secret.get("data") or {}
    return hashlib.sha256((data.get("squid.conf", "") + ":" + data.get("passwd", "")).encode()).hexdigest()[:32]


def egress_restart_patch(config_hash: str) -> dict[str, Any]:
    """A merge patch of the proxy Deployment's pod template: a new hash rolls the pod, which
    reads the new squid.conf and passwd as it starts (no wait for the kubelet's Secret sync)."""
    return {"spec": {"template": {"metadata": {"annotations": {names.LABEL_CONFIG_HASH: config_hash}}}}}
