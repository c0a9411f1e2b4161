"""The model the agent thinks with: one litellm call site for the whole runtime."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from den.api.agentfile import ModelSpec
from den.api.contract import offline_litellm, provider_key_name


def litellm_model_id(model: ModelSpec) -> str:
    """``openai/<name>`` for any OpenAI-compatible ``base_url``, else ``<provider>/<name>``."""
    if model.base_url:
        return f"openai/{model.name}"
    return f"{model.provider}/{model.name}"


def provider_key(provider: str, environ: Mapping[str, str] | None = None) -> str | None:
    environ = os.environ if environ is None else environ
    return environ.get(provider_key_name(provider))


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd

    def as_openai(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class Reply:
    """One model turn: text and/or tool calls, with its usage."""

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)

    def as_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message


class ModelError(Exception):
    """The provider failed (unreachable, refused, malformed): the API answers 502."""


def _usage(raw: Any, model_id: str) -> Usage:
    if raw is None:
        return Usage()
    get = raw.get if isinstance(raw, dict) else lambda k, d=None: getattr(raw, k, d)
    usage = Usage(int(get("prompt_tokens", 0) or 0), int(get("completion_tokens", 0) or 0))
    try:
        import litellm

        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model_id, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens
        )
        usage.cost_usd = float(prompt_cost + completion_cost)
    except Exception:  # unknown models have no price: cost stays 0
        usage.cost_usd = 0.0
    return usage


class ModelClient:
    """Calls the Agentfile's model through litellm (imported lazily)."""

    def __init__(self, model: ModelSpec, environ: Mapping[str, str] | None = None) -> None:
        self.model = model
        self.model_id = litellm_model_id(model)
        key = provider_key(model.provider, environ)
        self.api_key = key or ("den-no-key" if model.base_url else None)

    def _kwargs(self, messages: list[dict], tools: list[dict] | None, stream: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model_id,
            "messages": messages,
            "temperature": self.model.temperature,
            "max_tokens": self.model.max_tokens,
            "stream": stream,
        }
        if self.model.base_url:
            kwargs["api_base"] = self.model.base_url
        if self.api_key:
            kwargs["api_key"] = self.api_key
        if tools:
            kwargs["tools"] = tools
        if stream:
            kwargs["stream_options"] = {"include_usage": True}
        return kwargs

    async def complete(self, messages: list[dict], tools: list[dict] | None = None) -> Reply:
        offline_litellm()
        import litellm

        try:
            response = await litellm.acompletion(**self._kwargs(messages, tools, stream=False))
        except Exception as exc:
            raise ModelError(f"{self.model_id}: {type(exc).__name__}: {exc}") from exc
        choice = response.choices[0]
        message = choice.message
        calls = [
            ToolCall(c.id, c.function.name, c.function.arguments or "{}")
            for c in (getattr(message, "tool_calls", None) or [])
        ]
        return Reply(
            content=message.content or "",
            tool_calls=calls,
            finish_reason=choice.finish_reason,
            usage=_usage(getattr(response, "usage", None), self.model_id),
        )

    async def stream(self, messages: list[dict], tools: list[dict] | None = None) -> AsyncIterator[Any]:
        """Yield ``str`` content deltas as they arrive, then the finished :class:`Reply`."""
        offline_litellm()
        import litellm

        try:
            response = await litellm.acompletion(**self._kwargs(messages, tools, stream=True))
        except Exception as exc:
            raise ModelError(f"{self.model_id}: {type(exc).__name__}: {exc}") from exc
        reply = Reply()
        partial: dict[int, dict[str, str]] = {}
        try:
            async for chunk in response:
                if getattr(chunk, "usage", None):
                    reply.usage = _usage(chunk.usage, self.model_id)
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta
                if getattr(delta, "content", None):
                    reply.content += delta.content
                    yield delta.content
                for call in getattr(delta, "tool_calls", None) or []:
                    slot = partial.setdefault(call.index or 0, {"id": "", "name": "", "arguments": ""})
                    if call.id:
                        slot["id"] = call.id
                    if call.function and call.function.name:
                        slot["name"] = call.function.name
                    if call.function and call.function.arguments:
                        slot["arguments"] += call.function.arguments
                if choice.finish_reason:
                    reply.finish_reason = choice.finish_reason
        except Exception as exc:
            raise ModelError(f"{self.model_id}: stream failed: {type(exc).__name__}: {exc}") from exc
        reply.tool_calls = [
            ToolCall(s["id"] or f"call_{i}", s["name"], s["arguments"] or "{}")
            for i, s in sorted(partial.items())
            if s["name"]
        ]
        yield reply
