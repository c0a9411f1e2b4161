"""Bounded pieces of text: the memory never embeds, indexes or searches a long text whole.

Measured before these bounds (a 1 MB user message, ``"word " * 210000``): wordllama embedded
the whole message as one text (a 210,000 x 256 float32 token matrix, and its tokenizer's
encodings: ~485 MiB; ~1.2 GiB for varied words), once for recall and once more for fact
extraction; an indexer batch pads every text to the longest one, so one long memory in a
batch of 64 multiplied that. Now:

- a memory holds at most :data:`CHUNK_CHARS` characters: a longer text is written as
  several memories, cut at paragraph, sentence or word boundaries (:func:`chunks`);
- recall reads the last :data:`QUERY_CHARS` characters of a long question (:func:`query_of`;
  the question usually comes at the end of what was pasted), and keyword search at most
  :data:`QUERY_TERMS` distinct words of it;
- the embedders cut every input to :data:`EMBED_CHARS` (nothing longer should reach them,
  but an old store's memories or an import might);
- words are counted a slice at a time (:func:`count_words`), never by splitting the text whole.
"""

from __future__ import annotations

import re

CHUNK_CHARS = 2000
QUERY_CHARS = 1000
QUERY_TERMS = 64
EMBED_CHARS = CHUNK_CHARS
_SLICE = 65536
_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


def chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """``text`` in pieces of at most ``size`` characters, each cut after the last paragraph,
    sentence or word break in its second half (mid-word only for a word longer than half of
    ``size``); pieces are stripped and never empty. A short text is one piece, as given."""
    if len(text) <= size:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            window = text[start + size // 2:end]
            for mark in _BREAKS:
                found = window.rfind(mark)
                if found >= 0:
                    end = start + size // 2 + found + len(mark)
                    break
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        start = end
    return pieces or [text[:size]]


def query_of(text: str, size: int = QUERY_CHARS) -> str:
    """What recall searches for: ``text``, or its last ``size`` characters from a word start."""
    if len(text) <= size:
        return text
    tail = text[-size:]
    cut = re.search(r"\s", tail)
    return tail[cut.end():] if cut and cut.end() < len(tail) else tail


def terms(text: str, limit: int = QUERY_TERMS) -> list[str]:
    """The distinct lowercased words of ``text`` (its first ``limit``)."""
    found: dict[str, None] = {}
    for match in re.finditer(r"\w+", text.lower()):
        found.setdefault(match.group(), None)
        if len(found) >= limit:
            break
    return list(found)


def count_words(text: str) -> int:
    """``len(text.split())`` in bounded memory: a slice of 64 KiB at a time."""
    if len(text) <= _SLICE:
        return len(text.split())
    total = 0
    joined = False  # the previous slice ended inside a word
    for start in range(0, len(text), _SLICE):
        piece = text[start:start + _SLICE]
        total += len(piece.split())
        if joined and not piece[0].isspace():
            total -= 1  # one word across the boundary, counted in both slices
        joined = not piece[-1].isspace()
    return total
