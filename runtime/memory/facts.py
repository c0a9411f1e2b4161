"""Fact extraction: after a turn (off the response path) the model reads the turn and the
nearest existing facts and answers, as JSON, what to do with each fact it sees.

Like mem0, one decision per candidate (ADD, UPDATE, DELETE, NOOP) against
numbered existing facts; unlike mem0's users' complaints, Den guards the
answer: the numbers are small integers mapped back by Den (an id the model
invents is ignored, never trusted), an exact or near duplicate of a current
fact is a NOOP whatever the model says, UPDATE supersedes (the old fact keeps
its row with ``superseded_by``), DELETE marks a fact invalid and at most
:data:`MAX_DELETES` facts go per turn, so one bad answer cannot empty the store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from den.runtime.memory.store import Fact, MemoryStore, norm

#: The first line of the extraction prompt (the scripted model answers it with its fact rule).
MARKER = "DEN-FACT-EXTRACTION"
MAX_DELETES = 2
EVENTS = ("ADD", "UPDATE", "DELETE", "NOOP")

INSTRUCTIONS = f"""{MARKER}
You keep the long-term facts an assistant knows about its user and their world.
Read the conversation and the numbered existing facts. For every durable fact the
conversation states or changes (preferences, names, places, plans, relationships),
answer one decision:
- ADD: a new fact;
- UPDATE: it changes existing fact <id> (give the new subject/predicate/object);
- DELETE: the conversation says existing fact <id> is no longer true;
- NOOP: existing fact <id> already says it.
Use only the ids listed. Facts are short: subject, predicate, object ("user", "favourite colour", "blue").
Answer with JSON only:
{{"facts": [{{"event": "ADD", "subject": "...", "predicate": "...", "object": "...", "confidence": 0.9}},
            {{"event": "UPDATE", "id": 0, "subject": "...", "predicate": "...", "object": "...", "confidence": 0.9}}]}}
If there is nothing to remember, answer {{"facts": []}}."""


def prompt(existing: Sequence[Fact], conversation: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The extraction request; existing facts are numbered 0..n-1 (see :func:`decide`)."""
    lines = [f"{n}: {f.subject} | {f.predicate} | {f.object}" for n, f in enumerate(existing)]
    talk = [f"{m.get('role')}: {m.get('content')}" for m in conversation
            if m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str) and m.get("content")]
    body = ("Existing facts:\n" + ("\n".join(lines) or "(none)") + "\n\nConversation:\n" + "\n".join(talk))
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": body}]


@dataclass
class Candidate:
    event: str
    subject: str = ""
    predicate: str = ""
    object: str = ""
    confidence: float = 0.8
    ref: int | None = None  # the small number the model was shown


def parse(reply: str) -> list[Candidate]:
    """Candidates from the model's answer; anything malformed is dropped, not guessed at."""
    text = reply.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1)
    start = text.find("{")
    if start < 0:
        return []
    try:
        data, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return []
    items = data.get("facts") if isinstance(data, dict) else None
    found: list[Candidate] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        event = str(item.get("event", "ADD")).upper()
        if event not in EVENTS:
            continue
        ref = item.get("id")
        candidate = Candidate(
            event, *(str(item.get(k) or "").strip()[:300] for k in ("subject", "predicate", "object")),
            confidence=_confidence(item.get("confidence")),
            ref=ref if isinstance(ref, int) and not isinstance(ref, bool) else None)
        if event in ("ADD", "UPDATE") and not (candidate.subject and candidate.predicate and candidate.object):
            continue
        found.append(candidate)
    return found


def _confidence(value: Any) -> float:
    try:
        return min(1.0, max(0.0, float(value)))
    except (TypeError, ValueError):
        return 0.8


@dataclass
class Decision:
    event: str
    fact: Fact | None = None  # the fact added (ADD, UPDATE)
    old: Fact | None = None  # the fact updated, deleted or matched (UPDATE, DELETE, NOOP)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.event, "fact": self.fact.as_dict() if self.fact else None,
                "old": self.old.as_dict() if self.old else None, "reason": self.reason}


def same(fact: Fact, candidate: Candidate) -> bool:
    return (norm(fact.subject), norm(fact.predicate), norm(fact.object)) == (
        norm(candidate.subject), norm(candidate.predicate), norm(candidate.object))


def decide(store: MemoryStore, existing: Sequence[Fact], candidates: Sequence[Candidate], *,
           source: str = "") -> list[Decision]:
    """Apply the model's decisions to the store, with Den's guards (module docstring)."""
    decisions: list[Decision] = []
    deletes = 0
    for candidate in candidates:
        shown = existing[candidate.ref] if candidate.ref is not None and 0 <= candidate.ref < len(existing) else None
        if shown is not None:
            shown = store.fact(shown.id)  # it may have changed since the prompt was built
            if shown is None or shown.status != "current":
                shown = None
        if candidate.event == "NOOP":
            decisions.append(Decision("NOOP", old=shown, reason="the model found it known"))
            continue
        if candidate.event == "DELETE":
            if shown is None:
                decisions.append(Decision("NOOP", reason="DELETE of an id that was not shown: ignored"))
            elif deletes >= MAX_DELETES:
                decisions.append(Decision("NOOP", old=shown, reason=f"more than {MAX_DELETES} deletes in one turn"))
            else:
                store.invalidate_fact(shown.id)
                deletes += 1
                decisions.append(Decision("DELETE", old=shown))
            continue
        duplicate = _duplicate(store, candidate)
        if duplicate is not None:
            decisions.append(Decision("NOOP", old=duplicate, reason="already a current fact"))
            continue
        if candidate.event == "UPDATE" and shown is not None:
            fact = store.add_fact(candidate.subject, candidate.predicate, candidate.object,
                                  candidate.confidence, source, supersedes=shown.id)
            decisions.append(Decision("UPDATE", fact=fact, old=shown))
            continue
        fact = store.add_fact(candidate.subject, candidate.predicate, candidate.object, candidate.confidence, source)
        decisions.append(Decision("ADD", fact=fact, reason="" if candidate.event == "ADD" else "UPDATE of an unknown id"))
    return decisions


_FILLER = frozenset({"a", "an", "the", "is", "are", "was", "of", "my", "to", "for", "in", "on", "at", "and"})


def content_words(text: str) -> frozenset[str]:
    """Words that carry meaning, singular: ``The dogs`` and ``dog`` are the same."""
    return frozenset(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in norm(text).split() if w not in _FILLER)


def near(fact: Fact, candidate: Candidate) -> bool:
    """The same statement in other words: same subject, same content words in predicate and object."""
    return (content_words(fact.subject) == content_words(candidate.subject)
            and content_words(f"{fact.predicate} {fact.object}")
            == content_words(f"{candidate.predicate} {candidate.object}"))


def _duplicate(store: MemoryStore, candidate: Candidate) -> Fact | None:
    for fact in store.facts():
        if same(fact, candidate) or near(fact, candidate):
            return fact
    return None
