"""Where the gateway sends a call: straight through, or through litellm.

An OpenAI-compatible upstream (OpenAI itself, or any server at a
``base_url``) needs no translation: the body is forwarded with aiohttp over a
pooled connection and the reply streamed back as it arrives, which costs
well under a millisecond. Every other provider (anthropic, ollama, bedrock,
...) goes through litellm, imported once in the background at start-up. The
price of a call always comes from litellm's local price map.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

from den.api.contract import offline_litellm
from den.runtime.gateway.config import ModelSettings

log = logging.getLogger("den.runtime.gateway")

OPENAI_BASE_URL = "https://api.openai.com/v1"
#: The request fields litellm is given besides model and messages (the rest are dropped).
LITELLM_FIELDS = ("temperature", "max_tokens", "max_completion_tokens", "top_p", "stop", "tools",
                  "tool_choice", "response_format", "seed", "n", "presence_penalty",
                  "frequency_penalty", "user", "parallel_tool_calls", "stream_options", "logit_bias",
                  "reasoning_effort")


@cache
def litellm() -> ModuleType:
    """litellm, imported once, quiet, with its local price map."""
    offline_litellm()
    import litellm as library

    from den.runtime.logging import quiet_library_loggers

    library.suppress_debug_info = True
    library.drop_params = True
    quiet_library_loggers()
    return library


@cache
def price_map() -> dict[str, Any]:
    """litellm's local price map, read from the JSON file in its wheel without importing litellm
    (the import takes seconds; the file, tens of milliseconds). Empty if litellm is absent."""
    spec = importlib.util.find_spec("litellm")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "model_prices_and_context_window_backup.json"
        if path.exists():
            return json.loads(path.read_text())
    log.warning("litellm's price map was not found: every call is priced at $0")
    return {}


@cache
def prices(model: ModelSettings) -> tuple[float, float] | None:
    """(input, output) US dollars per token from litellm's price map, or None for a model it
    has no price for. Looked up once per model: litellm's own ``cost_per_token`` takes about
    half a millisecond a call, this a dictionary lookup."""
    table = price_map()
    for name in (model.litellm_id, model.name, f"{model.provider}/{model.name}"):
        entry = table.get(name)
        if entry and "input_cost_per_token" in entry:
            return float(entry.get("input_cost_per_token") or 0), float(entry.get("output_cost_per_token") or 0)
    return None


def cost_of(model: ModelSettings, prompt: int, completion: int) -> float:
    """US dollars for these tokens by litellm's price map; 0 for models it has no price for."""
    if not prompt and not completion:
        return 0.0
    found = prices(model)
    if found is None:
        return 0.0
    return prompt * found[0] + completion * found[1]


@dataclass
class Metered:
    """Tokens counted from a reply (plain, or the usage chunk of a stream)."""

    prompt: int = 0
    completion: int = 0
    seen: bool = False

    def take(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        self.prompt = int(usage.get("prompt_tokens") or 0)
        self.completion = int(usage.get("completion_tokens") or 0)
        self.seen = True


@dataclass
class Reply:
    """A finished upstream answer: HTTP status and JSON body."""

    status: int
    body: dict[str, Any]
    metered: Metered = field(default_factory=Metered)


@dataclass
class Stream:
    """An upstream stream that has started (status 200): Server-Sent Event lines."""

    lines: AsyncIterator[str]
    metered: Metered


class UpstreamUnreachable(Exception):
    """The provider could not be reached or failed outside HTTP (the gateway answers 502)."""

    status = 502


class UpstreamFailed(Exception):
    """litellm raised for a provider error with a status of its own."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _status_of(exc: Exception) -> int:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and 400 <= status < 600 else 502


class Upstream:
    """One pooled HTTP client for the direct path; litellm for the rest."""

    def __init__(self, timeout: float = 600.0, *, direct: bool = True) -> None:
        #: False sends OpenAI-compatible calls through litellm too (DEN_GATEWAY_DIRECT=0).
        self.direct = direct
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        """One pooled aiohttp session (made on the running loop). aiohttp, which litellm brings
        anyway, costs about a millisecond less per call than httpx's async client here."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=10.0),
                connector=aiohttp.TCPConnector(limit=512, ttl_dns_cache=30),
                trust_env=False, auto_decompress=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _post(self, model: ModelSettings, path: str, key: str | None, body: dict[str, Any]) -> Any:
        try:
            return await self.http.post(self._url(model, path), data=json.dumps(body),
                                        headers={**self._headers(key), "Content-Type": "application/json"})
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnreachable(f"{type(exc).__name__} calling {self._url(model, '')}") from None

    async def _reply(self, model: ModelSettings, path: str, key: str | None, body: dict[str, Any]) -> Reply:
        response = await self._post(model, path, key, body)
        try:
            content = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnreachable(f"{type(exc).__name__} reading from {self._url(model, '')}") from None
        finally:
            response.release()
        reply = Reply(response.status, _json_or_error(content, response.status))
        reply.metered.take(reply.body.get("usage"))
        return reply

    def forwarded(self, model: ModelSettings) -> bool:
        return self.direct and model.openai_compatible

    @staticmethod
    def _url(model: ModelSettings, path: str) -> str:
        return (model.base_url or OPENAI_BASE_URL).rstrip("/") + path

    @staticmethod
    def _headers(key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    # -- chat -------------------------------------------------------------------------

    async def chat(self, model: ModelSettings, key: str | None, body: dict[str, Any]) -> Reply:
        if not self.forwarded(model):
            return await self._litellm_chat(model, key, body)
        return await self._reply(model, "/chat/completions", key, body)

    async def chat_stream(self, model: ModelSettings, key: str | None,
                          body: dict[str, Any]) -> Reply | Stream:
        """A :class:`Stream` once the upstream answered 200, else the error as a :class:`Reply`."""
        if not self.forwarded(model):
            return await self._litellm_stream(model, key, body)
        response = await self._post(model, "/chat/completions", key, body)
        if response.status != 200:
            try:
                content = await response.read()
            finally:
                response.release()
            return Reply(response.status, _json_or_error(content, response.status))
        metered = Metered()

        async def lines() -> AsyncIterator[str]:
            try:
                async for raw in response.content:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("data: {") and '"usage"' in line:
                        try:
                            metered.take(json.loads(line[6:]).get("usage"))
                        except json.JSONDecodeError:
                            pass
                    yield line
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise UpstreamUnreachable(f"stream from {self._url(model, '')} broke: {type(exc).__name__}") from None
            finally:
                response.release()

        return Stream(lines(), metered)

    @staticmethod
    async def _litellm_call(model: ModelSettings, call: str, kwargs: dict[str, Any]) -> Any:
        """``litellm.<call>(**kwargs)``, importing litellm in a thread the first time; a provider
        error becomes :class:`UpstreamFailed` with the provider's status."""
        library = await asyncio.to_thread(litellm)
        try:
            return await getattr(library, call)(**kwargs)
        except Exception as exc:
            raise UpstreamFailed(_status_of(exc), f"{model.litellm_id}: {type(exc).__name__}: {exc}") from None

    async def _litellm_chat(self, model: ModelSettings, key: str | None, body: dict[str, Any]) -> Reply:
        response = await self._litellm_call(model, "acompletion", _litellm_kwargs(model, key, body, stream=False))
        data = response.model_dump(exclude_none=True)
        reply = Reply(200, data)
        reply.metered.take(data.get("usage"))
        return reply

    async def _litellm_stream(self, model: ModelSettings, key: str | None, body: dict[str, Any]) -> Stream:
        response = await self._litellm_call(model, "acompletion", _litellm_kwargs(model, key, body, stream=True))
        metered = Metered()

        async def lines() -> AsyncIterator[str]:
            try:
                async for chunk in response:
                    data = chunk.model_dump(exclude_none=True)
                    if data.get("usage"):
                        metered.take(data["usage"])
                    yield "data: " + json.dumps(data)
                    yield ""
                yield "data: [DONE]"
                yield ""
            except Exception as exc:
                raise UpstreamUnreachable(f"{model.litellm_id}: stream broke: {type(exc).__name__}") from None

        return Stream(lines(), metered)

    # -- embeddings -------------------------------------------------------------------

    async def embeddings(self, model: ModelSettings, key: str | None, body: dict[str, Any]) -> Reply:
        if self.forwarded(model):
            return await self._reply(model, "/embeddings", key, body)
        kwargs: dict[str, Any] = {"model": model.litellm_id, "input": body.get("input")}
        if key:
            kwargs["api_key"] = key
        if model.base_url:
            kwargs["api_base"] = model.base_url
        response = await self._litellm_call(model, "aembedding", kwargs)
        reply = Reply(200, response.model_dump(exclude_none=True))
        reply.metered.take(reply.body.get("usage"))
        return reply


def _litellm_kwargs(model: ModelSettings, key: str | None, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"model": model.litellm_id, "messages": body.get("messages") or [],
                              "stream": stream}
    kwargs.update({name: body[name] for name in LITELLM_FIELDS if body.get(name) is not None})
    if key:
        kwargs["api_key"] = key
    if model.base_url:
        kwargs["api_base"] = model.base_url
    return kwargs


def _json_or_error(content: bytes, status: int) -> dict[str, Any]:
    try:
        data = json.loads(content)
        if isinstance(data, dict):
            return data
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    text = content[:500].decode("utf-8", "replace")
    return {"error": {"message": f"the model provider answered {status}: {text}", "type": "upstream_error"}}
