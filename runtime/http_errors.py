"""The error answers of Den's FastAPI apps (the agent's and the gateway's), in OpenAI's shape.

- A body or parameter that does not validate is a 400 naming the parameter
  (``messages.0.content``, ``max_tokens``, ``limit``), never FastAPI's 422.
- Starlette's own errors (404 for an unknown path, 405, FastAPI's 400 for a body
  it cannot parse) keep their status; a body that is not UTF-8 says so; a 405's
  ``Allow`` lists every method of the path (Starlette's names the first route's only).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from den.runtime.openai_types import TextError, error_response

#: Where a parameter comes from, dropped from ``param`` (OpenAI names ``limit``, not ``query.limit``).
_SOURCES = ("body", "query", "path", "header", "cookie")


def _code(kind: str) -> str:
    if kind == "missing":
        return "missing_required_parameter"
    if kind.endswith(("_type", "_parsing")):
        return "invalid_type"
    return "invalid_value"


def _got(error: dict[str, Any]) -> str:
    value = error.get("input")
    if isinstance(value, bool | int | float) or value is None:
        return f" (got {value!r})"
    if isinstance(value, str):
        return f" (got {value[:40]!r}{'...' if len(value) > 40 else ''})"
    return ""


def invalid_request(problems: Sequence[Any]) -> JSONResponse:
    """Pydantic's (or FastAPI's) errors as a 400: OpenAI's error naming the first parameter at
    fault (``messages.0.content``). The alternatives of a union (pydantic reports each, as
    ``stop.str`` and ``stop.list[str]``) are one problem of the field they belong to."""
    found: list[tuple[tuple[Any, ...], str, str]] = []  # (loc, message, pydantic type)
    for error in problems:
        loc = tuple(error.get("loc", ()))
        if loc and loc[0] in _SOURCES:
            loc = loc[1:]
        kind = str(error.get("type"))
        cause = (error.get("ctx") or {}).get("error")
        if kind == "json_invalid":
            return error_response(400, f"invalid request: the request body is not valid JSON "
                                       f"({(error.get('ctx') or {}).get('error') or error.get('msg')})",
                                  "invalid_request_error", None, "invalid_json")
        if isinstance(cause, TextError):
            found.append(((*loc, *cause.loc), str(cause), kind))
        elif kind == "missing" and not loc:
            found.append((loc, "a JSON object is required as the request body", kind))
        elif isinstance(cause, ValueError):
            found.append((loc, str(cause), kind))
        else:
            found.append((loc, f"{error.get('msg')}{_got(error)}", kind))
    if not found:
        return error_response(400, "invalid request: the body does not match the API", "invalid_request_error")
    first, _, kind = found[0]
    branches = [f for f in found if len(f[0]) == len(first) and f[0][:-1] == first[:-1] and first
                and isinstance(f[0][-1], str)]
    if len(branches) > 1 and len({f[0][-1] for f in branches}) > 1:  # a union's alternatives
        where = ".".join(str(p) for p in first[:-1])
        problem = f"{where}: " + " or ".join(dict.fromkeys(f[1] for f in branches))
    else:
        where = ".".join(str(p) for p in first)
        problem = f"{where}: {found[0][1]}" if where else found[0][1]
    others = [f for f in found if f not in branches and f is not found[0]]
    more = f" (and {len(others)} more problem{'s' if len(others) > 1 else ''})" if others else ""
    return error_response(400, f"invalid request: {problem}{more}", "invalid_request_error", where or None,
                          _code(kind))


_KINDS = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
_CODES = {413: "request_too_large"}


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return invalid_request(exc.errors())


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = str(exc.detail)
    headers = dict(exc.headers or {})
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):  # FastAPI's body parsing
        message = f"invalid request: the request body is not valid UTF-8 ({cause.reason} at byte {cause.start})"
    elif exc.status_code == 400 and isinstance(cause, RecursionError):
        message = "invalid request: the request body is nested too deeply"
    elif exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return error_response(exc.status_code, message, _KINDS.get(exc.status_code, "invalid_request_error"),
                          code=_CODES.get(exc.status_code), headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of ``request``'s path answers."""
    methods: set[str] = set()
    for route in _routes(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _routes(routes: Sequence[Any]) -> Iterator[Any]:
    """Every route, those of included routers too (FastAPI keeps an included router as one entry)."""
    for route in routes:
        if hasattr(route, "effective_candidates"):
            yield from _routes(route.effective_candidates())
        else:
            yield route


def install(app: FastAPI) -> None:
    """Answer every validation and HTTP error of ``app`` as above."""
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
