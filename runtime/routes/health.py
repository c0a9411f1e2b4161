"""Liveness and readiness probes (the operator waits on ``/readyz``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from den.runtime.deps import StateDep
from den.runtime.openai_types import errors

router = APIRouter(tags=["health"], responses=errors(413))


class Probe(BaseModel):
    status: str


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None,
            responses={200: {"model": Probe}, 503: {"model": Probe, "description": "Still starting."}})
async def readyz(state: StateDep) -> dict[str, str] | JSONResponse:
    """Ready once started: completions are served at once (the model library lives in the gateway)."""
    if state.ready:
        return {"status": "ready"}
    return JSONResponse({"status": "starting"}, status_code=503)
