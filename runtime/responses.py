"""OpenAI's Responses API over the agent loop: the request as Chat Completions, the turn as a response.

The model behind the agent is still called with Chat Completions: ``input``
(a string, or input items) becomes messages, ``instructions`` a system message
after the agent's identity, function tools the caller's tools, ``text.format``
the ``response_format``; the turn becomes a ``response`` object whose output
is a ``message`` item and, when the model called the caller's tools,
``function_call`` items. Streamed, it is the documented event sequence
(``response.created`` ... ``response.completed``). docs/openai-compat.md has
the field table.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator

from den.runtime.agent.loop import Turn
from den.runtime.completions import TurnStream, sse, turn_meta
from den.runtime.openai_types import WireModel

#: Fields passed to the model, under their Chat Completions names.
PASSED_RESPONSE_FIELDS = ("temperature", "top_p", "user", "parallel_tool_calls")
IGNORED_RESPONSE_FIELDS = {
    "model": "the agent is the model: its Agentfile names the one it thinks with",
    "metadata": "echoed in the response, not used",
    "include": "there is nothing extra to include: no reasoning items, logprobs or tool sources",
    "truncation": "the agent fits its context to the model's window itself (oldest messages first)",
    "service_tier": "the Agentfile chooses the provider and what it costs, not the caller",
    "prompt_cache_key": "the agent's prompt is built per turn",
    "safety_identifier": "not forwarded: user is",
}
REFUSED_RESPONSE_FIELDS = {
    "background": "Den answers in the foreground (stream for progress)",
    "conversation": "use previous_response_id (or Chat Completions with X-Den-Session)",
    "prompt": "stored prompt templates are OpenAI's: send instructions",
    "max_tool_calls": "the agent's step limit bounds its tool calls",
    "top_logprobs": "an agent's answer may come from several model calls: there are no log probabilities of it",
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponsesRequest(WireModel):
    """``POST /v1/responses``: checked as OpenAI checks it (400 naming the parameter)."""

    model_config = ConfigDict(extra="allow")
    refuse_nul: ClassVar[bool] = True

    model: str | None = None
    input: str | list[dict[str, Any]] = Field(..., min_length=1)
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = Field(None, strict=True)
    previous_response_id: str | None = None
    store: bool = Field(True, strict=True)
    stream: bool = Field(False, strict=True)
    temperature: float | None = Field(None, strict=True, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, strict=True, ge=0, le=1, allow_inf_nan=False)
    max_output_tokens: int | None = Field(None, strict=True, gt=0)
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    background: Any = None
    conversation: Any = None
    prompt: Any = None
    max_tool_calls: Any = None
    top_logprobs: Any = None

    @field_validator(*REFUSED_RESPONSE_FIELDS)
    @classmethod
    def _refused(cls, value: Any, info: Any) -> Any:
        if value not in (None, False):
            raise ValueError(REFUSED_RESPONSE_FIELDS[info.field_name])
        return value

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for index, tool in enumerate(value or []):
            if tool.get("type") != "function":
                raise ValueError(f"tool {index}: only function tools are supported (the agent has its own "
                                 f"tools in its Agentfile), got type {tool.get('type')!r}")
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise ValueError(f"tool {index}: a function tool needs a name")
        return value

    @field_validator("text")
    @classmethod
    def _text_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        fmt = (value or {}).get("format")
        if fmt is not None and (not isinstance(fmt, dict)
                                or fmt.get("type") not in ("text", "json_object", "json_schema")):
            raise ValueError("format must be {type: text | json_object | json_schema}")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and not isinstance(fmt.get("schema"), dict):
            raise ValueError("format json_schema needs a schema")
        return value

    def caller_tools(self) -> list[dict[str, Any]]:
        """The function tools in Chat Completions' shape."""
        return [{"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters", "strict")
                                                  if t.get(k) is not None}} for t in self.tools or []]

    def model_options(self) -> dict[str, Any]:
        options = {name: getattr(self, name) for name in PASSED_RESPONSE_FIELDS if getattr(self, name) is not None}
        if self.max_output_tokens:
            options["max_tokens"] = self.max_output_tokens
        choice = self.tool_choice
        if isinstance(choice, dict) and choice.get("type") == "function":
            choice = {"type": "function", "function": {"name": choice.get("name")}}
        if choice is not None:
            options["tool_choice"] = choice
        fmt = (self.text or {}).get("format")
        if isinstance(fmt, dict) and fmt["type"] == "json_schema":
            options["response_format"] = {"type": "json_schema", "json_schema": {
                k: fmt[k] for k in ("name", "description", "schema", "strict") if k in fmt}}
        elif isinstance(fmt, dict) and fmt["type"] == "json_object":
            options["response_format"] = {"type": "json_object"}
        if isinstance(self.reasoning, dict) and self.reasoning.get("effort"):
            options["reasoning_effort"] = self.reasoning["effort"]
        return options


class InputProblem(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _parts(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InputProblem(param, "content must be a string or a list of content parts")
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text") or "")})
        elif kind == "input_image" and part.get("image_url"):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            raise InputProblem(f"{param}.{index}", f"content part type {kind!r} is not supported "
                                                   "(input_text, output_text, input_image with image_url)")
    return parts


def _text_of(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


def chat_messages(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as Chat Completions messages (``function_call`` items join one assistant message)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        kind = item.get("type") or "message"
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InputProblem(f"input.{index}.role", "role must be user, assistant, system or developer")
            content = _parts(item.get("content"), f"input.{index}.content")
            if role == "assistant":
                content = _text_of(content)
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {"id": str(item.get("call_id") or ""), "type": "function",
                    "function": {"name": str(item.get("name") or ""), "arguments": str(item.get("arguments") or "{}")}}
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text_of(_parts(output, f"input.{index}.output"))
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": text})
        elif kind == "reasoning":
            continue
        else:
            raise InputProblem(f"input.{index}.type", f"input item type {kind!r} is not supported "
                                                      "(message, function_call, function_call_output)")
    return messages


def usage_of(turn: Turn) -> dict[str, Any]:
    return {"input_tokens": turn.usage.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": turn.usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": turn.usage.total_tokens}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def call_item(item_id: str, call: Any, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call.id, "name": call.name,
            "arguments": call.arguments if status == "completed" else "", "status": status}


class ResponseShape:
    """What every response object of one request says besides its output."""

    def __init__(self, request: ResponsesRequest, agent_name: str) -> None:
        self.id = new_id("resp")
        self.message_id = new_id("msg")
        self.created_at = int(time.time())
        self.request = request
        self.agent_name = agent_name

    def body(self, status: str, output: list[dict[str, Any]], turn: Turn | None = None) -> dict[str, Any]:
        r = self.request
        body = {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "error": None, "incomplete_details": None, "instructions": r.instructions,
            "max_output_tokens": r.max_output_tokens, "model": self.agent_name, "output": output,
            "parallel_tool_calls": r.parallel_tool_calls is not False,
            "previous_response_id": r.previous_response_id, "reasoning": {"effort": None, "summary": None},
            "store": r.store, "temperature": r.temperature, "top_p": r.top_p,
            "text": r.text or {"format": {"type": "text"}}, "tool_choice": r.tool_choice or "auto",
            "tools": r.tools or [], "truncation": "disabled", "usage": usage_of(turn) if turn else None,
            "user": r.user, "metadata": r.metadata or {},
        }
        if turn is not None:
            body["den"] = turn_meta(turn)
        return body

    def output(self, turn: Turn) -> list[dict[str, Any]]:
        items = [message_item(self.message_id, turn.content)] if turn.content or not turn.tool_calls else []
        return items + [call_item(f"fc_{call.id}", call) for call in turn.tool_calls]


class ResponseEvents(TurnStream):
    """The Server-Sent Events of a streamed response, as the turn happens (OpenAI's sequence)."""

    def __init__(self, shape: ResponseShape) -> None:
        super().__init__(shape.agent_name, include_usage=False)
        self.shape = shape
        self.sequence = 0

    def frame(self, kind: str, **data: Any) -> str:
        event = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return f"event: {kind}\n" + sse(event)

    async def events(self) -> AsyncIterator[str]:
        shape, item_id = self.shape, self.shape.message_id
        yield self.frame("response.created", response=shape.body("in_progress", []))
        yield self.frame("response.in_progress", response=shape.body("in_progress", []))
        text, started = "", False
        part = {"item_id": item_id, "output_index": 0, "content_index": 0}
        while True:
            kind, value = self._pending or await self.queue.get()
            self._pending = None
            if kind == "delta" and value:
                if not started:
                    started = True
                    yield self.frame("response.output_item.added", output_index=0,
                                      item=message_item(item_id, "", "in_progress"))
                    yield self.frame("response.content_part.added", **part,
                                      part={"type": "output_text", "text": "", "annotations": []})
                text += value
                yield self.frame("response.output_text.delta", **part, delta=value, logprobs=[])
            elif kind == "done":
                turn = self.outcome(value)
                if turn is None:
                    return
                if started:
                    yield self.frame("response.output_text.done", **part, text=text, logprobs=[])
                    yield self.frame("response.content_part.done", **part,
                                      part={"type": "output_text", "text": text, "annotations": []})
                    yield self.frame("response.output_item.done", output_index=0, item=message_item(item_id, text))
                output = shape.output(turn)
                for index, call in enumerate(turn.tool_calls, start=int(started)):
                    fc_id = f"fc_{call.id}"
                    yield self.frame("response.output_item.added", output_index=index,
                                      item=call_item(fc_id, call, "in_progress"))
                    yield self.frame("response.function_call_arguments.delta", item_id=fc_id, output_index=index,
                                      delta=call.arguments)
                    yield self.frame("response.function_call_arguments.done", item_id=fc_id, output_index=index,
                                      name=call.name, arguments=call.arguments)
                    yield self.frame("response.output_item.done", output_index=index, item=call_item(fc_id, call))
                if not started and turn.tool_calls:
                    output = [o for o in output if o["type"] != "message"]
                yield self.frame("response.completed", response=shape.body("completed", output, turn))
                return
