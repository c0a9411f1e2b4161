"""Recall ranking, pure (no SQL, no I/O): fusion, weighting, graph activation.

1. The vector ranking (KNN) and the keyword ranking (FTS5 BM25) are fused by
   reciprocal rank fusion: ``sum 1 / (k + rank)`` over the rankings a memory
   appears in (k = 60, as in Cormack et al.), so agreement beats one strong
   rank and neither score scale matters.
2. Each fused score is weighted by recency (half-life decay on the last
   access or creation) and importance.
3. Graph activation spreads from the recalled memories through the entities
   they share with others: a neighbour gets ``score * decay / log2(1 + fan)``
   per hop (fan: how many memories share that entity, so a hub entity spreads
   little), up to ``hops`` hops, the most activated few spreading further; it
   joins the candidates even when neither ranking found it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

RRF_K = 60
HALF_LIFE_DAYS = 30.0


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion of best-first id lists."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, memory_id in enumerate(ranking, start=1):
            fused[memory_id] = fused.get(memory_id, 0.0) + 1.0 / (k + rank)
    return fused


def _age_days(stamp: str | None, now: datetime) -> float:
    if not stamp:
        return 0.0
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (now - when).total_seconds() / 86400.0)


@dataclass(frozen=True)
class Traits:
    """What weighting reads of a memory."""

    created: str
    accessed: str | None
    importance: float


def weight(traits: Traits, now: datetime, half_life_days: float = HALF_LIFE_DAYS) -> float:
    """In [0.45, 1.25]: recency (0.7..1.0 by half-life) times importance (0.75..1.25)."""
    age = _age_days(traits.accessed or traits.created, now)
    recency = 0.5 ** (age / half_life_days)
    importance = min(1.0, max(0.0, traits.importance))
    return (0.7 + 0.3 * recency) * (0.75 + 0.5 * importance)


def weigh(fused: Mapping[int, float], traits: Mapping[int, Traits], now: datetime | None = None) -> dict[int, float]:
    now = now or datetime.now(UTC)
    return {i: score * weight(traits[i], now) for i, score in fused.items() if i in traits}


@dataclass
class Graph:
    """Entities of memories, and memories of entities (as much of it as activation asked for)."""

    entities_of: Mapping[int, Sequence[str]]
    memories_of: Mapping[str, Sequence[int]]


def activate(seeds: Mapping[int, float], expand: Callable[[Iterable[int]], Graph], *,
             hops: int = 2, decay: float = 0.5, breadth: int = 20) -> dict[int, float]:
    """Memories reached from ``seeds`` through shared entities (not the seeds themselves), with
    their activation; ``expand(ids)`` returns the graph around ``ids``. Only the ``breadth``
    most activated memories of a hop spread further."""
    reached: dict[int, float] = {}
    frontier = dict(seeds)
    for _ in range(hops):
        if not frontier:
            break
        graph = expand(frontier.keys())
        spread: dict[int, float] = {}
        for memory_id, score in frontier.items():
            for entity in graph.entities_of.get(memory_id, ()):
                sharing = graph.memories_of.get(entity, ())
                gain = score * decay / math.log2(1 + max(1, len(sharing)))
                for other in sharing:
                    if other in seeds or other == memory_id:
                        continue
                    spread[other] = max(spread.get(other, 0.0), gain)
        frontier = {}
        for memory_id, score in spread.items():
            if score > reached.get(memory_id, 0.0):
                reached[memory_id] = score
                frontier[memory_id] = score
        frontier = dict(sorted(frontier.items(), key=lambda item: -item[1])[:breadth])
    return reached


@dataclass
class Ranked:
    id: int
    score: float
    via: str  # "vector+keyword" | "vector" | "keyword" | "graph" | "recent"


def rank(vector: Sequence[int], keyword: Sequence[int], traits: Mapping[int, Traits],
         expand: Callable[[Iterable[int]], Graph] | None, limit: int, *, hops: int = 2,
         decay: float = 0.5, now: datetime | None = None) -> list[Ranked]:
    """The best ``limit`` memories: fused and weighted rankings, then graph activation."""
    fused = weigh(rrf([vector, keyword]), traits, now)
    in_vector, in_keyword = set(vector), set(keyword)
    ranked = [Ranked(i, s, "+".join(n for n, found in (("vector", i in in_vector), ("keyword", i in in_keyword))
                                    if found)) for i, s in fused.items()]
    ranked.sort(key=lambda r: (-r.score, -r.id))
    seeds = {r.id: r.score for r in ranked[:limit]}
    if expand is not None and seeds and hops > 0:
        for memory_id, score in activate(seeds, expand, hops=hops, decay=decay).items():
            if memory_id not in fused:
                ranked.append(Ranked(memory_id, score, "graph"))
        ranked.sort(key=lambda r: (-r.score, -r.id))
    return ranked[:limit]
