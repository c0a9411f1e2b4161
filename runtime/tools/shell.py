"""shell_exec: a command in the agent's own container, with a timeout and an output cap."""

from __future__ import annotations

import asyncio
import os
import signal

from pydantic import BaseModel, ConfigDict, Field

from den.runtime.tools.base import DenTool, ToolContext, ToolResult, capped

MAX_TIMEOUT = 300


class ShellArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str = Field(..., min_length=1, description="A /bin/sh command line, run in the workspace.")
    timeout: float = Field(30, gt=0, le=MAX_TIMEOUT, description="Seconds before it is killed.")


class ShellExec(DenTool):
    name = "shell_exec"
    description = "Run a shell command in your sandbox (working directory: your workspace)."
    Arguments = ShellArgs

    async def run(self, args: ShellArgs, ctx: ToolContext) -> ToolResult:
        process = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", args.command, cwd=ctx.workspace,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=args.timeout)
        except TimeoutError:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the whole group: children too
            except ProcessLookupError:
                pass
            await process.wait()
            return ToolResult(False, f"error: timed out after {args.timeout:g} s (killed)",
                              {"exit_code": None, "timed_out": True})
        out = capped(stdout.decode("utf-8", "replace"))
        err = capped(stderr.decode("utf-8", "replace"))
        code = process.returncode
        text = f"exit code {code}\n--- stdout ---\n{out}" + (f"\n--- stderr ---\n{err}" if err else "")
        return ToolResult(code == 0, text, {"exit_code": code, "stdout": out, "stderr": err})
