"""memo_write, memo_search, memo_list and schedule_task: through the memory and scheduler interfaces.

Memory and scheduler are SQLite on the agent's volume: each call runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from den.runtime.tools.base import DenTool, ToolContext, ToolResult


class MemoWriteArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., min_length=1, max_length=8000, description="What to remember.")
    tags: str = Field("", max_length=200, description="Comma-separated tags.")


class MemoWrite(DenTool):
    name = "memo_write"
    description = "Remember something for later (it survives restarts)."
    Arguments = MemoWriteArgs

    async def run(self, args: MemoWriteArgs, ctx: ToolContext) -> ToolResult:
        memo = await asyncio.to_thread(ctx.memory.write, args.text, args.tags)
        return ToolResult(True, f"remembered (memo {memo.id})", memo.as_dict())


class MemoSearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(..., min_length=1)
    limit: int = Field(5, ge=1, le=50)


class MemoSearch(DenTool):
    name = "memo_search"
    description = "Search what you remembered."
    Arguments = MemoSearchArgs

    async def run(self, args: MemoSearchArgs, ctx: ToolContext) -> ToolResult:
        found = await asyncio.to_thread(ctx.memory.search, args.query, args.limit)
        return ToolResult(True, "\n".join(f"[{m.id}] {m.text}" for m in found) or "nothing found",
                          {"memos": [m.as_dict() for m in found]})


class MemoListArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(20, ge=1, le=200)
    offset: int = Field(0, ge=0)


class MemoList(DenTool):
    name = "memo_list"
    description = "List your most recent memos."
    Arguments = MemoListArgs

    async def run(self, args: MemoListArgs, ctx: ToolContext) -> ToolResult:
        memos = await asyncio.to_thread(ctx.memory.list, args.limit, args.offset)
        return ToolResult(True, "\n".join(f"[{m.id}] {m.text}" for m in memos) or "no memos",
                          {"memos": [m.as_dict() for m in memos]})


class ScheduleArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["create", "update", "delete", "list"] = Field(
        "create", description="create or update a task (by name), delete one, or list yours.")
    name: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
                             description="The task's name (lowercase letters, digits and '-').")
    schedule: str | None = Field(None, description="Cron expression, e.g. '0 9 * * 1-5' or '@daily'.")
    prompt: str | None = Field(None, min_length=1, description="What to do at each run.")
    timezone: str = Field("UTC", description="IANA time zone the schedule is read in.")


class ScheduleTask(DenTool):
    name = "schedule_task"
    description = ("Schedule a prompt for yourself with a cron expression: Den runs it on time in a session "
                   "of its own and keeps its outcome as a memo. Actions: create, update, delete, list.")
    Arguments = ScheduleArgs

    async def run(self, args: ScheduleArgs, ctx: ToolContext) -> ToolResult:
        from den.runtime.scheduler import TaskError

        scheduler = ctx.scheduler
        if args.action == "list":
            tasks = await asyncio.to_thread(scheduler.list)
            text = "\n".join(f"{t['name']}: {t['schedule']} ({t['timezone']}): {t['prompt']}" for t in tasks)
            return ToolResult(True, text or "you have no scheduled tasks", {"tasks": tasks})
        if not args.name:
            return ToolResult.error(f"action {args.action} needs the task's name")
        if args.action == "delete":
            if not await asyncio.to_thread(scheduler.delete, args.name):
                return ToolResult.error(f"you have no task named {args.name!r}")
            result = ToolResult(True, f"deleted task {args.name}", {"name": args.name})
        else:
            if not args.schedule or not args.prompt:
                return ToolResult.error(f"action {args.action} needs name, schedule and prompt")
            try:
                task = await asyncio.to_thread(scheduler.schedule, args.name, args.schedule, args.prompt,
                                               args.timezone)
            except TaskError as exc:
                return ToolResult.error(str(exc))
            result = ToolResult(True, f"scheduled task {args.name} ({task['schedule']}, {task['timezone']}); "
                                      "it runs on its own from now on", task)
        if scheduler.changed is not None:
            await scheduler.changed()
        return result
