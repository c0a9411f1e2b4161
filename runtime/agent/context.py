"""What the model sees every turn: identity, personality, recalled memories, then the conversation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from den.api.agentfile import AgentSpec

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


def recalled(spec: AgentSpec, memory: Recalls | None, query: str) -> list[str]:
    """Memories for this turn: by relevance to the question, topped up with recent ones."""
    limit = spec.memory.max_context_memories
    if memory is None or limit == 0:
        return []
    found: list[str] = []
    if query.strip():
        found = [_memo_text(m) for m in memory.search(query, limit)]
    if len(found) < limit:
        for memo in memory.recent(limit):
            text = _memo_text(memo)
            if text not in found:
                found.append(text)
            if len(found) >= limit:
                break
    return found


def system_message(spec: AgentSpec, memories: list[str]) -> dict[str, str]:
    parts = [spec.identity.system_prompt.strip(), personality_instructions(spec)]
    if memories:
        parts.append("Things you remember (from your memory; use them when relevant):\n"
                     + "\n".join(f"- {m}" for m in memories))
    return {"role": "system", "content": "\n\n".join(p for p in parts if p)}


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # OpenAI content parts
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def build_context(spec: AgentSpec, memory: Recalls | None, conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """System message first, then the conversation without any system messages the client sent
    (the agent's identity is not the client's to replace; the client's go after it).

    Recall reads the memory store (SQLite): async callers run this in a thread."""
    client_system = [m for m in conversation if m.get("role") == "system"]
    rest = [m for m in conversation if m.get("role") != "system"]
    messages = [system_message(spec, recalled(spec, memory, last_user_text(conversation)))]
    messages += [{"role": "system", "content": m.get("content", "")} for m in client_system]
    return messages + rest
