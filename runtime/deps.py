"""Typed dependencies for the routes: ``Annotated[..., Depends()]``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from den.api.resource import Agent
from den.runtime.state import RuntimeState


def get_state(request: Request) -> RuntimeState:
    return request.app.state.runtime


StateDep = Annotated[RuntimeState, Depends(get_state)]


def get_agent(state: StateDep) -> Agent:
    return state.agent


AgentDep = Annotated[Agent, Depends(get_agent)]


TOKEN_ENV = "DEN_API_TOKEN"


def require_token(request: Request, state: StateDep) -> None:
    """Every endpoint but the health checks needs ``Authorization: Bearer <token>``
    when the agent has a token (``den up`` always gives it one; ``den api`` shows it)."""
    import hmac

    from fastapi import HTTPException

    expected = state.env.get(TOKEN_ENV)
    if not expected:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token: send Authorization: Bearer <token> (see `den api NAME`)",
            headers={"WWW-Authenticate": "Bearer"},
        )


Authorized = [Depends(require_token)]
