"""The Den Protocol: ``/den/v1`` status, memory, tools and runs.

Routes that touch SQLite are plain ``def``: FastAPI runs them in its
threadpool, so a slow query never stalls the event loop (and every other
request with it).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from den.runtime.agent.loops import RunError
from den.runtime.agent.model import ModelError
from den.runtime.deps import StateDep
from den.runtime.memory.store import KINDS

router = APIRouter(prefix="/den/v1", tags=["den"])


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


class MemoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., min_length=1, max_length=8000)
    tags: str = Field("", max_length=200)
    kind: Literal["memo", "fact", "message", "summary"] = "memo"
    importance: float = Field(0.5, ge=0, le=1)


def _kinds(kind: str | None) -> list[str] | None:
    if not kind:
        return None
    kinds = [k.strip() for k in kind.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise HTTPException(422, f"unknown kind {unknown[0]!r}; expected some of {', '.join(KINDS)}")
    return kinds


@router.get("/memory")
def memory(state: StateDep, q: str | None = None, limit: int = 20, offset: int = 0,
           kind: str | None = None) -> dict[str, Any]:
    """List memories (newest first), or search them with ``q`` (hybrid recall: each item has its
    ``score`` and ``via``: vector, keyword, vector+keyword or graph); ``kind`` filters
    (comma-separated memo, fact, message, summary)."""
    limit = max(1, min(limit, 200))
    kinds = _kinds(kind)
    found = state.memory.search(q, limit, kinds) if q else state.memory.list(limit, max(0, offset), kinds)
    return {"items": [m.as_dict() for m in found], "total": state.memory.count()}


@router.post("/memory", status_code=201)
def remember(body: MemoIn, state: StateDep) -> dict[str, Any]:
    """Write a memory (the same words again return the memory already kept)."""
    return state.memory.add(body.text, kind=body.kind, tags=body.tags, importance=body.importance).as_dict()


@router.delete("/memory/{memory_id}")
def forget(memory_id: int, state: StateDep) -> dict[str, Any]:
    """Forget one memory (a fact's row stays in the history, marked deleted)."""
    if not state.memory.forget(memory_id):
        raise HTTPException(404, f"no memory {memory_id}")
    return {"forgotten": memory_id}


@router.get("/memory/facts")
def facts(state: StateDep, history: bool = False) -> dict[str, Any]:
    """Current facts; with ``history`` also the superseded and deleted ones."""
    return {"items": [f.as_dict() for f in state.memory.facts(history)]}


@router.get("/memory/stats")
def memory_stats(state: StateDep) -> dict[str, Any]:
    """Counts by kind, facts, size on disk, schema version, embedding model and progress."""
    return state.memory.stats()


@router.get("/memory/export")
def export(state: StateDep) -> Response:
    """Every memory and fact (history included), one JSON object a line."""
    lines = (json.dumps(record, ensure_ascii=False) for record in state.memory.export())
    return Response("".join(f"{line}\n" for line in lines), media_type="application/x-ndjson")


@router.post("/memory/import")
async def import_(request: Request, state: StateDep) -> dict[str, Any]:
    """Records from an export, one JSON object a line; ids are kept, existing ids skipped.
    A bad line rejects the whole import (nothing stored)."""
    raw = (await request.body()).decode("utf-8", errors="replace")
    records = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise HTTPException(422, f"line {number}: not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise HTTPException(422, f"line {number}: expected a JSON object")
        records.append(record)
    try:
        return await asyncio.to_thread(state.memory.import_records, records)
    except (ValueError, KeyError, TypeError) as exc:
        raise HTTPException(422, f"nothing imported: {exc}") from None
    except Exception as exc:  # the database refused a record (e.g. a constraint): rolled back
        raise HTTPException(422, f"nothing imported: {type(exc).__name__}: {exc}") from None


@router.get("/tools")
async def tools(state: StateDep) -> dict[str, Any]:
    """The tools this agent may use, with their JSON schemas."""
    return {"tools": state.interceptor.offered()}


@router.post("/tools/{name}")
async def invoke(name: str, arguments: dict[str, Any], state: StateDep) -> dict[str, Any]:
    """Call one tool directly, through the permission interceptor (403 unlisted, 422 bad arguments)."""
    if name not in state.interceptor.tools:
        await state.interceptor.call(name, arguments)  # counted and logged as refused
        raise HTTPException(403, f"tool {name!r} is not permitted for this agent; "
                                 f"permitted: {', '.join(state.interceptor.tools) or 'none'}")
    problem = state.interceptor.argument_problem(name, arguments)
    if problem:
        raise HTTPException(422, problem)
    result = await state.interceptor.call(name, arguments)
    return {"ok": result.ok, "content": result.content, "data": result.data}


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    goal: str = Field(..., min_length=1)
    loop: str | None = Field(None, description="research, plan, execute or verify; omit for the chain.")
    chain: bool = False


@router.post("/runs", status_code=201)
async def start_run(body: RunIn, state: StateDep) -> dict[str, Any]:
    """Run a loop (or the Agentfile's chain of loops) on a goal; returns the finished run."""
    try:
        run = await state.runs.start(body.goal, body.loop, body.chain)
    except RunError as exc:
        raise HTTPException(422, str(exc)) from None
    except ModelError as exc:
        raise HTTPException(exc.status, f"the model provider failed: {exc}") from None
    return run.as_dict()


@router.get("/runs")
def runs(state: StateDep) -> dict[str, Any]:
    return {"items": state.runs.store.list()}


@router.get("/runs/{run_id}")
def run(run_id: str, state: StateDep) -> dict[str, Any]:
    found = state.runs.store.get(run_id)
    if found is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return found
