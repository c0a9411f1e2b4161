"""`den --context NAME` against the kmock cluster, with the operator running there."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from den.operator.kube import Kube, agents, apps, core
from tests.kubernetes.conftest import ROOT, eventually

pytestmark = pytest.mark.asyncio


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "not-checked"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}},
                     {"name": "other", "context": {"cluster": "kmock", "user": "tester", "namespace": "x"}}],
    }))
    return path


async def den(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[int, str]:
    """The real `den` command in a subprocess (asynchronously: kmock serves on this loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "den", *args, cwd=tmp_path,
        env={**os.environ, "DEN_HOME": str(tmp_path / "home"), "NO_COLOR": "1", "COLUMNS": "200",
             "KUBECONFIG": str(tmp_path / "kubeconfig"), **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode()


async def test_up_get_down_and_delete_act_on_the_clusters_agents(operator: Kube, cluster, tmp_path: Path):
    kube = operator
    kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))
    up = asyncio.create_task(den(tmp_path, "--context", "kmock", "up", str(ROOT / "examples/hello/Agentfile"),
                                 "--timeout", "30"))
    await eventually(lambda: kube.get(f"{apps('default', 'statefulsets')}/den-hello"), what="the StatefulSet")
    await asyncio.to_thread(kube.patch, f"{apps('default', 'statefulsets')}/den-hello/status",
                            {"status": {"readyReplicas": 1}})
    code, out = await up
    assert code == 0, out
    assert "hello is Ready at http://den-hello.default.svc:8800" in out

    code, out = await den(tmp_path, "--context", "kmock", "get", "agents", "-o", "json")
    assert code == 0, out
    items = json.loads(out)["items"]
    assert [(a["metadata"]["name"], a["status"]["phase"]) for a in items] == [("hello", "Running")]
    assert not [k for k in items[0]["metadata"].get("annotations", {}) if "kopf" in k]  # kopf's bookkeeping stays out
    assert not (tmp_path / "home" / "state.db").exists()  # the local store was never touched
    code, out = await den(tmp_path, "--context", "kmock", "get", "agents", "-l", "team=nobody", "-o", "json")
    assert code == 0 and json.loads(out)["items"] == []

    code, out = await den(tmp_path, "down", "hello", "--timeout", "30", env={"DEN_CONTEXT": "kmock"})
    assert code == 0, out
    assert await asyncio.to_thread(kube.get, f"{apps('default', 'statefulsets')}/den-hello") is None
    code, out = await den(tmp_path, "--context", "kmock", "status", "-o", "json")
    assert json.loads(out)["agents"][0]["phase"] == "Stopped"

    code, out = await den(tmp_path, "--context", "kmock", "delete", "agent", "hello")
    assert code == 0, out
    await eventually(lambda: kube.get(f"{agents('default')}/hello") is None, what="the Agent gone")
    assert await asyncio.to_thread(kube.get, f"{core('default', 'persistentvolumeclaims')}/home-den-hello-0")


async def test_an_unknown_context_is_a_clear_error(tmp_path: Path, cluster):
    kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))
    code, out = await den(tmp_path, "--context", "nope", "get", "agents")
    assert code == 5 and "nope" in out and "Traceback" not in out


async def test_export_prints_a_resource_kubectl_reads_with_on_quoted(tmp_path: Path):
    agentfile = tmp_path / "Agentfile"
    agentfile.write_text("name: careful\nmodel: {provider: openai, name: gpt-4o}\n"
                         "checks:\n  - name: cites\n    description: The answer cites a source.\n"
                         "    on: before_respond\n")
    code, out = await den(tmp_path, "export", str(agentfile), "--kubernetes")
    assert code == 0, out
    as_kubectl_reads_it = yaml.safe_load(out)  # PyYAML's safe_load is YAML 1.1, like kubectl
    assert as_kubectl_reads_it["kind"] == "Agent"
    assert as_kubectl_reads_it["metadata"] == {"name": "careful", "namespace": "default"}
    assert as_kubectl_reads_it["spec"]["checks"][0]["on"] == "before_respond"


async def test_den_operator_run_kubernetes_converges_agents_through_a_kubeconfig_context(cluster, tmp_path: Path):
    """The operator image's entry point, as a process, logging in with a kubeconfig context."""
    server = str(cluster.url).rstrip("/")
    kubeconfig(tmp_path / "kubeconfig", server)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "den", "operator", "run", "--kubernetes", "--context", "kmock", "-n", "default",
        env={**os.environ, "KUBECONFIG": str(tmp_path / "kubeconfig"), "DEN_HOME": str(tmp_path / "home"),
             "DEN_OPERATOR_NAMESPACE": "den-system"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        kube = Kube.connect(server=server)
        body = {"apiVersion": "den.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "solo", "namespace": "default"},
                "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "runtime": {"network": "none"}}}
        await asyncio.to_thread(kube.create, agents("default"), body)
        sts = await eventually(lambda: kube.get(f"{apps('default', 'statefulsets')}/den-solo"), timeout=20,
                               what="the StatefulSet from the operator process")
        assert sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1000m"
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert b"Traceback" not in out, out.decode()[-2000:]


async def _applied(kube: Kube, name: str) -> dict:
    """An Agent applied the way kubectl does; returns the Secret the operator writes for it."""
    body = {"apiVersion": "den.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name, "namespace": "default"},
            "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "runtime": {"network": "none"}}}
    await asyncio.to_thread(kube.create, agents("default"), body)
    return await eventually(lambda: kube.get(f"{core('default', 'secrets')}/den-{name}-env"), timeout=20,
                            what="the agent's Secret")


async def test_logs_reads_the_agent_pods_log_through_the_api(operator: Kube, cluster, tmp_path: Path):
    kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))
    await _applied(operator, "hello")
    code, out = await den(tmp_path, "--context", "kmock", "logs", "hello")
    assert code != 0 and "no pod den-hello-0 in namespace default" in out and "Traceback" not in out

    # the kubelet's part: the pod runs and writes lines
    cluster.objects["v1/pods", "default", "den-hello-0"] = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "den-hello-0", "namespace": "default"}}
    lines = [json.dumps({"event": "start", "n": i}) for i in range(5)]
    cluster.pod_logs["default", "den-hello-0"] = "".join(f"{line}\n" for line in lines)
    code, out = await den(tmp_path, "--context", "kmock", "logs", "hello")
    assert code == 0, out
    assert out.splitlines() == lines
    code, out = await den(tmp_path, "--context", "kmock", "logs", "hello", "--tail", "2", "-f")
    assert code == 0, out
    assert out.splitlines() == lines[-2:]

    code, out = await den(tmp_path, "--context", "kmock", "logs", "nobody")
    assert code != 0 and "nobody" in out and "Traceback" not in out


async def test_api_prints_the_in_cluster_endpoint_the_secrets_token_and_a_port_forward(
        operator: Kube, cluster, tmp_path: Path):
    import base64

    kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))
    secret = await _applied(operator, "hello")
    token = json.loads(base64.b64decode(secret["data"]["env.json"]))["DEN_API_TOKEN"]
    assert token
    code, out = await den(tmp_path, "--context", "kmock", "api", "hello", "-o", "json")
    assert code == 0, out
    info = json.loads(out)
    assert info["base_url"] == "http://den-hello.default.svc:8800/v1"
    assert info["token"] == token
    assert info["port_forward"] == "kubectl --context kmock port-forward -n default svc/den-hello 8800:8800"
    assert info["local_base_url"] == "http://127.0.0.1:8800/v1"
    assert f"Bearer {token}" in info["curl"] and "127.0.0.1:8800/v1/chat/completions" in info["curl"]
    assert not (tmp_path / "home" / "tokens").exists()  # nothing read from or written to the local store

    code, out = await den(tmp_path, "api", "hello", env={"DEN_CONTEXT": "kmock"})
    assert code == 0, out
    assert "http://den-hello.default.svc:8800/v1" in out and token in out and "port-forward" in out


async def test_connect_says_which_port_forward_to_run_then_talks_through_it(operator: Kube, cluster, tmp_path: Path):
    """No way into the cluster from here but the user's port-forward; the real agent runtime,
    served on 127.0.0.1, stands where that port-forward ends, with the Secret's token."""
    import base64

    from den.api.resource import Agent
    from den.runtime.app import create_app
    from den.runtime.scripted_model import create_scripted_app
    from tests.conftest import serve_app

    kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))
    secret = await _applied(operator, "hello")
    token = json.loads(base64.b64decode(secret["data"]["env.json"]))["DEN_API_TOKEN"]
    code, out = await den(tmp_path, "--context", "kmock", "connect", "hello", "-m", "hi")
    assert code != 0 and "Traceback" not in out
    assert "kubectl --context kmock port-forward -n default svc/den-hello 8800:8800" in out
    assert "--url http://127.0.0.1:8800" in out

    with serve_app(create_scripted_app([{"match": "hi", "reply": "hello from the cluster"}])) as model:
        agent = Agent.model_validate({
            "apiVersion": "den.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"model": {"provider": "openai", "name": "scripted", "base_url": f"{model}/v1"}}})
        with serve_app(create_app(agent, env={"DEN_API_TOKEN": token, "OPENAI_API_KEY": "sk-test"},
                                  home=tmp_path / "agent-home")) as forwarded:
            code, out = await den(tmp_path, "--context", "kmock", "connect", "hello", "--url", forwarded, "-m", "hi")
            assert code == 0, out
            assert out.strip() == "hello from the cluster"
            code, out = await den(tmp_path, "--context", "kmock", "connect", "hello", "--url", forwarded,
                                  "--token", "wrong", "-m", "hi")
            assert code != 0 and "401" in out


async def test_inspect_shows_the_clusters_agent_statefulset_masked_secret_and_events(
        operator: Kube, cluster, tmp_path: Path):
    import base64

    kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))
    secret = await _applied(operator, "hello")
    token = json.loads(base64.b64decode(secret["data"]["env.json"]))["DEN_API_TOKEN"]
    await eventually(lambda: operator.get(f"{apps('default', 'statefulsets')}/den-hello"), what="the StatefulSet")
    code, out = await den(tmp_path, "--context", "kmock", "inspect", "hello")
    assert code == 0, out
    seen = yaml.safe_load(out)
    assert seen["context"] == "kmock"
    assert seen["agent"]["metadata"]["name"] == "hello" and seen["agent"]["spec"]["runtime"]["network"] == "none"
    assert seen["statefulSet"]["name"] == "den-hello" and seen["statefulSet"]["pod"] == "den-hello-0"
    assert seen["statefulSet"]["readOnlyRootfs"] is True and seen["statefulSet"]["capDrop"] == ["ALL"]
    assert seen["network"]["policy"] == "none"
    assert "DEN_API_TOKEN" in seen["deliveredEnv"] and token not in out  # masked, never printed whole
    assert seen["events"] and all(e["reason"] for e in seen["events"])
    assert not (tmp_path / "home" / "state.db").exists()  # the local store was never read

    code, out = await den(tmp_path, "--context", "kmock", "inspect", "nobody")
    assert code != 0 and "nobody" in out and "Traceback" not in out


async def test_exec_hands_over_to_kubectl_exec_on_the_agents_pod(operator: Kube, cluster, tmp_path: Path):
    """kmock has no exec subresource (it is a stream kubectl speaks): Den runs kubectl, whose
    arguments and exit code a stand-in on PATH records."""
    kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))
    await _applied(operator, "hello")
    (tmp_path / "empty").mkdir()
    no_kubectl = {"PATH": str(tmp_path / "empty")}
    code, out = await den(tmp_path, "--context", "kmock", "exec", "hello", "--", "ls", "/den", env=no_kubectl)
    assert code != 0 and "kubectl is not on PATH" in out and "Traceback" not in out
    assert "kubectl --context kmock exec -n default den-hello-0 -c agent -- ls /den" in out

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\nexit 7\n')
    (bin_dir / "kubectl").chmod(0o755)
    path = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    code, out = await den(tmp_path, "--context", "kmock", "exec", "-it", "hello", "--", "sh", "-c", "echo hi",
                          env=path)
    assert code == 7, out  # kubectl's exit code is den's
    assert (tmp_path / "argv").read_text().splitlines() == [
        "--context", "kmock", "exec", "-i", "-t", "-n", "default", "den-hello-0", "-c", "agent", "--",
        "sh", "-c", "echo hi"]
    code, out = await den(tmp_path, "--context", "kmock", "exec", "nobody", "--", "ls", env=path)
    assert code != 0 and "nobody" in out and not (tmp_path / "argv").read_text().count("nobody")


async def test_cron_and_memory_reach_a_cluster_agent_through_the_port_forward(operator: Kube, cluster, tmp_path: Path):
    """Like connect: without --url they say which port-forward to run; with it, the real runtime
    (standing where the port-forward ends) answers with the Secret's token."""
    import base64

    from den.api.resource import Agent
    from den.runtime.app import create_app
    from tests.conftest import serve_app

    kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))
    secret = await _applied(operator, "hello")
    token = json.loads(base64.b64decode(secret["data"]["env.json"]))["DEN_API_TOKEN"]
    for command in ("cron", "memory"):
        code, out = await den(tmp_path, "--context", "kmock", command, "hello")
        assert code != 0 and "Traceback" not in out and f"den {command} needs a way in" in out
        assert f"{command} hello --url http://127.0.0.1:8800" in out

    agent = Agent.model_validate({
        "apiVersion": "den.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "hello", "namespace": "default"},
        "spec": {"model": {"provider": "openai", "name": "m", "base_url": "http://127.0.0.1:9/v1"},
                 "cron": [{"name": "nightly", "schedule": "0 2 * * *", "prompt": "Tidy up."}]}})
    with serve_app(create_app(agent, env={"DEN_API_TOKEN": token}, home=tmp_path / "agent-home")) as forwarded:
        code, out = await den(tmp_path, "--context", "kmock", "cron", "hello", "--url", forwarded, "-o", "json")
        assert code == 0, out
        assert [e["name"] for e in json.loads(out)["entries"]] == ["nightly"]
        code, out = await den(tmp_path, "--context", "kmock", "memory", "hello", "add", "The cluster is kind.",
                              "--url", forwarded)
        assert code == 0, out
        code, out = await den(tmp_path, "--context", "kmock", "memory", "hello", "--url", forwarded, "-o", "json")
        assert code == 0, out
        assert "The cluster is kind." in out
        code, out = await den(tmp_path, "--context", "kmock", "cron", "hello", "--url", forwarded, "--token", "wrong")
        assert code != 0 and "401" in out
