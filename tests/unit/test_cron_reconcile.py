"""Cron entries, reconciled: a change of ``cron`` is delivered to the running agent (no new
container), and the agent's report becomes ``status.cron`` and ``status.nextRun``."""

from __future__ import annotations

from den.api.agentfile import cron_digest
from den.api.resource import Agent
from den.operator.plan import Observed, config_hash, desired_container, make_config_plan
from den.operator.reconcile import DELIVERY_PATIENCE, Reconciler
from tests.unit.test_plan import agent as plan_agent
from tests.unit.test_reconcile import AlwaysReady, FakeBackend, FakeCredentials, make_agent

BRIEFING = {"name": "briefing", "schedule": "0 9 * * *", "prompt": "Brief me."}


def with_cron(a: Agent, *entries: dict) -> Agent:
    data = a.model_dump(mode="json")
    data["spec"]["cron"] = list(entries)
    return Agent.model_validate(data)


def test_a_cron_change_is_not_a_config_change_of_the_container() -> None:
    a = plan_agent()
    assert config_hash(with_cron(a, BRIEFING), "sha256:img") == config_hash(a, "sha256:img")
    assert config_hash(plan_agent(temperature=0.9), "sha256:img") != config_hash(a, "sha256:img")


def test_plan_delivers_the_manifest_when_the_agent_runs_another_cron_section() -> None:
    a = with_cron(plan_agent(), BRIEFING)
    desired = desired_container(a, Observed(image_id="sha256:img"), 8800)
    assert str(make_config_plan(a, desired, cron_digest(a.spec.cron))) == "nothing to do"
    assert str(make_config_plan(a, desired, None)) == "nothing to do"  # the agent did not say
    assert str(make_config_plan(a, desired, "0123456789abcdef")) == (
        f"DeliverConfig container:den-scout: cron changed (agent runs 0123456789abcdef, "
        f"Agentfile {cron_digest(a.spec.cron)})")


def test_reconcile_delivers_a_changed_cron_to_the_running_container_and_reports_status(tmp_path) -> None:
    from den.operator.store import Store

    store = Store(tmp_path / "state.db")
    backend = FakeBackend()
    reports: list[tuple[str, str | None]] = []
    running = {"digest": cron_digest(with_cron(make_agent(), BRIEFING).spec.cron)}

    def report(endpoint: str, token: str | None) -> dict:
        reports.append((endpoint, token))
        return {"digest": running["digest"], "entries": [
            {"name": "briefing", "schedule": "0 9 * * *", "next_run": "2026-06-02T09:00:00Z",
             "last_run": "2026-06-01T09:00:01Z", "last_result": "succeeded", "origin": "agentfile"},
            {"name": "plants", "schedule": "0 7 * * *", "next_run": "2026-06-02T07:00:00Z",
             "last_run": None, "last_result": None, "origin": "agent", "suspended": False}]}

    reconciler = Reconciler(store, backend, credentials=FakeCredentials(), readiness=AlwaysReady(),
                            cron_report=report)
    store.apply(with_cron(make_agent(), BRIEFING))
    reconciler.reconcile("default", "scout")
    status = store.get("scout").status
    assert [(c.name, c.origin, c.nextRun, c.lastResult) for c in status.cron] == [
        ("briefing", "agentfile", "2026-06-02T09:00:00Z", "succeeded"),
        ("plants", "agent", "2026-06-02T07:00:00Z", None)]
    assert status.nextRun == "2026-06-02T07:00:00Z"
    assert reports == [("http://127.0.0.1:8800", "den_scout-token")]
    created = list(backend.calls)

    store.apply(with_cron(make_agent(), {**BRIEFING, "schedule": "0 10 * * *"}))
    result = reconciler.reconcile("default", "scout")
    new_calls = backend.calls[len(created):]
    assert [c.split(":")[0] for c in new_calls] == ["DeliverConfig container"]
    assert result.requeue_after == 1.0  # read the report again once the agent reloaded
    # Passes before the agent noticed the file do not copy it again (a status write wakes one)...
    for _ in range(3):
        assert reconciler.reconcile("default", "scout").requeue_after == 1.0
    assert len(backend.calls) == len(created) + 1
    # ...but an agent that still runs the old section after DELIVERY_PATIENCE gets it again.
    clock = reconciler.clock
    reconciler.clock = lambda: clock() + DELIVERY_PATIENCE
    reconciler.reconcile("default", "scout")
    assert [c.split(":")[0] for c in backend.calls[len(created):]] == ["DeliverConfig container"] * 2
    created = created + backend.calls[len(created):len(created) + 1]
    running["digest"] = cron_digest(store.get("scout").spec.cron)
    reconciler.reconcile("default", "scout")
    assert backend.calls[len(created) + 1:] == []
    store.close()
