"""Whatever text or document the Agentfile loader is given, it answers a valid Agent or a clear
Den error naming where (file, line, field path): never another exception."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from den.api.agentfile import Agentfile
from den.api.errors import DenError, InvalidAgentfile
from den.api.loader import Loaded, load_text
from den.api.resource import Agent
from tests.unit.test_docs import FIELDS

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID = {"name": "helper", "model": {"provider": "openai", "name": "gpt-4o-mini"}}

#: Every field name of the Agentfile (so generated mappings reach the nested validators too).
NAMES = sorted({part for path in FIELDS for part in path.replace("[]", "").split(".")})
keys = st.one_of(st.sampled_from(NAMES), st.text(max_size=12))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
                    st.sampled_from(["512m", "2g", "0 9 * * 1-5", "Europe/Paris", "filtered", "*.example.com",
                                     "shell_exec", "research", "${HOME}", "on", "1.10"]))
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner,
                                                                                               max_size=6),
                         max_leaves=25)


def load(text: str) -> list[Loaded]:
    """The loader as the CLI uses it: the agents, or InvalidAgentfile with every problem."""
    loaded, problems = load_text(text, "Agentfile")
    if problems:
        raise InvalidAgentfile(problems)
    return loaded


def check(text: str, *, a_mapping: bool) -> None:
    try:
        loaded = load(text)
    except DenError as exc:
        assert isinstance(exc, InvalidAgentfile) and exc.problems
        for problem in exc.problems:
            assert problem.message and str(problem).startswith("Agentfile")
            if a_mapping and "YAML" not in problem.message and "duplicate" not in problem.message:
                assert problem.path, f"a problem of a mapping names no field: {problem}"
        return
    for item in loaded:
        assert isinstance(item.agent, Agent)
        assert Agent.model_validate(item.agent.model_dump(mode="json")) == item.agent


def at(document: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """``document`` with ``value`` set at ``path`` (dicts made on the way, lists replaced)."""
    if not path:
        return document
    head, *rest = path
    inner = document.get(head)
    return {**document, head: at(inner if isinstance(inner, dict) else {}, rest, value) if rest else value}


@FUZZ
@given(st.text(max_size=300))
def test_any_text_loads_as_agents_or_a_clear_error(text: str) -> None:
    check(text, a_mapping=False)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("name:model\n -[]{}'\"#&*!|>%@`,?0123456789\t")), max_size=200))
def test_yaml_punctuation_loads_as_agents_or_a_clear_error(text: str) -> None:
    check(text, a_mapping=False)


@FUZZ
@given(documents)
def test_any_json_like_document_loads_as_an_agent_or_a_clear_error(document: Any) -> None:
    check(yaml.safe_dump(document, allow_unicode=True), a_mapping=isinstance(document, dict))


@FUZZ
@given(st.sampled_from(sorted(FIELDS)), documents)
def test_any_value_in_any_field_of_a_valid_agentfile_is_taken_or_named(field: str, value: Any) -> None:
    document = at(VALID, field.replace("[]", "").split("."), value)
    check(yaml.safe_dump(document, allow_unicode=True), a_mapping=True)


def test_deeply_nested_yaml_is_a_clear_error() -> None:
    check("name: " + "[" * 5000 + "]" * 5000, a_mapping=False)
    check("model: " + "{a: " * 3000 + "1" + "}" * 3000, a_mapping=False)


def test_the_valid_agentfile_the_properties_start_from_is_valid() -> None:
    (item,) = load(yaml.safe_dump(VALID))
    assert Agentfile.model_validate(VALID).name == item.agent.name


def test_a_control_character_is_reported_as_invalid_yaml_with_its_position() -> None:
    _, [problem] = load_text("name: a\x1bb\n", "Agentfile")
    assert str(problem) == ("Agentfile: invalid YAML: special characters are not allowed "
                            "(character '\\x1b' at position 7)")


def test_an_empty_key_is_named_as_a_place() -> None:
    _, problems = load_text('name: helper\nmodel: {provider: openai, name: m}\n"": 1\n', "Agentfile")
    assert [str(p) for p in problems] == ["Agentfile:3: \"\": unknown field ''"]
