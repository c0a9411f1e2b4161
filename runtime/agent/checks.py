"""``before_respond`` checks: judge an answer before it goes out.

Two kinds: ``regex`` (deterministic: the answer must match ``pattern``) and
``llm`` (a judge prompt built from the check's description; the model answers
with JSON ``{"pass": true|false, "reason": "..."}``). A judge that gives no
verdict does not block the answer; the outcome says so.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from den.api.agentfile import CheckSpec

JUDGE_PROMPT = (
    "You are a strict reviewer (JUDGE). Decide whether the ANSWER below satisfies this "
    "requirement:\n\n{description}\n\nReply with JSON only: "
    '{{"pass": true or false, "reason": "one sentence"}}'
)


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    reason: str
    attempt: int

    def as_dict(self) -> dict:
        return asdict(self)


def parse_verdict(text: str) -> tuple[bool | None, str]:
    match = re.search(r"\{.*\}", text, re.S)
    if match:
        try:
            data = json.loads(match.group(0))
            verdict = data.get("pass")
            if isinstance(verdict, bool):
                return verdict, str(data.get("reason", ""))
        except json.JSONDecodeError:
            pass
    head = text.strip().upper()
    if head.startswith("PASS"):
        return True, text.strip()[4:].strip(" :-")
    if head.startswith("FAIL"):
        return False, text.strip()[4:].strip(" :-")
    return None, "the judge gave no verdict"


class CheckRunner:
    def __init__(self, checks: list[CheckSpec], model) -> None:
        self.checks = [c for c in checks if c.on == "before_respond"]
        self.model = model
        self.counts = {"passed": 0, "failed": 0, "undecided": 0}

    def __bool__(self) -> bool:
        return bool(self.checks)

    async def judge(self, answer: str, attempt: int, usage: Any = None) -> list[CheckOutcome]:
        """Every check's verdict on ``answer``; the judge's model calls are added to ``usage``
        (the turn's: a check's tokens are part of what the answer cost)."""
        outcomes = []
        for check in self.checks:
            if check.kind == "regex":
                passed = re.search(check.pattern or "", answer) is not None
                reason = "matches" if passed else f"the answer does not match /{check.pattern}/"
            else:
                reply = await self.model.complete([
                    {"role": "system", "content": JUDGE_PROMPT.format(description=check.description)},
                    {"role": "user", "content": f"ANSWER:\n{answer}"},
                ])
                if usage is not None:
                    usage.add(reply.usage)
                verdict, reason = parse_verdict(reply.content)
                if verdict is None:
                    self.counts["undecided"] += 1
                    outcomes.append(CheckOutcome(check.name, True, reason, attempt))
                    continue
                passed = verdict
            self.counts["passed" if passed else "failed"] += 1
            outcomes.append(CheckOutcome(check.name, passed, reason, attempt))
        return outcomes

    def retries_for(self, failed: list[CheckOutcome]) -> int:
        limits = {c.name: c.max_retries for c in self.checks}
        return min(limits[o.name] for o in failed)
