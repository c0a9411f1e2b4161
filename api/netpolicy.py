"""The grammar of ``runtime.allow``: one home for parsing and matching allowlist entries.

An entry is ``name`` (that host only) or ``*.name`` (its subdomains only, not
``name`` itself), optionally followed by ``:port``; without a port, 80 and 443.
The Agentfile validator, the tools' in-process check and the egress proxy's
generated configuration all read entries through :func:`parse_allow`, so the
three can never disagree on what an entry means.

Refused, with a message that says what was expected: IP literals (an allowlist
names hosts; an address would bypass the proxy's name checks), URLs, a wildcard
over a top-level domain (``*.com``), a ``*`` anywhere but the first label, and
duplicates.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DEFAULT_PORTS: tuple[int, ...] = (80, 443)
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
EXPECTED = "expected a host name like 'example.com' or '*.example.com', optionally with ':port'"


class AllowError(ValueError):
    """An allowlist entry that does not follow the grammar."""


@dataclass(frozen=True)
class AllowRule:
    """One parsed entry: ``host`` without the ``*.``; ``subdomains`` for a wildcard."""

    host: str
    subdomains: bool
    ports: tuple[int, ...]

    def matches(self, host: str, port: int | None = None) -> bool:
        host = host.lower().rstrip(".")
        hit = host.endswith("." + self.host) if self.subdomains else host == self.host
        return hit and (port is None or port in self.ports)

    def __str__(self) -> str:
        name = ("*." if self.subdomains else "") + self.host
        return name if self.ports == DEFAULT_PORTS else f"{name}:{self.ports[0]}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        return False


def parse_entry(entry: str) -> AllowRule:
    """One entry, or :class:`AllowError` saying what is wrong with it."""
    if not isinstance(entry, str) or not entry.strip():
        raise AllowError(f"{entry!r} is empty; {EXPECTED}")
    text = entry.strip().lower()
    if "://" in text or "/" in text or "?" in text or "@" in text:
        raise AllowError(f"{entry!r} is a URL, not a host; {EXPECTED}")
    if _is_ip(text) or text.startswith("["):
        raise AllowError(f"{entry!r} is an IP address; allowlists name hosts ({EXPECTED})")
    ports = DEFAULT_PORTS
    if text.count(":") == 1:
        text, _, port_text = text.partition(":")
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise AllowError(f"{entry!r} has an invalid port {port_text!r} (1-65535)")
        ports = (int(port_text),)
    elif ":" in text:
        raise AllowError(f"{entry!r} is not a host name; {EXPECTED}")
    text = text.rstrip(".")
    if _is_ip(text):
        raise AllowError(f"{entry!r} is an IP address; allowlists name hosts ({EXPECTED})")
    subdomains = text.startswith("*.")
    host = text[2:] if subdomains else text
    if "*" in host:
        raise AllowError(f"{entry!r}: '*' is only allowed as the whole first label ('*.example.com')")
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise AllowError(f"{entry!r} is not a valid host name; {EXPECTED}")
    if labels[-1].isdigit():
        raise AllowError(f"{entry!r} is not a host name (its last label is a number); {EXPECTED}")
    if subdomains and len(labels) < 2:
        raise AllowError(f"{entry!r} would allow a whole top-level domain; name a domain under it")
    return AllowRule(host=host, subdomains=subdomains, ports=ports)


def parse_allow(entries: list[str]) -> list[AllowRule]:
    """Every entry parsed; :class:`AllowError` (with ``index``) at the first bad one."""
    rules: list[AllowRule] = []
    seen: dict[tuple[str, bool, tuple[int, ...]], int] = {}
    for index, entry in enumerate(entries):
        try:
            rule = parse_entry(entry)
        except AllowError as exc:
            exc.index = index  # type: ignore[attr-defined]
            raise
        key = (rule.host, rule.subdomains, rule.ports)
        if key in seen:
            error = AllowError(f"{entry!r} repeats entry {seen[key]} ({entries[seen[key]]!r})")
            error.index = index  # type: ignore[attr-defined]
            raise error
        seen[key] = index
        rules.append(rule)
    return rules


def permits(mode: str, rules: list[AllowRule], host: str, port: int | None = None) -> bool:
    """Whether policy ``mode`` with ``rules`` lets a connection to ``host`` (and ``port``) out."""
    if mode == "host":
        return True
    if mode == "none" or _is_ip(host.strip("[]")):
        return False
    return any(rule.matches(host, port) for rule in rules)


def refusal(host: str) -> str:
    """The one wording of a refused connection, shared by the tools and the egress proxy."""
    return f"blocked by network policy: {host}"


def reaches(policy: str) -> str:
    """What an agent with ``policy`` can reach, in the words ``den inspect`` and status use."""
    return {"none": "the model gateway only",
            "filtered": "the model gateway, and runtime.allow through the egress proxy (den-egress)",
            "host": "anything (unrestricted)"}[policy]
