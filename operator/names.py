"""The one place that owns Den's label names, object names and file paths."""

from __future__ import annotations

import os
from pathlib import Path

# Labels and annotations Den puts on what it owns (stores, containers, volumes).
LABEL_AGENT = "den.dev/agent"
LABEL_NAMESPACE = "den.dev/namespace"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "den"
LABEL_CONFIG_HASH = "den.dev/config-hash"
LABEL_GENERATION = "den.dev/generation"
LABEL_SOURCE = "den.dev/source"
ANNOTATION_SOURCE_PATH = "den.dev/source-path"

LABEL_COMPONENT = "den.dev/component"
#: On an agent's network container: its address, its policy and its allowlist (the proxy's input).
LABEL_ADDRESS = "den.dev/address"
LABEL_POLICY = "den.dev/network-policy"
LABEL_ALLOW = "den.dev/allow"
#: On Den's network: the subnet Den chose for it.
LABEL_SUBNET = "den.dev/subnet"
COMPONENT_NET = "net"
#: Set on every agent container, so that it never carries its image's component label
#: (an agent's base image may be built from den-egress or den-gateway).
COMPONENT_AGENT = "agent"

FINALIZER = "den.dev/cleanup"
FINALIZER_DESTROY = "den.dev/destroy-volume"


def den_home() -> Path:
    """``$DEN_HOME``, default ``~/.den``: the local state store, credentials and logs."""
    return Path(os.environ.get("DEN_HOME") or Path.home() / ".den").expanduser()


def state_db_path() -> Path:
    return den_home() / "state.db"


def credentials_path() -> Path:
    return den_home() / "credentials"


def operator_log_path() -> Path:
    return den_home() / "operator.log"


def operator_lock_path() -> Path:
    return den_home() / "operator.lock"


def tokens_dir() -> Path:
    return den_home() / "tokens"


def container_name(agent: str, namespace: str = "default") -> str:
    return f"den-{agent}" if namespace == "default" else f"den-{namespace}-{agent}"


def volume_name(agent: str, namespace: str = "default") -> str:
    return f"{container_name(agent, namespace)}-home"


def net_container_name(agent: str, namespace: str = "default") -> str:
    """The agent's network container: owns its namespace, address, port and firewall."""
    return f"{container_name(agent, namespace)}-net"


# The model gateway: one per installation, a system component the operator reconciles.
GATEWAY = "den-gateway"  # container name and DNS name on the agents' network
GATEWAY_IMAGE = "den-gateway:latest"
GATEWAY_PORT = 8900
GATEWAY_VOLUME = "den-gateway-data"  # its ledger
GATEWAY_CONFIG_MOUNT = "/etc/den-gateway"
GATEWAY_DATA_MOUNT = "/data"
#: The user-defined Docker network agents and the gateway share.
NETWORK = "den"
# The egress proxy: one per installation; its image also runs the agents' network containers.
EGRESS = "den-egress"
EGRESS_IMAGE = "den-egress:latest"
EGRESS_PORT = 3128
EGRESS_CONFIG_MOUNT = "/etc/den-egress"
EGRESS_LOG_MOUNT = "/var/log/den-egress"


def egress_dir() -> Path:
    """Host folder with the proxy's generated squid.conf (mounted read-only) and log/."""
    return den_home() / "egress"


def gateway_dir() -> Path:
    """Host folder with the gateway's config (agents.json, keys.json), mounted read-only."""
    return den_home() / "gateway"


def gateway_url() -> str:
    """Where agents reach the gateway (the OpenAI base URL)."""
    return f"http://{GATEWAY}:{GATEWAY_PORT}/v1"
