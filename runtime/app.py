"""The runtime's FastAPI app: ``create_app(agent)`` serves one agent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.types import Scope

from den import __version__
from den.api.contract import TOKEN_ENV
from den.api.resource import Agent
from den.runtime import http_errors
from den.runtime.agent.context import request_limit
from den.runtime.auth import BearerTokenMiddleware
from den.runtime.body_limit import BodyLimitMiddleware
from den.runtime.logging import RequestContextMiddleware
from den.runtime.routes import cron, den, health, openai, responses
from den.runtime.state import RuntimeState

log = logging.getLogger("den.runtime")


def create_app(agent: Agent, *, env: Mapping[str, str] | None = None,
               secrets: Iterable[str] = (), home: Path | None = None,
               config_path: Path | None = None) -> FastAPI:
    """The API of ``agent``.

    ``env`` holds the agent's private variables (its API token, the model
    gateway's URL and its gateway token); by default the process environment. ``secrets``
    are values redacted from every log line and error body (``__main__``
    passes the env file's values). ``home`` is the agent's volume: with it,
    conversations persist across restarts (``__main__`` passes ``/den``). ``config_path`` is
    the manifest the operator delivers: the cron scheduler reloads its entries when it changes.
    Every route but the probes needs ``env[DEN_API_TOKEN]`` as a bearer token;
    without one configured the agent answers 503 (fail closed).
    """
    # Validate once more from plain data: defaults that are enum members (e.g. the default
    # verbosity) become their values, exactly as in a manifest read from DEN_CONFIG.
    agent = Agent.model_validate(agent.model_dump(mode="json"))
    state = RuntimeState(agent=agent, env=os.environ if env is None else env,
                         extra_secrets=tuple(s for s in secrets if s))
    state.attach_agent_loop(home)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start_cron(config_path)
        state.ready = True
        model = agent.spec.model
        log.info("ready", extra={"fields": {"model": f"{model.provider}/{model.name}",
                                            "via": state.agent_loop.model.where,
                                            "generation": agent.metadata.generation}})
        try:
            yield
        finally:
            if state.consolidator is not None:  # facts of the last turns, before the process goes
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.consolidator.drain(), 10)
            await state.cron.stop()
            await state.agent_loop.model.close()
            if state.memory is not None:
                state.memory.close()

    def body_limit(scope: Scope) -> int:
        if scope.get("path") == den.IMPORT_PATH:  # streamed to a file, imported a line at a time
            return max(den.IMPORT_MAX_BYTES, request_limit(state.agent.spec))
        return request_limit(state.agent.spec)

    app = FastAPI(title=f"Den agent {agent.name}", version=__version__, lifespan=lifespan)
    app.state.runtime = state
    app.add_middleware(BodyLimitMiddleware, limit=body_limit,
                       where="send less, or raise runtime.max_request_bytes in the Agentfile")
    app.add_middleware(BearerTokenMiddleware, token=lambda: state.env.get(TOKEN_ENV))
    app.add_middleware(RequestContextMiddleware)
    http_errors.install(app)
    for module in (health, openai, responses, den, cron):
        app.include_router(module.router)
    return app
