"""The agents' network as pure functions: addresses, firewall rules and the proxy's config.

What is pinned here is what isolates one agent from another and from the world: which
addresses agents get, what their nftables rules let in and out, and which names the
egress proxy lets each agent reach (checked by evaluating the generated squid.conf).
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from den.api.netpolicy import AllowError
from den.operator import names
from den.operator.egress import clients_of
from den.operator.network import (
    API_PORT,
    DOCKER_DNS,
    GATEWAY_PORT,
    PROXY_PORT,
    RULES_LOADED,
    AddressesExhausted,
    EgressClient,
    Layout,
    blocked_destinations,
    choose_address,
    choose_subnet,
    host_routes,
    netns_command,
    nft_ruleset,
    parse_access_log,
    squid_config,
)

LAYOUT = Layout("172.29.0.0/16")
ADDRESS = "172.29.1.7"

# -- the layout ------------------------------------------------------------------------


def test_the_host_gateway_and_proxy_have_the_first_three_addresses():
    assert (LAYOUT.host, LAYOUT.gateway, LAYOUT.egress) == ("172.29.0.1", "172.29.0.2", "172.29.0.3")
    other = Layout("10.213.0.0/16")
    assert (other.host, other.gateway, other.egress) == ("10.213.0.1", "10.213.0.2", "10.213.0.3")


def test_docker_hands_out_only_the_upper_half():
    assert LAYOUT.dynamic_range == "172.29.128.0/17"


def test_agents_get_addresses_from_1_1_up_to_the_middle_never_a_fixed_or_dynamic_one():
    expected = [f"172.29.{third}.{fourth}" for third in range(1, 128) for fourth in range(1, 255)]
    assert list(LAYOUT.agent_addresses()) == expected
    assert ipaddress.IPv4Address(expected[-1]) < ipaddress.IPv4Network(LAYOUT.dynamic_range).network_address
    assert all(LAYOUT.holds(address) for address in expected[::997] + expected[-1:])


@pytest.mark.parametrize("address", ["172.29.0.2", "172.29.0.3", "172.29.128.5", "172.28.1.1",
                                     "not-an-address", "", None])
def test_an_address_outside_the_agents_range_is_not_held(address):
    assert not LAYOUT.holds(address)


# -- choosing a subnet ------------------------------------------------------------------


def test_den_takes_172_29_when_nothing_is_in_the_way():
    assert choose_subnet([]) == "172.29.0.0/16"


def test_a_route_inside_a_candidate_pushes_den_to_the_next_one():
    assert choose_subnet(["172.29.5.0/24"]) == "172.28.0.0/16"


def test_a_docker_network_overlapping_two_candidates_skips_both():
    assert choose_subnet(["172.28.0.0/15"]) == "172.27.0.0/16"


def test_den_falls_to_10_x_when_every_172_candidate_is_taken():
    assert choose_subnet(["172.16.0.0/12"]) == "10.213.0.0/16"
    taken = [f"172.{n}.0.0/16" for n in range(20, 30)]
    assert choose_subnet(taken) == "10.213.0.0/16"


def test_no_free_candidate_is_an_error_that_names_den_subnet():
    with pytest.raises(AddressesExhausted, match="DEN_SUBNET"):
        choose_subnet(["172.16.0.0/12", "10.0.0.0/8"])


def test_unreadable_and_ipv6_networks_do_not_get_in_the_way():
    assert choose_subnet(["", "garbage", "fd00::/8", "::/0"]) == "172.29.0.0/16"


def test_den_subnet_wins_even_when_it_overlaps_and_is_normalised():
    assert choose_subnet(["10.50.0.0/16"], preferred="10.50.3.4/16") == "10.50.0.0/16"


def route_file(tmp_path: Path, *rows: tuple[str, str, str]) -> Path:
    """A /proc/net/route with (interface, destination, mask), addresses little-endian hex."""

    def hexed(address: str) -> str:
        return "".join(f"{int(part):02X}" for part in reversed(address.split(".")))

    lines = ["Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"]
    for iface, dest, mask in rows:
        lines.append(f"{iface}\t{hexed(dest)}\t00000000\t0001\t0\t0\t0\t{hexed(mask)}\t0\t0\t0")
    path = tmp_path / "route"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_hosts_routes_are_read_as_networks_without_the_default_route(tmp_path):
    path = route_file(tmp_path, ("eth0", "0.0.0.0", "0.0.0.0"), ("eth0", "192.168.1.0", "255.255.255.0"),
                      ("tun0", "172.29.5.0", "255.255.255.0"), ("tun0", "10.8.0.1", "255.255.255.255"))
    assert host_routes(path) == ["192.168.1.0/24", "172.29.5.0/24", "10.8.0.1/32"]


def test_a_vpn_route_on_the_host_keeps_den_off_its_subnet(tmp_path):
    path = route_file(tmp_path, ("tun0", "172.29.5.0", "255.255.255.0"))
    assert choose_subnet(host_routes(path)) == "172.28.0.0/16"


def test_a_host_without_a_route_table_has_no_routes(tmp_path):
    assert host_routes(tmp_path / "missing") == []


# -- choosing an agent's address ---------------------------------------------------------


def test_the_first_agent_gets_1_1():
    assert choose_address(LAYOUT, []) == "172.29.1.1"


def test_an_agent_keeps_its_address_while_it_is_free():
    assert choose_address(LAYOUT, ["172.29.1.1", "172.29.1.2"], current="172.29.9.9") == "172.29.9.9"


def test_an_agent_whose_address_was_taken_gets_the_lowest_free_one():
    assert choose_address(LAYOUT, ["172.29.1.1", "172.29.9.9"], current="172.29.9.9") == "172.29.1.2"


@pytest.mark.parametrize("current", ["172.28.1.5", "172.29.0.2", "172.29.200.1"])
def test_an_address_from_another_subnet_or_outside_the_range_is_not_kept(current):
    assert choose_address(LAYOUT, [], current=current) == "172.29.1.1"


def test_a_hundred_agents_get_a_hundred_distinct_addresses():
    used: list[str] = []
    for _ in range(100):
        used.append(choose_address(LAYOUT, used))
    assert len(set(used)) == 100
    assert all(LAYOUT.holds(address) for address in used)


def test_addresses_run_out_with_an_error_naming_the_subnet():
    small = Layout("10.9.0.0/22")
    every = list(small.agent_addresses())
    assert len(every) == 254
    with pytest.raises(AddressesExhausted, match=r"10\.9\.0\.0/22"):
        choose_address(small, every)


# -- the firewall in each agent's network namespace ---------------------------------------


def chains(ruleset: str) -> dict[str, list[str]]:
    """The rules of each chain, in order, without the chain's type line."""
    found: dict[str, list[str]] = {}
    current = None
    for line in ruleset.splitlines():
        line = line.strip()
        if line.startswith("chain "):
            current = line.split()[1]
            found[current] = []
        elif line == "}":
            current = None
        elif current and not line.startswith("type "):
            found[current].append(line)
    return found


def accepts(rules: list[str]) -> list[str]:
    return [rule for rule in rules if rule.endswith("accept")]


@pytest.mark.parametrize("policy", ["none", "filtered", "host"])
def test_only_the_bridge_may_reach_the_api_port_inbound(policy):
    rules = nft_ruleset(policy, ADDRESS, LAYOUT)
    assert "type filter hook input priority filter; policy drop;" in rules
    assert accepts(chains(rules)["input"]) == [
        "ct state established,related accept",
        'iifname "lo" accept',
        f"ip saddr 172.29.0.1 tcp dport {API_PORT} accept",
    ]


@pytest.mark.parametrize("policy", ["none", "filtered", "host"])
def test_every_refusal_is_a_reset_or_reject_so_it_fails_fast(policy):
    for rules in chains(nft_ruleset(policy, ADDRESS, LAYOUT)).values():
        assert rules[-2:] == ["meta l4proto tcp reject with tcp reset", "reject"]


@pytest.mark.parametrize("policy", ["none", "filtered", "host"])
def test_nothing_leaves_from_an_address_but_the_agents_own(policy):
    output = chains(nft_ruleset(policy, ADDRESS, LAYOUT))["output"]
    guard = output.index(f"ip saddr != {ADDRESS} reject")
    for index, rule in enumerate(output):
        if rule.endswith("accept") and "established" not in rule and '"lo"' not in rule:
            assert index > guard, f"{rule!r} comes before the source address check"


def test_none_reaches_the_gateway_only_and_not_dockers_dns():
    output = chains(nft_ruleset("none", ADDRESS, LAYOUT))["output"]
    assert accepts(output) == [
        "ct state established,related accept",
        'oifname "lo" accept',
        f"ip daddr 172.29.0.2 tcp dport {GATEWAY_PORT} accept",
    ]
    assert output.index(f"ip daddr {DOCKER_DNS} reject") < output.index('oifname "lo" accept')
    assert f"{PROXY_PORT}" not in "\n".join(output)


def test_filtered_reaches_the_gateway_and_the_proxy_and_not_dockers_dns():
    output = chains(nft_ruleset("filtered", ADDRESS, LAYOUT))["output"]
    assert accepts(output)[2:] == [
        f"ip daddr 172.29.0.2 tcp dport {GATEWAY_PORT} accept",
        f"ip daddr 172.29.0.3 tcp dport {PROXY_PORT} accept",
    ]
    assert output.index(f"ip daddr {DOCKER_DNS} reject") < output.index('oifname "lo" accept')


def test_host_accepts_all_output_but_keeps_inbound_closed():
    found = chains(nft_ruleset("host", ADDRESS, LAYOUT))
    assert "accept" in found["output"]
    assert not any(DOCKER_DNS in rule for rule in found["output"])
    assert len(accepts(found["input"])) == 3


def test_the_rules_follow_the_subnet_den_chose():
    rules = nft_ruleset("filtered", "10.213.1.1", Layout("10.213.0.0/16"))
    assert "ip saddr 10.213.0.1 tcp dport 8800 accept" in rules
    assert "ip daddr 10.213.0.3 tcp dport 3128 accept" in rules
    assert "ip saddr != 10.213.1.1 reject" in rules
    assert "172.29." not in rules


def fake_tools(tmp_path: Path, nft_exit: int) -> dict[str, str]:
    """nft and setpriv stand-ins (the real ones need privileges): nft keeps what it is fed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "nft": f'#!/bin/sh\ncat > "{tmp_path}/loaded"\nexit {nft_exit}\n',
        "setpriv": '#!/bin/sh\necho "setpriv $*"\n',
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def test_the_network_container_loads_its_rules_then_holds_the_namespace_without_privileges(tmp_path):
    ruleset = nft_ruleset("filtered", ADDRESS, LAYOUT)
    env = {**fake_tools(tmp_path, 0), "DEN_NFT_RULES": ruleset}
    done = subprocess.run(netns_command(ruleset), env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "loaded").read_text() == ruleset
    said = done.stdout.splitlines()
    assert said[0] == RULES_LOADED
    held = said[1].split()
    assert {"--reuid=65534", "--regid=65534", "--inh-caps=-all", "--bounding-set=-all"} <= set(held)
    assert held[-2:] == ["sleep", "infinity"]


def test_the_network_container_stops_without_announcing_when_its_rules_do_not_load(tmp_path):
    env = {**fake_tools(tmp_path, 1), "DEN_NFT_RULES": "not a ruleset"}
    done = subprocess.run(netns_command("not a ruleset"), env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 1
    assert RULES_LOADED not in done.stdout
    assert "setpriv" not in done.stdout


# -- the egress proxy's configuration -----------------------------------------------------

ALICE = EgressClient("default/alice", "172.29.1.1", ("api.example.com", "*.wild.test", "*.my-site.test"))
BOB = EgressClient("team/bob", "172.29.1.2", ("bob.example.org:8443",))
CAROL = EgressClient("default/carol", "172.29.1.3", ())
BLOCKED = blocked_destinations(LAYOUT, ["192.168.1.20", "fe80::1"])


def parse_squid(text: str) -> tuple[dict[str, tuple[str, list[str]]], list[list[str]]]:
    """acl name -> (type, values with flags) and the http_access lines, in order."""
    acls: dict[str, tuple[str, list[str]]] = {}
    access: list[list[str]] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split() if not line.startswith("#") else []
        if words[:1] == ["acl"]:
            acls[words[1]] = (words[2], words[3:])
        elif words[:1] == ["http_access"]:
            access.append(words[1:])
    return acls, access


def acl_matches(acl: tuple[str, list[str]], address: str, host: str, port: int) -> bool:
    kind, values = acl
    flags = {value for value in values if value.startswith("-")}
    values = [value for value in values if not value.startswith("-")]
    if kind == "src":
        return any(ipaddress.IPv4Address(address) in ipaddress.IPv4Network(v) for v in values)
    if kind == "dstdomain":
        assert "-n" in flags, "a name must be checked without a lookup"
        return host.lower() in values
    if kind == "dstdom_regex":
        assert "-n" in flags, "a name must be checked without a lookup"
        return any(re.search(v, host, re.IGNORECASE if "-i" in flags else 0) for v in values)
    if kind == "port":
        return str(port) in values
    if kind == "dst":
        return False  # the name resolves to somewhere not blocked
    raise AssertionError(f"unexpected acl type {kind}")


def proxy_allows(text: str, address: str, host: str, port: int) -> bool:
    """What squid decides for this client, following http_access in order (first match wins)."""
    acls, access = parse_squid(text)
    for verdict, *names_ in access:
        hit = True
        for name in names_:
            negate = name.startswith("!")
            name = name.lstrip("!")
            matched = True if name == "all" else acl_matches(acls[name], address, host, port)
            if matched == negate:
                hit = False
                break
        if hit:
            return verdict == "allow"
    return False


CONFIG = squid_config([ALICE, BOB, CAROL], BLOCKED)


def test_an_agent_reaches_its_own_allowlist_through_the_proxy():
    assert proxy_allows(CONFIG, ALICE.address, "api.example.com", 443)
    assert proxy_allows(CONFIG, ALICE.address, "api.example.com", 80)
    assert proxy_allows(CONFIG, ALICE.address, "a.wild.test", 443)
    assert proxy_allows(CONFIG, BOB.address, "bob.example.org", 8443)


def test_an_agent_cannot_use_another_agents_allowlist():
    assert not proxy_allows(CONFIG, BOB.address, "api.example.com", 443)
    assert not proxy_allows(CONFIG, BOB.address, "a.wild.test", 443)
    assert not proxy_allows(CONFIG, ALICE.address, "bob.example.org", 8443)
    for host, port in [("api.example.com", 443), ("bob.example.org", 8443), ("a.wild.test", 443)]:
        assert not proxy_allows(CONFIG, CAROL.address, host, port)
        assert not proxy_allows(CONFIG, "172.29.1.99", host, port)


def test_the_proxy_refuses_other_ports_than_the_entrys():
    assert not proxy_allows(CONFIG, ALICE.address, "api.example.com", 8080)
    assert not proxy_allows(CONFIG, BOB.address, "bob.example.org", 443)


def test_every_allow_line_starts_with_its_agents_source_and_ends_with_the_blocked_check():
    acls, access = parse_squid(CONFIG)
    allows = [line for line in access if line[0] == "allow"]
    assert len(allows) == 4
    sources = sorted(values[0] for kind, values in acls.values() if kind == "src")
    assert sources == ["172.29.1.1/32", "172.29.1.2/32", "172.29.1.3/32"]
    for line in allows:
        assert acls[line[1]][0] == "src"
        assert line[2].startswith(line[1] + "_")  # the name acl is that agent's own
        assert line[-1] == "!den_blocked_dst"


def test_everything_else_is_denied_with_dens_error_page():
    _, access = parse_squid(CONFIG)
    assert access[-1] == ["deny", "all"]
    assert CONFIG.splitlines()[-1] == "deny_info ERR_DEN_BLOCKED all"


def test_a_name_on_no_allowlist_appears_in_no_acl():
    assert "evil.test" not in CONFIG
    for address in (ALICE.address, BOB.address, CAROL.address):
        assert not proxy_allows(CONFIG, address, "evil.test", 443)


def test_exact_names_are_matched_as_is_without_their_subdomains():
    acls, _ = parse_squid(CONFIG)
    exact = [values for kind, values in acls.values() if kind == "dstdomain"]
    assert exact == [["-n", "api.example.com"], ["-n", "bob.example.org"]]
    assert not proxy_allows(CONFIG, ALICE.address, "www.api.example.com", 443)


def wildcard_regex(host: str) -> re.Pattern[str]:
    acls, _ = parse_squid(CONFIG)
    for kind, values in acls.values():
        unescaped = re.sub(r"\\(.)", r"\1", values[-1]) if kind == "dstdom_regex" else ""
        if unescaped.endswith(")+" + host + "$"):
            assert values[:2] == ["-n", "-i"]
            return re.compile(values[-1], re.IGNORECASE)
    raise AssertionError(f"no regex for {host}")


def test_a_wildcard_regex_matches_subdomains_only():
    pattern = wildcard_regex("wild.test")
    for host in ["a.wild.test", "x.y.wild.test", "A.WILD.test"]:
        assert pattern.search(host), host
    for host in ["wild.test", "evilwild.test", "a.wildXtest", "a.wild.test.evil.com", ".wild.test"]:
        assert not pattern.search(host), host


def test_a_wildcard_over_a_hyphenated_name_still_matches():
    pattern = wildcard_regex("my-site.test")
    assert pattern.search("a.my-site.test")
    assert not pattern.search("my-site.test")


def test_agents_sharing_port_sets_share_one_port_acl():
    acls, _ = parse_squid(CONFIG)
    ports = {name: values for name, (kind, values) in acls.items() if kind == "port"}
    assert ports == {"ports_80_443": ["80", "443"], "ports_8443": ["8443"]}


def test_no_filtered_agent_means_the_proxy_allows_nothing():
    text = squid_config([], BLOCKED)
    _, access = parse_squid(text)
    assert access == [["deny", "all"]]


def test_the_config_does_not_depend_on_the_order_agents_are_observed():
    assert squid_config([CAROL, BOB, ALICE], BLOCKED) == CONFIG


def test_the_proxy_logs_in_the_format_its_counter_reads():
    assert "logformat den %ts.%03tu %>a %Ss/%03>Hs %rm %ru" in CONFIG.splitlines()
    text = squid_config([ALICE], BLOCKED, log_dir="/logs")
    assert "access_log stdio:/logs/access.log den" in text.splitlines()


def test_an_invalid_allowlist_entry_stops_the_config_instead_of_being_skipped():
    with pytest.raises(AllowError):
        squid_config([EgressClient("default/x", "172.29.1.9", ("10.0.0.1",))], BLOCKED)


def test_an_allowlist_cannot_add_lines_to_the_proxy_configuration():
    with pytest.raises(AllowError):
        squid_config([EgressClient("default/x", "172.29.1.9", ("example\n.com",))], BLOCKED)


def test_the_proxy_never_connects_to_loopback_link_local_den_or_the_host():
    acls, _ = parse_squid(CONFIG)
    kind, blocked = acls["den_blocked_dst"]
    assert kind == "dst"
    for needed in ["127.0.0.0/8", "169.254.0.0/16", "::1", "fe80::/10", "172.29.0.0/16",
                   "192.168.1.20/32", "fe80::1"]:
        assert needed in blocked, needed


# -- counting what the proxy did -----------------------------------------------------------

LOG = """\
1764665000.101 172.29.1.1 TCP_TUNNEL/200 CONNECT api.example.com:443
1764665000.202 172.29.1.1 TCP_DENIED/403 CONNECT evil.test:443
1764665000.303 172.29.1.1 TCP_DENIED/403 GET http://evil.test/steal?x=1
1764665000.404 172.29.1.1 TCP_MISS/200 GET http://api.example.com/v1
1764665000.505 172.29.1.2 TCP_MISS/200 GET http://bob.example.org:8443/
1764665000.606 172.29.1.2 TCP_DENIED/403 GET http://user@other.test:8080/path
truncated line

"""


def test_the_access_log_is_counted_per_agent_address():
    counts = parse_access_log(LOG.splitlines())
    assert set(counts) == {"172.29.1.1", "172.29.1.2"}
    alice, bob = counts["172.29.1.1"], counts["172.29.1.2"]
    assert (alice.allowed, alice.refused) == (2, 2)
    assert alice.refused_hosts == {"evil.test": 2}
    assert alice.last_refused == "evil.test"
    assert (bob.allowed, bob.refused) == (1, 1)
    assert bob.refused_hosts == {"other.test": 1}


def test_the_last_refused_host_is_the_latest_line():
    counts = parse_access_log([
        "1.000 172.29.1.1 TCP_DENIED/403 CONNECT first.test:443",
        "2.000 172.29.1.1 TCP_DENIED/403 CONNECT second.test:8443",
    ])
    assert counts["172.29.1.1"].last_refused == "second.test"


def test_a_refused_ipv4_literal_is_reported_without_its_port():
    counts = parse_access_log(["1.000 172.29.1.1 TCP_DENIED/403 CONNECT 169.254.169.254:443",
                               "2.000 172.29.1.1 TCP_DENIED/403 GET http://10.0.0.1:8080/"])
    assert counts["172.29.1.1"].refused_hosts == {"169.254.169.254": 1, "10.0.0.1": 1}


def test_a_refused_ipv6_literal_is_reported_the_same_way_for_http_and_https():
    counts = parse_access_log(["1.000 172.29.1.1 TCP_DENIED/403 CONNECT [::1]:443",
                               "2.000 172.29.1.1 TCP_DENIED/403 GET http://[::1]:8080/"])
    assert counts["172.29.1.1"].refused_hosts == {"::1": 2}


# -- which agents the proxy serves ------------------------------------------------------------


def labels(policy: str, address: str | None = None, allow: str | None = None, **extra: str) -> dict[str, str]:
    found = {names.LABEL_POLICY: policy, **extra}
    if address is not None:
        found[names.LABEL_ADDRESS] = address
    if allow is not None:
        found[names.LABEL_ALLOW] = allow
    return found


def test_the_proxy_serves_filtered_agents_that_have_an_address():
    clients = clients_of([
        labels("filtered", "172.29.1.1", "api.example.com,*.wild.test",
               **{names.LABEL_NAMESPACE: "team", names.LABEL_AGENT: "alice"}),
        labels("filtered", None, "x.test", **{names.LABEL_AGENT: "pending"}),
        labels("filtered", "", "x.test", **{names.LABEL_AGENT: "blank"}),
        labels("host", "172.29.1.2", "", **{names.LABEL_AGENT: "free"}),
        labels("none", "172.29.1.3", **{names.LABEL_AGENT: "sealed"}),
        labels("filtered", "172.29.1.4", "", **{names.LABEL_AGENT: "quiet"}),
    ])
    assert clients == [
        EgressClient("team/alice", "172.29.1.1", ("api.example.com", "*.wild.test")),
        EgressClient("default/quiet", "172.29.1.4", ()),
    ]


def test_squid_config_by_proxy_credentials_names_users_not_addresses() -> None:
    """The Kubernetes form: agents are proxy users (pod addresses change), the same allow rules."""
    clients = [EgressClient("team/b", user="team.b", allow=("b.example",)),
               EgressClient("team/a", user="team.a", allow=("*.a.example:443",))]
    conf = squid_config(clients, ["127.0.0.0/8"], passwd_file="/etc/den-egress/passwd",
                        access_log="stdio:/dev/stdout")
    lines = conf.splitlines()
    assert "auth_param basic program /usr/lib/squid/basic_ncsa_auth /etc/den-egress/passwd" in lines
    assert "acl agent0 proxy_auth team.a  # team/a" in lines and "acl agent1 proxy_auth team.b  # team/b" in lines
    assert not [line for line in lines if " src " in line]
    assert "access_log stdio:/dev/stdout den" in lines
    assert "logformat den %ts.%03tu %un %Ss/%03>Hs %rm %ru" in lines  # the log names the agent
    access = [line for line in lines if line.startswith("http_access")]
    # no credentials: refused (403 ERR_DEN_BLOCKED) before any rule could ask for them (407)
    assert access[0] == "http_access deny !den_credentials"
    assert "deny_info ERR_DEN_BLOCKED den_credentials" in lines
    assert "http_access allow agent0 agent0_0 ports_443 !den_blocked_dst" in access
    assert "http_access allow agent1 agent1_0 ports_80_443 !den_blocked_dst" in access
    assert access[-1] == "http_access deny all"
    # the Docker form of the same function is unchanged: addresses, no auth
    docker = squid_config([EgressClient("team/a", "172.29.1.1", ("a.example",))], ["127.0.0.0/8"])
    assert "acl agent0 src 172.29.1.1/32  # team/a" in docker and "auth_param" not in docker
    assert "den_credentials" not in docker and "%>a" in docker


def test_a_network_docker_will_not_remove_is_reported_once_and_left_in_place(tmp_path, monkeypatch) -> None:
    """moby/moby#42119: Docker keeps an endpoint no container holds and refuses to remove the
    network. The last agent's deletion must still finish: a Warning event once, no retry loop."""
    from den.operator import egress
    from den.operator.backend import StaleEndpoints
    from den.operator.plan import Action, ObservedGateway
    from den.operator.store import Store

    monkeypatch.setenv("DEN_HOME", str(tmp_path))

    class StaleBackend:
        removals = 0

        def observe_system(self, component, image):
            return ObservedGateway(network_exists=True)

        def den_containers_on_network(self) -> int:
            return 0

        def execute(self, operation) -> None:
            assert operation.action == Action.remove_network
            self.removals += 1
            raise StaleEndpoints("den", "net-1")

    backend = StaleBackend()
    with Store(tmp_path / "state.db") as store:
        reconciler = egress.EgressReconciler(store, backend)
        results = [reconciler.reconcile() for _ in range(3)]
        assert all(r.requeue_after is None for r in results)  # the resync tries again, not a hot loop
        assert backend.removals == 3
        left = [e for e in store.events("den-egress", "den-system") if e.reason == "NetworkLeft"]
        assert len(left) == 1 and left[0].type == "Warning" and "moby/moby#42119" in left[0].message
        assert not [e for e in store.events("den-egress", "den-system") if e.reason == "RemoveNetwork"]
