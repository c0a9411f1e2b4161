"""The Den Protocol: ``/den/v1`` status, memory, tools and runs.

Routes that touch SQLite are plain ``def``: FastAPI runs them in its
threadpool, so a slow query never stalls the event loop (and every other
request with it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from den.runtime.agent.loops import RunError
from den.runtime.agent.model import ModelError
from den.runtime.deps import StateDep

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


@router.get("/memory")
def memory(state: StateDep, q: str | None = None, limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """List memories (newest first), or search them with ``q``."""
    limit = max(1, min(limit, 200))
    found = state.memory.search(q, limit) if q else state.memory.list(limit, max(0, offset))
    return {"items": [m.as_dict() for m in found], "total": state.memory.count()}


@router.post("/memory", status_code=201)
def remember(body: MemoIn, state: StateDep) -> dict[str, Any]:
    """Write a memory."""
    return state.memory.write(body.text, body.tags).as_dict()


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
