"""docs/openai-compat.md names every field the request models know; the scripted model's JSON answers."""

from __future__ import annotations

import json
import re

import pytest

from den.runtime.openai_types import (
    IGNORED_FIELDS,
    PASSED_FIELDS,
    REFUSED_FIELDS,
    ChatCompletionRequest,
)
from den.runtime.scripted_model import answer, formatted
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "openai-compat.md").read_text()


def documented(section: str) -> set[str]:
    part = DOC.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", part, re.M))


def test_every_chat_completions_field_is_in_the_compatibility_table() -> None:
    fields = set(ChatCompletionRequest.model_fields) | set(PASSED_FIELDS) | set(IGNORED_FIELDS) | set(REFUSED_FIELDS)
    assert fields - documented("Chat Completions") == set()


def test_every_responses_field_is_in_the_compatibility_table() -> None:
    from den.runtime.responses import IGNORED_RESPONSE_FIELDS, ResponsesRequest

    fields = set(ResponsesRequest.model_fields) | set(IGNORED_RESPONSE_FIELDS)
    assert fields - documented("Responses") == set()


def test_a_passed_field_is_sent_to_the_model_as_the_caller_set_it() -> None:
    request = ChatCompletionRequest.model_validate({
        "messages": [{"role": "user", "content": "hi"}], "temperature": 0.1, "max_completion_tokens": 9,
        "max_tokens": 50, "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}})
    assert request.model_options() == {"temperature": 0.1, "max_tokens": 9, "response_format": {
        "type": "json_schema", "json_schema": {"name": "a", "schema": {}}}}


@pytest.mark.parametrize(("schema", "expected"), [
    ({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a"]},
     {"a": "two words"}),
    ({"type": "object", "properties": {"ok": {"type": "boolean"}, "tags": {"type": "array", "items": {"type": "string"}}}},
     {"ok": True, "tags": ["two words"]}),
    ({"$defs": {"U": {"enum": ["C", "F"]}}, "type": "object", "properties": {"u": {"$ref": "#/$defs/U"},
                                                                          "n": {"anyOf": [{"type": "number"}, {"type": "null"}]}}},
     {"u": "C", "n": 2.0}),
])
def test_the_scripted_model_answers_a_json_schema_with_its_required_fields(schema, expected) -> None:
    text = formatted("two words", {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert json.loads(text) == expected


def test_the_scripted_model_answers_json_object_and_leaves_json_and_text_alone() -> None:
    assert json.loads(formatted("hi", {"type": "json_object"})) == {"answer": "hi"}
    assert formatted('{"a": 1}', {"type": "json_object"}) == '{"a": 1}'
    assert formatted("hi", {"type": "text"}) == "hi"


def test_the_scripted_model_calls_a_tool_the_request_offers_whoever_offers_it() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    reply = answer({"messages": [{"role": "user", "content": 'TOOL:get_weather {"city": "Oslo"}'}], "tools": tools}, [])
    assert (reply.tool_name, json.loads(reply.tool_arguments)) == ("get_weather", {"city": "Oslo"})


def test_the_scripted_model_calls_the_tool_tool_choice_forces_with_arguments_of_its_schema() -> None:
    tool = {"type": "function", "function": {"name": "Trip", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}
    body = {"messages": [{"role": "user", "content": "Oslo"}], "tools": [tool]}
    for choice in ({"type": "function", "function": {"name": "Trip"}}, "required"):
        reply = answer({**body, "tool_choice": choice}, [])
        assert (reply.tool_name, json.loads(reply.tool_arguments)) == ("Trip", {"city": "Oslo", "days": 1})
    assert answer({**body, "tool_choice": "auto"}, []).tool_name is None
