"""Typed dependencies for the routes: ``Annotated[..., Depends()]``.

They are ``async def``: FastAPI runs a plain ``def`` dependency in its threadpool, a hop that
costs more than the lookup itself on every request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from den.api.resource import Agent
from den.runtime.state import RuntimeState


async def get_state(request: Request) -> RuntimeState:
    return request.app.state.runtime


StateDep = Annotated[RuntimeState, Depends(get_state)]


async def get_agent(state: StateDep) -> Agent:
    return state.agent


AgentDep = Annotated[Agent, Depends(get_agent)]
