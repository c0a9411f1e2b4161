"""The context budget: what fits the model's window, and what must be summarized.

Tokens are estimated without a tokenizer, on the high side (the larger of a
quarter of the characters and four thirds of the words, plus a few for the
message frame), so a prompt that fits by this count fits the model. The
completion gets ``min(model.max_tokens, window / 4)``; the prompt the rest,
less a safety margin; recalled memories at most a quarter of the prompt.

The window also bounds what the agent's API accepts (:attr:`Budget.request_bytes`):
8 bytes of request body per token of window (a token is about 4 characters of
English; JSON escapes and UTF-8 take more bytes than characters, and a client
resends the conversation), at least 1 MiB and at most 32 MiB.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from den.runtime.memory.chunks import count_words

DEFAULT_CONTEXT_WINDOW = 8192
MESSAGE_OVERHEAD = 4
MARGIN = 0.05
MIB = 1024 * 1024
BYTES_PER_TOKEN = 8
MIN_REQUEST_BYTES = 1 * MIB
MAX_REQUEST_BYTES = 32 * MIB


def text_tokens(text: str) -> int:
    if not text:
        return 0
    return max(math.ceil(len(text) / 4), math.ceil(count_words(text) * 4 / 3))


def message_tokens(message: dict[str, Any]) -> int:
    content = message.get("content")
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    total = MESSAGE_OVERHEAD + text_tokens(str(content or ""))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        total += text_tokens(f"{function.get('name', '')} {function.get('arguments', '')}") + MESSAGE_OVERHEAD
    return total


def tokens(messages: Sequence[dict[str, Any]]) -> int:
    return sum(message_tokens(m) for m in messages)


@dataclass(frozen=True)
class Budget:
    window: int
    completion: int

    @classmethod
    def of(cls, context_window: int | None, max_tokens: int) -> Budget:
        window = context_window or DEFAULT_CONTEXT_WINDOW
        return cls(window, max(16, min(max_tokens, window // 4)))

    @property
    def prompt(self) -> int:
        return int(self.window * (1 - MARGIN)) - self.completion

    @property
    def memories(self) -> int:
        return self.prompt // 4

    @property
    def request_bytes(self) -> int:
        """The largest request body the agent accepts unless ``runtime.max_request_bytes`` says."""
        return min(MAX_REQUEST_BYTES, max(MIN_REQUEST_BYTES, self.window * BYTES_PER_TOKEN))


@dataclass
class Fitted:
    messages: list[dict[str, Any]]
    dropped: list[dict[str, Any]] = field(default_factory=list)


def fit(head: Sequence[dict[str, Any]], conversation: Sequence[dict[str, Any]], limit: int) -> Fitted:
    """``head`` (system messages) and as much of the end of ``conversation`` as fits in ``limit``
    tokens. A tool result never starts the kept part without the call it answers; the newest
    message is always kept, its text shortened (its end kept) when it alone is too long."""
    room = limit - tokens(head)
    kept: list[dict[str, Any]] = []
    used = 0
    index = len(conversation)
    for index in range(len(conversation) - 1, -1, -1):
        cost = message_tokens(conversation[index])
        if used + cost > room and kept:
            index += 1
            break
        kept.insert(0, conversation[index])
        used += cost
    else:
        index = 0
    while len(kept) > 1 and kept[0].get("role") == "tool":
        kept.pop(0)
        index += 1
    if used > room and kept:
        kept[-1] = shorten(kept[-1], max(1, room - MESSAGE_OVERHEAD))
    return Fitted([*head, *kept], list(conversation[:index]))


def shorten(message: dict[str, Any], budget: int) -> dict[str, Any]:
    """``message`` with only the end of its text: at most ``budget`` tokens by the estimate.
    Only the text's last few times ``budget`` characters are read (never the whole of it)."""
    content = str(message.get("content") or "")
    keep = max(1, (budget * 3) // 4 - 12)
    chars = max(1, budget * 4 - 200)
    end = content[-4 * chars:]
    words = end.split()
    if len(end) < len(content) and len(words) > 1 and not end[0].isspace():
        words = words[1:]  # a word cut by the slice
    tail = " ".join(words[-keep:])[-chars:]
    return {**message, "content": "[earlier part cut to fit the context window] " + tail}


def digest(message: dict[str, Any]) -> str:
    """A stable name for a message, to summarize each dropped message once."""
    return hashlib.sha256(json.dumps(message, sort_keys=True, default=str).encode()).hexdigest()[:32]
