"""Structured loops: research, plan, execute, verify (each capped by ``max_iterations``).

A run is started by ``POST /den/v1/runs`` with a goal and a loop (or the
chain of every loop the Agentfile declares, in its order), or by a cron
entry that names a loop. Each loop iteration is one agent turn (which may
call the loop's own tools), and the run records every iteration so its steps
and outcome can be read back afterwards.

The model signals its verdicts with a leading word, which keeps the
protocol readable in logs and easy to script in tests:

- research: ``SUFFICIENT: <findings>`` ends the loop; anything else continues;
- plan: a JSON list of step strings (validated; retried when invalid);
- execute: ``FAILED: <why>`` stops the run at that step; anything else is done;
- verify: a JSON verdict ``{"pass": bool, "reason": str}`` per attempt; on a
  fail the agent is asked to fix the work, then verified again.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from den.api.agentfile import AgentSpec, LoopSpec
from den.runtime.agent.checks import parse_verdict
from den.runtime.agent.loop import AgentLoop
from den.runtime.sqlite import open_db

MAX_PLAN_STEPS = 20


@dataclass
class Iteration:
    loop: str
    number: int
    prompt: str
    answer: str
    tools: list[str] = field(default_factory=list)
    verdict: str = ""


@dataclass
class Run:
    id: str
    goal: str
    loops: list[str]
    status: str = "running"  # running | succeeded | failed | exhausted
    outcome: str = ""
    iterations: list[Iteration] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)
    done_steps: list[str] = field(default_factory=list)
    pending_steps: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunError(ValueError):
    """The request names a loop the Agentfile does not declare (a 422)."""


class LoopRunner:
    def __init__(self, spec: AgentSpec, agent_loop: AgentLoop, store: RunStore | None = None) -> None:
        self.spec = spec
        self.agent_loop = agent_loop
        self.store = store
        self.declared = {loop.type: loop for loop in spec.loops}

    def resolve(self, loop: str | None, chain: bool) -> list[LoopSpec]:
        if chain or loop is None:
            if not self.spec.loops:
                raise RunError("this agent declares no loops (add them under `loops` in its Agentfile)")
            return list(self.spec.loops)
        if loop not in self.declared:
            raise RunError(f"loop {loop!r} is not declared; this agent has {sorted(self.declared) or 'none'}")
        return [self.declared[loop]]

    async def _turn(self, run: Run, loop: LoopSpec, number: int, prompt: str) -> Iteration:
        turn = await self.agent_loop.run([{"role": "user", "content": prompt}], allowed_tools=list(loop.tools))
        run.prompt_tokens += turn.usage.prompt_tokens
        run.completion_tokens += turn.usage.completion_tokens
        run.cost_usd += turn.usage.cost_usd
        iteration = Iteration(str(loop.type), number, prompt, turn.content, [s.tool for s in turn.steps])
        run.iterations.append(iteration)
        await self._save(run)
        return iteration

    async def _save(self, run: Run) -> None:
        if self.store is not None:  # SQLite: off the event loop
            await asyncio.to_thread(self.store.save, run)

    async def start(self, goal: str, loop: str | None = None, chain: bool = False) -> Run:
        loops = self.resolve(loop, chain)
        run = Run(id=f"run-{uuid.uuid4().hex[:12]}", goal=goal, loops=[str(item.type) for item in loops])
        await self._save(run)
        context = ""
        for spec in loops:
            handler = getattr(self, f"_{spec.type}")
            ok, context = await handler(run, spec, goal, context)
            if not ok:
                break
        else:
            run.status = "succeeded"
            run.outcome = context
        run.finished = time.time()
        await self._save(run)
        return run

    async def _research(self, run: Run, loop: LoopSpec, goal: str, context: str) -> tuple[bool, str]:
        findings: list[str] = []
        for number in range(1, loop.max_iterations + 1):
            prompt = (
                f"Research goal: {goal}\n"
                + (f"Context so far:\n{context}\n" if context else "")
                + ("Findings so far:\n" + "\n".join(findings) + "\n" if findings else "")
                + "Use your tools to gather what is missing. When the information is sufficient, "
                "reply 'SUFFICIENT:' followed by a summary of the findings; otherwise reply "
                "'CONTINUE:' and what you learned and still need."
            )
            iteration = await self._turn(run, loop, number, prompt)
            if iteration.answer.strip().upper().startswith("SUFFICIENT"):
                iteration.verdict = "sufficient"
                return True, _after_colon(iteration.answer)
            iteration.verdict = "continue"
            findings.append(_after_colon(iteration.answer))
        run.status = "exhausted"
        run.outcome = f"research stopped after {loop.max_iterations} iterations without sufficient information"
        return False, "\n".join(findings)

    async def _plan(self, run: Run, loop: LoopSpec, goal: str, context: str) -> tuple[bool, str]:
        problem = ""
        for number in range(1, loop.max_iterations + 1):
            prompt = (
                f"Plan how to achieve: {goal}\n"
                + (f"What is known:\n{context}\n" if context else "")
                + (f"Your previous plan was rejected: {problem}\n" if problem else "")
                + f"Reply with only a JSON list of at most {MAX_PLAN_STEPS} short step strings."
            )
            iteration = await self._turn(run, loop, number, prompt)
            steps, problem = parse_plan(iteration.answer)
            if steps:
                iteration.verdict = "committed"
                run.plan = steps
                return True, "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
            iteration.verdict = f"rejected: {problem}"
        run.status = "failed"
        run.outcome = f"no valid plan after {loop.max_iterations} attempts: {problem}"
        return False, context

    async def _execute(self, run: Run, loop: LoopSpec, goal: str, context: str) -> tuple[bool, str]:
        steps = list(run.plan) or [goal]
        run.pending_steps = list(steps)
        results = []
        for number, step in enumerate(steps, 1):
            if number > loop.max_iterations:
                run.status = "exhausted"
                run.outcome = f"executed {number - 1} of {len(steps)} steps (max_iterations {loop.max_iterations})"
                return False, "\n".join(results)
            iteration = await self._turn(
                run, loop, number,
                f"Goal: {goal}\nExecute step {number} of {len(steps)}: {step}\n"
                "Use your tools. Reply with what you did, or 'FAILED:' and why if the step cannot be done.",
            )
            if iteration.answer.strip().upper().startswith("FAILED"):
                iteration.verdict = "failed"
                run.status = "failed"
                run.outcome = (
                    f"step {number} failed: {_after_colon(iteration.answer)}; done: {run.done_steps or 'none'}; "
                    f"not done: {run.pending_steps}"
                )
                return False, "\n".join(results)
            iteration.verdict = "done"
            run.done_steps.append(step)
            run.pending_steps.remove(step)
            results.append(f"{step}: {iteration.answer}")
        return True, "\n".join(results)

    async def _verify(self, run: Run, loop: LoopSpec, goal: str, context: str) -> tuple[bool, str]:
        criteria = loop.criteria or [f"The work achieves the goal: {goal}"]
        for number in range(1, loop.max_iterations + 1):
            prompt = (
                f"Verify this work against the criteria.\nGoal: {goal}\nWork:\n{context}\nCriteria:\n"
                + "\n".join(f"- {c}" for c in criteria)
                + '\nReply with JSON only: {"pass": true or false, "reason": "..."}'
            )
            iteration = await self._turn(run, loop, number, prompt)
            verdict, reason = parse_verdict(iteration.answer)
            if verdict:
                iteration.verdict = "pass"
                return True, context
            iteration.verdict = f"fail: {reason}"
            if number < loop.max_iterations:
                fix = await self._turn(
                    run, loop, number,
                    f"The work failed verification: {reason}\nGoal: {goal}\nFix the work and describe the result.",
                )
                context = fix.answer
        run.status = "failed"
        run.outcome = f"verification failed after {loop.max_iterations} attempts"
        return False, context


def _after_colon(text: str) -> str:
    head, sep, rest = text.partition(":")
    return rest.strip() if sep and head.strip().isalpha() and head.strip().isupper() else text.strip()


def parse_plan(text: str) -> tuple[list[str], str]:
    match = re.search(r"\[.*\]", text, re.S)
    if not match:
        return [], "no JSON list found"
    try:
        steps = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        return [], f"not valid JSON: {exc.msg}"
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        return [], "expected a non-empty list of step strings"
    if len(steps) > MAX_PLAN_STEPS:
        return [], f"{len(steps)} steps; at most {MAX_PLAN_STEPS}"
    return [s.strip() for s in steps], ""


class RunStore:
    """Runs kept on the agent's volume so their steps can be read after the fact."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_db(path, "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, started REAL, body TEXT)")

    def save(self, run: Run) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO runs VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                (run.id, run.started, json.dumps(run.as_dict())),
            )

    def get(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM runs WHERE id = ?", (run_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM runs ORDER BY started DESC LIMIT ?", (limit,)).fetchall()
        return [json.loads(r[0]) for r in rows]
