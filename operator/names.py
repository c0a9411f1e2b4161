"""The one place that owns Den's label names, object names and file paths."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# Labels and annotations Den puts on what it owns (stores, containers, volumes).
LABEL_AGENT = "den.dev/agent"
LABEL_NAMESPACE = "den.dev/namespace"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "den"
LABEL_CONFIG_HASH = "den.dev/config-hash"
LABEL_GENERATION = "den.dev/generation"
#: On an agent container: the image its Agentfile names (the container runs the id it resolved to).
LABEL_IMAGE = "den.dev/image"
LABEL_SOURCE = "den.dev/source"
ANNOTATION_SOURCE_PATH = "den.dev/source-path"
#: ``<runtime.base>@<image id>``: the image ``den up`` resolved the agent's base to. The agent
#: keeps running that build until the next ``den up``, whatever retags the name meanwhile
#: (another checkout's ``make image``), as ``docker compose up`` pins what it resolved.
ANNOTATION_IMAGE = "den.dev/image"

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

#: Which installation (one ``$DEN_HOME`` on one engine) made the object; see :class:`Installation`.
LABEL_INSTALLATION = "den.dev/installation"
#: The installation that keeps Den's original short names (``den-hello``, ``den-gateway``, the
#: ``den`` network); objects made before installations existed carry no installation label and
#: belong to it.
DEFAULT_INSTALLATION = "default"
#: An installation id: short, lowercase, a DNS label (it is part of container and network names).
INSTALLATION_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,18}[a-z0-9])?$")

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
GATEWAY = "den-gateway"  # the name agents reach it by (an /etc/hosts entry of their network container)
GATEWAY_IMAGE = "den-gateway:latest"
GATEWAY_PORT = 8900
GATEWAY_VOLUME = "den-gateway-data"  # its ledger
GATEWAY_CONFIG_MOUNT = "/etc/den-gateway"
GATEWAY_DATA_MOUNT = "/data"
#: The user-defined Docker network agents and the gateway share (the default installation's).
NETWORK = "den"
# The egress proxy: one per installation; its image also runs the agents' network containers.
EGRESS = "den-egress"  # the name agents reach it by
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


@dataclass(frozen=True)
class Installation:
    """One ``$DEN_HOME`` on one Docker Engine: a namespace on the engine, like a Compose project.

    Every object it makes carries ``den.dev/installation=<id>`` and a name of its own, so two
    installations never take each other's gateway, proxy, network or agents. The default
    installation (an upgraded one) keeps Den's short names; every other one puts its id after
    ``den-`` and a dot (``den-7f3a2c.hello``), which no default name has (agent names and
    namespaces are DNS labels, without dots). Inside an agent the gateway and the proxy are
    always ``den-gateway`` and ``den-egress`` (its network container's /etc/hosts)."""

    id: str = DEFAULT_INSTALLATION

    @property
    def is_default(self) -> bool:
        return self.id == DEFAULT_INSTALLATION

    def _name(self, rest: str) -> str:
        return f"den-{rest}" if self.is_default else f"den-{self.id}.{rest}"

    def container_name(self, agent: str, namespace: str = "default") -> str:
        return self._name(agent if namespace == "default" else f"{namespace}-{agent}")

    def volume_name(self, agent: str, namespace: str = "default") -> str:
        return f"{self.container_name(agent, namespace)}-home"

    def net_container_name(self, agent: str, namespace: str = "default") -> str:
        return f"{self.container_name(agent, namespace)}-net"

    @property
    def gateway(self) -> str:
        return self._name("gateway")

    @property
    def gateway_volume(self) -> str:
        return self._name("gateway-data")

    @property
    def egress(self) -> str:
        return self._name("egress")

    @property
    def network(self) -> str:
        return NETWORK if self.is_default else f"den-{self.id}"

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL_INSTALLATION: self.id, LABEL_MANAGED_BY: MANAGED_BY}

    def owns(self, labels: dict[str, str] | None) -> bool:
        """Whether an object with these labels is this installation's (an object without the
        label is from before installations, and the default installation's)."""
        return (labels or {}).get(LABEL_INSTALLATION, DEFAULT_INSTALLATION) == self.id

    @property
    def label_filter(self) -> list[str]:
        """Docker label filters that find this installation's objects (the default one's also
        include the unlabelled objects of an earlier Den, so they are checked with :meth:`owns`)."""
        return [f"{LABEL_MANAGED_BY}={MANAGED_BY}"] if self.is_default else [f"{LABEL_INSTALLATION}={self.id}"]


def check_installation_id(value: str, where: str) -> str:
    if not INSTALLATION_ID.match(value):
        from den.api.errors import DenError

        raise DenError(f"{where}: installation id {value!r} is not valid: expected 1-20 lowercase letters, "
                       "digits and '-', starting and ending with a letter or digit",
                       hint="e.g. DEN_INSTALLATION=dev")
    return value
