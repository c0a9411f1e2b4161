"""The gateway's HTTP API: the OpenAI protocol for agents, the ledger for Den.

=============================  =================  ==================================================
``POST /v1/chat/completions``  agent token        plain and streamed, tool calls; the agent's model
``POST /v1/embeddings``        agent token        the request's model at the agent's provider
``GET  /v1/models``            agent token        the agent's model
``GET  /den/v1/usage``         agent token        today's use and budget of the calling agent
``GET  /den/v1/ledger``        admin token        today's use of every agent (the operator, den status)
``GET  /healthz`` ``/readyz``  none               probes
=============================  =================  ==================================================

A token maps to one agent's settings: the upstream (provider, name,
``base_url``) always comes from the Agentfile, never from the request, so a
compromised agent cannot point the key at a server of its choosing;
``temperature`` and ``max_tokens`` default to the Agentfile's, and ``max_tokens``
(or ``max_completion_tokens``) is never above it. Over budget,
a call is refused with 429 ``budget_exceeded`` before anything is sent.

A request body over ``max_request_bytes`` (``DEN_GATEWAY_MAX_REQUEST_BYTES``,
32 MiB by default) is refused with 413 before it is read; a chat completion's
parameters are checked like the agent's (:class:`~den.runtime.openai_types.ForwardedChatRequest`:
400 naming the parameter; a lone surrogate is refused, a NUL is the provider's to judge) and
the body is forwarded as the agent sent it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from den import __version__
from den.runtime import http_errors
from den.runtime.body_limit import MIB, BodyLimitMiddleware
from den.runtime.gateway.config import AgentEntry, GatewayConfig, ModelSettings
from den.runtime.gateway.ledger import Ledger, Totals
from den.runtime.gateway.upstream import (
    Reply,
    Stream,
    Upstream,
    UpstreamFailed,
    UpstreamUnreachable,
    cost_of,
    litellm,
    price_map,
)
from den.runtime.logging import RequestContextMiddleware, redact
from den.runtime.openai_types import (
    SSE_EVENT,
    EmbeddingsRequest,
    ErrorBody,
    ForwardedChatRequest,
    error_response,
)

log = logging.getLogger("den.runtime.gateway")
DEFAULT_MAX_REQUEST_BYTES = 32 * MIB
#: The provider's own errors are relayed with their status (and redacted): any status, its body.
RELAYED = {"default": {"description": "The provider's own error, relayed with its status (keys redacted).",
                       "content": {"application/json": {"schema": {"type": "object"}}}}}
GATEWAY_ERRORS = {
    400: "The request is invalid (not JSON, not an object, a parameter of the wrong type or out of range; "
         "param names it).",
    401: "No gateway token, or not one the gateway knows (the ledger: not the admin token).",
    413: "The request body is larger than the gateway accepts (DEN_GATEWAY_MAX_REQUEST_BYTES).",
    429: "The agent is over its daily budget (type budget_exceeded).",
    502: "The model provider failed or could not be reached (type upstream_error).",
}


def gateway_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": GATEWAY_ERRORS[status]} for status in statuses}


class GatewayError(Exception):
    def __init__(self, status: int, message: str, type_: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.headers = status, type_, headers or {}


def error(status: int, message: str, type_: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return error_response(status, message, type_, None, type_, headers)


class Gateway:
    """Config, ledger and upstream of one gateway process."""

    def __init__(self, config: GatewayConfig, ledger: Ledger, upstream: Upstream) -> None:
        self.config, self.ledger, self.upstream = config, ledger, upstream

    def redact(self, text: str) -> str:
        return redact(text, self.config.secrets())

    # -- budget -----------------------------------------------------------------------

    def over_budget(self, entry: AgentEntry, used: Totals) -> str | None:
        """Why the next call is refused, or None."""
        budget, day = entry.budget, self.ledger.day()
        if budget.tokens_per_day is not None and used.tokens >= budget.tokens_per_day:
            return (f"agent {entry.key} is over its daily budget: runtime.budget.tokens_per_day is "
                    f"{budget.tokens_per_day} and {used.tokens} tokens were used today (UTC {day}); "
                    "calls resume at 00:00 UTC, or raise the budget in the Agentfile")
        if budget.usd_per_day is not None and used.cost_usd >= budget.usd_per_day:
            return (f"agent {entry.key} is over its daily budget: runtime.budget.usd_per_day is "
                    f"{budget.usd_per_day} and ${used.cost_usd:.4f} was spent today (UTC {day}); "
                    "calls resume at 00:00 UTC, or raise the budget in the Agentfile")
        return None

    def usage(self, entry: AgentEntry) -> dict[str, Any]:
        used = self.ledger.today(entry.key)
        return usage_entry(entry.key, self.ledger.day(), used, entry.budget.as_dict(),
                           self.over_budget(entry, used) is not None)

    def admit(self, entry: AgentEntry, model: str) -> None:
        problem = self.over_budget(entry, self.ledger.today(entry.key))
        if problem:
            self.ledger.record(entry.key, model, refused=True)
            log.warning("refused: over budget", extra={"fields": {"agent": entry.key}})
            raise GatewayError(429, problem, "budget_exceeded")

    def meter(self, entry: AgentEntry, model: ModelSettings, prompt: int, completion: int) -> float:
        """Count a call in the ledger, priced as ``model`` (the one actually called)."""
        cost = cost_of(model, prompt, completion)
        self.ledger.record(entry.key, model.name, prompt=prompt, completion=completion, cost=cost)
        return cost

    def failed(self, exc: UpstreamUnreachable | UpstreamFailed) -> GatewayError:
        what = "cannot be reached" if isinstance(exc, UpstreamUnreachable) else "failed"
        return GatewayError(exc.status, f"the model provider {what}: {self.redact(str(exc))}", "upstream_error")


def usage_entry(agent: str, day: str, used: Totals, budget: dict[str, Any] | None, over: bool) -> dict[str, Any]:
    return {"agent": agent, "day": day, "requests": used.requests, "refused": used.refused,
            "tokens": {"prompt": used.prompt_tokens, "completion": used.completion_tokens, "total": used.tokens},
            "cost_usd": round(used.cost_usd, 6), "budget": budget, "over_budget": over,
            "models": {m: {**v, "cost_usd": round(v["cost_usd"], 6)} for m, v in used.models.items()}}


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


async def calling_agent(request: Request) -> AgentEntry:
    entry = request.app.state.gateway.config.agent(_bearer(request))
    if entry is None:
        raise GatewayError(401, "unknown gateway token: only Den agents call the model gateway, each with "
                                "its own token", "authentication_error", {"WWW-Authenticate": "Bearer"})
    return entry


GatewayDep = Annotated[Gateway, Depends(gateway_of)]
AgentDep = Annotated[AgentEntry, Depends(calling_agent)]


def _upstream_error(gateway: Gateway, reply: Reply) -> JSONResponse:
    text = gateway.redact(json.dumps(reply.body))
    return JSONResponse(json.loads(text), status_code=reply.status)


def create_gateway_app(config: GatewayConfig, ledger: Ledger, upstream: Upstream | None = None, *,
                       max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> FastAPI:
    """The gateway over ``config`` and ``ledger``. The price map is read at start-up; litellm is
    imported in the background only when an agent's provider needs translation."""
    gateway = Gateway(config, ledger, upstream or Upstream())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(price_map)
        translated = [e for e in config.agents() if not gateway.upstream.forwarded(e.model)]
        warm = asyncio.create_task(asyncio.to_thread(litellm)) if translated else None
        try:
            yield
        finally:
            if warm:
                warm.cancel()
            await gateway.upstream.close()

    app = FastAPI(title="Den model gateway", version=__version__, lifespan=lifespan,
                  responses=gateway_errors(413))
    app.state.gateway = gateway
    app.add_middleware(BodyLimitMiddleware, limit=lambda scope: max_request_bytes,
                       where="send less, or raise DEN_GATEWAY_MAX_REQUEST_BYTES on the gateway")
    app.add_middleware(RequestContextMiddleware)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return error(exc.status, str(exc), exc.type, exc.headers)

    http_errors.install(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=None, responses={503: {
        "description": "No config yet.", "content": {"application/json": {"schema": {"type": "object"}}}}})
    async def readyz() -> dict[str, Any] | JSONResponse:
        config.refresh()
        if config.loaded:
            return {"status": "ready", "agents": len(config.agents())}
        return JSONResponse({"status": "no config yet"}, status_code=503)

    @app.get("/v1/models", responses=gateway_errors(401))
    async def models(entry: AgentDep) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": entry.model.name, "object": "model", "created": 0,
                                            "owned_by": entry.model.provider}]}

    @app.post("/v1/chat/completions", response_model=None,
              responses={200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}},
                         **gateway_errors(400, 401, 429, 502), **RELAYED})
    async def chat_completions(payload: ForwardedChatRequest, request: Request, entry: AgentDep,
                               gw: GatewayDep) -> Any:
        """The agent's model answers (plain or streamed); the request's model is replaced by it.
        The body is checked (``payload``) and forwarded as it came."""
        body = dict(await request.json())
        model = entry.model
        gw.admit(entry, model.name)
        body["model"] = model.name
        if model.temperature is not None:
            body.setdefault("temperature", model.temperature)
        if model.max_tokens is not None:  # the Agentfile's is the default and the ceiling
            for name in ("max_tokens", "max_completion_tokens"):
                if isinstance(body.get(name), int) and body[name] > model.max_tokens:
                    body[name] = model.max_tokens
            if "max_completion_tokens" not in body:
                body.setdefault("max_tokens", model.max_tokens)
        key = gw.config.key_for(model)
        stream = bool(body.get("stream"))
        if stream:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        try:
            result = await (gw.upstream.chat_stream(model, key, body) if stream
                            else gw.upstream.chat(model, key, body))
        except (UpstreamUnreachable, UpstreamFailed) as exc:
            gw.meter(entry, model, 0, 0)
            raise gw.failed(exc) from None
        if isinstance(result, Reply):
            cost = gw.meter(entry, model, result.metered.prompt, result.metered.completion)
            if result.status != 200:
                return _upstream_error(gw, result)
            if isinstance(result.body.get("usage"), dict):
                result.body["usage"]["cost_usd"] = round(cost, 8)
            return JSONResponse(result.body)
        return StreamingResponse(_relay(gw, entry, result), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/embeddings", responses={**gateway_errors(400, 401, 429, 502), **RELAYED})
    async def embeddings(payload: Annotated[EmbeddingsRequest, Body()], request: Request, entry: AgentDep,
                         gw: GatewayDep) -> JSONResponse:
        """Embeddings from the model the request names, at the agent's provider."""
        body = dict(await request.json())
        # The request names the embedding model; provider, base_url and key stay the agent's.
        model = dataclasses.replace(entry.model, name=str(body.get("model") or entry.model.name))
        gw.admit(entry, model.name)
        body["model"] = model.name
        try:
            reply = await gw.upstream.embeddings(model, gw.config.key_for(model), body)
        except (UpstreamUnreachable, UpstreamFailed) as exc:
            gw.meter(entry, model, 0, 0)
            raise gw.failed(exc) from None
        gw.meter(entry, model, reply.metered.prompt, 0)
        if reply.status != 200:
            return _upstream_error(gw, reply)
        return JSONResponse(reply.body)

    @app.get("/den/v1/usage", responses=gateway_errors(401))
    async def usage(entry: AgentDep, gw: GatewayDep) -> dict[str, Any]:
        """Today's use of the calling agent, as the ledger counts it."""
        return gw.usage(entry)

    @app.get("/den/v1/ledger", responses=gateway_errors(401))
    async def ledger_today(request: Request, gw: GatewayDep) -> dict[str, Any]:
        """Today's use of every agent (admin token only: the operator and `den status`)."""
        if not gw.config.is_admin(_bearer(request)):
            raise GatewayError(401, "the ledger needs the gateway's admin token", "authentication_error")
        known = {entry.key: entry for entry in gw.config.agents()}
        rows = []
        for agent, used in sorted(gw.ledger.all_today().items()):
            entry = known.get(agent)
            over = entry is not None and gw.over_budget(entry, used) is not None
            rows.append(usage_entry(agent, gw.ledger.day(), used,
                                    entry.budget.as_dict() if entry else None, over))
        return {"day": gw.ledger.day(), "agents": rows}

    return app


async def _relay(gw: Gateway, entry: AgentEntry, stream: Stream) -> AsyncIterator[str]:
    """The upstream's events as they come; the usage chunk gains ``cost_usd``; metered at the end."""
    started = time.monotonic()
    metered = False
    try:
        async for line in stream.lines:
            if stream.metered.seen and not metered and line.startswith("data: {"):
                metered = True
                cost = gw.meter(entry, entry.model, stream.metered.prompt, stream.metered.completion)
                data = json.loads(line[6:])
                data["usage"]["cost_usd"] = round(cost, 8)
                line = "data: " + json.dumps(data)
            yield line + "\n"
    except UpstreamUnreachable as exc:
        yield "data: " + json.dumps({"error": {"message": gw.redact(str(exc)), "type": "upstream_error"}}) + "\n\n"
    finally:
        if not metered:
            gw.meter(entry, entry.model, stream.metered.prompt, stream.metered.completion)
        log.debug("stream relayed", extra={"fields": {"agent": entry.key,
                                                      "seconds": round(time.monotonic() - started, 3)}})


def build_app(config_dir: Path, data_dir: Path, *, direct: bool = True,
              max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> FastAPI:
    return create_gateway_app(GatewayConfig(config_dir), Ledger(data_dir / "ledger.db"),
                              Upstream(direct=direct), max_request_bytes=max_request_bytes)
