"""OpenAI's Responses API: ``POST /v1/responses``, the same agent turn as ``/v1/chat/completions``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from den.runtime.agent.context import overflow
from den.runtime.agent.loop import Turn
from den.runtime.agent.model import ModelError
from den.runtime.deps import StateDep
from den.runtime.openai_types import SSE_EVENT, error_response, errors
from den.runtime.responses import (
    InputProblem,
    ResponseEvents,
    ResponseShape,
    ResponsesRequest,
    chat_messages,
)
from den.runtime.routes.openai import clashing_tool, record_turn, relay, upstream_failed
from den.runtime.state import RuntimeState

router = APIRouter(prefix="/v1", tags=["openai"], responses=errors(401, 413, 503))
STREAM = {200: {"description": "A `response`, or with `stream: true` its Server-Sent Events from "
                               "`response.created` to `response.completed`.",
                "content": {"text/event-stream": {"schema": SSE_EVENT}}}}
log = logging.getLogger("den.runtime.responses")


@router.post("/responses", response_model=None, responses={**STREAM, **errors(400, 429, 502)})
async def responses(body: ResponsesRequest, state: StateDep) -> JSONResponse | StreamingResponse:
    """The agent answers a Responses API request: ``input`` (a string or input items) after the
    conversation of ``previous_response_id``, ``instructions`` after the agent's identity, function
    tools offered beside the agent's own (a call to one is a ``function_call`` output item). With
    ``store`` (the default) the response can be continued by its id. The model is called with
    Chat Completions."""
    state.requests += 1
    try:
        new = chat_messages(body.input)
    except InputProblem as exc:
        return error_response(400, str(exc), "invalid_request_error", exc.param)
    earlier: list[dict[str, Any]] = []
    if body.previous_response_id:
        earlier = await asyncio.to_thread(state.response_store.load, body.previous_response_id)
        if not earlier:
            return error_response(400, f"no stored response {body.previous_response_id!r}: it was made with "
                                       "store false, or by another agent", "invalid_request_error",
                                  "previous_response_id", "previous_response_not_found")
    conversation = [*earlier, *new]
    too_long = overflow(state.agent.spec, conversation)
    if too_long:
        return error_response(400, too_long, "invalid_request_error", "input", "context_length_exceeded")
    caller_tools = body.caller_tools()
    clash = clashing_tool(state, [t["function"]["name"] for t in caller_tools])
    if clash:
        return error_response(400, clash, "invalid_request_error", "tools")
    instructions = [{"role": "system", "content": body.instructions}] if body.instructions else []
    run = {"options": body.model_options(), "caller_tools": caller_tools}
    shape = ResponseShape(body, state.agent.name)
    fields = {"model": state.agent_loop.model.model_id, "api": "responses", "stream": body.stream,
              "previous_response_id": body.previous_response_id}
    if not body.stream:
        try:
            turn = await state.agent_loop.run([*instructions, *conversation], **run)
        except ModelError as exc:
            return upstream_failed(state, exc, fields)
        await _finish(state, shape, conversation, turn, fields)
        return JSONResponse(shape.body("completed", shape.output(turn), turn))
    stream = ResponseEvents(shape)
    task = asyncio.create_task(state.agent_loop.run([*instructions, *conversation], on_delta=stream.delta, **run))
    stream.watch(task)
    first = await stream.first()
    if isinstance(first, ModelError):
        return upstream_failed(state, first, fields)
    return StreamingResponse(_events(state, stream, task, shape, conversation, fields),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _finish(state: RuntimeState, shape: ResponseShape, conversation: list[dict[str, Any]], turn: Turn,
                  fields: dict[str, Any]) -> None:
    record_turn(state, conversation, turn, f"response:{shape.id}")
    if shape.request.store:
        await asyncio.to_thread(state.response_store.save, shape.id, [*conversation, turn.message()])
    log.info("response", extra={"fields": {**fields, "usage": turn.usage.as_openai(), "steps": len(turn.steps),
                                           "stop_reason": turn.stop_reason}})


def _events(state: RuntimeState, stream: ResponseEvents, task: asyncio.Task, shape: ResponseShape,
            conversation: list[dict[str, Any]], fields: dict[str, Any]) -> AsyncIterator[str]:
    def failed(message: str, _exc: ModelError) -> str:
        body = {**shape.body("failed", []), "error": {"code": "server_error",
                                                       "message": f"the model provider failed: {message}"}}
        return stream.frame("response.failed", response=body)

    return relay(state, stream.events(), task, fields, failed,
                 lambda turn: _finish(state, shape, conversation, turn, fields))
