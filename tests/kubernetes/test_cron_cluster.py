"""Cron on a cluster: the operator reads a ready agent's ``GET /den/v1/cron`` through its
Service into ``status.cron``, and a changed cron section reaches the running agent through
its Secret (the kubelet refreshes the mounted file) without rolling the StatefulSet.

kmock runs no pods and no kubelet: the real agent runtime is served on 127.0.0.1 where the
Service would end, and the test copies the Secret's ``agent.json`` into the file the runtime
watches, as the kubelet does with a mounted Secret."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from den.operator import kopf_operator
from den.operator.cron import fetch_cron
from den.operator.kube import agents, apps, core
from tests.conftest import serve_app
from tests.kubernetes.conftest import eventually, running_operator

pytestmark = pytest.mark.asyncio

TICK = {"name": "tick", "schedule": "0 9 * * *", "prompt": "Report the time."}


def secret_files(kube, name: str) -> dict[str, bytes]:
    secret = kube.get(f"{core('default', 'secrets')}/den-{name}-env") or {}
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


def cron_status(kube, name: str) -> dict[str, dict]:
    agent = kube.get(f"{agents('default')}/{name}") or {}
    return {c["name"]: c for c in (agent.get("status") or {}).get("cron") or []}


async def test_status_cron_is_reported_and_a_cron_change_reaches_the_running_pod(
        cluster, tmp_path: Path, monkeypatch) -> None:
    from den.runtime.app import create_app
    from den.runtime.settings import read_agent

    monkeypatch.setattr(kopf_operator, "RESYNC", 1.0)  # kopf re-runs no handler on a requeue
    service = {}  # the Service's in-cluster URL -> where the "pod" answers on this machine

    def report(endpoint: str, token: str | None):
        assert endpoint == "http://den-clock.default.svc:8800"
        return fetch_cron(service["url"], token) if "url" in service else None

    async with running_operator(cluster, cron_report=report) as kube:
        body = {"apiVersion": "den.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "clock", "namespace": "default"},
                "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "runtime": {"network": "none"},
                         "cron": [TICK]}}
        await asyncio.to_thread(kube.create, agents("default"), body)
        files = await eventually(lambda: secret_files(kube, "clock").get("agent.json") and secret_files(kube, "clock"),
                                 timeout=20, what="the agent's Secret")
        mounted = tmp_path / "etc-den" / "agent.json"  # the kubelet's copy of the Secret in the pod
        mounted.parent.mkdir()
        mounted.write_bytes(files["agent.json"])
        token = json.loads(files["env.json"])["DEN_API_TOKEN"]
        sts = await eventually(lambda: kube.get(f"{apps('default', 'statefulsets')}/den-clock"), what="the StatefulSet")
        template = sts["spec"]["template"]

        app = create_app(read_agent(mounted), env={"DEN_API_TOKEN": token}, home=tmp_path / "home",
                         config_path=mounted)
        with serve_app(app) as url:
            service["url"] = url
            await asyncio.to_thread(kube.patch, f"{apps('default', 'statefulsets')}/den-clock/status",
                                    {"status": {"readyReplicas": 1}})
            tick = (await eventually(lambda: cron_status(kube, "clock").get("tick"), timeout=20,
                                     what="status.cron"))
            assert tick["schedule"] == "0 9 * * *" and tick["origin"] == "agentfile"
            assert tick["nextRun"].endswith("T09:00:00Z")

            await asyncio.to_thread(kube.patch, f"{agents('default')}/clock",
                                    {"spec": {"cron": [{**TICK, "schedule": "30 6 * * *"}]}})
            delivered = await eventually(
                lambda: b"30 6 * * *" in secret_files(kube, "clock").get("agent.json", b"")
                and secret_files(kube, "clock")["agent.json"], timeout=20, what="the new cron in the Secret")
            mounted.write_bytes(delivered)  # the kubelet refreshes the mounted Secret
            changed = await eventually(
                lambda: (c := cron_status(kube, "clock").get("tick")) and c["schedule"] == "30 6 * * *" and c,
                timeout=20, what="the new schedule in status.cron")
            assert changed["nextRun"].endswith("T06:30:00Z")
            sts = await asyncio.to_thread(kube.get, f"{apps('default', 'statefulsets')}/den-clock")
            assert sts["spec"]["template"] == template  # no roll: the same pod keeps running
