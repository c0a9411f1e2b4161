"""The `runtime.allow` grammar and the in-process check the tools make before connecting.

An entry is ``name`` (that host) or ``*.name`` (its subdomains only), with an optional
``:port`` (80 and 443 without one). The Agentfile validator, the tools and the egress
proxy all read entries through den.api.netpolicy, so what is pinned here is what a user
gets everywhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from den.api.netpolicy import AllowError, AllowRule, parse_allow, parse_entry, permits, refusal
from den.runtime.tools.base import NetworkPolicy, ToolContext
from den.runtime.tools.net import Refused, check_url

# -- what an entry means --------------------------------------------------------------


def test_a_plain_name_allows_that_host_on_80_and_443_only():
    rule = parse_entry("api.example.com")
    assert rule == AllowRule(host="api.example.com", subdomains=False, ports=(80, 443))
    assert rule.matches("api.example.com", 443)
    assert rule.matches("api.example.com", 80)
    assert not rule.matches("api.example.com", 8080)


def test_a_plain_name_does_not_allow_its_subdomains_nor_its_parent():
    rule = parse_entry("example.com")
    assert not rule.matches("www.example.com", 443)
    assert not rule.matches("com", 443)
    assert not rule.matches("notexample.com", 443)


def test_a_wildcard_matches_subdomains_only():
    rule = parse_entry("*.wild.test")
    assert rule.subdomains and rule.host == "wild.test"
    assert rule.matches("a.wild.test", 443)
    assert rule.matches("x.y.wild.test", 80)
    assert not rule.matches("wild.test", 443)
    assert not rule.matches("evilwild.test", 443)
    assert not rule.matches("a.wild.test.evil.com", 443)


def test_a_port_replaces_the_default_ports():
    rule = parse_entry("example.com:8443")
    assert rule.ports == (8443,)
    assert rule.matches("example.com", 8443)
    assert not rule.matches("example.com", 443)
    assert not rule.matches("example.com", 80)


def test_a_wildcard_takes_a_port_too():
    rule = parse_entry("*.example.com:8080")
    assert rule.matches("a.example.com", 8080)
    assert not rule.matches("a.example.com", 443)


def test_hosts_match_whatever_their_case_and_a_trailing_dot():
    rule = parse_entry("example.com")
    assert rule.matches("EXAMPLE.Com", 443)
    assert rule.matches("example.com.", 443)


def test_an_entry_is_read_case_blind_with_its_spaces_and_trailing_dot_dropped():
    assert parse_entry("  API.Example.COM.  ") == parse_entry("api.example.com")
    assert parse_entry("*.Example.com.:8443") == AllowRule("example.com", True, (8443,))


def test_a_rule_without_a_port_to_check_matches_on_the_name_alone():
    assert parse_entry("example.com:8443").matches("example.com")


def test_a_rule_prints_as_the_entry_that_makes_it():
    assert str(parse_entry("*.Example.com")) == "*.example.com"
    assert str(parse_entry("example.com:80")) == "example.com:80"
    assert str(parse_entry("example.com")) == "example.com"


# -- what is refused, and how -----------------------------------------------------------


@pytest.mark.parametrize(("entry", "says"), [
    ("10.0.0.1", "is an IP address"),
    ("10.0.0.1:443", "is an IP address"),
    ("169.254.169.254", "is an IP address"),
    ("::1", "is an IP address"),
    ("[::1]", "is an IP address"),
    ("[::1]:443", "is an IP address"),
    ("2001:db8::1", "is an IP address"),
    ("127.1", "its last label is a number"),
    ("2130706433", "its last label is a number"),
    ("http://example.com", "is a URL"),
    ("example.com/path", "is a URL"),
    ("example.com?q=1", "is a URL"),
    ("user@example.com", "is a URL"),
    ("*.com", "whole top-level domain"),
    ("*.com:443", "whole top-level domain"),
    ("*", "'*' is only allowed as the whole first label"),
    ("*example.com", "'*' is only allowed as the whole first label"),
    ("ex*ample.com", "'*' is only allowed as the whole first label"),
    ("a.*.example.com", "'*' is only allowed as the whole first label"),
    ("*.*.example.com", "'*' is only allowed as the whole first label"),
    ("example.com:0", "invalid port"),
    ("example.com:65536", "invalid port"),
    ("example.com:https", "invalid port"),
    ("example.com:-1", "invalid port"),
    ("example.com:", "invalid port"),
    ("", "is empty"),
    ("   ", "is empty"),
    ("under_score.example.com", "not a valid host name"),
    ("-leading.example.com", "not a valid host name"),
    ("trailing-.example.com", "not a valid host name"),
    ("double..dot.com", "not a valid host name"),
    ("b\u00fccher.de", "not a valid host name"),
    ("a" * 64 + ".com", "not a valid host name"),
    (".".join(["a" * 60] * 5), "not a valid host name"),
])
def test_an_entry_outside_the_grammar_is_refused_saying_why(entry, says):
    with pytest.raises(AllowError) as caught:
        parse_entry(entry)
    assert says in str(caught.value)
    assert repr(entry) in str(caught.value)


def test_a_label_of_63_characters_is_still_a_host_name():
    assert parse_entry("a" * 63 + ".example.com").host == "a" * 63 + ".example.com"


def test_a_refusal_says_what_was_expected():
    with pytest.raises(AllowError, match=r"expected a host name like 'example\.com' or '\*\.example\.com'"):
        parse_entry("https://example.com/")


@pytest.mark.parametrize("entry", ["example\n.com", "a\n.b\n.example.com", "*.x\n.example.com"])
def test_an_entry_with_a_line_break_inside_is_refused(entry):
    with pytest.raises(AllowError):
        parse_entry(entry)


def test_a_port_in_superscript_digits_is_refused_as_an_invalid_port():
    with pytest.raises(AllowError, match="invalid port"):
        parse_entry("example.com:\u00b2")


def test_the_first_bad_entry_is_reported_with_its_position():
    with pytest.raises(AllowError) as caught:
        parse_allow(["example.com", "*.example.org", "10.0.0.1", "*.com"])
    assert caught.value.index == 2
    assert "'10.0.0.1'" in str(caught.value)


def test_a_repeated_entry_is_refused_even_spelled_differently():
    with pytest.raises(AllowError) as caught:
        parse_allow(["other.test", "example.com", "EXAMPLE.com."])
    assert caught.value.index == 2
    assert "repeats entry 1 ('example.com')" in str(caught.value)


def test_a_name_with_other_ports_or_its_wildcard_is_not_a_repeat():
    rules = parse_allow(["example.com", "example.com:8443", "*.example.com"])
    assert [str(rule) for rule in rules] == ["example.com", "example.com:8443", "*.example.com"]


def test_an_empty_allowlist_is_valid():
    assert parse_allow([]) == []


_LABELS = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
_TLDS = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(_LABELS, min_size=1, max_size=4), tld=_TLDS, wildcard=st.booleans(),
       port=st.none() | st.integers(min_value=1, max_value=65535))
def test_any_valid_entry_reads_back_from_the_rule_it_makes(labels, tld, wildcard, port):
    host = ".".join([*labels, tld])
    entry = ("*." if wildcard else "") + host + ("" if port is None else f":{port}")
    rule = parse_entry(entry)
    assert parse_entry(str(rule)) == rule
    assert rule.host == host and rule.subdomains == wildcard
    assert rule.ports == ((80, 443) if port is None else (port,))
    some_port = rule.ports[0]
    assert rule.matches("sub." + host, some_port) == wildcard
    assert rule.matches(host, some_port) != wildcard


# -- the policy as a whole ---------------------------------------------------------------


RULES = parse_allow(["api.example.com", "*.wild.test:8443"])


def test_host_policy_permits_everything_even_addresses():
    assert permits("host", [], "anything.test", 25)
    assert permits("host", [], "127.0.0.1", 22)
    assert permits("host", [], "[::1]", 80)


def test_none_policy_permits_nothing_even_what_is_allowlisted():
    assert not permits("none", RULES, "api.example.com", 443)


def test_filtered_policy_permits_the_allowlist_and_nothing_else():
    assert permits("filtered", RULES, "api.example.com", 443)
    assert permits("filtered", RULES, "a.wild.test", 8443)
    assert not permits("filtered", RULES, "a.wild.test", 443)
    assert not permits("filtered", RULES, "wild.test", 8443)
    assert not permits("filtered", RULES, "example.com", 443)
    assert not permits("filtered", [], "api.example.com", 443)


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254", "::1", "[::1]", "[fe80::1]"])
def test_filtered_policy_never_permits_an_ip_address(address):
    assert not permits("filtered", RULES, address, 443)


def test_a_refusal_has_one_wording():
    assert refusal("evil.test") == "blocked by network policy: evil.test"


def test_the_tools_policy_defaults_to_host_and_uses_the_same_grammar():
    assert NetworkPolicy().permits("anything.test", 1)
    policy = NetworkPolicy(mode="filtered", allow=["*.wild.test"])
    assert policy.permits("a.wild.test", 443)
    assert not policy.permits("wild.test", 443)
    with pytest.raises(AllowError):
        NetworkPolicy(mode="filtered", allow=["10.0.0.1"]).permits("example.com", 443)


# -- the tools' check before they connect ------------------------------------------------


def context(tmp_path: Path, mode: str, *allow: str) -> ToolContext:
    return ToolContext(agent="scout", home=tmp_path, network=NetworkPolicy(mode=mode, allow=list(allow)))


def test_an_allowlisted_url_passes_the_check(tmp_path):
    ctx = context(tmp_path, "filtered", "api.example.com", "*.wild.test")
    check_url("https://api.example.com/v1/models", ctx)
    check_url("http://A.Wild.Test/page?q=1", ctx)


def test_a_url_elsewhere_is_refused_with_the_policy_wording(tmp_path):
    ctx = context(tmp_path, "filtered", "api.example.com")
    with pytest.raises(Refused) as caught:
        check_url("https://evil.test/exfiltrate?data=1", ctx)
    assert str(caught.value) == "blocked by network policy: evil.test"


def test_the_port_a_url_implies_is_the_port_checked(tmp_path):
    ctx = context(tmp_path, "filtered", "example.com:443")
    check_url("https://example.com/", ctx)
    with pytest.raises(Refused, match=r"^blocked by network policy: example\.com$"):
        check_url("http://example.com/", ctx)
    with pytest.raises(Refused, match=r"^blocked by network policy: example\.com$"):
        check_url("https://example.com:8443/", ctx)


def test_an_address_in_a_url_is_refused_under_filtered(tmp_path):
    ctx = context(tmp_path, "filtered", "example.com")
    with pytest.raises(Refused, match=r"^blocked by network policy: 169\.254\.169\.254$"):
        check_url("http://169.254.169.254/latest/meta-data/", ctx)
    with pytest.raises(Refused, match=r"^blocked by network policy: ::1$"):
        check_url("http://[::1]:8800/den/v1/status", ctx)


def test_a_url_userinfo_does_not_disguise_the_host(tmp_path):
    ctx = context(tmp_path, "filtered", "example.com")
    with pytest.raises(Refused, match=r"^blocked by network policy: evil\.test$"):
        check_url("https://example.com@evil.test/", ctx)


def test_none_refuses_every_url_and_host_refuses_none(tmp_path):
    with pytest.raises(Refused, match=r"^blocked by network policy: example\.com$"):
        check_url("https://example.com/", context(tmp_path, "none", "example.com"))
    check_url("http://127.0.0.1:9/", context(tmp_path, "host"))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/", "example.com", "https:///path"])
def test_only_http_urls_with_a_host_are_fetched(tmp_path, url):
    with pytest.raises(Refused, match="only http"):
        check_url(url, context(tmp_path, "host"))
