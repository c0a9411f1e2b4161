"""OpenAI chat completion bodies from the agent's model replies.

The model is called through :class:`den.runtime.agent.model.ModelClient` (the
OpenAI protocol to the model gateway) with the context of
:func:`den.runtime.agent.context.build_context` (identity and personality
first, then the request's messages); this module turns its replies into
``chat.completion`` JSON and ``chat.completion.chunk`` Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from den.runtime.agent.loop import Turn


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def turn_meta(turn: Turn) -> dict[str, Any]:
    """Den's extension on a completion: how the answer was reached (OpenAI clients ignore it)."""
    return {
        "stop_reason": turn.stop_reason,
        "steps": [step.as_dict() for step in turn.steps],
        "checks": [outcome.as_dict() for outcome in turn.checks],
        "revisions": turn.revisions,
        "memories": list(turn.memories),
        "cost_usd": round(turn.usage.cost_usd, 6),
    }


def turn_body(turn: Turn, agent_name: str) -> dict[str, Any]:
    """An agent turn as an OpenAI ``chat.completion`` named after the agent, with the real usage."""
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": agent_name,
        "choices": [{"index": 0, "message": turn.message(), "finish_reason": turn.finish_reason}],
        "usage": turn.usage.as_openai(),
        "den": turn_meta(turn),
    }


def sse(data: dict[str, Any] | str) -> str:
    """One Server-Sent Event: ``data: <json>`` and a blank line."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


class TurnStream:
    """The ``chat.completion.chunk`` events of one agent turn, as it happens.

    The agent loop runs in a task and feeds a queue: answer text
    (``delta``), tool progress (``event``: sent as chunks with an empty delta
    and a ``den`` object, which OpenAI clients ignore and ``den connect``
    shows), and the finished turn. :meth:`first` waits for the first item
    before the HTTP response starts, so a provider that fails at once is a
    502, not a broken stream.
    """

    def __init__(self, agent_name: str, *, include_usage: bool) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.include_usage = include_usage
        self._pending: tuple[str, Any] | None = None
        self.base = {"id": completion_id(), "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": agent_name}

    async def delta(self, text: str) -> None:
        await self.queue.put(("delta", text))

    async def event(self, event: dict[str, Any]) -> None:
        await self.queue.put(("den", event))

    def watch(self, task: asyncio.Task) -> None:
        task.add_done_callback(lambda done: self.queue.put_nowait(("done", done)))

    async def first(self) -> Exception | None:
        """The provider's error when the turn failed before anything was produced."""
        item = await self.queue.get()
        kind, value = item
        if kind == "done" and not value.cancelled() and value.exception() is not None:
            return value.exception()
        self._pending = item
        return None

    @staticmethod
    def outcome(task: asyncio.Task) -> Turn | None:
        """The finished turn; None when it was cancelled; its error raised."""
        if task.cancelled():
            return None
        if task.exception() is not None:
            raise task.exception()
        return task.result()

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        chunk = {**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    async def events(self) -> AsyncIterator[str]:
        """Role, content deltas and tool progress, the finish reason, the usage (if asked), ``[DONE]``."""
        yield sse(self._chunk({"role": "assistant", "content": ""}))
        while True:
            kind, value = self._pending or await self.queue.get()
            self._pending = None
            if kind == "delta" and value:
                yield sse(self._chunk({"content": value}))
            elif kind == "den":
                yield sse({**self._chunk({}), "den": value})
            elif kind == "done":
                turn = self.outcome(value)
                if turn is None:
                    return
                for index, call in enumerate(turn.tool_calls):  # the caller's tools: OpenAI's delta format
                    yield sse(self._chunk({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                                           "function": {"name": call.name, "arguments": ""}}]}))
                    yield sse(self._chunk({"tool_calls": [{"index": index,
                                                           "function": {"arguments": call.arguments}}]}))
                yield sse({**self._chunk({}, turn.finish_reason), "den": {"type": "turn", **turn_meta(turn)}})
                if self.include_usage:
                    yield sse({**self.base, "choices": [], "usage": turn.usage.as_openai()})
                yield sse("[DONE]")
                return
