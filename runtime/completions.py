"""OpenAI chat completion bodies from the agent's model replies.

The model is called through :class:`den.runtime.agent.model.ModelClient` (the
runtime's one litellm call site) with the context of
:func:`den.runtime.agent.context.build_context` (identity and personality
first, then the request's messages); this module turns its replies into
``chat.completion`` JSON and ``chat.completion.chunk`` Server-Sent Events.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from functools import cache
from types import ModuleType
from typing import Any

from den.runtime.agent.model import ModelClient, Reply


@cache
def load_litellm() -> ModuleType:
    """litellm, imported once, quiet, and without fetching its cost map from the network."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    from den.runtime.logging import quiet_library_loggers

    litellm.suppress_debug_info = True
    quiet_library_loggers()
    return litellm


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion_body(reply: Reply, agent_name: str) -> dict[str, Any]:
    """A model reply as an OpenAI ``chat.completion`` named after the agent, with the real usage."""
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": agent_name,
        "choices": [{"index": 0, "message": reply.as_message(),
                     "finish_reason": reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")}],
        "usage": reply.usage.as_openai(),
    }


def sse(data: dict[str, Any] | str) -> str:
    """One Server-Sent Event: ``data: <json>`` and a blank line."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


class ChunkStream:
    """The ``chat.completion.chunk`` events of one streamed answer, as the model writes it.

    :meth:`open` fetches the first delta before the HTTP response starts, so a
    provider that fails at once is a 502, not a broken stream.
    """

    def __init__(self, client: ModelClient, messages: list[dict[str, Any]], agent_name: str,
                 *, include_usage: bool) -> None:
        self._items = client.stream(messages)
        self._first: Any = None
        self.include_usage = include_usage
        self.reply: Reply | None = None
        self.base = {"id": completion_id(), "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": agent_name}

    async def open(self) -> None:
        """Raises :class:`ModelError` when the provider fails before its first chunk."""
        self._first = await self._items.__anext__()

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        chunk = {**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    async def _items_from_first(self) -> AsyncIterator[Any]:
        yield self._first
        async for item in self._items:
            yield item

    async def events(self) -> AsyncIterator[str]:
        """Role, content deltas, the finish reason, the usage (if asked for), ``[DONE]``.
        A failure mid-stream ends it with an OpenAI-style ``error`` event (and raises)."""
        yield sse(self._chunk({"role": "assistant", "content": ""}))
        async for item in self._items_from_first():
            if isinstance(item, Reply):
                self.reply = item
            elif item:
                yield sse(self._chunk({"content": item}))
        reply = self.reply or Reply()
        if reply.tool_calls:
            calls = [{"index": i, **call} for i, call in enumerate(reply.as_message()["tool_calls"])]
            yield sse(self._chunk({"tool_calls": calls}))
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        yield sse(self._chunk({}, finish))
        if self.include_usage:
            yield sse({**self.base, "choices": [], "usage": reply.usage.as_openai()})
        yield sse("[DONE]")

