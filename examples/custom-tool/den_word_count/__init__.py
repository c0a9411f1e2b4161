"""word_count: the smallest useful DenTool (see docs/tools.md)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from den.runtime.tools.base import DenTool, ToolContext, ToolResult


class WordCountArgs(BaseModel):
    text: str = Field(..., description="The text whose words to count.")


class WordCount(DenTool):
    name = "word_count"
    description = "Count the words in a text."
    Arguments = WordCountArgs

    async def run(self, args: WordCountArgs, ctx: ToolContext) -> ToolResult:
        count = len(args.text.split())
        return ToolResult(True, f"{count} words", {"words": count})
