"""Which tools exist (built-ins plus ``den.tools`` entry points) and the permission interceptor.

The interceptor is the only way a tool runs: the model is offered only the
tools the Agentfile lists, a call to any other is refused with an error the
model sees (and counted), and arguments are validated against the tool's
schema before anything runs. A tool's own exception becomes an error result.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from den.api.agentfile import AgentSpec
from den.runtime.tools.base import DenTool, ToolContext, ToolResult
from den.runtime.tools.files import FileList, FileRead, FileWrite
from den.runtime.tools.memory_tools import MemoList, MemoSearch, MemoWrite, ScheduleTask
from den.runtime.tools.net import HttpRequest, WebFetch, WebSearch
from den.runtime.tools.shell import ShellExec

BUILTINS: dict[str, type[DenTool]] = {
    tool.name: tool
    for tool in (WebSearch, WebFetch, FileRead, FileWrite, FileList, ShellExec,
                 MemoWrite, MemoSearch, MemoList, HttpRequest, ScheduleTask)
}
ENTRY_POINT_GROUP = "den.tools"


class ToolSetupError(Exception):
    """A declared custom tool cannot be loaded: the runtime does not start."""


def custom_tools() -> dict[str, type[DenTool]]:
    found: dict[str, type[DenTool]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name] = entry  # loaded on demand: a broken package must not break the others
    return found


def tools_for(spec: AgentSpec) -> dict[str, DenTool]:
    """Instances of exactly the tools the Agentfile lists."""
    available = custom_tools()
    declared = {c.name: c for c in spec.custom_tools}
    chosen: dict[str, DenTool] = {}
    for name in spec.tools:
        if name in BUILTINS:
            chosen[name] = BUILTINS[name]()
            continue
        if name not in available:
            raise ToolSetupError(
                f"custom tool {name!r} is declared but no package provides the {ENTRY_POINT_GROUP!r} "
                f"entry point {name!r}; install it into the agent's image (docs/tools.md)"
            )
        try:
            cls = available[name].load()
        except Exception as exc:
            raise ToolSetupError(f"custom tool {name!r} failed to load: {type(exc).__name__}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, DenTool)):
            raise ToolSetupError(f"entry point {name!r} is not a DenTool subclass")
        tool = cls()
        if declared.get(name) and declared[name].description:
            tool.description = declared[name].description  # type: ignore[misc]
        chosen[name] = tool
    return chosen


EventHook = Callable[[str, str, str], Awaitable[None] | None]


class ToolInterceptor:
    def __init__(self, tools: dict[str, DenTool], ctx: ToolContext, on_event: EventHook | None = None) -> None:
        self.tools = tools
        self.ctx = ctx
        self.on_event = on_event
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def offered(self, allowed: list[str] | None = None) -> list[dict[str, Any]]:
        names = self.tools if allowed is None else [n for n in allowed if n in self.tools]
        return [self.tools[n].schema() for n in names]

    def stats(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "errors": dict(self.errors), "refused": dict(self.refused),
                "refused_total": sum(self.refused.values())}

    async def _emit(self, kind: str, name: str, detail: str) -> None:
        if self.on_event is not None:
            result = self.on_event(kind, name, detail)
            if result is not None:
                await result

    def _parse(self, name: str, data: dict[str, Any]) -> tuple[Any, str | None]:
        """The tool's validated arguments, or why ``data`` is not valid for it."""
        try:
            return self.tools[name].Arguments.model_validate(data), None
        except ValidationError as exc:
            return None, "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )

    def argument_problem(self, name: str, data: dict[str, Any]) -> str | None:
        """Why ``data`` is not valid for tool ``name``, or None (the direct endpoint's 422)."""
        return self._parse(name, data)[1]

    async def call(self, name: str, raw: str | dict[str, Any] | None, allowed: list[str] | None = None) -> ToolResult:
        permitted = list(self.tools) if allowed is None else [n for n in allowed if n in self.tools]
        if name not in permitted:
            self.refused[name] += 1
            await self._emit("refused", name, f"not permitted; permitted: {permitted}")
            return ToolResult.error(f"tool {name!r} is not permitted for this agent; permitted: "
                                    f"{', '.join(permitted) or 'none'}")
        tool = self.tools[name]
        try:
            data = json.loads(raw or "{}") if isinstance(raw, str) else (raw or {})
        except json.JSONDecodeError as exc:
            self.errors[name] += 1
            return ToolResult.error(f"arguments are not valid JSON: {exc.msg}")
        args, problem = self._parse(name, data)
        if problem is not None:
            self.errors[name] += 1
            return ToolResult.error(f"invalid arguments for {name}: {problem}")
        self.calls[name] += 1
        await self._emit("call", name, json.dumps(data)[:500])
        try:
            result = await tool.run(args, self.ctx)
        except Exception as exc:  # a tool bug is the model's error result, never a crashed turn
            self.errors[name] += 1
            return ToolResult.error(f"{name} failed: {type(exc).__name__}: {exc}")
        if not result.ok:
            self.errors[name] += 1
        return result
