"""DenTool: what a tool is, what it gets to work with, and what it returns.

A tool subclasses :class:`DenTool` with a ``name``, a ``description``, a
pydantic ``Arguments`` model (its JSON schema is what the model sees) and an
async ``run``. Custom tools are found through the ``den.tools`` entry point
group (see docs/tools.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

OUTPUT_CAP = 64 * 1024  # bytes of text a tool hands back to the model


@dataclass
class ToolResult:
    ok: bool
    content: str
    data: dict[str, Any] | None = None

    @classmethod
    def error(cls, message: str) -> ToolResult:
        return cls(False, f"error: {message}")


@dataclass
class NetworkPolicy:
    mode: str = "host"  # none | filtered | host
    allow: list[str] = field(default_factory=list)

    def permits(self, host: str, port: int | None = None) -> bool:
        """The in-process check (a clear error before the network refuses): the same grammar
        and matching as the egress proxy's configuration (:mod:`den.api.netpolicy`)."""
        from den.api.netpolicy import parse_allow, permits

        return permits(self.mode, parse_allow(self.allow), host, port)


@dataclass
class ToolContext:
    """What a tool may use: the agent's home, its network policy, memory and scheduler."""

    agent: str
    home: Path
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    memory: Any = None
    scheduler: Any = None
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def workspace(self) -> Path:
        path = self.home / "workspace"
        path.mkdir(parents=True, exist_ok=True)
        return path


class NoArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DenTool(ABC):
    """Subclass me: ``name``, ``description``, ``Arguments`` and ``async run``."""

    name: ClassVar[str]
    description: ClassVar[str]
    Arguments: ClassVar[type[BaseModel]] = NoArguments

    @abstractmethod
    async def run(self, args: Any, ctx: ToolContext) -> ToolResult:
        """Do the work; return what the model should see."""

    @classmethod
    def schema(cls) -> dict[str, Any]:
        parameters = cls.Arguments.model_json_schema()
        parameters.pop("title", None)
        return {"type": "function", "function": {"name": cls.name, "description": cls.description,
                                                 "parameters": parameters}}


def capped(text: str, limit: int = OUTPUT_CAP) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore") + f"\n[truncated: {len(data) - limit} more bytes]"
