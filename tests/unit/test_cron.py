"""The scheduler's rules with an injected clock: time zones and DST, catch-up, concurrency,
timeouts, suspend, reloads. The runner is real (asyncio, SQLite history in a temp folder); only
the executor (what a run does) is the test's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from den.runtime.agent.model import BudgetExceeded
from den.runtime.cron import (
    CronRunner,
    CronStore,
    Entry,
    Outcome,
    admit,
    min_interval,
    missed_run,
    next_run,
)
from den.runtime.state import _classify_cron_failure


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- next run ---------------------------------------------------------------------


def test_next_run_reads_the_schedule_in_the_entrys_time_zone() -> None:
    after = utc(2026, 6, 1, 12, 0)
    assert next_run("0 9 * * *", "UTC", after) == utc(2026, 6, 2, 9, 0)
    assert next_run("0 9 * * *", "Europe/Paris", after) == utc(2026, 6, 2, 7, 0)  # CEST, UTC+2
    assert next_run("0 9 * * *", "America/New_York", after) == utc(2026, 6, 1, 13, 0)  # EDT, UTC-4
    assert next_run("0 9 * * *", "Asia/Kolkata", after) == utc(2026, 6, 2, 3, 30)  # UTC+5:30


def test_a_wall_time_the_clocks_skip_runs_at_the_first_time_after_the_gap() -> None:
    # Europe/Paris, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    first = next_run("30 2 * * *", "Europe/Paris", utc(2026, 3, 28, 12, 0))
    assert first == utc(2026, 3, 29, 1, 0)  # 03:00 CEST
    assert next_run("30 2 * * *", "Europe/Paris", first) == utc(2026, 3, 30, 0, 30)  # 02:30 CEST
    # New York, 2026-03-08: 02:00 EST becomes 03:00 EDT.
    assert next_run("15 2 * * *", "America/New_York", utc(2026, 3, 7, 12, 0)) == utc(2026, 3, 8, 7, 0)


def test_every_quarter_hour_in_the_gap_runs_once_after_it() -> None:
    at = next_run("*/15 * * * *", "Europe/Paris", utc(2026, 3, 29, 0, 50))  # 01:50 CET
    runs = [at]
    for _ in range(3):
        runs.append(next_run("*/15 * * * *", "Europe/Paris", runs[-1]))
    # 02:00 ... 02:45 do not exist: one run at 03:00 CEST (01:00 UTC), then 03:15 CEST.
    assert runs == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 15), utc(2026, 3, 29, 1, 30),
                    utc(2026, 3, 29, 1, 45)]


def test_a_wall_time_that_happens_twice_runs_once() -> None:
    # Europe/Paris, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    first = next_run("30 2 * * *", "Europe/Paris", utc(2026, 10, 24, 12, 0))
    assert first == utc(2026, 10, 25, 0, 30)  # the first 02:30 (CEST)
    assert next_run("30 2 * * *", "Europe/Paris", first) == utc(2026, 10, 26, 1, 30)  # next day, CET
    # An agent that starts during the repeated hour does not run the repeated time again.
    assert next_run("30 2 * * *", "Europe/Paris", utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 26, 1, 30)


def test_the_shortest_interval_of_a_schedule() -> None:
    assert min_interval("* * * * *") == 60
    assert min_interval("*/5 * * * *") == 300
    assert min_interval("0 9,17 * * *") == 8 * 3600
    assert min_interval("@daily") == 86400


# -- catch-up and admission (pure) ----------------------------------------------------


def test_a_run_missed_within_the_starting_deadline_runs_once_at_start() -> None:
    entry = Entry("report", "0 * * * *", "Report.", starting_deadline=600)
    scheduled, start = missed_run(entry, utc(2026, 6, 1, 9, 30), utc(2026, 6, 1, 12, 5))
    assert (scheduled, start) == (utc(2026, 6, 1, 12, 0), True)  # the most recent, once


def test_a_run_missed_beyond_the_starting_deadline_is_skipped() -> None:
    entry = Entry("report", "0 * * * *", "Report.", starting_deadline=60)
    scheduled, start = missed_run(entry, utc(2026, 6, 1, 9, 30), utc(2026, 6, 1, 12, 5))
    assert (scheduled, start) == (utc(2026, 6, 1, 10, 0), False)
    assert missed_run(entry, utc(2026, 6, 1, 12, 1), utc(2026, 6, 1, 12, 5)) == (None, False)


def test_without_a_deadline_the_most_recent_missed_run_runs_however_long_the_agent_was_down() -> None:
    entry = Entry("poll", "*/5 * * * *", "Poll.", starting_deadline=None)
    assert missed_run(entry, utc(2026, 1, 1), utc(2026, 6, 1, 12, 7)) == (utc(2026, 6, 1, 12, 5), True)


def test_the_most_recent_missed_time_is_found_across_a_dst_gap() -> None:
    entry = Entry("night", "30 2 * * *", "Night.", timezone="Europe/Paris", starting_deadline=3600)
    # Down over the night the clocks went forward: 02:30 ran at 03:00 CEST (01:00 UTC).
    assert missed_run(entry, utc(2026, 3, 28, 12), utc(2026, 3, 29, 1, 20)) == (utc(2026, 3, 29, 1, 0), True)


def test_the_concurrency_policies_decide_what_a_due_run_does() -> None:
    assert [admit(p, 0) for p in ("Forbid", "Allow", "Replace")] == ["start"] * 3
    assert [admit(p, 1) for p in ("Forbid", "Allow", "Replace")] == ["skip", "start", "replace"]


# -- the runner, with an injected clock ---------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Executor:
    """Runs finish when the test releases them (or at once with ``instant``)."""

    def __init__(self, instant: bool = True, fail: BaseException | None = None, delay: float = 0) -> None:
        self.instant, self.fail, self.delay = instant, fail, delay
        self.calls: list[tuple[str, str]] = []
        self.release = asyncio.Event()

    async def __call__(self, entry: Entry, session: str) -> Outcome:
        self.calls.append((entry.name, session))
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.instant:
            await self.release.wait()
        if self.fail:
            raise self.fail
        return Outcome(f"done: {entry.prompt}", prompt_tokens=7, completion_tokens=3, cost_usd=0.001)


class Memos:
    def __init__(self) -> None:
        self.written: list[tuple[str, str]] = []

    def write(self, text: str, tags: str = "") -> None:
        self.written.append((text, tags))


async def settle(runner: CronRunner) -> None:
    tasks = [t for s in runner.slots.values() for t in s.running]
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


def make_runner(tmp_path, clock: Clock, executor: Executor, memos: Memos | None = None) -> CronRunner:
    return CronRunner(CronStore(tmp_path / "cron.db"), executor, memos=memos, clock=clock,
                      classify=_classify_cron_failure)


def test_a_due_entry_runs_once_and_records_its_outcome_tokens_and_a_memo(tmp_path) -> None:
    async def scenario() -> None:
        clock, executor, memos = Clock(utc(2026, 6, 1, 8, 59, 30)), Executor(), Memos()
        runner = make_runner(tmp_path, clock, executor, memos)
        await runner.set_entries([Entry("briefing", "0 9 * * *", "Brief me.")])
        await runner.tick()
        assert executor.calls == []  # not due yet
        clock.now = utc(2026, 6, 1, 9, 0, 5)
        await runner.tick()
        await runner.tick()  # due once, not once per tick
        await settle(runner)
        (run,) = runner.store.runs("briefing")
        assert (run.status, run.trigger, run.scheduled, run.output) == (
            "succeeded", "schedule", "2026-06-01T09:00:00Z", "done: Brief me.")
        assert run.as_dict()["tokens"] == 10
        assert executor.calls == [("briefing", f"cron-briefing-{run.id}")]
        assert memos.written == [("cron briefing (agentfile) succeeded at 2026-06-01T09:00:05Z: done: Brief me.",
                                  "cron,cron:briefing")]
        assert runner.slots["briefing"].next_due == utc(2026, 6, 2, 9, 0)

    asyncio.run(scenario())


@pytest.mark.parametrize(("policy", "statuses", "calls"), [
    ("Forbid", ["skipped", "succeeded"], 1),
    ("Allow", ["succeeded", "succeeded"], 2),
    ("Replace", ["succeeded", "failed"], 2),
])
def test_a_run_due_while_the_last_one_runs_follows_the_concurrency_policy(tmp_path, policy, statuses, calls) -> None:
    async def scenario() -> None:
        clock, executor = Clock(utc(2026, 6, 1, 8, 59, 59)), Executor(instant=False)
        runner = make_runner(tmp_path, clock, executor)
        await runner.set_entries([Entry("poll", "* * * * *", "Poll.", concurrency=policy)])
        clock.now = utc(2026, 6, 1, 9, 0, 1)
        await runner.tick()
        await asyncio.sleep(0.05)
        clock.now = utc(2026, 6, 1, 9, 1, 1)
        await runner.tick()
        await asyncio.sleep(0.05)
        executor.release.set()
        await settle(runner)
        runs = runner.store.runs("poll")  # newest first
        assert [r.status for r in runs] == statuses
        assert len(executor.calls) == calls
        if policy == "Forbid":
            assert runs[0].reason == "the previous run is still running (concurrency Forbid)"
        if policy == "Replace":
            assert runs[1].reason == "replaced by the next run (concurrency Replace)"

    asyncio.run(scenario())


def test_a_run_missed_while_down_runs_at_start_within_the_deadline_and_is_skipped_beyond(tmp_path) -> None:
    async def scenario() -> None:
        clock, executor = Clock(utc(2026, 6, 1, 8, 0)), Executor()
        first = make_runner(tmp_path, clock, executor)
        await first.set_entries([Entry("hourly", "0 * * * *", "Hourly.", starting_deadline=300),
                                 Entry("strict", "0 * * * *", "Strict.", starting_deadline=60)])
        # The agent is down from 08:00 to 10:02; a new runner starts on the same history.
        clock.now = utc(2026, 6, 1, 10, 2)
        second = make_runner(tmp_path, clock, executor)
        await second.set_entries([Entry("hourly", "0 * * * *", "Hourly.", starting_deadline=300),
                                  Entry("strict", "0 * * * *", "Strict.", starting_deadline=60)])
        await settle(second)
        (hourly,) = second.store.runs("hourly")
        assert (hourly.status, hourly.trigger, hourly.scheduled) == ("succeeded", "catch-up", "2026-06-01T10:00:00Z")
        (strict,) = second.store.runs("strict")
        assert (strict.status, strict.scheduled) == ("skipped", "2026-06-01T09:00:00Z")
        assert "more than starting_deadline (60 s) ago" in strict.reason
        assert executor.calls == [("hourly", f"cron-hourly-{hourly.id}")]
        # Starting again right away catches nothing up twice.
        third = make_runner(tmp_path, clock, executor)
        await third.set_entries([Entry("hourly", "0 * * * *", "Hourly.", starting_deadline=300)])
        await settle(third)
        assert len(third.store.runs("hourly")) == 1

    asyncio.run(scenario())


def test_an_entry_added_to_a_running_agent_catches_nothing_up(tmp_path) -> None:
    async def scenario() -> None:
        clock, executor = Clock(utc(2026, 6, 1, 8, 0)), Executor()
        runner = make_runner(tmp_path, clock, executor)
        await runner.set_entries([Entry("old", "0 * * * *", "Old.")])
        await runner.set_entries([])  # deleted ...
        clock.now = utc(2026, 6, 1, 10, 2)
        await runner.set_entries([Entry("old", "0 * * * *", "Old.")])  # ... and made again, later
        await settle(runner)
        assert runner.store.runs("old") == [] and executor.calls == []
        assert runner.slots["old"].next_due == utc(2026, 6, 1, 11, 0)

    asyncio.run(scenario())


def test_a_run_longer_than_its_timeout_is_stopped_and_recorded_timed_out(tmp_path) -> None:
    async def scenario() -> None:
        clock, executor = Clock(utc(2026, 6, 1, 9, 0)), Executor(delay=5)
        runner = make_runner(tmp_path, clock, executor)
        await runner.set_entries([Entry("slow", "@daily", "Slow.", timeout=0.1)])  # type: ignore[arg-type]
        run = await asyncio.wait_for(runner.run_now("slow"), timeout=3)
        assert (run.status, run.reason, run.trigger) == ("timed_out", "took longer than timeout (0.1 s)", "manual")

    asyncio.run(scenario())


def test_a_run_refused_for_budget_is_recorded_failed_with_that_reason(tmp_path) -> None:
    async def scenario() -> None:
        executor = Executor(fail=BudgetExceeded("over tokens_per_day (100)"))
        runner = make_runner(tmp_path, Clock(utc(2026, 6, 1, 9, 0)), executor)
        await runner.set_entries([Entry("digest", "@daily", "Digest.")])
        run = await runner.run_now("digest")
        assert run.status == "failed"
        assert run.reason == "refused for budget: over tokens_per_day (100)"

    asyncio.run(scenario())


def test_a_suspended_entry_does_not_run_on_its_schedule_and_the_suspension_survives_a_restart(tmp_path) -> None:
    async def scenario() -> None:
        clock, executor = Clock(utc(2026, 6, 1, 8, 59)), Executor()
        runner = make_runner(tmp_path, clock, executor)
        entries = [Entry("poll", "* * * * *", "Poll."), Entry("paused", "* * * * *", "Paused.", suspend=True)]
        await runner.set_entries(entries)
        await runner.set_suspended("poll", True)
        clock.now = utc(2026, 6, 1, 9, 0, 1)
        await runner.tick()
        await settle(runner)
        assert executor.calls == []
        again = make_runner(tmp_path, clock, executor)
        await again.set_entries(entries)
        assert [e["suspended"] for e in again.report()] == [True, True]
        assert [e["next_run"] for e in again.report()] == [None, None]
        await again.set_suspended("poll", False)
        clock.now = utc(2026, 6, 1, 9, 1, 1)
        await again.tick()
        await settle(again)
        assert [c[0] for c in executor.calls] == ["poll"]
        run = await again.run_now("paused")  # by hand, a suspended entry still runs
        assert run.status == "succeeded"

    asyncio.run(scenario())


def test_reloading_entries_keeps_history_and_reschedules_only_what_changed(tmp_path) -> None:
    async def scenario() -> None:
        clock, executor = Clock(utc(2026, 6, 1, 9, 0)), Executor()
        runner = make_runner(tmp_path, clock, executor)
        await runner.set_entries([Entry("a", "0 12 * * *", "A."), Entry("b", "0 18 * * *", "B.")])
        await runner.run_now("a")
        slot_b = runner.slots["b"]
        clock.now = utc(2026, 6, 1, 9, 30)
        await runner.set_entries([Entry("a", "0 10 * * *", "A."), Entry("b", "0 18 * * *", "B.")])
        assert runner.slots["a"].next_due == utc(2026, 6, 1, 10, 0)
        assert runner.slots["b"] is slot_b  # unchanged: the same slot, the same next run
        assert len(runner.store.runs("a")) == 1
        await runner.set_entries([Entry("b", "0 18 * * *", "B.")])
        assert list(runner.slots) == ["b"]
        assert len(runner.store.runs("a")) == 1  # history outlives the entry

    asyncio.run(scenario())


def test_history_keeps_the_last_history_limit_runs_of_each_entry(tmp_path) -> None:
    async def scenario() -> None:
        runner = make_runner(tmp_path, Clock(utc(2026, 6, 1, 9, 0)), Executor())
        await runner.set_entries([Entry("a", "@daily", "A.", history_limit=3), Entry("b", "@daily", "B.")])
        for _ in range(5):
            await runner.run_now("a")
        await runner.run_now("b")
        assert [r.id for r in runner.store.runs("a")] == [5, 4, 3]
        assert len(runner.store.runs("b")) == 1

    asyncio.run(scenario())


def test_the_runner_sleeps_until_the_next_due_entry(tmp_path) -> None:
    """The real loop with the real clock: an entry due in a moment runs without a tick by hand."""
    async def scenario() -> None:
        executor = Executor()
        runner = CronRunner(CronStore(tmp_path / "cron.db"), executor)
        await runner.start([Entry("soon", "* * * * *", "Soon.")])
        runner.slots["soon"].next_due = datetime.now(UTC) + timedelta(milliseconds=200)
        runner._wake.set()
        for _ in range(40):
            await asyncio.sleep(0.05)
            if executor.calls:
                break
        await runner.stop()
        assert [c[0] for c in executor.calls] == ["soon"]

    asyncio.run(scenario())
