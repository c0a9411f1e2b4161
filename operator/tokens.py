"""Per-agent API bearer tokens: made at `den up`, kept 0600 under $DEN_HOME/tokens.

The runtime gets its token through the same private file as provider keys
(``DEN_API_TOKEN`` in ``/den/.den/env.json``) and requires it on every
endpoint but the health checks.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from den.api.resource import Agent
from den.operator import names

TOKEN_ENV = "DEN_API_TOKEN"


def token_path(agent: Agent) -> Path:
    return names.tokens_dir() / f"{agent.namespace}.{agent.name}"


def read_token(agent: Agent) -> str | None:
    path = token_path(agent)
    return path.read_text().strip() if path.exists() else None


def ensure_token(agent: Agent) -> str:
    """The agent's token, made once and kept across down/up (clients keep working)."""
    existing = read_token(agent)
    if existing:
        return existing
    path = token_path(agent)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = "den_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def forget_token(agent: Agent) -> None:
    token_path(agent).unlink(missing_ok=True)
