"""What the running API knows: the agent, its environment, readiness and counters."""

from __future__ import annotations

import asyncio
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
    response_store: Any = None  # the Responses API's stored responses (previous_response_id)
    interceptor: Any = None
    memory: Any = None
    consolidator: Any = None
    runs: Any = None
    home: Path | None = None
    cost_usd: float = 0.0
    refused_for_budget: int = 0
    check_counts: dict[str, int] = field(default_factory=dict)
    cron: Any = None
    scheduler: Any = None
    config_path: Path | None = None
    _config_seen: tuple[int, int] | None = None
    #: One reload at a time: each reads the tasks and the manifest afresh, so the last to
    #: finish is never older than the last change (a delivered manifest's reload racing a
    #: task the model just scheduled once set the entries without that task).
    _cron_reload: asyncio.Lock = field(default_factory=asyncio.Lock)

    def attach_agent_loop(self, home: Path | None) -> None:
        """The agent loop this API answers with; sessions persist under ``home`` when given."""
        import tempfile

        from den.runtime.agent.checks import CheckRunner
        from den.runtime.agent.context import request_limit
        from den.runtime.agent.loop import AgentLoop
        from den.runtime.agent.loops import LoopRunner, RunStore
        from den.runtime.agent.model import ModelClient
        from den.runtime.agent.sessions import Sessions
        from den.runtime.cron import CronRunner, CronStore
        from den.runtime.memory.agent import AgentMemory
        from den.runtime.memory.consolidate import Consolidator
        from den.runtime.scheduler import TaskScheduler
        from den.runtime.tools.base import NetworkPolicy, ToolContext
        from den.runtime.tools.registry import ToolInterceptor, tools_for

        spec = self.agent.spec
        if home is None:  # tests and `create_app` without a volume: a private scratch home
            home = Path(tempfile.mkdtemp(prefix=f"den-{self.agent.name}-"))
        else:
            self.sessions = Sessions(home / ".den" / "sessions.db", max_bytes=request_limit(spec))
        self.home = home
        self.response_store = Sessions(home / ".den" / "responses.db", max_bytes=request_limit(spec))
        self.memory = AgentMemory(self._memory_store(home), spec.memory, self._embedder())
        self.scheduler = TaskScheduler(home / ".den" / "schedule.db", max_tasks=spec.runtime.max_tasks,
                                       min_interval=spec.runtime.task_min_interval,
                                       reserved=lambda: {c.name for c in self.agent.spec.cron})
        self.scheduler.changed = self.reload_cron
        context = ToolContext(
            agent=self.agent.name, home=home,
            network=NetworkPolicy(str(spec.runtime.network), list(spec.runtime.allow)),
            memory=self.memory, scheduler=self.scheduler,
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
        self.cron = CronRunner(CronStore(home / ".den" / "cron.db"), self.run_cron, memos=self.memory,
                               classify=_classify_cron_failure)

    # -- cron -----------------------------------------------------------------------

    async def cron_entries(self) -> list[Any]:
        from den.runtime.cron import entries_for

        tasks = await asyncio.to_thread(self.scheduler.list)
        return entries_for(self.agent.spec.cron, tasks)

    async def start_cron(self, config_path: Path | None = None) -> None:
        """Start the scheduler; with ``config_path`` (the manifest the operator delivers), a new
        manifest is noticed within a second and its cron entries replace the running ones."""
        self.config_path = config_path
        if config_path is not None:
            self._config_seen = _stat(config_path)
            self.cron.watch(self.check_config)
        async with self._cron_reload:
            await self.cron.start(await self.cron_entries())

    async def reload_cron(self) -> None:
        async with self._cron_reload:
            await self.cron.set_entries(await self.cron_entries())

    async def check_config(self) -> None:
        """Reload the cron entries when the operator delivered a new manifest."""
        import logging

        from den.runtime.settings import ConfigError, read_agent

        assert self.config_path is not None
        seen = _stat(self.config_path)
        if seen is None or seen == self._config_seen:
            return
        self._config_seen = seen
        try:
            agent = await asyncio.to_thread(read_agent, self.config_path)
        except ConfigError as exc:
            logging.getLogger("den.runtime").warning("delivered manifest ignored", extra={"fields": {"error": str(exc)}})
            return
        if (agent.name, agent.namespace) != (self.agent.name, self.agent.namespace):
            return
        self.agent = agent
        await self.reload_cron()
        logging.getLogger("den.runtime").info(
            "cron reloaded", extra={"fields": {"generation": agent.metadata.generation,
                                               "entries": [c.name for c in agent.spec.cron]}})

    async def run_cron(self, entry: Any, session: str) -> Any:
        """One cron run: the prompt through the agent loop (or the entry's loop or chain)."""
        from den.runtime.cron import Outcome

        if entry.loop or entry.chain:
            run = await self.runs.start(entry.prompt, entry.loop, entry.chain)
            self.prompt_tokens += run.prompt_tokens
            self.completion_tokens += run.completion_tokens
            self.cost_usd += run.cost_usd
            failed = "" if run.status == "succeeded" else f"the {'/'.join(run.loops)} run ended {run.status}"
            return Outcome(run.outcome, run.prompt_tokens, run.completion_tokens, run.cost_usd, failed)
        messages = [{"role": "user", "content": entry.prompt}]
        turn = await self.agent_loop.run(messages)
        self.record_usage(turn.usage.as_openai())
        self.cost_usd += turn.usage.cost_usd
        if self.sessions is not None:
            await asyncio.to_thread(self.sessions.save, session,
                                    [*messages, {"role": "assistant", "content": turn.content}])
        failed = "" if turn.stop_reason == "stop" else f"the agent stopped: {turn.stop_reason}"
        return Outcome(turn.content, turn.usage.prompt_tokens, turn.usage.completion_tokens,
                       turn.usage.cost_usd, failed)

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
            "cron": {"declared": [c.name for c in self.agent.spec.cron],
                     "tasks": [e.name for e in self.cron.entries() if e.origin == "agent"] if self.cron else []},
        }


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size)


def _classify_cron_failure(exc: BaseException) -> str | None:
    from den.runtime.agent.loops import RunError
    from den.runtime.agent.model import BudgetExceeded, ModelError

    if isinstance(exc, BudgetExceeded):
        return f"refused for budget: {exc}"
    if isinstance(exc, ModelError):
        return f"the model failed: {exc}"
    if isinstance(exc, RunError):
        return str(exc)
    return None
