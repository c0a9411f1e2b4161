"""A request-body limit for every server Den runs: 413 before the body is buffered.

A pure ASGI middleware (like :mod:`den.runtime.auth`). A request whose
``Content-Length`` is over the limit is refused at once; a chunked body is
counted as it arrives and refused as soon as it passes the limit, whatever the
app was doing with it (what the app answered is replaced). The refusal is
OpenAI's error shape: 413, ``{"error": {"message", "type":
"invalid_request_error", "param": null, "code": "request_too_large"}}``.

Before answering, the rest of the body is read and thrown away (up to
:data:`DRAIN_BYTES` more, in constant memory), as nginx's lingering close
does: a client still sending would otherwise meet a reset connection instead
of the answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MIB = 1024 * 1024
#: How much more of a refused body is read (and dropped) so the client gets the answer.
DRAIN_BYTES = 64 * MIB
CODE = "request_too_large"


class BodyTooLarge(Exception):
    """Raised into the app when the body it is reading passes the limit."""


def size_text(count: int) -> str:
    """``1 MiB``, ``512 KiB`` or ``300 bytes``."""
    for unit, size in (("MiB", MIB), ("KiB", 1024)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} bytes"


def refusal(limit: int, where: str) -> tuple[Message, Message]:
    message = (f"the request body is larger than this server accepts ({size_text(limit)}); {where}")
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": CODE}}).encode()
    return ({"type": "http.response.start", "status": 413,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]},
            {"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuse a request body larger than ``limit(scope)`` bytes with 413.

    ``limit`` is called once per request (so a path may have its own limit);
    ``where`` ends the message: what to do instead (e.g. which setting raises it).
    """

    def __init__(self, app: ASGIApp, limit: Callable[[Scope], int], where: str = "send less") -> None:
        self.app = app
        self.limit = limit
        self.where = where

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            if not _expects_continue(scope):  # else the client waits for a go-ahead it never gets
                await _drain(receive, DRAIN_BYTES)
            await self._refuse(send, limit)
            return
        received = 0
        exceeded = False
        started = False
        ended = False  # the client sent the whole body (nothing left to drain)

        async def counted() -> Message:
            nonlocal received, exceeded, ended
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                ended = not message.get("more_body", False)
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(f"more than {limit} bytes")
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to a body it could not read is replaced by the 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            if not ended:
                await _drain(receive, DRAIN_BYTES)
            await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        start, body = refusal(limit, self.where)
        await send(start)
        await send(body)


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers") or []:
        if name.lower() == wanted:
            return value
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _expects_continue(scope: Scope) -> bool:
    return (_header(scope, b"expect") or b"").lower() == b"100-continue"


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of the body: at most ``budget`` bytes, one message at a time."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return
