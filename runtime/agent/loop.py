"""The tool-calling agent loop: think, call tools, repeat, check, answer.

Each step the model sees the context (identity, recalled memories, the
conversation so far and tool results) and the tools the Agentfile allows.
It may call tools over several steps until it answers; a step limit stops a
runaway loop with a clear stop reason. Before the answer goes out, the
``before_respond`` checks judge it; on failure the agent revises, within the
checks' retry limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from den.api.agentfile import AgentSpec
from den.runtime.agent.checks import CheckOutcome, CheckRunner
from den.runtime.agent.context import budget_of, build_context
from den.runtime.agent.model import ModelClient, Reply, ToolCall, Usage
from den.runtime.memory.budget import fit, tokens

DEFAULT_MAX_STEPS = 8
EventSink = Callable[[dict[str, Any]], Awaitable[None]]
DeltaSink = Callable[[str], Awaitable[None]]


@dataclass
class Step:
    tool: str
    arguments: str
    ok: bool
    result: str

    def as_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "arguments": self.arguments, "ok": self.ok, "result": self.result[:2000]}


@dataclass
class Turn:
    content: str
    stop_reason: str  # "stop" | "max_steps" | "checks_failed" | "tool_calls"
    steps: list[Step] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    checks: list[CheckOutcome] = field(default_factory=list)
    revisions: int = 0
    model_calls: int = 0
    memories: list[int] = field(default_factory=list)  # ids of the memories recalled into the context
    dropped: list[dict[str, Any]] = field(default_factory=list)  # old messages left out for the window
    tool_calls: list[ToolCall] = field(default_factory=list)  # calls of the caller's tools, for the caller

    @property
    def finish_reason(self) -> str:
        """OpenAI's: ``stop``, ``tool_calls`` (the caller's tools), or ``length`` (steps or checks ran out)."""
        return {"stop": "stop", "tool_calls": "tool_calls"}.get(self.stop_reason, "length")

    def message(self) -> dict[str, Any]:
        """The assistant message of the turn, as OpenAI writes it (and a session keeps it)."""
        if not self.tool_calls:
            return {"role": "assistant", "content": self.content}
        return Reply(self.content, self.tool_calls).as_message()


class AgentLoop:
    def __init__(
        self,
        spec: AgentSpec,
        model: ModelClient,
        interceptor: Any,
        *,
        memory: Any = None,
        checks: CheckRunner | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
    ) -> None:
        self.spec = spec
        self.model = model
        self.interceptor = interceptor
        self.memory = memory
        self.checks = checks
        self.max_steps = max_steps

    async def _step(self, context: list[dict], tools: list[dict] | None, on_delta: DeltaSink | None,
                    options: dict[str, Any]) -> Reply:
        if on_delta is None:
            return await self.model.complete(context, tools, options)
        reply: Reply | None = None
        async for item in self.model.stream(context, tools, options):
            if isinstance(item, Reply):
                reply = item
            else:
                await on_delta(item)
        assert reply is not None
        return reply

    async def run(
        self,
        conversation: list[dict[str, Any]],
        *,
        on_event: EventSink | None = None,
        on_delta: DeltaSink | None = None,
        allowed_tools: list[str] | None = None,
        options: dict[str, Any] | None = None,
        caller_tools: list[dict[str, Any]] | None = None,
    ) -> Turn:
        """Answer the conversation. ``on_delta`` streams answer text (only when no checks
        must judge it first); ``on_event`` gets tool progress. ``options`` are the caller's
        model parameters (``tool_choice`` applies to the first call only, so a forced choice
        cannot loop); ``caller_tools`` are offered beside the agent's own, and a call to one
        ends the turn with ``stop_reason`` ``tool_calls`` for the caller to run."""
        built = await asyncio.to_thread(build_context, self.spec, self.memory, conversation)
        context = built.messages
        tools = [*(self.interceptor.offered(allowed_tools) if self.interceptor else []), *(caller_tools or [])]
        theirs = {t["function"]["name"] for t in caller_tools or []}
        options = dict(options or {})
        stream_to = on_delta if not self.checks else None
        turn = Turn(content="", stop_reason="max_steps", memories=built.memory_ids, dropped=built.dropped)
        budget = budget_of(self.spec)
        for _ in range(self.max_steps):
            if tokens(context) > budget.prompt:  # tool results grew it past the window
                head = [m for m in context[:1]]
                fitted = fit(head, context[1:], budget.prompt)
                context = fitted.messages
                turn.dropped += fitted.dropped
            reply = await self._step(context, tools or None, stream_to, options)
            options.pop("tool_choice", None)
            turn.model_calls += 1
            turn.usage.add(reply.usage)
            if reply.tool_calls:
                context.append(reply.as_message())
                for call in reply.tool_calls:
                    if call.name in theirs:
                        turn.tool_calls.append(call)
                        continue
                    if on_event:
                        await on_event({"type": "tool_call", "tool": call.name, "arguments": call.arguments})
                    result = await self.interceptor.call(call.name, call.arguments, allowed=allowed_tools)
                    turn.steps.append(Step(call.name, call.arguments, result.ok, result.content))
                    if on_event:
                        await on_event({"type": "tool_result", "tool": call.name, "ok": result.ok,
                                        "result": result.content[:500]})
                    context.append({"role": "tool", "tool_call_id": call.id, "content": result.content})
                if turn.tool_calls:  # the caller runs these and sends the results in its next request
                    turn.content, turn.stop_reason = reply.content, "tool_calls"
                    break
                continue
            turn.content = reply.content
            if self.checks:
                outcomes = await self.checks.judge(reply.content, turn.revisions, turn.usage)
                turn.checks.extend(outcomes)
                failed = [o for o in outcomes if not o.passed]
                if failed:
                    if turn.revisions >= self.checks.retries_for(failed):
                        turn.stop_reason = "checks_failed"
                        break
                    turn.revisions += 1
                    if on_event:
                        await on_event({"type": "revise", "checks": [o.as_dict() for o in failed]})
                    context.append({"role": "assistant", "content": reply.content})
                    context.append({"role": "user", "content": revision_request(failed)})
                    continue
            turn.stop_reason = "stop"
            break
        else:
            turn.content = turn.content or (
                f"I stopped after {self.max_steps} steps without reaching an answer."
            )
        if stream_to is None and on_delta is not None and turn.content:
            await on_delta(turn.content)
        return turn


def revision_request(failed: list[CheckOutcome]) -> str:
    reasons = "\n".join(f"- {o.name}: {o.reason}" for o in failed)
    return f"Your answer did not pass these checks:\n{reasons}\nRevise the answer so it passes them."
