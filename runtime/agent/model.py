"""The model the agent thinks with, over the plain OpenAI protocol (httpx; no litellm here).

Inside Den the agent calls the model gateway (``DEN_GATEWAY_URL``) with its
gateway token (``DEN_GATEWAY_TOKEN``): the gateway holds the provider key,
picks the upstream from the Agentfile, meters the call and enforces the
budget. Outside Den (``python -m den.runtime`` by hand, tests) an agent with
no gateway configured talks straight to its ``model.base_url``, an
OpenAI-compatible server, with ``<PROVIDER>_API_KEY`` from its environment
if one is set.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from den.api.agentfile import ModelSpec
from den.api.contract import GATEWAY_TOKEN_ENV, GATEWAY_URL_ENV, provider_key_name


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
    """The model could not answer (unreachable, refused, malformed): the API answers ``status``."""

    status = 502
    type = "upstream_error"


class BudgetExceeded(ModelError):
    """The gateway refused the call: the agent is over its ``runtime.budget`` for today."""

    status = 429
    type = "budget_exceeded"


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0),
                 float(raw.get("cost_usd") or 0.0))


def _error_of(response: httpx.Response, content: bytes, where: str) -> ModelError:
    try:
        detail = json.loads(content).get("error") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        detail = {}
    message = detail.get("message") if isinstance(detail, dict) else None
    message = message or content[:300].decode("utf-8", "replace") or response.reason_phrase
    if response.status_code == 429 and isinstance(detail, dict) and detail.get("type") == "budget_exceeded":
        return BudgetExceeded(message)
    return ModelError(f"{where} answered {response.status_code}: {message}")


class ModelClient:
    """Chat completions at the gateway (or, outside Den, at ``model.base_url``)."""

    def __init__(self, model: ModelSpec, environ: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        environ = environ or {}
        self.model = model
        gateway = environ.get(GATEWAY_URL_ENV)
        self.via_gateway = bool(gateway)
        if gateway:
            self.base_url, self.where = gateway.rstrip("/"), "the model gateway"
            token = environ.get(GATEWAY_TOKEN_ENV)
        else:
            self.base_url, self.where = (model.base_url or "").rstrip("/"), f"{model.provider} at {model.base_url}"
            token = environ.get(provider_key_name(model.provider))
        self.model_id = f"{model.provider}/{model.name}"
        # With a declared window the completion gets at most a quarter of it (the prompt the rest).
        self.max_tokens = (min(model.max_tokens, max(16, model.context_window // 4))
                           if model.context_window else model.max_tokens)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(600.0, connect=10.0),
                                         trust_env=False, transport=transport)

    def _body(self, messages: list[dict], tools: list[dict] | None, stream: bool,
              options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The request: the caller's ``options`` (sampling, ``response_format``, ...) over the
        Agentfile's defaults, ``max_tokens`` never above the Agentfile's; ``tool_choice`` and
        ``parallel_tool_calls`` only with tools (OpenAI refuses them without)."""
        options = dict(options or {})
        cap = options.pop("max_tokens", None)
        body: dict[str, Any] = {"model": self.model.name, "messages": messages,
                                "temperature": self.model.temperature,
                                "max_tokens": min(cap, self.max_tokens) if cap else self.max_tokens}
        if not tools:
            options.pop("tool_choice", None)
            options.pop("parallel_tool_calls", None)
        body.update({k: v for k, v in options.items() if v is not None})
        if tools:
            body["tools"] = tools
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _url(self) -> str:
        if not self.base_url:
            raise ModelError(f"no model gateway is configured ({GATEWAY_URL_ENV}) and model.base_url is "
                             "empty: run the agent under Den (den up), or give the model a base_url")
        return f"{self.base_url}/chat/completions"

    async def complete(self, messages: list[dict], tools: list[dict] | None = None,
                       options: Mapping[str, Any] | None = None) -> Reply:
        try:
            response = await self._client.post(self._url(), json=self._body(messages, tools, False, options))
        except httpx.HTTPError as exc:
            raise ModelError(f"cannot reach {self.where} ({self.base_url}): {type(exc).__name__}") from None
        if response.status_code != 200:
            raise _error_of(response, response.content, self.where)
        try:
            data = response.json()
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError):
            raise ModelError(f"{self.where} sent a reply that is not a chat completion") from None
        calls = [
            ToolCall(c.get("id") or f"call_{i}", (c.get("function") or {}).get("name", ""),
                     (c.get("function") or {}).get("arguments") or "{}")
            for i, c in enumerate(message.get("tool_calls") or [])
        ]
        return Reply(content=message.get("content") or "", tool_calls=calls,
                     finish_reason=choice.get("finish_reason"), usage=_usage(data.get("usage")))

    async def stream(self, messages: list[dict], tools: list[dict] | None = None,
                     options: Mapping[str, Any] | None = None) -> AsyncIterator[Any]:
        """Yield ``str`` content deltas as they arrive, then the finished :class:`Reply`."""
        request = self._client.build_request("POST", self._url(), json=self._body(messages, tools, True, options))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise ModelError(f"cannot reach {self.where} ({self.base_url}): {type(exc).__name__}") from None
        reply = Reply()
        partial: dict[int, dict[str, str]] = {}
        try:
            if response.status_code != 200:
                raise _error_of(response, await response.aread(), self.where)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    chunk = json.loads(payload)
                except json.JSONDecodeError:
                    raise ModelError(f"{self.where} sent an event that is not JSON") from None
                if chunk.get("error"):
                    raise ModelError(f"{self.where} failed mid-stream: {chunk['error'].get('message')}")
                if chunk.get("usage"):
                    reply.usage = _usage(chunk["usage"])
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        reply.content += delta["content"]
                        yield delta["content"]
                    for call in delta.get("tool_calls") or []:
                        slot = partial.setdefault(call.get("index") or 0, {"id": "", "name": "", "arguments": ""})
                        function = call.get("function") or {}
                        slot["id"] = call.get("id") or slot["id"]
                        slot["name"] = function.get("name") or slot["name"]
                        slot["arguments"] += function.get("arguments") or ""
                    if choice.get("finish_reason"):
                        reply.finish_reason = choice["finish_reason"]
        except httpx.HTTPError as exc:
            raise ModelError(f"the stream from {self.where} broke: {type(exc).__name__}") from None
        finally:
            await response.aclose()
        reply.tool_calls = [
            ToolCall(s["id"] or f"call_{i}", s["name"], s["arguments"] or "{}")
            for i, s in sorted(partial.items())
            if s["name"]
        ]
        yield reply

    async def gateway_usage(self) -> dict[str, Any] | None:
        """Today's use and budget of this agent as the gateway's ledger counts it; None outside
        Den or while the gateway cannot be reached."""
        if not self.via_gateway:
            return None
        root = self.base_url.removesuffix("/v1")
        try:
            response = await self._client.get(f"{root}/den/v1/usage", timeout=2.0)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    async def close(self) -> None:
        await self._client.aclose()
