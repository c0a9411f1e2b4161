"""The OpenAI wire types the runtime accepts and the error body it answers with."""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ChatMessage(BaseModel):
    """One message; fields beyond these (e.g. ``refusal``) are kept and forwarded."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``.

    ``model`` and sampling fields (``temperature``, ``max_tokens``, ...) are
    accepted for compatibility and ignored: the Agentfile decides them.
    """

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="Also names the session (like the X-Den-Session header).")

    def wire_messages(self) -> list[dict[str, Any]]:
        return [m.model_dump(exclude_none=True) for m in self.messages]


def error_response(status: int, message: str, type_: str, param: str | None = None) -> JSONResponse:
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}``."""
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": param, "code": None}},
        status_code=status,
    )
