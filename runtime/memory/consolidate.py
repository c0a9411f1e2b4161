"""After a turn, off the response path: extract facts, summarize what the window dropped.

The chat completion is answered first; :meth:`Consolidator.after_turn` only
queues a task. Tasks run one at a time (so two turns never decide facts
against the same snapshot), each model call kept within the window like any
other (the conversation excerpt is cut to fit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from den.api.agentfile import AgentSpec
from den.runtime.memory import facts as facts_mod
from den.runtime.memory.agent import AgentMemory
from den.runtime.memory.budget import Budget, digest, fit, text_tokens

log = logging.getLogger("den.runtime.memory")

SUMMARY_MARKER = "DEN-SUMMARY"
SUMMARY_INSTRUCTIONS = (f"{SUMMARY_MARKER}\nSummarize this earlier part of a conversation in a few sentences: "
                        "who said what that matters later (names, decisions, preferences, open questions). "
                        "Answer with the summary only.")
SUMMARY_BATCH = 6  # summarize once a sixth of the prompt budget has been dropped unsummarized
EXCERPT_MESSAGES = 6  # fact extraction reads the turn and a little before it


class Consolidator:
    def __init__(self, spec: AgentSpec, memory: AgentMemory, model: Any) -> None:
        self.spec = spec
        self.memory = memory
        self.model = model
        self.budget = Budget.of(spec.model.context_window, spec.model.max_tokens)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self.counts = {"facts_added": 0, "facts_updated": 0, "facts_deleted": 0, "noop": 0,
                       "summaries": 0, "failures": 0}

    def after_turn(self, conversation: Sequence[dict[str, Any]], answer: str,
                   dropped: Sequence[dict[str, Any]], source: str = "", used: Sequence[int] = ()) -> None:
        """Queue the work of a finished turn; ``used``: the memories its context held (their
        access time and count are updated here, not on the response path)."""
        talk = [m for m in conversation if m.get("role") in ("user", "assistant")]
        talk = [*talk, {"role": "assistant", "content": answer}]
        task = asyncio.create_task(self._run(talk, list(dropped), source, list(used)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the queued work (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(self, talk: list[dict[str, Any]], dropped: list[dict[str, Any]], source: str,
                   used: list[int]) -> None:
        async with self._lock:
            try:
                if used:
                    await asyncio.to_thread(self.memory.store.touch, used)
                if dropped:
                    await self._summarize(dropped, source)
                if self.spec.memory.fact_extraction:
                    await self._extract(talk, source)
            except Exception as exc:  # the answer went out already: count it, log it, carry on
                self.counts["failures"] += 1
                log.warning("memory consolidation failed: %s", exc)

    async def _extract(self, talk: list[dict[str, Any]], source: str) -> None:
        room = self.budget.prompt * 4  # characters: the estimate never fits more in the window
        excerpt = [{**m, "content": m["content"][-room:]} if isinstance(m.get("content"), str) else m
                   for m in talk[-EXCERPT_MESSAGES:]]
        last_user = next((m.get("content") for m in reversed(excerpt) if m.get("role") == "user"), "")
        existing = await asyncio.to_thread(self.memory.nearest_facts, str(last_user or ""), 10)
        messages = facts_mod.prompt(existing, excerpt)
        messages = fit(messages[:1], messages[1:], self.budget.prompt).messages
        reply = await self.model.complete(messages)
        decisions = await asyncio.to_thread(self.memory.apply_facts, existing, reply.content, source)
        for decision in decisions:
            key = {"ADD": "facts_added", "UPDATE": "facts_updated", "DELETE": "facts_deleted"}.get(decision.event, "noop")
            self.counts[key] += 1

    async def _summarize(self, dropped: list[dict[str, Any]], source: str) -> None:
        fresh = [m for m in dropped if m.get("role") in ("user", "assistant") and m.get("content")]
        digests = [digest(m) for m in fresh]
        seen = await asyncio.to_thread(self.memory.store.summarized, digests)
        todo = [(d, m) for d, m in zip(digests, fresh, strict=True) if d not in seen]
        if sum(text_tokens(str(m["content"])) for _, m in todo) < self.budget.prompt // SUMMARY_BATCH:
            return  # wait until enough has been dropped to be worth a model call
        room = self.budget.prompt - text_tokens(SUMMARY_INSTRUCTIONS) - 16
        while todo:
            chunk, used = [], 0
            while todo and (not chunk or used + text_tokens(str(todo[0][1]["content"])) + 8 <= room):
                item = todo.pop(0)
                chunk.append(item)
                used += text_tokens(str(item[1]["content"])) + 8
            transcript = "\n".join(f"{m['role']}: {m['content']}" for _, m in chunk)
            messages = fit([{"role": "system", "content": SUMMARY_INSTRUCTIONS}],
                           [{"role": "user", "content": transcript}], self.budget.prompt).messages
            reply = await self.model.complete(messages)
            text = clip(reply.content.strip(), max(40, self.budget.memories // 3))
            memory = None
            if text:
                memory = await asyncio.to_thread(self.memory.write, f"Earlier in a conversation: {text}", "",
                                                 kind="summary", source=source or "summary", importance=0.4)
                self.counts["summaries"] += 1
            await asyncio.to_thread(self.memory.store.mark_summarized, [d for d, _ in chunk],
                                    memory.id if memory else None)


def clip(text: str, max_tokens: int) -> str:
    """At most ``max_tokens`` (estimated) of ``text``, cut at a word."""
    if text_tokens(text) <= max_tokens:
        return text
    words = text.split()
    keep = max(1, (max_tokens * 3) // 4)
    cut = " ".join(words[:keep])[: max_tokens * 4]
    return cut + " ..."
