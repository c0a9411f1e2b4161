"""Cron in a real container, with the scripted model behind the model gateway: an every-minute
entry runs on its own, `den cron NAME run` runs it at once, history shows both; editing the
schedule reaches the running container (same StartedAt) and status.cron; a task the model
schedules itself survives down/up and is listed as the agent's."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.test_docker_lifecycle import agent_json, scripted, wait_until, world

__all__ = ["scripted", "world"]  # fixtures used by name below

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def prompts(world) -> list[str]:
    sent = httpx.get(f"{world['scripted']['host_url']}/requests", timeout=10).json()
    return [r["body"]["messages"][-1]["content"] for r in sent if r["path"].endswith("/chat/completions")]


def cron_status(den, name: str) -> dict[str, dict]:
    return {c["name"]: c for c in (agent_json(den, name).get("status") or {}).get("cron", [])}


def test_cron_runs_on_time_and_by_hand_reloads_in_place_and_keeps_the_agents_tasks(den, world, docker_client) -> None:
    tick = {"name": "tick", "schedule": "* * * * *", "prompt": "CRON-TICK report the time"}
    name, path = world["agentfile"](tools=["schedule_task"], cron=[tick], runtime={"task_min_interval": 60})
    up = den("up", str(path), "--timeout", "90")
    assert up.code == 0, up.output
    api = json.loads(den("api", name, "-o", "json").stdout)
    headers = {"Authorization": f"Bearer {api['token']}"}

    # The model schedules a task of its own through schedule_task.
    made = httpx.post(f"{api['base_url']}/chat/completions", headers=headers, timeout=60, json={"messages": [
        {"role": "user", "content": 'TOOL:schedule_task {"name": "plants", "schedule": "0 7 * * *", '
                                    '"prompt": "PLANTS-TASK water the plants"}'}]}).json()
    assert made["den"]["steps"][0]["ok"], made

    now = den("cron", name, "run", "tick")
    assert now.code == 0, now.output
    assert now.stdout.startswith("tick: succeeded (") and "CRON-TICK" in now.stdout

    def scheduled_runs():
        runs = json.loads(den("cron", name, "history", "tick", "-o", "json").stdout)["items"]
        return runs if any(r["trigger"] == "schedule" and r["status"] != "running" for r in runs) else None

    runs = wait_until(scheduled_runs, timeout=75, interval=2)
    assert {r["trigger"] for r in runs} >= {"manual", "schedule"}
    assert all(r["status"] == "succeeded" and r["tokens"] > 0 for r in runs if r["status"] != "running")
    scheduled = next(r for r in runs if r["trigger"] == "schedule")
    assert scheduled["scheduled"].endswith(":00Z") and scheduled["started"][:16] == scheduled["scheduled"][:16]
    assert prompts(world).count("CRON-TICK report the time") >= 2

    listed = wait_until(lambda: (s := cron_status(den, name)).get("tick", {}).get("lastResult") and s, timeout=30)
    assert listed["tick"]["schedule"] == "* * * * *" and listed["plants"]["origin"] == "agent"
    table = den("cron", name).stdout
    assert "plants" in table and "agent" in table and "agentfile" in table

    # A new schedule reaches the running container: same container, same StartedAt.
    container = docker_client.containers.get(world["installation"].container_name(name))
    started = container.attrs["State"]["StartedAt"]
    body = json.loads(path.read_text())
    body["cron"] = [{**tick, "schedule": "0 3 * * *"}]
    path.write_text(json.dumps(body))
    assert den("apply", "-f", str(path)).code == 0
    changed = wait_until(lambda: (c := cron_status(den, name).get("tick")) and c["schedule"] == "0 3 * * *" and c,
                         timeout=30, interval=0.5)
    assert changed["nextRun"].endswith("T03:00:00Z")
    assert agent_json(den, name)["status"]["nextRun"].endswith(("T03:00:00Z", "T07:00:00Z"))
    container.reload()
    assert container.id == docker_client.containers.get(world["installation"].container_name(name)).id
    assert container.attrs["State"]["StartedAt"] == started
    history = json.loads(den("cron", name, "history", "tick", "-o", "json").stdout)["items"]
    assert len(history) >= 2  # kept across the reload

    # The agent's own task survives down/up, is listed as the agent's, and runs.
    assert den("down", name).code == 0
    assert den("up", str(path), "--timeout", "90").code == 0
    entries = {e["name"]: e for e in json.loads(den("cron", name, "-o", "json").stdout)["entries"]}
    assert entries["plants"]["origin"] == "agent" and entries["tick"]["origin"] == "agentfile"
    ran = den("cron", name, "run", "plants")
    assert ran.code == 0, ran.output
    assert "PLANTS-TASK water the plants" in prompts(world)
    missing = den("cron", name, "run", "nope")
    assert missing.code != 0 and "no cron entry 'nope'" in missing.output
