"""The Den Protocol: ``/den/v1`` status, memory, tools and runs.

Routes that touch SQLite are plain ``def``: FastAPI runs them in its
threadpool, so a slow query never stalls the event loop (and every other
request with it).

Every input is bounded: a memo is at most 8000 characters (kept as memories of at
most 2000), an import is streamed to a temporary file and read a line at a time (the
whole of it at most :data:`IMPORT_MAX_BYTES`, a line at most the agent's request
limit), a run's goal must fit the context window, ids and offsets fit SQLite.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ConfigDict, Field

from den.runtime.agent.context import overflow, request_limit
from den.runtime.agent.loops import RunError
from den.runtime.agent.model import ModelError
from den.runtime.body_limit import MIB, size_text
from den.runtime.deps import StateDep
from den.runtime.logging import redact
from den.runtime.openai_types import WireModel, bad_text, error_response, errors

router = APIRouter(prefix="/den/v1", tags=["den"], responses=errors(401, 413, 503))

IMPORT_PATH = "/den/v1/memory/import"
#: The largest import (an export of ~100k memories); each line is also held to the agent's limit.
IMPORT_MAX_BYTES = 256 * MIB
#: SQLite integers are 64-bit: larger ids and offsets are refused or clamped, never a 500.
MAX_ID = 2 ** 63 - 1
MemoryId = Annotated[int, Path(ge=1, le=MAX_ID)]


class NdjsonResponse(Response):
    media_type = "application/x-ndjson"


@router.get("/status")
async def status(state: StateDep) -> dict[str, Any]:
    """Health, uptime, model, tool calls and refusals, memory, cron; tokens, cost and budget as
    the model gateway's ledger counts them (``usage.source``: ``gateway``), or this process's
    own count when no gateway answers (``usage.source``: ``agent``)."""
    report = await asyncio.to_thread(state.status)
    ledger = await state.agent_loop.model.gateway_usage()
    if ledger is not None:
        report["usage"] = {"source": "gateway", **ledger}
    return report


class MemoIn(WireModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., min_length=1, max_length=8000)
    tags: str = Field("", max_length=200)
    kind: Literal["memo", "fact", "message", "summary"] = "memo"
    importance: float = Field(0.5, ge=0, le=1)


_KIND = "(memo|fact|message|summary)"
#: Comma-separated kinds (empty pieces are ignored).
KIND_LIST = rf"^ *{_KIND}? *(, *{_KIND}? *)*$"


def _kinds(kind: str | None) -> list[str] | None:
    kinds = [k.strip() for k in (kind or "").split(",") if k.strip()]
    return kinds or None


@router.get("/memory", responses=errors(400))
def memory(state: StateDep, q: str | None = None, limit: int = 20, offset: int = 0,
           kind: Annotated[str | None, Query(pattern=KIND_LIST,
                                             description="memo, fact, message, summary; comma-separated")] = None,
           ) -> dict[str, Any]:
    """List memories (newest first), or search them with ``q`` (hybrid recall: each item has its
    ``score`` and ``via``: vector, keyword, vector+keyword or graph; a long ``q`` is searched for
    by its end); ``kind`` filters (comma-separated memo, fact, message, summary). ``limit`` is
    kept within 1..200."""
    limit = max(1, min(limit, 200))
    offset = max(0, min(offset, MAX_ID))
    kinds = _kinds(kind)
    found = state.memory.search(q, limit, kinds) if q else state.memory.list(limit, offset, kinds)
    return {"items": [m.as_dict() for m in found], "total": state.memory.count()}


@router.post("/memory", status_code=201, responses=errors(400))
def remember(body: MemoIn, state: StateDep) -> dict[str, Any]:
    """Write a memory (the same words again return the memory already kept). A text longer than
    2000 characters is kept as several memories, cut at sentence or word breaks: the answer is
    the first, and ``chunks`` lists the ids of all."""
    written = state.memory.write_all(body.text, body.tags, kind=body.kind, source="api",
                                     importance=body.importance)
    return {**written[0].as_dict(), "chunks": [m.id for m in written]}


@router.delete("/memory/{memory_id:int}", responses=errors(400, 404))
def forget(memory_id: MemoryId, state: StateDep) -> dict[str, Any]:
    """Forget one memory (a fact's row stays in the history, marked deleted)."""
    if not state.memory.forget(memory_id):
        raise HTTPException(404, f"no memory {memory_id}")
    return {"forgotten": memory_id}


@router.get("/memory/facts", responses=errors(400))
def facts(state: StateDep, history: bool = False) -> dict[str, Any]:
    """Current facts; with ``history`` also the superseded and deleted ones."""
    return {"items": [f.as_dict() for f in state.memory.facts(history)]}


@router.get("/memory/stats")
def memory_stats(state: StateDep) -> dict[str, Any]:
    """Counts by kind, facts, size on disk, schema version, embedding model and progress."""
    return state.memory.stats()


@router.get("/memory/export", response_class=NdjsonResponse)
def export(state: StateDep) -> Response:
    """Every memory and fact (history included), one JSON object a line."""
    lines = (json.dumps(record, ensure_ascii=False) for record in state.memory.export())
    return NdjsonResponse("".join(f"{line}\n" for line in lines))


class LineTooLong(ValueError):
    pass


def _records(file: IO[bytes], line_limit: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of an NDJSON file, one line in memory at a time."""
    file.seek(0)
    for number, raw in enumerate(iter(lambda: file.readline(line_limit + 1), b""), start=1):
        if len(raw) > line_limit and not raw.endswith(b"\n"):
            raise LineTooLong(f"line {number} is longer than {size_text(line_limit)}")
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as exc:  # not JSON, or not UTF-8
            raise HTTPException(422, f"line {number}: not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise HTTPException(422, f"line {number}: expected a JSON object")
        problem = bad_text(record)
        if problem is not None:
            raise HTTPException(422, f"line {number}: {'.'.join(map(str, problem.loc))}: {problem}")
        yield number, record


def _import_file(state: Any, file: IO[bytes], line_limit: int) -> dict[str, int]:
    """Check every line, then import them in one transaction (a bad line stores nothing)."""
    for _ in _records(file, line_limit):
        pass
    return state.memory.import_records(record for _, record in _records(file, line_limit))


@router.post("/memory/import", responses=errors(422), openapi_extra={"requestBody": {
    "required": False, "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}})
async def import_(request: Request, state: StateDep) -> Any:
    """Records from an export, one JSON object a line; ids are kept, existing ids skipped; a
    memory longer than 2000 characters is imported as several. A bad line rejects the whole
    import (nothing stored). The body is streamed to a temporary file (at most 256 MiB) and
    read back a line at a time (each at most the agent's request limit)."""
    line_limit = request_limit(state.agent.spec)
    with tempfile.SpooledTemporaryFile(max_size=MIB) as file:
        async for piece in request.stream():
            file.write(piece)
        try:
            return await asyncio.to_thread(_import_file, state, file, line_limit)
        except LineTooLong as exc:
            return error_response(413, f"nothing imported: {exc} (raise runtime.max_request_bytes)",
                                  "invalid_request_error", code="request_too_large")
        except HTTPException:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(422, f"nothing imported: {exc}") from None
        except Exception as exc:  # the database refused a record (e.g. a constraint): rolled back
            raise HTTPException(422, f"nothing imported: {type(exc).__name__}: {exc}") from None


@router.get("/tools")
async def tools(state: StateDep) -> dict[str, Any]:
    """The tools this agent may use, with their JSON schemas."""
    return {"tools": state.interceptor.offered()}


@router.post("/tools/{name}", responses=errors(400, 403, 422))
async def invoke(name: str, arguments: dict[str, Any], state: StateDep) -> dict[str, Any]:
    """Call one tool directly, through the permission interceptor (403 unlisted, 422 bad arguments)."""
    problem = bad_text(arguments)
    if problem is not None:
        raise RequestValidationError([{"type": "value_error", "loc": ("body", *problem.loc), "msg": str(problem),
                                       "input": None, "ctx": {"error": problem}}])
    if name not in state.interceptor.tools:
        await state.interceptor.call(name, arguments)  # counted and logged as refused
        raise HTTPException(403, f"tool {name!r} is not permitted for this agent; "
                                 f"permitted: {', '.join(state.interceptor.tools) or 'none'}")
    problem = state.interceptor.argument_problem(name, arguments)
    if problem:
        raise HTTPException(422, problem)
    result = await state.interceptor.call(name, arguments)
    return {"ok": result.ok, "content": result.content, "data": result.data}


class RunIn(WireModel):
    model_config = ConfigDict(extra="forbid")
    goal: str = Field(..., min_length=1, description="What the run is for; it must fit the context window.")
    loop: Literal["research", "plan", "execute", "verify"] | None = Field(
        None, description="research, plan, execute or verify (declared in the Agentfile); omit for the chain.")
    chain: bool = False


@router.post("/runs", status_code=201, responses=errors(400, 422, 429, 502))
async def start_run(body: RunIn, state: StateDep) -> Any:
    """Run a loop (or the Agentfile's chain of loops) on a goal; returns the finished run. A loop
    the Agentfile does not declare is a 422."""
    too_long = overflow(state.agent.spec, [{"role": "user", "content": body.goal}])
    if too_long:
        return error_response(400, too_long, "invalid_request_error", "goal", "context_length_exceeded")
    try:
        run = await state.runs.start(body.goal, body.loop, body.chain)
    except RunError as exc:
        raise HTTPException(422, str(exc)) from None
    except ModelError as exc:
        return error_response(exc.status, redact(f"the model provider failed: {exc}", state.secrets()), exc.type)
    return run.as_dict()


@router.get("/runs")
def runs(state: StateDep) -> dict[str, Any]:
    return {"items": state.runs.store.list()}


@router.get("/runs/{run_id}", responses=errors(404))
def run(run_id: str, state: StateDep) -> dict[str, Any]:
    found = state.runs.store.get(run_id)
    if found is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return found
