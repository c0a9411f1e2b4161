"""The OpenAI-compatible API: ``/v1/models`` and ``/v1/chat/completions``."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from den.runtime.agent.context import build_context
from den.runtime.agent.model import ModelClient, ModelError
from den.runtime.completions import ChunkStream, completion_body, sse
from den.runtime.deps import Authorized, StateDep
from den.runtime.logging import redact
from den.runtime.openai_types import ChatCompletionRequest, error_response
from den.runtime.state import RuntimeState
from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=Authorized)
log = logging.getLogger("den.runtime.openai")


@router.get("/models")
async def models(state: StateDep) -> dict[str, Any]:
    """One model: the agent itself."""
    created = int(time.time() - (time.monotonic() - state.started_at))
    return {"object": "list",
            "data": [{"id": state.agent.name, "object": "model", "created": created, "owned_by": "den"}]}


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, state: StateDep) -> JSONResponse | StreamingResponse:
    """The agent's identity, then every message of the request, to the agent's configured model
    (the request's ``model`` and sampling fields are ignored: the Agentfile decides)."""
    state.requests += 1
    spec = state.agent.spec
    client = ModelClient(spec.model, state.env)
    messages = build_context(spec, None, body.wire_messages())
    fields = {"model": client.model_id, "messages": len(body.messages), "stream": body.stream}
    if not body.stream:
        try:
            reply = await client.complete(messages)
        except ModelError as exc:
            return _upstream_failed(state, exc, fields)
        state.record_usage(reply.usage.as_openai())
        log.info("completion", extra={"fields": {**fields, "usage": reply.usage.as_openai()}})
        return JSONResponse(completion_body(reply, state.agent.name))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    chunks = ChunkStream(client, messages, state.agent.name, include_usage=include_usage)
    try:
        await chunks.open()
    except ModelError as exc:
        return _upstream_failed(state, exc, fields)
    return StreamingResponse(_events(state, chunks, fields), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(state: RuntimeState, chunks: ChunkStream, fields: dict[str, Any]) -> AsyncIterator[str]:
    try:
        async for event in chunks.events():
            yield event
    except ModelError as exc:
        state.errors += 1
        message = redact(str(exc), state.secrets())
        log.warning("the model provider failed mid-stream", extra={"fields": {**fields, "error": message}})
        yield sse({"error": {"message": f"the model provider failed: {message}", "type": "upstream_error"}})
        return
    finally:
        if chunks.reply is not None:
            state.record_usage(chunks.reply.usage.as_openai())
    usage = chunks.reply.usage.as_openai() if chunks.reply else None
    log.info("completion", extra={"fields": {**fields, "usage": usage}})


def _upstream_failed(state: RuntimeState, exc: ModelError, fields: dict[str, Any]) -> JSONResponse:
    state.errors += 1
    message = redact(str(exc), state.secrets())
    log.warning("the model provider failed", extra={"fields": {**fields, "error": message}})
    return error_response(502, f"the model provider failed: {message}", "upstream_error")
