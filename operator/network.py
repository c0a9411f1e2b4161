"""The agents' network, as pure functions: subnet, addresses, firewall rules, proxy config.

Topology (docs/security.md has the why and the rejected alternatives)::

    den network, a /16 Den picks      .0.1 the host (bridge)    .0.2 den-gateway
                                      .0.3 den-egress (proxy)   .1.1 ... agents' network containers
                                      upper half: Docker's dynamic range (anything else attached)

Every agent has a network container (``den-<agent>-net``, the pod's "pause"
container): it owns the agent's network namespace, its fixed address and its
published port, and loads the nftables ruleset :func:`nft_ruleset` renders
before it drops every capability. The agent joins that namespace with no
capabilities of its own, so it cannot change the rules. ``filtered`` agents
reach the world only through the egress proxy, whose squid configuration
:func:`squid_config` renders from the network containers observed.

Nothing here does I/O but :func:`host_routes` and :func:`host_addresses`, which
read what the host has (the backend passes them in).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from den.api.netpolicy import parse_allow

#: Subnets Den tries for its network, in order (the first that overlaps nothing).
CANDIDATES = tuple(f"172.{n}.0.0/16" for n in range(29, 19, -1)) + tuple(f"10.{n}.0.0/16" for n in range(213, 223))
API_PORT = 8800
GATEWAY_PORT = 8900
PROXY_PORT = 3128
#: Docker's embedded DNS server inside every container on a user-defined network.
DOCKER_DNS = "127.0.0.11"
#: Printed by a network container once its rules are in force (the operator waits for it).
RULES_LOADED = "den-netns: rules loaded"


class AddressesExhausted(RuntimeError):
    pass


@dataclass(frozen=True)
class Layout:
    """Fixed addresses on Den's network, derived from its subnet alone."""

    subnet: str

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    def _at(self, offset: int) -> str:
        return str(self.network.network_address + offset)

    @property
    def host(self) -> str:
        """The bridge's address on the host: where published ports come from."""
        return self._at(1)

    @property
    def gateway(self) -> str:
        return self._at(2)

    @property
    def egress(self) -> str:
        return self._at(3)

    @property
    def dynamic_range(self) -> str:
        """Docker hands out addresses from here only (the upper half), never Den's fixed ones."""
        half = self.network.prefixlen + 1
        return str(list(self.network.subnets(new_prefix=half))[1])

    def agent_addresses(self) -> Iterable[str]:
        """Addresses for agents' network containers: .1.1 up to the middle of the subnet."""
        start = int(self.network.network_address) + 257
        end = int(self.network.network_address) + self.network.num_addresses // 2 - 1
        for value in range(start, end):
            if value & 0xFF not in (0, 255):
                yield str(ipaddress.IPv4Address(value))

    def holds(self, address: str | None) -> bool:
        if not address:
            return False
        try:
            value = ipaddress.IPv4Address(address)
        except ValueError:
            return False
        return value in self.network and int(value) - int(self.network.network_address) >= 257 \
            and value < self.network.network_address + self.network.num_addresses // 2 \
            and int(value) & 0xFF not in (0, 255)


def choose_subnet(taken: Iterable[str], preferred: str | None = None) -> str:
    """The first candidate /16 overlapping none of ``taken`` (Docker networks, host routes).
    ``preferred`` (``DEN_SUBNET``) wins when it is a valid network; it is not checked."""
    if preferred:
        return str(ipaddress.IPv4Network(preferred, strict=False))
    busy = []
    for text in taken:
        try:
            busy.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue
    for candidate in CANDIDATES:
        net = ipaddress.IPv4Network(candidate)
        if not any(net.version == other.version and net.overlaps(other) for other in busy):
            return candidate
    raise AddressesExhausted("every candidate subnet for Den's network overlaps one in use; set DEN_SUBNET")


def choose_address(layout: Layout, used: Iterable[str], current: str | None = None) -> str:
    """The agent's address: the one it has (still free and in range), else the lowest free."""
    taken = set(used)
    if current and layout.holds(current) and current not in taken:
        return current
    for address in layout.agent_addresses():
        if address not in taken:
            return address
    raise AddressesExhausted(f"no address left for agents on {layout.subnet}")


def nft_ruleset(policy: str, address: str, layout: Layout) -> str:
    """The agent's firewall, loaded in its network namespace by its network container.

    In: replies, loopback, and the API port from the bridge (the host's published port);
    nothing from other agents. Out: replies; loopback (but Docker's DNS unless ``host``);
    the gateway; the proxy (``filtered``); everything (``host``); only from its own address.
    The rest is rejected at once (a TCP reset or ICMP), so a refused connection fails fast."""
    out = [f"ip daddr {layout.gateway} tcp dport {GATEWAY_PORT} accept"]
    if policy == "filtered":
        out.append(f"ip daddr {layout.egress} tcp dport {PROXY_PORT} accept")
    if policy == "host":
        out.append("accept")
    lines = [
        "table inet den {",
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        "    ct state established,related accept",
        '    iifname "lo" accept',
        f"    ip saddr {layout.host} tcp dport {API_PORT} accept",
        "    meta l4proto tcp reject with tcp reset",
        "    reject",
        "  }",
        "  chain output {",
        "    type filter hook output priority filter; policy drop;",
        "    ct state established,related accept",
        *([f"    ip daddr {DOCKER_DNS} reject"] if policy != "host" else []),
        '    oifname "lo" accept',
        f"    ip saddr != {address} reject",
        *(f"    {rule}" for rule in out),
        "    meta l4proto tcp reject with tcp reset",
        "    reject",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def netns_command(ruleset: str) -> list[str]:
    """The network container's command: load the rules, say so, then hold the namespace as
    nobody with no capabilities (it never needs them again)."""
    script = (
        'printf "%s" "$DEN_NFT_RULES" | nft -f - || exit 1; '
        f'echo "{RULES_LOADED}"; '
        "exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "
        "--bounding-set=-all sleep infinity"
    )
    return ["/bin/sh", "-c", script]


# -- the egress proxy -------------------------------------------------------------


@dataclass(frozen=True)
class EgressClient:
    """One filtered agent as the proxy knows it: its address (Docker) or its proxy user
    name (Kubernetes, where pod addresses change), and its allowlist."""

    agent: str  # namespace/name
    address: str = ""
    allow: tuple[str, ...] = ()
    user: str = ""


def _regex_escape(host: str) -> str:
    return re.escape(host).replace("\\-", "-")


def squid_config(clients: Iterable[EgressClient], blocked: Iterable[str], *,
                 log_dir: str = "/var/log/den-egress", passwd_file: str | None = None,
                 access_log: str | None = None) -> str:
    """squid.conf for these agents: each one may reach its own allowlist only.

    An agent is known by its address (``src``, Docker's fixed addresses) or, with
    ``passwd_file``, by its proxy credentials (``proxy_auth``, checked by
    ``basic_ncsa_auth`` against that htpasswd file: Kubernetes, where pod addresses
    change); a request without credentials is then refused like any other (403).

    Names are matched before any lookup (``dstdomain -n``, ``dstdom_regex -n``), so a name
    that is not allowed is never resolved (DNS is an exfiltration channel); an allowed name
    is refused too when it resolves to a blocked address (loopback, link-local, Den's
    subnet, the host's addresses). IP literals never match a name, so they are refused."""
    by_user = passwd_file is not None
    lines = [
        "# Generated by the Den operator from the agents' network containers: do not edit."
        if not by_user else "# Generated by the Den operator from the filtered Agents: do not edit.",
        "http_port 3128",
        "pid_filename none",
        "cache deny all",
        "cache_mem 4 MB",
        "coredump_dir /tmp",
        "pinger_enable off",
        "error_directory /usr/share/den-egress/errors",
        "cache_log /dev/stderr",
        "logfile_rotate 0",
        f"logformat den %ts.%03tu {'%un' if by_user else '%>a'} %Ss/%03>Hs %rm %ru",
        f"access_log {access_log or f'stdio:{log_dir}/access.log'} den",
        "forwarded_for delete",
        "via off",
        "httpd_suppress_version_string on",
        "shutdown_lifetime 1 seconds",
        "acl den_blocked_dst dst " + " ".join(sorted(set(blocked))),
    ]
    if by_user:
        lines += [
            f"auth_param basic program /usr/lib/squid/basic_ncsa_auth {passwd_file}",
            "auth_param basic children 4 startup=1 idle=1",
            "auth_param basic realm den-egress",
            "auth_param basic credentialsttl 5 minutes",
            # No credentials at all: refused at once (403), not challenged (407)
            "acl den_credentials req_header Proxy-Authorization .",
            "deny_info ERR_DEN_BLOCKED den_credentials",
        ]
    ports: dict[tuple[int, ...], str] = {}
    rules: list[str] = ["http_access deny !den_credentials"] if by_user else []
    key = (lambda c: c.user) if by_user else (lambda c: c.address)
    for n, client in enumerate(sorted(clients, key=key)):
        src = f"agent{n}"
        if by_user:
            lines.append(f"acl {src} proxy_auth {client.user}  # {client.agent}")
        else:
            lines.append(f"acl {src} src {client.address}/32  # {client.agent}")
        for m, rule in enumerate(parse_allow(list(client.allow))):
            port_acl = ports.setdefault(rule.ports, "ports_" + "_".join(map(str, rule.ports)))
            dom = f"{src}_{m}"
            if rule.subdomains:
                lines.append(f"acl {dom} dstdom_regex -n -i ^([^.]+\\.)+{_regex_escape(rule.host)}$")
            else:
                lines.append(f"acl {dom} dstdomain -n {rule.host}")
            rules.append(f"http_access allow {src} {dom} {port_acl} !den_blocked_dst")
    for port_set, name in ports.items():
        lines.append(f"acl {name} port {' '.join(map(str, port_set))}")
    lines += rules
    lines += ["http_access deny all", "deny_info ERR_DEN_BLOCKED all", ""]
    return "\n".join(line for line in lines if line != "") + "\n"


def blocked_destinations(layout: Layout, host_addresses: Iterable[str]) -> list[str]:
    """What the proxy never connects to, whatever a name resolves to."""
    fixed = ["127.0.0.0/8", "0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "::1", "fe80::/10", layout.subnet]
    return fixed + [f"{a}/32" if ":" not in a else a for a in host_addresses]


@dataclass
class EgressCounts:
    allowed: int = 0
    refused: int = 0
    last_refused: str | None = None
    refused_hosts: dict[str, int] = field(default_factory=dict)


def _host_of(method: str, url: str) -> str:
    if method == "CONNECT":
        return url.rsplit(":", 1)[0].strip("[]")
    rest = url.split("://", 1)[-1]
    host = rest.split("/", 1)[0].split("@")[-1]
    if host.startswith("["):  # an IPv6 literal, with or without a port
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def parse_access_log(lines: Iterable[str]) -> dict[str, EgressCounts]:
    """Counts by client address from the proxy's access log (``logformat den``)."""
    counts: dict[str, EgressCounts] = {}
    for line in lines:
        parts = line.split()
        if len(parts) < 5:
            continue
        _, client, result, method, url = parts[:5]
        entry = counts.setdefault(client, EgressCounts())
        if "DENIED" in result:
            host = _host_of(method, url)
            entry.refused += 1
            entry.last_refused = host
            entry.refused_hosts[host] = entry.refused_hosts.get(host, 0) + 1
        else:
            entry.allowed += 1
    return counts


# -- what the host has (I/O) --------------------------------------------------------


def host_routes(path: Path = Path("/proc/net/route")) -> list[str]:
    """The host's IPv4 routes as networks (a VPN's or LAN's subnet must not be shadowed)."""
    out = []
    try:
        rows = path.read_text().splitlines()[1:]
    except OSError:
        return out
    for row in rows:
        fields = row.split()
        if len(fields) < 8:
            continue
        dest, mask = int(fields[1], 16), int(fields[7], 16)
        if mask == 0:
            continue  # the default route
        to_ip = lambda v: ".".join(str((v >> s) & 0xFF) for s in (0, 8, 16, 24))  # noqa: E731 (little-endian)
        out.append(str(ipaddress.IPv4Network(f"{to_ip(dest)}/{to_ip(mask)}", strict=False)))
    return out


def host_addresses() -> list[str]:
    """Every address of the host's interfaces (the proxy must not be a way into the host)."""
    try:
        done = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[2] in ("inet", "inet6"):
            found.append(parts[3].split("/")[0])
    return found

