"""Read Agentfiles and Agent resources from YAML, with line numbers in every error.

A plain Agentfile and a full ``den.dev/v1alpha1`` Agent are accepted in any
file, several documents per file too. Problems are collected, never raised
one at a time, so a user sees everything wrong in one pass.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
import yaml.reader
import yaml.scanner
from pydantic import BaseModel, ValidationError

from den.api.agentfile import Agentfile, LocatedError
from den.api.errors import InvalidAgentfile, Problem
from den.api.resource import API_VERSION, KIND, Agent, to_agent
from den.api.suggest import did_you_mean

AGENTFILE_NAMES = ("Agentfile", "Agentfile.yaml", "Agentfile.yml")


class YamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, so ``on:`` stays a string."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Loaded:
    """One Agent read from one document of one file."""

    agent: Agent
    source: str
    line: int


class _LineMap:
    """Where each field path starts in the YAML text (1-based lines)."""

    def __init__(self) -> None:
        self.lines: dict[Loc, int] = {}
        self.duplicates: list[tuple[Loc, int]] = []

    def walk(self, node: yaml.Node, path: Loc = ()) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else f"<{key_node.tag}>"
                if key == "<<":  # YAML merge key: its fields land in this mapping
                    self.walk(value_node, path)
                    continue
                child = (*path, key)
                if key in seen:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                seen.add(key)
                self.lines[child] = key_node.start_mark.line + 1
                self.walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.walk(item, (*path, index))

    def line_for(self, loc: Loc) -> int | None:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None


def format_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = str(part) if str(part) else '""'  # an empty key is still a place
            out += f".{name}" if out else name
    return out


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that owns the fields at ``loc`` (for suggestions)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _first_model(field.annotation)
    return current


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is dict:
        return None
    if origin in (list, typing.Union, types.UnionType) or origin is not None:
        for arg in typing.get_args(annotation):
            found = _first_model(arg)
            if found is not None:
                return found
    return None


def _message(error: dict[str, Any], model: type[BaseModel], loc: Loc) -> tuple[Loc, str]:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        field = loc[-1]
        owner = _model_at(model, loc[:-1])
        names = list(owner.model_fields) if owner else []
        return loc, f"unknown field {field!r}{did_you_mean(str(field), names)}"
    if kind == "missing":
        return loc, "required field is missing"
    if kind == "value_error":
        cause = ctx.get("error")
        if isinstance(cause, LocatedError):
            return (*loc, *cause.loc), str(cause)
        return loc, str(cause) if cause is not None else error["msg"]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return loc, f"expected a mapping, got {_short(error.get('input'))}"
    if kind == "list_type":
        return loc, f"expected a list, got {_short(error.get('input'))}"
    message = error["msg"]
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "literal_error":
        message = f"{message} (got {_short(error.get('input'))})"
    if kind == "enum" or kind == "string_pattern_mismatch":
        message = f"{message} (got {_short(error.get('input'))})"
    return loc, message


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _validate(data: dict[str, Any], lines: _LineMap, source: str) -> tuple[Agent | None, list[Problem]]:
    is_resource = "apiVersion" in data or "kind" in data
    problems: list[Problem] = []
    if is_resource:
        if data.get("apiVersion") != API_VERSION:
            problems.append(
                Problem(source, lines.line_for(("apiVersion",)), "apiVersion",
                        f"expected {API_VERSION!r}, got {data.get('apiVersion')!r}")
            )
        if data.get("kind") != KIND:
            problems.append(
                Problem(source, lines.line_for(("kind",)), "kind", f"expected {KIND!r}, got {data.get('kind')!r}")
            )
        if problems:
            return None, problems
        model: type[BaseModel] = Agent
    else:
        model = Agentfile
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc, message = _message(error, model, tuple(error["loc"]))
            problems.append(Problem(source, lines.line_for(loc), format_path(loc), message))
        return None, problems
    agent = parsed if isinstance(parsed, Agent) else to_agent(parsed)
    return agent, []


def load_text(text: str, source: str = "<stdin>") -> tuple[list[Loaded], list[Problem]]:
    """Parse every document in ``text``; return the agents and every problem found."""
    if not text.strip():
        return [], [Problem(source, None, "", "file is empty: expected an Agentfile (name, model, ...)")]
    loaded: list[Loaded] = []
    problems: list[Problem] = []
    loader: YamlLoader | None = None
    try:
        loader = YamlLoader(text)  # its reader refuses control characters at once
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines = _LineMap()
            lines.walk(node)
            data = loader.construct_document(node)
            start = node.start_mark.line + 1
            for loc, line in lines.duplicates:
                problems.append(Problem(source, line, format_path(loc), "duplicate key"))
            if data is None:
                continue
            if not isinstance(data, dict):
                problems.append(
                    Problem(source, start, "",
                            f"expected a mapping (an Agentfile or an Agent resource), got {_short(data)}")
                )
                continue
            agent, found = _validate(data, lines, source)
            problems.extend(found)
            if agent is not None and not lines.duplicates:
                loaded.append(Loaded(agent, source, start))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if isinstance(exc, yaml.scanner.ScannerError) and exc.context_mark is not None:
            mark = exc.context_mark  # where the quote or block opened, not end of file
        line = mark.line + 1 if mark else None
        what = exc.problem or "cannot parse"
        if exc.context and isinstance(exc, yaml.scanner.ScannerError):
            what = f"{exc.context}: {what}"
        problems.append(Problem(source, line, "", f"invalid YAML: {what}"))
    except yaml.reader.ReaderError as exc:
        character = chr(exc.character) if isinstance(exc.character, int) else exc.character
        problems.append(Problem(source, None, "", f"invalid YAML: {exc.reason} (character "
                                                  f"{character!r} at position {exc.position})"))
    except yaml.YAMLError as exc:
        problems.append(Problem(source, None, "", f"invalid YAML: {exc}"))
    except RecursionError:
        problems.append(Problem(source, None, "", "invalid YAML: nested too deeply"))
    finally:
        if loader is not None:
            loader.dispose()
    if not loaded and not problems:
        problems.append(Problem(source, None, "", "no documents: expected an Agentfile (name, model, ...)"))
    problems.sort(key=lambda p: p.line or 0)
    return loaded, problems


def agent_files(path: Path) -> list[Path]:
    """The files an apply of ``path`` reads: the file itself, or a directory's Agentfiles."""
    if path.is_dir():
        found = sorted(
            p for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            and (p.name in AGENTFILE_NAMES or p.suffix in (".yaml", ".yml"))
        )
        return found
    return [path]


def load_paths(paths: Iterable[Path]) -> list[Loaded]:
    """Load every file (directories recursively); all-or-nothing.

    Raises :class:`InvalidAgentfile` with every problem of every file, and
    also when two documents name the same agent.
    """
    loaded: list[Loaded] = []
    problems: list[Problem] = []
    for root in paths:
        if not root.exists():
            problems.append(Problem(str(root), None, "", "no such file or directory"))
            continue
        files = agent_files(root)
        if root.is_dir() and not files:
            problems.append(Problem(str(root), None, "", "no Agentfile or *.yaml files in this directory"))
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(str(file), None, "", f"cannot read: {exc}"))
                continue
            items, found = load_text(text, str(file))
            loaded.extend(items)
            problems.extend(found)
    seen: dict[str, Loaded] = {}
    for item in loaded:
        if item.agent.key in seen:
            first = seen[item.agent.key]
            problems.append(
                Problem(item.source, item.line, "name",
                        f"agent {item.agent.key!r} is also defined at {first.source}:{first.line}")
            )
        seen.setdefault(item.agent.key, item)
    if problems:
        raise InvalidAgentfile(problems)
    return loaded


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so system prompts read as written."""


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if any(ch in value for ch in "\x85\u2028\u2029"):
        style = '"'  # line separators YAML would otherwise fold away
    elif "\n" in value:
        style = "|"
    else:
        style = None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_presenter)


def dump_yaml(data: Any) -> str:
    """YAML for people: keys in model order, block strings, no aliases."""
    _BlockDumper.ignore_aliases = lambda self, data: True  # type: ignore[method-assign]
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True)
