"""Fail-closed bearer-token authentication for every route but the probes.

A pure ASGI middleware, so it guards everything the app serves: the OpenAI
API, the Den Protocol, ``/docs``, ``/openapi.json`` and unknown paths alike.
``/healthz`` and ``/readyz`` answer without a token (they carry nothing).
An agent with no token configured serves nothing else: 503, saying it has no
credentials yet (the operator delivers them; see ``den api NAME``).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from den.api.contract import UNAUTHENTICATED_PATHS


def _error(status: int, message: str, type_: str, extra_headers: list[tuple[bytes, bytes]]) -> tuple[dict, dict]:
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": None}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *extra_headers]
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body})


class BearerTokenMiddleware:
    """Let a request through only with ``Authorization: Bearer <the agent's token>``."""

    def __init__(self, app: ASGIApp, token: Callable[[], str | None]) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNAUTHENTICATED_PATHS:
            await self.app(scope, receive, send)
            return
        expected = self.token()
        if not expected:
            start, body = _error(
                503, "this agent has no credentials yet: it serves nothing until the operator "
                "delivers its API token (den up NAME, then den api NAME)", "service_unavailable", [])
        else:
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            scheme, _, given = header.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode()):
                await self.app(scope, receive, send)
                return
            start, body = _error(
                401, "missing or wrong bearer token: send Authorization: Bearer <token> (see `den api NAME`)",
                "authentication_error", [(b"www-authenticate", b"Bearer")])
        await send(start)
        await send(body)
