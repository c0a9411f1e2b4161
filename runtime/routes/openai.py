"""The OpenAI-compatible API: ``/v1/models`` and ``/v1/chat/completions``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from den.runtime.agent.context import overflow
from den.runtime.agent.loop import Turn
from den.runtime.agent.model import BudgetExceeded, ModelError
from den.runtime.completions import TurnStream, sse, turn_body
from den.runtime.deps import StateDep
from den.runtime.logging import redact
from den.runtime.openai_types import SSE_EVENT, ChatCompletionRequest, error_response, errors
from den.runtime.state import RuntimeState

router = APIRouter(prefix="/v1", tags=["openai"], responses=errors(401, 413, 503))
STREAM = {200: {"description": "A `chat.completion`, or with `stream: true` its `chat.completion.chunk` "
                               "Server-Sent Events ending with `data: [DONE]`.",
                "content": {"text/event-stream": {"schema": SSE_EVENT}}}}
log = logging.getLogger("den.runtime.openai")


@router.get("/models")
async def models(state: StateDep) -> dict[str, Any]:
    """One model: the agent itself."""
    created = int(time.time() - (time.monotonic() - state.started_at))
    return {"object": "list",
            "data": [{"id": state.agent.name, "object": "model", "created": created, "owned_by": "den"}]}


@router.post("/chat/completions", response_model=None, responses={**STREAM, **errors(400, 429, 502)})
async def chat_completions(
    body: ChatCompletionRequest, state: StateDep, request: Request
) -> JSONResponse | StreamingResponse:
    """The agent answers: its identity and memories, the conversation (continued from its
    session when one is named), tools and checks, through the Agentfile's model. The
    request's parameters reach the model (``max_tokens`` capped by the Agentfile's; see
    docs/openai-compat.md); the caller's ``tools`` are offered beside the agent's, and a call
    to one ends the answer with ``finish_reason: tool_calls``. A newest message that does not fit the context window by itself is a 400
    ``context_length_exceeded`` (older messages are left out to fit, as they always are)."""
    state.requests += 1
    conversation = body.wire_messages()
    too_long = overflow(state.agent.spec, conversation)
    if too_long:
        return error_response(400, too_long, "invalid_request_error", "messages", "context_length_exceeded")
    caller_tools = [t.model_dump(exclude_none=True) for t in body.tools or []]
    clash = clashing_tool(state, [t["function"]["name"] for t in caller_tools])
    if clash:
        return error_response(400, clash, "invalid_request_error", "tools")
    run = {"options": body.model_options(), "caller_tools": caller_tools}
    session = request.headers.get("x-den-session") or body.user
    if session and state.sessions is not None:
        conversation = await asyncio.to_thread(state.sessions.merge, session, conversation)
    fields = {"model": state.agent_loop.model.model_id, "messages": len(body.messages),
              "stream": body.stream, "session": session}
    if not body.stream:
        try:
            turn = await state.agent_loop.run(conversation, **run)
        except ModelError as exc:
            return upstream_failed(state, exc, fields)
        await _finish(state, session, conversation, turn, fields)
        return JSONResponse(turn_body(turn, state.agent.name))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    stream = TurnStream(state.agent.name, include_usage=include_usage)
    task = asyncio.create_task(
        state.agent_loop.run(conversation, on_event=stream.event, on_delta=stream.delta, **run)
    )
    stream.watch(task)
    first = await stream.first()
    if isinstance(first, ModelError):
        return upstream_failed(state, first, fields)
    return StreamingResponse(_events(state, stream, task, session, conversation, fields),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def clashing_tool(state: RuntimeState, names: list[str]) -> str | None:
    """Why the caller's tools cannot be offered beside the agent's: a name used twice."""
    own = {t["function"]["name"] for t in state.agent_loop.interceptor.offered()} if state.agent_loop.interceptor \
        else set()
    clashes = sorted({n for n in names if n in own})
    if clashes:
        return (f"the agent has its own tool named {', '.join(clashes)}: rename the caller's tool "
                f"(the agent's tools: {', '.join(sorted(own))})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        return f"two tools are named {', '.join(repeated)}: tool names must be unique"
    return None


def record_turn(state: RuntimeState, conversation: list[dict[str, Any]], turn: Turn, source: str) -> None:
    """What every answered turn leaves behind, whichever API asked: usage, cost, and (when it
    ended with an answer) the turn for the memory's fact extraction."""
    state.record_usage(turn.usage.as_openai())
    state.cost_usd += turn.usage.cost_usd
    if state.consolidator is not None and turn.stop_reason == "stop":
        state.consolidator.after_turn(conversation, turn.content, turn.dropped, source=source, used=turn.memories)


async def relay(state: RuntimeState, events: AsyncIterator[str], task: asyncio.Task, fields: dict[str, Any],
                failed: Callable[[str, ModelError], str],
                finish: Callable[[Turn], Awaitable[None]]) -> AsyncIterator[str]:
    """Stream a turn's events; a provider failing mid-stream ends it with ``failed(message, error)``
    (each API has its own frame for it), a turn that completed is ``finish``ed."""
    try:
        async for event in events:
            yield event
    except ModelError as exc:
        state.errors += 1
        message = redact(str(exc), state.secrets())
        log.warning("the model provider failed mid-stream", extra={"fields": {**fields, "error": message}})
        yield failed(message, exc)
        return
    finally:
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled() and task.exception() is None:
        await finish(task.result())


async def _finish(state: RuntimeState, session: str | None, conversation: list[dict[str, Any]],
                  turn: Turn, fields: dict[str, Any]) -> None:
    record_turn(state, conversation, turn, f"session:{session or '-'}")
    if session and state.sessions is not None:
        await asyncio.to_thread(state.sessions.save, session,
                                [*conversation, turn.message()])
    log.info("completion", extra={"fields": {**fields, "usage": turn.usage.as_openai(),
                                             "steps": len(turn.steps), "stop_reason": turn.stop_reason}})


def _events(state: RuntimeState, stream: TurnStream, task: asyncio.Task, session: str | None,
            conversation: list[dict[str, Any]], fields: dict[str, Any]) -> AsyncIterator[str]:
    return relay(state, stream.events(), task, fields,
                 lambda message, exc: sse({"error": {"message": f"the model provider failed: {message}",
                                                     "type": exc.type}}),
                 lambda turn: _finish(state, session, conversation, turn, fields))


def upstream_failed(state: RuntimeState, exc: ModelError, fields: dict[str, Any]) -> JSONResponse:
    """The model could not answer: 429 ``budget_exceeded`` when the gateway refused the call for
    the agent's budget, else 502 ``upstream_error``."""
    state.errors += 1
    message = redact(str(exc), state.secrets())
    if isinstance(exc, BudgetExceeded):
        state.refused_for_budget += 1
        log.warning("the model gateway refused the call: over budget", extra={"fields": {**fields, "error": message}})
        return error_response(exc.status, f"the model gateway refused the call: {message}", exc.type)
    log.warning("the model provider failed", extra={"fields": {**fields, "error": message}})
    return error_response(exc.status, f"the model provider failed: {message}", exc.type)
