"""``den --context NAME`` (or ``DEN_CONTEXT``): the same commands on a cluster's Agent resources.

``up``, ``down``, ``get``, ``status``, ``delete`` and ``destroy`` read and write Agent custom
resources through the kubeconfig context (as kubectl reads it) instead of the local store;
the operator in the cluster (``den operator run --kubernetes``, the Helm chart) does the rest.
``logs`` reads the agent pod's log and ``api`` its Service and token Secret through the same
API; ``connect`` needs a path from this machine into the cluster, so it says which
port-forward to run; ``inspect`` reads the Agent, its StatefulSet, Secret and Events, and
``exec`` hands over to ``kubectl exec`` on the agent's pod.
``den export NAME --kubernetes`` prints an Agent resource kubectl can apply.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from den.cli.main import app, state
from den.cli.output import Format, emit, err_console, say, table

POLL = 0.5


def context() -> str | None:
    """The kubeconfig context ``den --context`` (or ``DEN_CONTEXT``) named, if any."""
    return state.get("context")


def store():
    from den.operator.kube import Kube
    from den.operator.kubernetes_store import KubernetesStore

    return KubernetesStore(Kube.connect(context=context()))


def wait(cluster, keys: list[tuple[str, str]], done, timeout: float, what: str) -> None:
    """Poll the Agents until ``done(agent_or_None)`` for every key (a Stalled condition ends it)."""
    from den.api.errors import DenError, WaitTimeout
    from den.cli.lifecycle import _stalled

    deadline = time.monotonic() + timeout
    with err_console().status(f"waiting for {what}…") as spinner:
        while True:
            pending = []
            for namespace, name in keys:
                agent = cluster.find(name, namespace)
                if not done(agent):
                    pending.append((name, agent))
                    stalled = _stalled(agent)
                    if stalled:
                        raise DenError(f"agent {name} cannot become {what}: {stalled}",
                                       hint=f"kubectl describe agent {name} -n {namespace}")
            if not pending:
                return
            if time.monotonic() > deadline:
                lines = [f"agent {name} is not {what} after {timeout:.0f}s" for name, _agent in pending]
                raise WaitTimeout("\n".join(lines), hint="kubectl describe agent NAME; kubectl get events")
            name, agent = pending[0]
            spinner.update(f"{name}: {agent.status.phase if agent and agent.status else 'Pending'}…")
            time.sleep(POLL)


def up(loaded: list, *, no_wait: bool, timeout: float) -> None:
    from den.cli.lifecycle import _ready

    cluster = store()
    keys = []
    for item in loaded:
        agent = item.agent
        spec = agent.spec.model_copy(update={"desiredState": "running"})
        stored = cluster.apply(agent.model_copy(update={"spec": spec}))
        keys.append((stored.namespace, stored.name))
        say(f"agent.den.dev/{stored.name} applied (context {context()})")
    if no_wait:
        return
    wait(cluster, keys, lambda a: a is not None and _ready(a), timeout, "Ready")
    for namespace, name in keys:
        agent = cluster.get(name, namespace)
        say(f"[green]●[/green] {name} is Ready at [bold]{agent.status.endpoint}[/bold] (in the cluster)")
    say(f"next: kubectl port-forward -n {keys[0][0]} svc/{_service(keys[0])} 8800:8800")


def _service(key: tuple[str, str]) -> str:
    from den.operator import names

    return names.container_name(key[1], key[0])


def down(name: str, namespace: str, timeout: float) -> None:
    cluster = store()
    cluster.get(name, namespace)
    cluster.patch_spec(name, namespace, {"desiredState": "stopped"})
    wait(cluster, [(namespace, name)],
         lambda a: a is None or (a.status is not None and a.status.phase == "Stopped"
                                 and a.status.observedGeneration == a.metadata.generation),
         timeout, "Stopped")
    say(f"agent.den.dev/{name} stopped (its PVC is kept; `den --context {context()} up` brings it back)")


def delete(names: list[str], namespace: str, *, destroy: bool, timeout: float | None = None) -> None:
    cluster = store()
    for name in names:
        cluster.delete(name, namespace, destroy=destroy)
        if timeout:
            wait(cluster, [(namespace, name)], lambda a: a is None, timeout, "gone")
        say(f"agent.den.dev/{name} {'destroyed' if destroy else 'deleted (its PVC is kept)'}")


def get(name: str | None, namespace: str, all_namespaces: bool, output: Format, selector: str | None = None) -> None:
    from den.cli.resources import _row

    cluster = store()
    agents = [cluster.get(name, namespace)] if name else cluster.list(None if all_namespaces else namespace, selector)
    if output != Format.table:
        items = [a.manifest() for a in agents]
        emit(items[0] if name else {"apiVersion": "v1", "kind": "List", "items": items}, output)
        return
    columns = ["NAME", "PHASE", "MODEL", "ENDPOINT", "AGE"]
    if all_namespaces:
        columns = ["NAMESPACE", *columns]
    table(columns, [_row(a, all_namespaces) for a in agents], empty="No agents found.")


def status(namespace: str | None, output: Format) -> None:
    agents = store().list(namespace)
    rows = [{"name": a.name, "namespace": a.namespace,
             "phase": a.status.phase if a.status else "Pending",
             "ready": (a.status.condition("Ready").status if a.status and a.status.condition("Ready") else "Unknown"),
             "endpoint": a.status.endpoint if a.status else None,
             "observedGeneration": a.status.observedGeneration if a.status else None,
             "generation": a.metadata.generation} for a in agents]
    if output != Format.table:
        emit({"context": context(), "agents": rows}, output)
        return
    table(["NAMESPACE", "NAME", "PHASE", "READY", "ENDPOINT"],
          [[r["namespace"], r["name"], r["phase"], r["ready"], r["endpoint"] or "-"] for r in rows],
          empty="No agents in this cluster. Try: den --context NAME up Agentfile")


def logs(name: str, namespace: str, *, follow: bool, tail: int | None) -> None:
    """The agent pod's log, through the API server (as ``kubectl logs``)."""
    import sys

    from den.api.errors import DenError, NotFound
    from den.operator.kube import core

    cluster = store()
    agent = cluster.get(name, namespace)
    pod = f"{_service((namespace, name))}-0"
    query = {"tailLines": str(tail)} if tail is not None else {}
    if follow:
        query["follow"] = "true"
    out = sys.stdout.buffer
    try:
        for chunk in cluster.kube.stream(f"{core(namespace, 'pods')}/{pod}/log", query,
                                         timeout=None if follow else 30):
            out.write(chunk)
            out.flush()
    except NotFound:
        phase = agent.status.phase if agent.status else "Pending"
        raise DenError(f"agent {name} has no pod {pod} in namespace {namespace} (phase {phase})",
                       hint=f"den --context {context()} up …; kubectl get pods -n {namespace}") from None


def delivered_env(cluster, namespace: str, name: str) -> dict | None:
    """What the agent's Secret delivers (``env.json``: its tokens and runtime.env), or None
    when the operator has not written the Secret yet."""
    import base64
    import json

    from den.operator.kube import core

    secret = cluster.kube.get(f"{core(namespace, 'secrets')}/{_service((namespace, name))}-env")
    if secret is None:
        return None
    return json.loads(base64.b64decode((secret.get("data") or {}).get("env.json") or "e30="))


def api_info(name: str, namespace: str) -> dict:
    """What ``den api`` prints, for an agent in the cluster: its in-cluster endpoint, the token
    from its Secret, and the port-forward that reaches it from outside."""
    import json

    from den.api.contract import TOKEN_ENV
    from den.api.errors import DenError

    cluster = store()
    agent = cluster.get(name, namespace)
    service = _service((namespace, name))
    endpoint = (agent.status.endpoint if agent.status else None) or f"http://{service}.{namespace}.svc:8800"
    env = delivered_env(cluster, namespace, name)
    if env is None:
        raise DenError(f"agent {name} has no Secret {service}-env yet in namespace {namespace}",
                       hint="is the operator running? kubectl get pods -n den-system; "
                            f"kubectl describe agent {name} -n {namespace}")
    token = env.get(TOKEN_ENV) or ""
    body = json.dumps({"model": name, "messages": [{"role": "user", "content": "Hello!"}]})
    local = "http://127.0.0.1:8800"
    return {
        "name": name,
        "namespace": namespace,
        "context": context(),
        "endpoint": endpoint,
        "base_url": f"{endpoint}/v1",
        "model": name,
        "token": token,
        "port_forward": f"kubectl --context {context()} port-forward -n {namespace} svc/{service} 8800:8800",
        "local_base_url": f"{local}/v1",
        "curl": f"curl -s {local}/v1/chat/completions -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d '{body}'",
    }


def api(name: str, namespace: str, output: Format) -> None:
    info = api_info(name, namespace)
    if output != Format.table:
        emit(info, output)
        return
    say(f"base_url: {info['base_url']}   (inside the cluster)")
    say(f"model:    {name}")
    say(f"token:    {info['token']}   (send as Authorization: Bearer …; from Secret {_service((namespace, name))}-env)")
    say(f"status:   {info['endpoint']}/den/v1/status")
    say("from this machine, first run (it keeps running):")
    typer.echo(f"  {info['port_forward']}")
    say(f"then use base_url {info['local_base_url']}:")
    typer.echo(info["curl"])


def export_document(agent) -> str:
    """The Agent resource for ``kubectl apply``: no status or server fields; YAML whose
    ``on`` keys are quoted (kubectl reads YAML 1.1, where a bare ``on`` is ``true``)."""
    from den.api.loader import dump_yaml
    from den.operator.kubernetes_store import object_from_agent

    return dump_yaml(object_from_agent(agent))  # PyYAML's dumper quotes 'on' (its resolver is 1.1)


@app.command("export")
def export(
    name: str = typer.Argument(..., help="Agent name, or an Agentfile path."),
    kubernetes: bool = typer.Option(True, "--kubernetes/--agentfile",
                                    help="Print the Agent resource for kubectl (default) or the plain Agentfile."),
    namespace: str = typer.Option("default", "--namespace", "-n", help="Namespace of the agent."),
) -> None:
    """Print an agent for another home: an Agent resource kubectl can apply, or its Agentfile.

    Examples:

      den export research-analyst --kubernetes | kubectl apply -f -

      den export examples/hello/Agentfile --kubernetes > hello-agent.yaml
    """
    import sys

    from den.api.loader import dump_yaml, load_paths
    from den.api.resource import agentfile_document, to_agentfile

    path = Path(name)
    if path.exists():
        agent = load_paths([path])[0].agent
    elif context():
        agent = store().get(name, namespace)
    else:
        from den.operator.store import open_store

        with open_store() as local:
            agent = local.get(name, namespace)
    text = export_document(agent) if kubernetes else dump_yaml(agentfile_document(to_agentfile(agent)))
    sys.stdout.write(text)


def inspect(name: str, namespace: str) -> None:
    """``den inspect`` for an agent in the cluster: the Agent resource, its StatefulSet, what its
    Secret delivers (values masked), its network policy and the latest Events about it."""

    from den.api.contract import TOKEN_ENV
    from den.cli.lifecycle import network_facts
    from den.operator.kube import core, operator_namespace
    from den.operator.kubernetes_backend import KubernetesBackend
    from den.operator.secrets import mask

    cluster = store()
    agent = cluster.get(name, namespace)
    service = _service((namespace, name))
    env = delivered_env(cluster, namespace, name)
    delivered = ({"error": f"no Secret {service}-env yet (is the operator running?)"} if env is None
                 else {k: mask(str(v)) for k, v in sorted(env.items())})
    found = KubernetesBackend(cluster.kube, operator_namespace()).facts(agent)
    events = [e for e in cluster.kube.list(core(namespace, "events"))
              if (e.get("involvedObject") or {}).get("kind") == "Agent"
              and (e.get("involvedObject") or {}).get("name") == name]
    events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    emit({
        "agent": agent.manifest(),
        "context": context(),
        "memory": {"error": "on the agent's PVC; ask the agent through a port-forward: "
                            f"den --context {context()} memory {name} --url http://127.0.0.1:8800"},
        "deliveredEnv": delivered,
        "deliveredEnvNote": f"inside the agent (Secret {service}-env); {TOKEN_ENV} is its API token",
        "network": network_facts(agent),
        "statefulSet": None if found is None else {
            "name": found.name, "image": found.image, "state": found.state, "createdAt": found.started_at,
            "restartCount": found.restart_count, "readOnlyRootfs": found.read_only_rootfs,
            "capDrop": found.cap_drop, "pod": f"{service}-0",
        },
        "events": [{"type": e.get("type"), "reason": e.get("reason"), "message": e.get("message"),
                    "time": e.get("lastTimestamp") or e.get("eventTime")} for e in events[-10:]],
    }, Format.yaml)


def exec_(name: str, namespace: str, command: list[str], *, interactive: bool, tty: bool) -> None:
    """``den exec`` for an agent in the cluster: handed to ``kubectl exec`` on its pod (the exec
    subresource speaks a streaming protocol kubectl already implements)."""
    import os
    import shutil

    from den.api.errors import DenError
    from den.operator.kube import operator_namespace
    from den.operator.kubernetes_backend import KubernetesBackend

    cluster = store()
    agent = cluster.get(name, namespace)
    argv = KubernetesBackend(cluster.kube, operator_namespace()).exec_argv(agent, command, interactive=interactive, tty=tty)
    argv[1:1] = ["--context", context()]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise DenError("den exec on a cluster runs kubectl exec, and kubectl is not on PATH",
                       hint=" ".join(argv))
    os.execv(kubectl, argv)
