"""den.api: the Agentfile and the Agent resource (shared by the CLI, operator and runtime).

Names are loaded on first use, so ``from den.api.errors import DenError``
does not pay for building the pydantic models (the CLI starts faster).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BUILTIN_TOOLS": "den.api.agentfile",
    "AgentSpec": "den.api.agentfile",
    "Agentfile": "den.api.agentfile",
    "DenError": "den.api.errors",
    "InvalidAgentfile": "den.api.errors",
    "Problem": "den.api.errors",
    "API_VERSION": "den.api.resource",
    "Agent": "den.api.resource",
    "AgentStatus": "den.api.resource",
    "Condition": "den.api.resource",
    "to_agent": "den.api.resource",
    "to_agentfile": "den.api.resource",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'den.api' has no attribute {name!r}")
