"""docs/agentfile.md cannot rot: it is checked against the models and the example.

Conventions of the reference (stated in its "Reading the tables" section):

- every field has a table row whose first cell is its full path in
  backticks: ``runtime.memory``, ``identity.personality.tone``,
  ``cron[].schedule`` (``[]`` marks "each entry of the list");
- the Default cell is the YAML value in backticks, ``required``, ``—`` for
  unset, or a "see [...]" link for a nested section;
- a ``yaml`` block validates (a fragment is completed with a name and a
  model), a ``yaml invalid`` block is followed by a ``text`` block with the
  loader's exact output, and a block preceded by ``<!-- file: PATH -->`` is
  that file verbatim.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from den.api.agentfile import BUILTIN_TOOLS, Agentfile
from den.api.loader import YamlLoader, dump_yaml, load_text
from den.api.resource import to_agentfile

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "agentfile.md"
COMPLETE_EXAMPLE = ROOT / "examples" / "research-analyst" / "Agentfile"
MINIMAL = {"name": "example", "model": {"provider": "openai", "name": "gpt-4o"}}

REQUIRED = "required"
UNSET = "—"


# --- the models' side -------------------------------------------------------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _enums_in(annotation: Any) -> list[type[Enum]]:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [annotation]
    return [e for arg in typing.get_args(annotation) for e in _enums_in(arg)]


def agentfile_fields(model: type[BaseModel] = Agentfile, prefix: str = "") -> dict[str, FieldInfo]:
    """Every field of the Agentfile, nested ones included, by dotted path."""
    fields: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        path = prefix + name
        fields[path] = info
        is_list = typing.get_origin(info.annotation) is list
        for nested in _models_in(info.annotation):
            fields.update(agentfile_fields(nested, path + ("[]." if is_list else ".")))
    return fields


FIELDS = agentfile_fields()


# --- the reference's side ---------------------------------------------------


@dataclass(frozen=True)
class Row:
    path: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class Block:
    info: str
    text: str
    line: int
    file: str | None


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def reference_rows(markdown: str) -> dict[str, Row]:
    """Rows of the tables whose header starts with ``| Field |``, by path."""
    rows: dict[str, Row] = {}
    in_field_table = False
    for line in markdown.splitlines():
        if not line.startswith("|"):
            in_field_table = False
            continue
        cells = _cells(line)
        if cells and cells[0] == "Field":
            in_field_table = True
            continue
        if not in_field_table or set(cells[0]) <= {"-", ":"}:
            continue
        path = cells[0].strip("`")
        assert path not in rows, f"{path} has two rows in {REFERENCE.name}"
        rows[path] = Row(path, *cells[1:4])
    return rows


def reference_blocks(markdown: str) -> list[Block]:
    blocks: list[Block] = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opening = re.match(r"^```(\S.*)?$", lines[index])
        if not opening:
            index += 1
            continue
        marker = re.match(r"^<!-- file: (\S+) -->$", lines[index - 1]) if index else None
        end = lines.index("```", index + 1)
        blocks.append(
            Block(
                info=(opening.group(1) or "").strip(),
                text="\n".join(lines[index + 1 : end]) + "\n",
                line=index + 1,
                file=marker.group(1) if marker else None,
            )
        )
        index = end + 1
    return blocks


MARKDOWN = REFERENCE.read_text(encoding="utf-8")
ROWS = reference_rows(MARKDOWN)
BLOCKS = reference_blocks(MARKDOWN)


def documented_default(cell: str) -> Any:
    if cell in (REQUIRED, UNSET):
        return cell
    if cell.startswith("see ["):
        return "see"
    match = re.fullmatch(r"`([^`]*)`", cell)
    assert match, f"a Default cell is `value`, {REQUIRED}, {UNSET} or 'see [...]', got {cell!r}"
    return yaml.load(match.group(1), Loader=YamlLoader)


def model_default(info: FieldInfo) -> Any:
    if info.is_required():
        return REQUIRED
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see"
    if value is None:
        return UNSET
    return value.value if isinstance(value, Enum) else value


# --- tests ------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(FIELDS))
def test_each_field_has_a_row_with_the_models_default(path: str) -> None:
    assert path in ROWS, f"{path} is missing from the tables of {REFERENCE.name}"
    expected = model_default(FIELDS[path])
    documented = documented_default(ROWS[path].default)
    assert documented == expected, (
        f"{path}: documented default {documented!r}, model says {expected!r}"
    )
    assert isinstance(documented, bool) == isinstance(expected, bool), path


@pytest.mark.parametrize(
    "path", sorted(p for p, info in FIELDS.items() if _enums_in(info.annotation))
)
def test_each_choice_field_names_every_choice_in_its_type(path: str) -> None:
    (enum,) = _enums_in(FIELDS[path].annotation)
    for member in enum:
        assert f"`{member.value}`" in ROWS[path].type, f"{path}: type cell lacks `{member.value}`"


def test_every_row_of_the_reference_is_a_field_of_the_agentfile() -> None:
    stale = sorted(set(ROWS) - set(FIELDS))
    assert not stale, f"{REFERENCE.name} documents fields the models do not have: {stale}"


def test_the_complete_example_is_the_example_file_verbatim() -> None:
    (block,) = [b for b in BLOCKS if b.file == "examples/research-analyst/Agentfile"]
    assert block.info == "yaml"
    assert block.text == COMPLETE_EXAMPLE.read_text(encoding="utf-8")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.file], ids=lambda b: b.file)
def test_each_block_marked_with_a_file_is_that_file(block: Block) -> None:
    assert block.text == (ROOT / block.file).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.info == "yaml"], ids=lambda b: f"line-{b.line}"
)
def test_each_yaml_example_in_the_reference_is_valid(block: Block) -> None:
    data = yaml.load(block.text, Loader=YamlLoader)
    text = block.text
    if "name" not in data and "apiVersion" not in data:
        text = dump_yaml({**MINIMAL, **data})
    loaded, problems = load_text(text, f"{REFERENCE.name}:{block.line}")
    assert not problems, "\n".join(str(p) for p in problems)
    assert len(loaded) == 1


@pytest.mark.parametrize(
    "index",
    [i for i, b in enumerate(BLOCKS) if b.info == "yaml invalid"],
    ids=lambda i: f"line-{BLOCKS[i].line}",
)
def test_each_invalid_example_is_reported_as_the_reference_shows(index: int) -> None:
    report = BLOCKS[index + 1]
    assert report.info == "text", (
        "a `yaml invalid` block is followed by the `text` it is reported as"
    )
    loaded, problems = load_text(BLOCKS[index].text, "Agentfile")
    assert not loaded
    assert [str(p) for p in problems] == report.text.splitlines()


def test_the_reference_shows_invalid_examples_and_their_reports() -> None:
    assert sum(b.info == "yaml invalid" for b in BLOCKS) >= 2


def test_the_builtin_tools_table_lists_every_builtin_tool_in_order() -> None:
    listed = re.findall(r"^\| `([a-z_]+)` \| [^|]+ \|$", MARKDOWN, flags=re.MULTILINE)
    assert tuple(listed) == BUILTIN_TOOLS


def test_the_kubernetes_resource_is_the_complete_example_as_a_resource() -> None:
    (block,) = [b for b in BLOCKS if b.info == "yaml" and b.text.startswith("apiVersion:")]
    (resource,), problems = load_text(block.text, "resource")
    assert not problems
    (example,), _ = load_text(COMPLETE_EXAMPLE.read_text(encoding="utf-8"), "example")
    assert resource.agent == example.agent
    assert to_agentfile(resource.agent) == to_agentfile(example.agent)


def test_the_kubernetes_resource_reads_the_same_with_a_yaml_1_1_parser() -> None:
    (block,) = [b for b in BLOCKS if b.info == "yaml" and b.text.startswith("apiVersion:")]
    as_kubectl_reads_it = yaml.safe_load(block.text)
    as_den_reads_it = yaml.load(block.text, Loader=YamlLoader)
    assert as_kubectl_reads_it == as_den_reads_it
    assert all("on" in check for check in as_kubectl_reads_it["spec"]["checks"])


def test_an_unquoted_on_key_is_a_boolean_to_a_yaml_1_1_parser() -> None:
    """Why the reference tells Kubernetes users to write "on"."""
    assert yaml.safe_load("on: before_respond") == {True: "before_respond"}
    assert yaml.load("on: before_respond", Loader=YamlLoader) == {"on": "before_respond"}
