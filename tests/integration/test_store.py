"""The local state store on real SQLite files: Kubernetes semantics, crash safety, watch."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from den.api.agentfile import AgentSpec
from den.api.errors import AlreadyExists, Conflict, NotFound
from den.api.resource import Agent, AgentStatus, Condition, ObjectMeta
from den.operator.store import Store


def make_agent(name: str = "scout", temperature: float = 0.5, labels: dict | None = None) -> Agent:
    return Agent(
        metadata=ObjectMeta(name=name, labels=labels or {}),
        spec=AgentSpec.model_validate(
            {"model": {"provider": "openai", "name": "gpt-4o-mini", "temperature": temperature}}
        ),
    )


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "state.db") as opened:
        yield opened


def test_create_assigns_uid_generation_and_resource_version(store: Store) -> None:
    created = store.create(make_agent())
    assert created.metadata.uid and len(created.metadata.uid) == 36
    assert created.metadata.generation == 1
    assert int(created.metadata.resourceVersion) == 1
    assert created.metadata.creationTimestamp.endswith("Z")
    with pytest.raises(AlreadyExists):
        store.create(make_agent())


def test_applying_the_same_agent_twice_changes_nothing(store: Store) -> None:
    first = store.apply(make_agent()).agent
    again = store.apply(make_agent())
    assert again.action == "unchanged"
    assert again.agent.metadata.resourceVersion == first.metadata.resourceVersion
    assert again.agent.metadata.generation == 1
    assert store.resource_version() == 1


def test_spec_change_bumps_generation_but_label_change_does_not(store: Store) -> None:
    store.apply(make_agent())
    relabelled = store.apply(make_agent(labels={"team": "research"}))
    assert relabelled.action == "configured"
    assert relabelled.agent.metadata.generation == 1
    changed = store.apply(make_agent(temperature=0.9, labels={"team": "research"}))
    assert changed.agent.metadata.generation == 2
    assert int(changed.agent.metadata.resourceVersion) == 3


def test_resource_versions_increase_across_agents(store: Store) -> None:
    versions = [int(store.apply(make_agent(f"a{i}")).agent.metadata.resourceVersion) for i in range(5)]
    assert versions == sorted(versions) and len(set(versions)) == 5


def test_a_stale_resource_version_is_a_conflict(store: Store) -> None:
    old = store.apply(make_agent()).agent
    store.apply(make_agent(temperature=0.1))
    stale = old.model_copy(update={"spec": make_agent(temperature=1.5).spec})
    with pytest.raises(Conflict, match="has been modified"):
        store.update(stale)
    with pytest.raises(Conflict):
        store.update_status("scout", "default", AgentStatus(phase="Running"), resource_version=old.metadata.resourceVersion)
    assert store.get("scout").spec.model.temperature == 0.1


def test_status_is_written_separately_from_spec(store: Store) -> None:
    created = store.apply(make_agent()).agent
    status = AgentStatus(
        phase="Running", observedGeneration=1, endpoint="http://127.0.0.1:8800",
        conditions=[Condition(type="Ready", status="True", reason="Serving")],
    )
    updated = store.update_status("scout", "default", status)
    assert updated.metadata.generation == 1
    assert int(updated.metadata.resourceVersion) > int(created.metadata.resourceVersion)
    assert updated.status.endpoint == "http://127.0.0.1:8800"
    # a spec apply keeps the status; applying the same spec keeps everything
    assert store.apply(make_agent()).agent.status.phase == "Running"
    # writing the same status again is not a change
    assert store.update_status("scout", "default", status).metadata.resourceVersion == updated.metadata.resourceVersion


def test_delete_with_finalizers_only_marks_until_the_last_finalizer_goes(store: Store) -> None:
    store.apply(make_agent())
    store.add_finalizer("scout", "default", "den.dev/cleanup")
    store.add_finalizer("scout", "default", "den.dev/other")
    marked = store.delete("scout")
    assert marked.metadata.deletionTimestamp
    assert store.get("scout").metadata.deletionTimestamp == marked.metadata.deletionTimestamp
    with pytest.raises(Conflict, match="being deleted"):
        store.apply(make_agent(temperature=0.2))
    store.remove_finalizer("scout", "default", "den.dev/cleanup")
    assert store.find("scout") is not None
    store.remove_finalizer("scout", "default", "den.dev/other")
    assert store.find("scout") is None
    with pytest.raises(NotFound):
        store.get("scout")


def test_label_selectors_filter_lists(store: Store) -> None:
    store.apply(make_agent("a", labels={"team": "research", "tier": "gold"}))
    store.apply(make_agent("b", labels={"team": "ops"}))
    store.apply(make_agent("c"))
    names = lambda sel: [a.name for a in store.list(selector=sel)]  # noqa: E731
    assert names("team=research") == ["a"]
    assert names("team!=research") == ["b", "c"]
    assert names("team in (research,ops)") == ["a", "b"]
    assert names("team") == ["a", "b"]
    assert names("!team") == ["c"]
    assert names("team=research,tier=gold") == ["a"]


def test_events_are_logged_per_agent(store: Store) -> None:
    agent = store.apply(make_agent()).agent
    store.record_event(agent, "Created", "container den-scout created")
    store.record_event(("default", "other"), "Failed", "boom", type_="Warning")
    assert [e.reason for e in store.events("scout")] == ["Created"]
    assert [e.type for e in store.events()] == ["Normal", "Warning"]


def test_watch_replays_changes_and_wakes_on_writes_from_another_thread(store: Store) -> None:
    store.apply(make_agent("a"))
    seen = [(c.type, c.agent.name) for c in store.watch(0, timeout=0.1)]
    assert seen == [("ADDED", "a")]
    since = store.resource_version()

    def writer() -> None:
        time.sleep(0.2)
        store.apply(make_agent("b"))

    threading.Thread(target=writer).start()
    started = time.monotonic()
    change = next(store.watch(since, timeout=5))
    assert change.agent.name == "b" and change.type == "ADDED"
    assert time.monotonic() - started < 4


def test_watch_sees_writes_from_another_process(store: Store, tmp_path: Path) -> None:
    since = store.resource_version()
    script = textwrap.dedent(
        f"""
        import time
        from den.operator.store import Store
        from tests.integration.test_store import make_agent
        time.sleep(0.3)
        Store({str(store.path)!r}).apply(make_agent("remote"))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    try:
        change = next(store.watch(since, timeout=20))
        assert change.agent.name == "remote"
    finally:
        proc.wait(timeout=30)


def test_dry_run_apply_stores_nothing(store: Store) -> None:
    results = store.apply_all([make_agent("a"), make_agent("b")], dry_run=True)
    assert [r.action for r in results] == ["created", "created"]
    assert store.list() == [] and store.resource_version() == 0


def test_migrations_are_recorded_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store(path).close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT version, name FROM den_migrations").fetchall() == [(1, "initial"), (2, "settings")]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute("INSERT INTO den_migrations VALUES (99, 'future', 'x')")
    db.commit()
    db.close()
    with pytest.raises(Exception, match="newer Den"):
        Store(path)


WRITER = textwrap.dedent(
    """
    import sys, time
    from den.operator.store import Store
    from tests.integration.test_store import make_agent
    store = Store(sys.argv[1])
    store.apply_all([make_agent(f"committed-{i}") for i in range(3)])
    with store.transaction() as db:
        for i in range(50):
            store._apply(db, make_agent(f"half-{i}"))
            if i == 25:
                print("in-transaction", flush=True)
                time.sleep(60)
    """
)


def test_a_writer_killed_mid_transaction_leaves_the_store_consistent(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout.readline().strip() == "in-transaction"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with Store(path) as store:
        names = [a.name for a in store.list()]
        assert names == ["committed-0", "committed-1", "committed-2"]
        assert store.resource_version() == 3
        assert [c.resource_version for c in store.changes_since(0)] == [1, 2, 3]
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # and the store keeps working after the crash
        assert int(store.apply(make_agent("after")).agent.metadata.resourceVersion) == 4
    rows = sqlite3.connect(path).execute("SELECT body FROM resources").fetchall()
    assert all(json.loads(body)["kind"] == "Agent" for (body,) in rows)
