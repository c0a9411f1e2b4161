"""What the running API knows: the agent, its environment, readiness and counters."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from den.api.resource import Agent

#: Environment variable names whose values are treated as secrets.
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)


@dataclass
class RuntimeState:
    """One per app; held in ``app.state.runtime`` and handed to routes by :mod:`den.runtime.deps`."""

    agent: Agent
    env: Mapping[str, str]
    extra_secrets: tuple[str, ...] = ()
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    agent_loop: Any = None
    sessions: Any = None
    interceptor: Any = None
    memory: Any = None
    consolidator: Any = None
    runs: Any = None
    home: Path | None = None
    cost_usd: float = 0.0
    refused_for_budget: int = 0
    check_counts: dict[str, int] = field(default_factory=dict)

    def attach_agent_loop(self, home: Path | None) -> None:
        """The agent loop this API answers with; sessions persist under ``home`` when given."""
        import tempfile

        from den.runtime.agent.checks import CheckRunner
        from den.runtime.agent.loop import AgentLoop
        from den.runtime.agent.loops import LoopRunner, RunStore
        from den.runtime.agent.model import ModelClient
        from den.runtime.agent.sessions import Sessions
        from den.runtime.memory.agent import AgentMemory
        from den.runtime.memory.consolidate import Consolidator
        from den.runtime.scheduler import TaskScheduler
        from den.runtime.tools.base import NetworkPolicy, ToolContext
        from den.runtime.tools.registry import ToolInterceptor, tools_for

        spec = self.agent.spec
        if home is None:  # tests and `create_app` without a volume: a private scratch home
            home = Path(tempfile.mkdtemp(prefix=f"den-{self.agent.name}-"))
        else:
            self.sessions = Sessions(home / ".den" / "sessions.db")
        self.home = home
        self.memory = AgentMemory(self._memory_store(home), spec.memory, self._embedder())
        context = ToolContext(
            agent=self.agent.name, home=home,
            network=NetworkPolicy(str(spec.runtime.network), list(spec.runtime.allow)),
            memory=self.memory, scheduler=TaskScheduler(home / ".den" / "schedule.db"),
            settings={"search_provider": self.env.get("DEN_SEARCH_PROVIDER", "searxng"),
                      "search_url": self.env.get("DEN_SEARCH_URL", ""),
                      "search_key": self.env.get("DEN_SEARCH_KEY", "")},
        )
        self.interceptor = ToolInterceptor(tools_for(spec), context)
        model = ModelClient(spec.model, self.env)
        checks = CheckRunner(spec.checks, model)
        self.agent_loop = AgentLoop(spec, model, self.interceptor, memory=self.memory, checks=checks)
        self.consolidator = Consolidator(spec, self.memory, model)
        self.check_counts = checks.counts
        self.runs = LoopRunner(spec, self.agent_loop, RunStore(home / ".den" / "runs.db"))

    def _memory_store(self, home: Path) -> Any:
        """SQLite on the volume, or Postgres at ``DEN_MEMORY_DSN`` with ``memory.backend: postgres``."""
        if self.agent.spec.memory.backend == "postgres":
            from den.runtime.memory.postgres import DSN_ENV, PostgresStore

            dsn = self.env.get(DSN_ENV)
            if not dsn:
                raise RuntimeError(f"memory.backend is postgres but {DSN_ENV} is not in the agent's environment "
                                   "(set it in runtime.env)")
            return PostgresStore(dsn)
        return home / ".den" / "memory.db"

    def _embedder(self) -> Any:
        from den.runtime.memory.embed import DEFAULT_MODEL, GatewayEmbedder, WordLlamaEmbedder

        spec = self.agent.spec
        if spec.memory.embedding_model == DEFAULT_MODEL:
            return WordLlamaEmbedder()
        return GatewayEmbedder.from_env(spec.memory.embedding_model, spec.model.base_url, spec.model.provider,
                                        self.env)

    def record_usage(self, usage: Mapping[str, Any] | None) -> None:
        if not usage:
            return
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)

    def _memory_status(self) -> dict[str, Any]:
        if self.memory is None:
            return {"memos": 0}
        counts = self.memory.store.counts()
        return {"memos": self.memory.count(), "counts": counts, "facts": len(self.memory.store.facts()),
                "size_bytes": self.memory.store.size_bytes(),
                "consolidation": dict(self.consolidator.counts) if self.consolidator else {}}

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line or an error body: the ones given as
        secrets (the env file's) and those of variables named like a key, token or password."""
        named = [v for k, v in self.env.items() if SECRET_NAME.search(k) and isinstance(v, str)]
        return [*self.extra_secrets, *named]

    def status(self) -> dict[str, Any]:
        model = self.agent.spec.model
        return {
            "name": self.agent.name,
            "namespace": self.agent.namespace,
            "model": f"{model.provider}/{model.name}",
            "uptime_seconds": round(time.monotonic() - self.started_at, 3),
            "generation": self.agent.metadata.generation,
            "ready": self.ready,
            "requests": self.requests,
            "errors": self.errors,
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "total": self.prompt_tokens + self.completion_tokens,
            },
            "cost_usd": round(self.cost_usd, 6),
            "usage": {"source": "agent", "requests": self.requests, "refused": self.refused_for_budget,
                      "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens,
                                 "total": self.prompt_tokens + self.completion_tokens},
                      "cost_usd": round(self.cost_usd, 6),
                      "budget": self.agent.spec.runtime.budget.model_dump()},
            "checks": dict(self.check_counts),
            "sessions": self.sessions.count() if self.sessions is not None else 0,
            "tools": self.interceptor.stats() if self.interceptor is not None else {},
            "memory": self._memory_status(),
            "cron": {"declared": [c.name for c in self.agent.spec.cron]},
        }
