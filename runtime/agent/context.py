"""What the model sees every turn: identity, personality, recalled memories, then the conversation.

Also what the agent accepts at all: a request body of at most :func:`request_limit` bytes, and a
newest message that fits the window by itself (:func:`overflow`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from den.api.agentfile import AgentSpec
from den.runtime.memory.budget import MESSAGE_OVERHEAD, Budget, fit, message_tokens, text_tokens
from den.runtime.memory.chunks import query_of

VERBOSITY = {
    "concise": "Be concise: answer in as few sentences as the question allows; no preamble.",
    "balanced": "Answer completely but without padding.",
    "detailed": "Be thorough: explain your reasoning, cover edge cases, and structure long answers with headings.",
}


class Recalls(Protocol):
    """What context building needs from memory (the memory layer provides more)."""

    def search(self, query: str, limit: int) -> Sequence[Any]: ...

    def recent(self, limit: int) -> Sequence[Any]: ...


def personality_instructions(spec: AgentSpec) -> str:
    personality = spec.identity.personality
    return f"Tone: {personality.tone}. {VERBOSITY[str(personality.verbosity)]}"


def _memo_text(memo: Any) -> str:
    return getattr(memo, "text", None) or getattr(memo, "content", None) or str(memo)


@dataclass
class Recalled:
    id: int | None
    text: str

    def line(self) -> str:
        return f"- [memory {self.id}] {self.text}" if self.id is not None else f"- {self.text}"


def recalled(spec: AgentSpec, memory: Recalls | None, query: str, token_budget: int | None = None) -> list[Recalled]:
    """Memories for this turn: by relevance to the question (hybrid recall when the memory has
    it), topped up with recent ones; no more than ``max_context_memories`` and ``token_budget``."""
    limit = spec.memory.max_context_memories
    if memory is None or limit == 0:
        return []
    found: list[Recalled] = []
    if query.strip():
        found = [Recalled(getattr(m, "id", None), _memo_text(m)) for m in memory.search(query, limit)]
    if len(found) < limit:
        texts = {r.text for r in found}
        for memo in memory.recent(limit):
            if _memo_text(memo) not in texts:
                found.append(Recalled(getattr(memo, "id", None), _memo_text(memo)))
            if len(found) >= limit:
                break
    if token_budget is not None:
        kept, used = [], 0
        for item in found:
            cost = text_tokens(item.line()) + 1
            if used + cost > token_budget:
                continue
            kept.append(item)
            used += cost
        found = kept
    return found


def system_message(spec: AgentSpec, memories: Sequence[Recalled | str]) -> dict[str, str]:
    parts = [spec.identity.system_prompt.strip(), personality_instructions(spec)]
    if memories:
        lines = [m.line() if isinstance(m, Recalled) else f"- {m}" for m in memories]
        parts.append("Things you remember (from your memory; use them when relevant):\n" + "\n".join(lines))
    return {"role": "system", "content": "\n\n".join(p for p in parts if p)}


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # OpenAI content parts
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


@dataclass
class Context:
    """The messages for the model, the ids of the memories in them, and the conversation's
    oldest messages that did not fit the window (to be summarized)."""

    messages: list[dict[str, Any]]
    memory_ids: list[int] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)


def budget_of(spec: AgentSpec) -> Budget:
    return Budget.of(spec.model.context_window, spec.model.max_tokens)


def request_limit(spec: AgentSpec) -> int:
    """The largest request body the agent's API accepts: ``runtime.max_request_bytes``, else
    :attr:`~den.runtime.memory.budget.Budget.request_bytes` of its window."""
    return spec.runtime.max_request_bytes or budget_of(spec).request_bytes


def _characters(message: dict[str, Any]) -> int:
    content = message.get("content")
    if isinstance(content, list):
        return sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
    return len(content) if isinstance(content, str) else 0


def overflow(spec: AgentSpec, messages: Sequence[dict[str, Any]]) -> str | None:
    """Why the newest user message (else the last message) cannot be answered, or None.

    It must fit the prompt budget by itself, next to the agent's system prompt (older messages
    are left out to fit, recalled memories are optional): its estimated tokens (the larger of
    characters / 4 and words x 4/3, as everywhere) are compared with what is left. A message
    whose characters alone are over is refused on its length, without reading it."""
    if not messages:
        return None
    newest = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1])
    budget = budget_of(spec)
    room = budget.prompt - message_tokens(system_message(spec, []))
    least = math.ceil(_characters(newest) / 4) + MESSAGE_OVERHEAD
    used = least if least > room else message_tokens(newest)
    if used <= room:
        return None
    return (f"This agent's model has a context window of {budget.window} tokens; after the answer's "
            f"{budget.completion}, a safety margin and the agent's system prompt, {room} are left for a "
            f"message, and the newest message is {'at least ' if used == least else ''}{used} tokens "
            "(estimated: the larger of characters / 4 and words x 4/3). Shorten the message, or raise "
            "model.context_window in the Agentfile.")


def build_context(spec: AgentSpec, memory: Recalls | None, conversation: list[dict[str, Any]]) -> Context:
    """System message first, then the conversation without any system messages the client sent
    (the agent's identity is not the client's to replace; the client's go after it); the oldest
    turns are left out when the whole would not fit the model's window.

    Recall reads the memory store (SQLite): async callers run this in a thread."""
    budget = budget_of(spec)
    client_system = [m for m in conversation if m.get("role") == "system"]
    rest = [m for m in conversation if m.get("role") != "system"]
    memories = recalled(spec, memory, query_of(last_user_text(conversation)), budget.memories)
    head = [system_message(spec, memories)]
    head += [{"role": "system", "content": m.get("content", "")} for m in client_system]
    fitted = fit(head, rest, budget.prompt)
    return Context(fitted.messages, [m.id for m in memories if m.id is not None], fitted.dropped)
