"""The runtime's one logging setup: a JSON object a line on stdout.

Every line has ``ts``, ``level``, ``msg`` and ``agent``; lines written while a
request is handled also carry its ``request_id`` (assigned by
:class:`RequestContextMiddleware`, or taken from the client's ``X-Request-ID``
and returned to it). Structured fields go in ``extra={"fields": {...}}``.
Secrets are never passed to a logger: use :func:`redact` on any text that
might contain one (an upstream error message, say).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOGGER = "den.runtime"
REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_QUIET_PATHS = frozenset({"/healthz", "/readyz"})
#: Loggers of libraries that install their own handlers; they are routed through ours.
_LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "LiteLLM", "LiteLLM Router", "LiteLLM Proxy")

request_id: ContextVar[str | None] = ContextVar("den_request_id", default=None)

log = logging.getLogger(LOGGER)


class JsonFormatter(logging.Formatter):
    def __init__(self, agent: str) -> None:
        super().__init__()
        self.agent = agent

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "agent": self.agent,
        }
        current = request_id.get()
        if current:
            entry["request_id"] = current
        if record.name != LOGGER and not record.name.startswith(LOGGER + "."):
            entry["logger"] = record.name
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(agent: str, level: str = "info", stream: IO[str] | None = None) -> None:
    """Route every logger (ours, uvicorn's, litellm's) to one JSON handler on ``stream``."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(agent))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet_library_loggers()


def quiet_library_loggers() -> None:
    """Drop handlers libraries installed themselves, so their lines are JSON too."""
    for name in _LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        if name.startswith("LiteLLM"):
            library.setLevel(logging.WARNING)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value (of 4 characters or more) replaced by ``***``."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class RequestContextMiddleware:
    """Assigns each HTTP request an id (or honours ``X-Request-ID``), returns it and logs the request.

    A pure ASGI middleware, so the id is visible to the endpoint and to a
    streamed body alike. An exception that escapes the app is logged with the
    request id and answered with an OpenAI-style 500, never a bare traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER)
        rid = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.monotonic()
        status = {"code": 500, "sent": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"path": scope.get("path")}})
            if not status["sent"]:
                body = json.dumps({"error": {"message": f"internal error (request id {rid})",
                                             "type": "internal_error", "param": None, "code": None}}).encode()
                await send_with_id({"type": "http.response.start", "status": 500,
                                    "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
        finally:
            path = scope.get("path", "")
            log.log(
                logging.DEBUG if path in _QUIET_PATHS else logging.INFO,
                "request",
                extra={"fields": {"method": scope.get("method"), "path": path, "status": status["code"],
                                  "duration_ms": round((time.monotonic() - started) * 1000, 1)}},
            )
            request_id.reset(token)


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None
