"""The OpenAI wire types the runtime accepts and the error body it answers with.

Validation is OpenAI's where OpenAI answers 400 naming the parameter
(``max_tokens: -5``, ``temperature: "hot"``, ``n: 2``, five ``stop``
strings, a tool without a function name) and as lenient as OpenAI where
clients send more: unknown fields are kept. No string anywhere in a body may
hold a NUL character or a lone UTF-16 surrogate (``"\\ud800"``, which JSON
can spell but UTF-8 cannot encode): a 400 names where it is
(``messages.0.content``), instead of a 500 when the text reaches SQLite or the
model.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
Loc = tuple[str | int, ...]
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class ErrorDetail(BaseModel):
    message: str = Field(..., description="What went wrong and what to do.")
    type: str = Field(..., description="invalid_request_error, authentication_error, permission_error, "
                                       "not_found_error, budget_exceeded, upstream_error, service_unavailable, ...")
    param: str | None = Field(None, description="The request parameter at fault, e.g. messages.0.content.")
    code: str | None = Field(None, description="e.g. request_too_large, context_length_exceeded, invalid_type.")


class ErrorBody(BaseModel):
    """OpenAI's error shape: every error an agent, the gateway or the scripted model answers."""

    error: ErrorDetail


class TextError(ValueError):
    """A string a server cannot take (a NUL, a lone surrogate); ``loc`` is where in the body."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc


def printable(text: str) -> str:
    """``text`` with lone surrogates as ``\\udXXX`` escapes: safe to encode as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _text_problem(text: str, nul: bool = True) -> str | None:
    found = (_BAD_TEXT if nul else _SURROGATE).search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (\\u0000), which is not accepted in text"
    return (f"contains a lone UTF-16 surrogate ({printable(found.group())}), which is not valid Unicode: "
            "send the character itself, or both halves of its surrogate pair")


def bad_text(value: Any, loc: Loc = (), *, nul: bool = True) -> TextError | None:
    """The first string in a JSON document (keys too) that holds a lone surrogate, or a NUL
    (unless ``nul`` is False)."""
    stack: list[tuple[Loc, Any]] = [(loc, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item, nul)
            if problem:
                return TextError(where, problem)
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                if isinstance(key, str) and _text_problem(key, nul):
                    return TextError((*where, printable(key)), f"the key {_text_problem(key, nul)}")
                stack.append(((*where, key), child))
        elif isinstance(item, list):
            stack.extend(((*where, index), child) for index, child in reversed(list(enumerate(item))))
    return None


class WireModel(BaseModel):
    """A request body: strict types (``"5"`` is not a number, ``0`` not a boolean), and every
    string in it, keys too, checked first (:func:`bad_text`): no NUL, no lone surrogate."""

    model_config = ConfigDict(strict=True)
    #: False where text is forwarded for a provider to judge (NUL is valid Unicode; a lone
    #: surrogate is not, and is refused everywhere: no server can encode it).
    refuse_nul: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _clean_text(cls, data: Any) -> Any:
        problem = bad_text(data, nul=cls.refuse_nul)
        if problem is not None:
            raise problem
        return data


class ChatMessage(BaseModel):
    """One message; fields beyond these (e.g. ``refusal``) are kept and forwarded."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool = Field(False, strict=True)


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$", description="a-z, A-Z, 0-9, _ and -, at most 64.")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="A JSON Schema object.")
    strict: bool | None = Field(None, strict=True)


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["function"]
    function: FunctionSpec


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)

    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = Field(None, strict=True)


class ResponseFormat(BaseModel):
    """``{"type": "text" | "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name, schema}")
        return self


Penalty = Annotated[float | None, Field(strict=True, ge=-2, le=2, allow_inf_nan=False)]
Count = Annotated[int | None, Field(strict=True, gt=0)]


#: Chat Completions fields passed to the model on every call of the turn (docs/openai-compat.md).
PASSED_FIELDS = ("temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty",
                 "logit_bias", "response_format", "tool_choice", "parallel_tool_calls", "user",
                 "reasoning_effort", "verbosity")
#: Fields checked and not used, each with the reason (the 200 is still an honest answer).
IGNORED_FIELDS = {
    "model": "the agent is the model: its Agentfile names the one it thinks with",
    "store": "Den does not keep chat completions for OpenAI's stored-completions API (sessions "
             "keep conversations: X-Den-Session or user)",
    "metadata": "belongs to OpenAI's stored completions, which Den does not keep",
    "service_tier": "the Agentfile chooses the provider and what it costs, not the caller",
    "prediction": "an answer may take several model calls (tools, checks): a predicted output "
                  "cannot be matched to one",
}
#: Fields refused with a 400 naming them when set to anything but their default.
REFUSED_FIELDS = {
    "logprobs": "an agent's answer may come from several model calls (tools, checks, revisions): "
                "there are no log probabilities of it to give",
    "top_logprobs": "an agent's answer may come from several model calls: there are no log "
                    "probabilities of it to give",
    "functions": "the deprecated functions parameter is not supported: send tools",
    "function_call": "the deprecated function_call parameter is not supported: send tool_choice",
    "audio": "Den agents answer text only",
    "web_search_options": "the agent searches with its own tools (web_search in the Agentfile)",
}


class ChatCompletionRequest(WireModel):
    """``POST /v1/chat/completions``.

    Every field is checked as OpenAI checks it, then passed to the model
    (:data:`PASSED_FIELDS`; ``max_tokens`` and ``max_completion_tokens`` capped
    by the Agentfile's ``model.max_tokens``, whose values are the defaults of
    what the caller leaves out), ignored with a reason (:data:`IGNORED_FIELDS`)
    or refused with a 400 naming it (:data:`REFUSED_FIELDS`). Den answers one
    choice (``n`` is 1 or absent). docs/openai-compat.md has the table.
    """

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = Field(False, strict=True)
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="Also names the session (like the X-Den-Session header).")
    max_tokens: Count = None
    max_completion_tokens: Count = None
    temperature: float | None = Field(None, strict=True, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, strict=True, ge=0, le=1, allow_inf_nan=False)
    n: int | None = Field(None, strict=True, ge=1, json_schema_extra={"maximum": 1})
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    presence_penalty: Penalty = None
    frequency_penalty: Penalty = None
    seed: int | None = Field(None, strict=True)
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = Field(None, strict=True)
    response_format: ResponseFormat | None = None
    logit_bias: dict[str, Annotated[float, Field(strict=True, ge=-100, le=100)]] | None = None
    logprobs: bool | None = Field(None, strict=True)
    top_logprobs: int | None = Field(None, strict=True, ge=0, le=20)
    reasoning_effort: str | None = None
    verbosity: str | None = None
    modalities: list[str] | None = None
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    web_search_options: Any = None

    @field_validator(*REFUSED_FIELDS)
    @classmethod
    def _refused(cls, value: Any, info: Any) -> Any:
        if value not in (None, False, 0):
            raise ValueError(REFUSED_FIELDS[info.field_name])
        return value

    @field_validator("modalities")
    @classmethod
    def _text_only(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(m != "text" for m in value):
            raise ValueError("Den agents answer text only: modalities ['text']")
        return value

    def model_options(self) -> dict[str, Any]:
        """What the model is called with besides the messages and tools: the passed fields the
        caller set, and ``max_tokens`` (``max_completion_tokens`` when both are set), which
        :class:`~den.runtime.agent.model.ModelClient` caps by the Agentfile's."""
        options: dict[str, Any] = {}
        for name in PASSED_FIELDS:
            value = getattr(self, name)
            if value is not None:
                options[name] = value.model_dump(exclude_none=True, by_alias=True) \
                    if isinstance(value, BaseModel) else value
        limit = self.max_completion_tokens or self.max_tokens
        if limit:
            options["max_tokens"] = limit
        return options

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and len(value) <= 4 and all(isinstance(v, str) for v in value):
            return value
        raise ValueError("expected a string or a list of at most 4 strings")

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value > 1:
            raise ValueError(f"Den answers one choice per request: n must be 1, got {value}")
        return value

    def wire_messages(self) -> list[dict[str, Any]]:
        return [m.model_dump(exclude_none=True) for m in self.messages]


class ForwardedChatRequest(ChatCompletionRequest):
    """The model gateway's chat completion: OpenAI's parameter checks, and the text as the agent
    built it (its context holds what models wrote; a NUL there is the provider's to judge)."""

    refuse_nul: ClassVar[bool] = False


class EmbeddingsRequest(WireModel):
    """``POST /v1/embeddings`` (the gateway's): ``input`` a string, strings, or token ids."""

    model_config = ConfigDict(extra="allow")
    refuse_nul: ClassVar[bool] = False

    model: str | None = None
    input: Annotated[str, Field(min_length=1)] | Annotated[list[str], Field(min_length=1)] \
        | Annotated[list[int], Field(min_length=1)] | Annotated[list[list[int]], Field(min_length=1)]


#: One Server-Sent Event of a streamed completion (OpenAPI 3.2 describes each event of a stream).
SSE_EVENT = {"type": "object", "required": ["data"],
             "properties": {"data": {"type": "string", "description": "A chat.completion.chunk as JSON, "
                                                                         "or [DONE] at the end."},
                            "event": {"type": "string"}}}


def error_response(status: int, message: str, type_: str, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}``."""
    body = ErrorBody(error=ErrorDetail(message=printable(message), type=type_,
                                       param=printable(param) if param is not None else None, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with the error body and what it means."""
    return {status: {"model": ErrorBody, "description": ERROR_MEANINGS[status]} for status in statuses}


ERROR_MEANINGS = {
    400: "The request is invalid: not JSON, not an object, a parameter of the wrong type or out of range, "
         "text with a NUL or a lone surrogate (param names it), or a message that does not fit the "
         "context window (code context_length_exceeded).",
    401: "No bearer token, or not this agent's.",
    403: "The tool is not permitted for this agent.",
    404: "No such resource.",
    413: "The request body is larger than the agent accepts (code request_too_large; see "
         "runtime.max_request_bytes).",
    422: "The request is well formed but cannot be carried out as asked (the message says why).",
    429: "The model gateway refused the call: the agent is over its daily budget (type budget_exceeded).",
    502: "The model provider failed or could not be reached (type upstream_error).",
    503: "The agent has no API token yet (it serves nothing until the operator delivers one).",
}
