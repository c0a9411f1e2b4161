"""Kubernetes label selectors: ``app=web,tier!=db,env in (a,b),!legacy,release``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from den.api.errors import DenError

_TERM = re.compile(
    r"""\s*(?:
        (?P<not>!)\s*(?P<nkey>[\w./-]+)                                  # !key
      | (?P<skey>[\w./-]+)\s*(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)   # key in (a,b)
      | (?P<ekey>[\w./-]+)\s*(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)         # key=value
      | (?P<key>[\w./-]+)                                                 # key
    )\s*(?:,|$)""",
    re.VERBOSE,
)


class InvalidSelector(DenError):
    exit_code = 2


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        # "!=" and "notin" match objects without the label, as in Kubernetes.
        return value is None or value not in self.values


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: dict[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def parse_selector(text: str | None) -> Selector:
    """Parse a selector; an empty one matches everything."""
    requirements: list[Requirement] = []
    text = (text or "").strip()
    position = 0
    while position < len(text):
        match = _TERM.match(text, position)
        if match is None or match.end() == position:
            raise InvalidSelector(f"invalid label selector {text!r} near {text[position:]!r}")
        position = match.end()
        if match["nkey"]:
            requirements.append(Requirement(match["nkey"], "!"))
        elif match["skey"]:
            values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(Requirement(match["skey"], match["setop"], values))
        elif match["ekey"]:
            op = "!=" if match["op"] == "!=" else "="
            requirements.append(Requirement(match["ekey"], op, (match["value"],)))
        else:
            requirements.append(Requirement(match["key"], "exists"))
    return Selector(tuple(requirements))
