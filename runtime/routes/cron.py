"""The Den Protocol's cron routes: ``/den/v1/cron`` entries, their history, run now, suspend, resume."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException

from den.api.agentfile import cron_digest
from den.runtime.cron import UnknownEntry
from den.runtime.deps import StateDep
from den.runtime.openai_types import errors

router = APIRouter(prefix="/den/v1/cron", tags=["cron"], responses=errors(401, 413, 503))


def _unknown(state: Any, name: str) -> HTTPException:
    known = ", ".join(e.name for e in state.cron.entries()) or "none"
    return HTTPException(404, f"no cron entry {name!r}; entries: {known}")


@router.get("")
async def entries(state: StateDep) -> dict[str, Any]:
    """Every entry (the Agentfile's and the agent's own tasks, by ``origin``) with its next run
    and last result; ``digest`` identifies the Agentfile cron section this agent runs."""
    items = await asyncio.to_thread(state.cron.report)
    return {"entries": items, "digest": cron_digest(state.agent.spec.cron),
            "generation": state.agent.metadata.generation}


@router.get("/history", responses=errors(400))
async def history(state: StateDep, limit: int = 50) -> dict[str, Any]:
    """The latest runs of every entry, newest first."""
    runs = await asyncio.to_thread(state.cron.store.runs, None, max(1, min(limit, 1000)))
    return {"items": [r.as_dict() for r in runs]}


@router.get("/{name}/runs", responses=errors(400, 404))
async def runs(name: str, state: StateDep, limit: int = 50) -> dict[str, Any]:
    """One entry's history, newest first (at most its ``history_limit`` runs are kept)."""
    if name not in state.cron.slots:
        raise _unknown(state, name)
    found = await asyncio.to_thread(state.cron.store.runs, name, max(1, min(limit, 1000)))
    return {"items": [r.as_dict() for r in found]}


@router.post("/{name}/run", responses=errors(404))
async def run_now(name: str, state: StateDep) -> dict[str, Any]:
    """Run the entry now and answer with the finished run (its status says how it went)."""
    try:
        record = await state.cron.run_now(name)
    except UnknownEntry:
        raise _unknown(state, name) from None
    return record.as_dict()


async def _suspend(name: str, state: Any, value: bool) -> dict[str, Any]:
    try:
        await state.cron.set_suspended(name, value)
    except UnknownEntry:
        raise _unknown(state, name) from None
    slot = state.cron.slots[name]
    last = await asyncio.to_thread(state.cron.store.last, name)
    return state.cron.describe(slot, last)


@router.post("/{name}/suspend", responses=errors(404))
async def suspend(name: str, state: StateDep) -> dict[str, Any]:
    """Pause the entry (kept across restarts) until it is resumed."""
    return await _suspend(name, state, True)


@router.post("/{name}/resume", responses=errors(404))
async def resume(name: str, state: StateDep) -> dict[str, Any]:
    """Let a suspended entry run on its schedule again."""
    return await _suspend(name, state, False)
