"""file_read, file_write, file_list: confined to the agent's workspace.

Absolute paths, ``..`` and symlinks that lead outside the workspace are
refused: every path is resolved (following links) and must stay inside.
Each tool's file system work runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from den.runtime.tools.base import DenTool, ToolContext, ToolResult, capped

READ_CAP = 1024 * 1024
WRITE_CAP = 1024 * 1024
LIST_CAP = 500


class PathRefused(ValueError):
    pass


def confined(ctx: ToolContext, relative: str) -> Path:
    """``relative`` inside the workspace, resolved; refused when it would leave it."""
    if not relative or relative.startswith(("/", "\\")) or Path(relative).is_absolute():
        raise PathRefused(f"{relative!r}: use a path relative to the workspace")
    if ".." in Path(relative).parts:
        raise PathRefused(f"{relative!r}: '..' is not allowed")
    root = ctx.workspace.resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise PathRefused(f"{relative!r} leads outside the workspace (a symlink?)")
    return target


class FileReadArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(..., description="Path relative to the workspace.")


class FileRead(DenTool):
    name = "file_read"
    description = "Read a text file from your workspace."
    Arguments = FileReadArgs

    async def run(self, args: FileReadArgs, ctx: ToolContext) -> ToolResult:
        return await asyncio.to_thread(self.read_file, args, ctx)

    @staticmethod
    def read_file(args: FileReadArgs, ctx: ToolContext) -> ToolResult:
        try:
            path = confined(ctx, args.path)
        except PathRefused as exc:
            return ToolResult.error(str(exc))
        if not path.is_file():
            return ToolResult.error(f"{args.path}: no such file")
        if path.stat().st_size > READ_CAP:
            return ToolResult.error(f"{args.path}: larger than {READ_CAP} bytes")
        return ToolResult(True, capped(path.read_text(encoding="utf-8", errors="replace")))


class FileWriteArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(..., description="Path relative to the workspace.")
    content: str = Field(..., description="The whole new content of the file.")
    append: bool = Field(False, description="Append instead of replacing.")


class FileWrite(DenTool):
    name = "file_write"
    description = "Write (or append to) a text file in your workspace; folders are created."
    Arguments = FileWriteArgs

    async def run(self, args: FileWriteArgs, ctx: ToolContext) -> ToolResult:
        return await asyncio.to_thread(self.write_file, args, ctx)

    @staticmethod
    def write_file(args: FileWriteArgs, ctx: ToolContext) -> ToolResult:
        data = args.content.encode("utf-8")
        if len(data) > WRITE_CAP:
            return ToolResult.error(f"content is larger than {WRITE_CAP} bytes")
        try:
            path = confined(ctx, args.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            confined(ctx, args.path)  # a folder created above must not be a link out
        except PathRefused as exc:
            return ToolResult.error(str(exc))
        if path.is_symlink():
            return ToolResult.error(f"{args.path} is a symlink; refusing to write through it")
        with open(path, "ab" if args.append else "wb") as handle:
            handle.write(data)
        return ToolResult(True, f"wrote {len(data)} bytes to {args.path}", {"bytes": len(data)})


class FileListArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(".", description="Folder relative to the workspace.")
    recursive: bool = Field(False, description="Include sub-folders.")


class FileList(DenTool):
    name = "file_list"
    description = "List files in your workspace."
    Arguments = FileListArgs

    async def run(self, args: FileListArgs, ctx: ToolContext) -> ToolResult:
        return await asyncio.to_thread(self.list_folder, args, ctx)

    @staticmethod
    def list_folder(args: FileListArgs, ctx: ToolContext) -> ToolResult:
        try:
            folder = ctx.workspace.resolve() if args.path in ("", ".") else confined(ctx, args.path)
        except PathRefused as exc:
            return ToolResult.error(str(exc))
        if not folder.is_dir():
            return ToolResult.error(f"{args.path}: no such folder")
        root = ctx.workspace.resolve()
        entries = []
        for item in sorted(folder.rglob("*") if args.recursive else folder.iterdir()):
            if len(entries) >= LIST_CAP:
                break
            kind = "link" if item.is_symlink() else "dir" if item.is_dir() else "file"
            size = item.lstat().st_size if kind == "file" else 0
            entries.append({"path": str(item.relative_to(root)), "type": kind, "size": size})
        lines = [f"{e['type']:4} {e['size']:>9} {e['path']}" for e in entries] or ["(empty)"]
        return ToolResult(True, "\n".join(lines), {"entries": entries})
