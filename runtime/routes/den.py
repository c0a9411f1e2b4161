"""Den's own API: ``/den/v1``."""

from __future__ import annotations

from typing import Any

from den.runtime.deps import Authorized, StateDep
from fastapi import APIRouter

router = APIRouter(prefix="/den/v1", tags=["den"], dependencies=Authorized)


@router.get("/status")
async def status(state: StateDep) -> dict[str, Any]:
    """Name, model, uptime, the generation it runs, requests served and tokens used."""
    return state.status()
