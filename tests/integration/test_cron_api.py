"""Cron over real HTTP with the scripted model: run now, history, memos, the agent's own tasks
(made through schedule_task by the model), suspend/resume, and a delivered manifest that changes
a schedule in the running agent."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from den.api.resource import Agent
from tests.integration.conftest import AUTH, agent_resource, serve_app

BRIEFING = {"name": "briefing", "schedule": "0 9 * * 1-5", "timezone": "Europe/Paris",
            "prompt": "Summarise the overnight news."}


def cron_agent(base_url: str, cron: list[dict], **spec) -> Agent:
    data = agent_resource(base_url=base_url).model_dump(mode="json")
    data["spec"].update({"cron": cron, **spec})
    return Agent.model_validate(data)


def entries(url: str) -> dict[str, dict]:
    response = httpx.get(f"{url}/den/v1/cron", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return {e["name"]: e for e in response.json()["entries"]}


def test_run_now_answers_with_the_outcome_and_history_and_memory_keep_it(scripted_model, serve_runtime, tmp_path) -> None:
    url = serve_runtime(cron_agent(scripted_model.base_url, [BRIEFING]), home=tmp_path)
    listed = entries(url)["briefing"]
    assert (listed["origin"], listed["timezone"], listed["suspended"], listed["last_result"]) == (
        "agentfile", "Europe/Paris", False, None)
    assert listed["next_run"].endswith(("T07:00:00Z", "T08:00:00Z"))  # 09:00 in Paris
    run = httpx.post(f"{url}/den/v1/cron/briefing/run", headers=AUTH, timeout=30).json()
    assert run["status"] == "succeeded" and run["trigger"] == "manual"
    assert run["output"] == "Hello from the scripted model. You said: Summarise the overnight news."
    assert run["tokens"] > 0 and run["prompt_tokens"] > 0
    prompts = [b["messages"][-1]["content"] for b in scripted_model.chat_bodies()]
    assert prompts == ["Summarise the overnight news."]
    history = httpx.get(f"{url}/den/v1/cron/briefing/runs", headers=AUTH).json()["items"]
    assert [(h["id"], h["status"]) for h in history] == [(run["id"], "succeeded")]
    assert entries(url)["briefing"]["last_result"] == "succeeded"
    memos = httpx.get(f"{url}/den/v1/memory", params={"q": "briefing"}, headers=AUTH).json()["items"]
    assert any(m["text"].startswith("cron briefing (agentfile) succeeded") for m in memos)
    missing = httpx.post(f"{url}/den/v1/cron/nope/run", headers=AUTH)
    assert missing.status_code == 404 and "entries: briefing" in missing.json()["error"]["message"]


def test_a_task_the_model_schedules_is_listed_as_the_agents_runs_and_survives_a_restart(scripted_model, tmp_path) -> None:
    from den.runtime.app import create_app

    agent = cron_agent(scripted_model.base_url, [BRIEFING], tools=["schedule_task"])
    env = {"DEN_API_TOKEN": AUTH["Authorization"].removeprefix("Bearer ")}
    with serve_app(create_app(agent, env=env, home=tmp_path)) as url:
        asked = httpx.post(f"{url}/v1/chat/completions", headers=AUTH, timeout=30, json={"messages": [
            {"role": "user", "content": 'TOOL:schedule_task {"name": "plants", "schedule": "0 7 * * *", '
                                        '"prompt": "Remind me to water the plants."}'}]}).json()
        assert body_steps(asked) == [("schedule_task", True)]
        assert entries(url)["plants"]["origin"] == "agent"
        too_often = httpx.post(f"{url}/v1/chat/completions", headers=AUTH, timeout=30, json={"messages": [
            {"role": "user", "content": 'TOOL:schedule_task {"name": "spam", "schedule": "* * * * *", '
                                        '"prompt": "Spam."}'}]}).json()
        assert "runtime.task_min_interval" in too_often["choices"][0]["message"]["content"]
        assert "spam" not in entries(url)
    with serve_app(create_app(agent, env=env, home=tmp_path)) as url:
        listed = entries(url)
        assert [(n, e["origin"]) for n, e in listed.items()] == [("briefing", "agentfile"), ("plants", "agent")]
        scripted_model.clear()
        run = httpx.post(f"{url}/den/v1/cron/plants/run", headers=AUTH, timeout=30).json()
        assert (run["status"], run["origin"]) == ("succeeded", "agent")
        assert [b["messages"][-1]["content"] for b in scripted_model.chat_bodies()] == [
            "Remind me to water the plants."]


def body_steps(body: dict) -> list[tuple[str, bool]]:
    return [(s["tool"], s["ok"]) for s in body["den"]["steps"]]


def test_suspend_and_resume_an_entry(scripted_model, serve_runtime) -> None:
    url = serve_runtime(cron_agent(scripted_model.base_url, [BRIEFING]))
    suspended = httpx.post(f"{url}/den/v1/cron/briefing/suspend", headers=AUTH).json()
    assert (suspended["suspended"], suspended["next_run"]) == (True, None)
    assert entries(url)["briefing"]["suspended"] is True
    resumed = httpx.post(f"{url}/den/v1/cron/briefing/resume", headers=AUTH).json()
    assert resumed["suspended"] is False and resumed["next_run"]
    assert httpx.post(f"{url}/den/v1/cron/nope/suspend", headers=AUTH).status_code == 404


def test_a_delivered_manifest_changes_the_schedule_without_a_restart(scripted_model, serve_runtime, tmp_path) -> None:
    agent = cron_agent(scripted_model.base_url, [BRIEFING])
    config: Path = tmp_path / "agent.json"
    config.write_text(json.dumps(agent.manifest()))
    url = serve_runtime(agent, home=tmp_path / "home", config_path=config)
    httpx.post(f"{url}/den/v1/cron/briefing/run", headers=AUTH, timeout=30)
    before = httpx.get(f"{url}/den/v1/status", headers=AUTH).json()
    digest = httpx.get(f"{url}/den/v1/cron", headers=AUTH).json()["digest"]

    manifest = agent.manifest()
    manifest["metadata"]["generation"] = 4
    manifest["spec"]["cron"] = [{**BRIEFING, "schedule": "30 6 * * *", "timezone": "UTC"},
                                {"name": "weekly", "schedule": "@weekly", "prompt": "Weekly digest."}]
    tmp = config.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest))
    tmp.replace(config)

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "weekly" not in entries(url):
        time.sleep(0.1)
    listed = entries(url)
    assert listed["briefing"]["schedule"] == "30 6 * * *" and listed["briefing"]["next_run"].endswith("T06:30:00Z")
    assert listed["weekly"]["origin"] == "agentfile"
    assert listed["briefing"]["last_result"] == "succeeded"  # history kept
    after = httpx.get(f"{url}/den/v1/status", headers=AUTH).json()
    assert after["generation"] == 4 and after["uptime_seconds"] >= before["uptime_seconds"]
    assert httpx.get(f"{url}/den/v1/cron", headers=AUTH).json()["digest"] != digest


def test_cron_runs_go_through_the_gateway_and_a_run_over_budget_fails_with_that_reason(
        scripted_model, serve_gateway, serve_runtime) -> None:
    from tests.integration.test_gateway_api import GATEWAY_TOKEN, KEY, entry

    gateway = serve_gateway()
    gateway.write({GATEWAY_TOKEN: entry(scripted_model, budget={"tokens_per_day": 5})}, {"OPENAI_API_KEY": KEY})
    env = {"DEN_GATEWAY_URL": gateway.base_url, "DEN_GATEWAY_TOKEN": GATEWAY_TOKEN}
    url = serve_runtime(cron_agent(scripted_model.base_url, [BRIEFING]), env=env)
    first = httpx.post(f"{url}/den/v1/cron/briefing/run", headers=AUTH, timeout=30).json()
    assert first["status"] == "succeeded" and first["tokens"] > 5
    second = httpx.post(f"{url}/den/v1/cron/briefing/run", headers=AUTH, timeout=30).json()
    assert second["status"] == "failed"
    assert second["reason"].startswith("refused for budget:") and "tokens_per_day" in second["reason"]
    (row,) = gateway.ledger()["agents"]
    assert row["tokens"]["total"] == first["tokens"] and row["refused"] == 1


def test_a_manifest_reload_racing_a_new_task_never_drops_the_task(tmp_path) -> None:
    """The operator delivers a manifest while the model schedules a task: whichever reload reads
    the tasks first, the entries end with the task (CI once lost it for good)."""
    import asyncio
    import threading

    from den.runtime.state import RuntimeState

    state = RuntimeState(cron_agent("http://127.0.0.1:9/v1", [BRIEFING], tools=["schedule_task"]), env={})
    state.attach_agent_loop(tmp_path)
    listed, release = threading.Event(), threading.Event()
    plain_list = state.scheduler.list

    def slow_first_list():  # the delivered manifest's reload reads the tasks, then stalls
        tasks = plain_list()
        if not listed.is_set():
            listed.set()
            release.wait(10)
        return tasks

    async def race() -> list[str]:
        await state.start_cron()
        state.scheduler.list = slow_first_list
        manifest_reload = asyncio.create_task(state.reload_cron())
        await asyncio.to_thread(listed.wait, 10)
        await asyncio.to_thread(state.scheduler.schedule, "plants", "0 7 * * *", "Water the plants.")
        task_reload = asyncio.create_task(state.scheduler.changed())
        await asyncio.sleep(0.2)
        release.set()
        await asyncio.gather(manifest_reload, task_reload)
        names = [e.name for e in state.cron.entries()]
        await state.cron.stop()
        return names

    assert asyncio.run(race()) == ["briefing", "plants"]
