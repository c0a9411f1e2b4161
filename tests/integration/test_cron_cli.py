"""`den cron` as a user runs it (real `den` processes) against an agent served in-process."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import serve_app

TOKEN = "den_cli-cron-token"


@pytest.fixture
def serve_stored(den, den_home: Path, tmp_path: Path) -> Iterator:
    """Apply an Agentfile with `den apply`, serve that agent in-process and record its endpoint
    and token as the reconciler would, so `den cron` finds it."""
    from den.api.resource import AgentStatus
    from den.operator import names
    from den.operator.store import Store
    from den.runtime.app import create_app

    with contextlib.ExitStack() as stack:

        def start(name: str, base_url: str, cron: list[dict]) -> str:
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps({"name": name, "model": {"provider": "openai", "name": "scripted",
                                                                 "base_url": base_url}, "cron": cron}))
            assert den("apply", "-f", str(path)).code == 0
            store = Store(names.state_db_path())
            agent = store.get(name)
            url = stack.enter_context(serve_app(create_app(agent, env={"DEN_API_TOKEN": TOKEN},
                                                           home=tmp_path / f"{name}-home")))
            store.update_status(name, "default", AgentStatus(phase="Running", endpoint=url))
            store.close()
            names.tokens_dir().mkdir(parents=True, exist_ok=True)
            (names.tokens_dir() / f"default.{name}").write_text(TOKEN)
            return url

        yield start


def test_den_cron_lists_runs_shows_history_and_suspends(den, serve_stored, scripted_model) -> None:
    serve_stored("crony", scripted_model.base_url,
                 [{"name": "briefing", "schedule": "0 9 * * 1-5", "prompt": "Brief me."},
                  {"name": "digest", "schedule": "0 17 * * fri", "timezone": "Europe/Paris", "prompt": "Digest."}])
    listed = den("cron", "crony")
    assert listed.code == 0, listed.output
    header, *rows = [line.split() for line in listed.stdout.splitlines() if line.strip() and "──" not in line]
    assert header[:3] == ["ENTRY", "SCHEDULE", "ORIGIN"]
    assert [r[0] for r in rows] == ["briefing", "digest"] and all("agentfile" in r for r in rows)
    assert "(Europe/Paris)" in listed.stdout

    ran = den("cron", "crony", "run", "briefing")
    assert ran.code == 0, ran.output
    assert ran.stdout.splitlines()[0].startswith("briefing: succeeded (")
    assert "You said: Brief me." in ran.stdout
    history = den("cron", "crony", "history")
    assert history.code == 0 and "manual" in history.stdout and "succeeded" in history.stdout
    as_json = json.loads(den("cron", "crony", "history", "briefing", "-o", "json").stdout)
    assert [(r["entry"], r["status"]) for r in as_json["items"]] == [("briefing", "succeeded")]

    assert den("cron", "crony", "suspend", "digest").stdout.strip() == "digest: suspended"
    assert "suspended" in next(line for line in den("cron", "crony").stdout.splitlines() if "digest" in line)
    assert den("cron", "crony", "resume", "digest").stdout.startswith("digest: resumed, next run ")

    needs_entry = den("cron", "crony", "run")
    assert needs_entry.code != 0 and "needs the entry's name" in needs_entry.output
    unknown = den("cron", "crony", "run", "nope")
    assert unknown.code != 0 and "no cron entry 'nope'" in unknown.output


def test_den_cron_run_exits_non_zero_when_the_run_fails(den, serve_stored) -> None:
    serve_stored("broken", "http://127.0.0.1:9/v1", [{"name": "ping", "schedule": "@daily", "prompt": "Ping."}])
    ran = den("cron", "broken", "run", "ping")
    assert ran.code == 1
    assert ran.stdout.startswith("ping: failed (0 tokens): the model failed")
