"""up, down, destroy, status, logs, exec, api, inspect: an agent's life on Docker."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer

from den.cli.main import app
from den.cli.output import Format, emit, err_console, say, table
from den.cli.resources import NamespaceOption, load_inputs


def _preflight(agents: list) -> list:
    """Everything that can fail before anything is stored: the backend, images, names. Returns
    the system images' ids (tag -> id), then the agents with the image their base resolves to
    pinned (:data:`names.ANNOTATION_IMAGE`): what this ``den up`` runs until the next one.

    The same rules the reconciler stalls on (:func:`den.operator.plan.stalled_reason`),
    checked on the same observed snapshot, so ``den up`` refuses with the same words."""
    from den.api.errors import DenError
    from den.operator.docker_backend import local_backend
    from den.operator.plan import stalled_reason

    backend = local_backend()
    backend.check()
    from den.operator import names

    system = {names.GATEWAY_IMAGE: "the model gateway",
              names.EGRESS_IMAGE: "the egress proxy and the agents' network containers"}
    for image in dict.fromkeys([*(agent.spec.runtime.base for agent in agents), *system]):
        _ensure_image(backend, image)
    for image, what in system.items():
        if not backend.has_image(image):
            raise DenError(f"image {image} ({what}) not found",
                           hint="build it with `make image` (hack/build-image.sh)")
    pinned = [{tag: backend.image_id(tag) for tag in system}]
    for agent in agents:
        problem = stalled_reason(agent, backend.observe(agent))
        if problem:
            raise DenError(problem[1], hint="den events " + agent.name)
        # Pin the build the base names now: a later retag (another checkout's make image) does
        # not replace this agent; the next den up does.
        base = agent.spec.runtime.base
        meta = agent.metadata.model_copy(update={"annotations": {
            **agent.metadata.annotations, names.ANNOTATION_IMAGE: f"{base}@{backend.image_id(base)}"}})
        pinned.append(agent.model_copy(update={"metadata": meta}))
    return pinned


def _ensure_image(backend, image: str) -> None:
    """A missing ``den-runtime:*`` image is built from this checkout (once); others are refused."""
    import subprocess

    if backend.has_image(image):
        return
    script = Path(__file__).resolve().parent.parent / "hack" / "build-image.sh"
    if image.startswith(("den-runtime:", "den-gateway:", "den-egress:")) and script.exists():
        err_console().print(f"image {image} not found: building it with {script.name} (once)…")
        done = subprocess.run(["bash", str(script)], cwd=script.parent.parent)
        if done.returncode == 0 and backend.has_image(image):
            return


def _ready(agent) -> bool:
    status = agent.status
    if status is None or status.observedGeneration != agent.metadata.generation:
        return False
    ready = status.condition("Ready")
    return bool(ready and ready.status == "True")


def _stalled(agent) -> str | None:
    """The message of a Stalled=True condition for the current generation: waiting is futile."""
    status = agent.status if agent else None
    stalled = status.condition("Stalled") if status else None
    if stalled and stalled.status == "True" and stalled.observedGeneration == agent.metadata.generation:
        return stalled.message
    return None


def wait_for(store, keys: list[tuple[str, str]], done, timeout: float, what: str) -> None:
    """Wait with a live line per agent until ``done(agent_or_None)`` for all keys."""
    from den.api.errors import DenError, WaitTimeout

    deadline = time.monotonic() + timeout
    console = err_console()
    with console.status(f"waiting for {what}…") as spinner:
        while True:
            pending = []
            for namespace, name in keys:
                agent = store.find(name, namespace)
                if not done(agent):
                    pending.append((name, agent))
                    stalled = _stalled(agent)
                    if stalled:
                        raise DenError(f"agent {name} cannot become {what}: {stalled}",
                                       hint=f"den events {name}")
            if not pending:
                return
            if time.monotonic() > deadline:
                break
            name, agent = pending[0]
            phase = agent.status.phase if agent and agent.status else "Pending"
            spinner.update(f"{name}: {phase}…")
            store.wait_for_change(store.resource_version(), 0.2)
    lines = []
    for name, agent in pending:
        lines.append(f"agent {name} is not {what} after {timeout:.0f}s")
        if agent and agent.status:
            for c in agent.status.conditions:
                lines.append(f"  {c.type}={c.status} {c.reason}: {c.message}")
        for event in store.events(name, limit=5):
            lines.append(f"  event {event.type} {event.reason}: {event.message}")
    raise WaitTimeout("\n".join(lines), hint="den events NAME; den logs NAME; cat $DEN_HOME/operator.log")


@app.command()
def up(
    file: Path = typer.Argument(Path("Agentfile"), help="Agentfile (or a directory of them)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Return once stored; do not wait for Ready."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for Ready."),
) -> None:
    """Give an agent a home: store it, start the operator, wait until it answers.

    ${VAR} references in runtime.env resolve from this command's environment,
    then `den auth` keys; the operator delivers them (and the agent's API
    token) to the agent, and running `den up` again with a changed environment
    rolls the agent onto the new values.

    Examples:

      den up                      # ./Agentfile

      den up examples/hello/Agentfile

      OPENAI_API_KEY=sk-... den up examples/research-analyst/Agentfile

      den up agents/ --no-wait
    """
    from den.cli import cluster

    loaded = load_inputs([file])
    if cluster.context():
        return cluster.up(loaded, no_wait=no_wait, timeout=timeout)
    from den.api.resource import now
    from den.operator.controller import ensure_operator, operator_pid
    from den.operator.secrets import capture_env
    from den.operator.store import open_store

    began, watched = now(), bool(operator_pid())
    agents = []
    for item in loaded:
        spec = item.agent.spec.model_copy(update={"desiredState": "running"})
        agents.append(item.agent.model_copy(update={"spec": spec}))
    images, *agents = _preflight(agents)
    with open_store() as store:
        store.pin_images(images)
        for agent in agents:
            capture_env(agent, os.environ)
        results = store.apply_all(agents)
        for result in results:
            say(f"agent.den.dev/{result.agent.name} {result.action}")
        ensure_operator()
        if no_wait:
            return
        keys = [(a.namespace, a.name) for a in agents]
        deadline = time.monotonic() + timeout
        # A status written while no operator ran may be stale (a container removed meanwhile):
        # trust it only once the operator this den up started has looked at everything once.
        while not watched and not store.synced_since(began) and time.monotonic() < deadline:
            time.sleep(0.1)
        wait_for(store, keys, lambda a: a is not None and _ready(a), max(1.0, deadline - time.monotonic()), "Ready")
        for namespace, name in keys:
            agent = store.get(name, namespace)
            say(f"[green]●[/green] {name} is Ready at [bold]{agent.status.endpoint}[/bold]")
        first = keys[0][1]
        say("next:")
        say(f"  den connect {first}            # chat")
        say(f"  den api {first}                # URL and a curl line for the OpenAI-compatible API")
        say(f"  den logs {first} -f            # follow its logs")
        say(f"  den down {first}               # stop it; its memory is kept")


@app.command()
def down(
    name: str = typer.Argument(..., help="Agent name."),
    namespace: str = NamespaceOption,
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for the container to go."),
) -> None:
    """Stop an agent: its container goes, its volume (memory, workspace) stays.

    Examples:

      den down research-analyst

      den up Agentfile            # brings the same agent back, remembering
    """
    from den.cli import cluster

    if cluster.context():
        return cluster.down(name, namespace, timeout)
    from den.operator.controller import ensure_operator
    from den.operator.store import open_store

    def stop(agent):
        spec = agent.spec.model_copy(update={"desiredState": "stopped"})
        return agent.model_copy(update={"spec": spec})

    with open_store() as store:
        store.mutate(name, namespace, stop)
        ensure_operator()
        wait_for(store, [(namespace, name)],
                 lambda a: a is None or (a.status is not None and a.status.phase == "Stopped"
                                         and a.status.observedGeneration == a.metadata.generation),
                 timeout, "Stopped")
    say(f"agent.den.dev/{name} stopped (volume kept; `den up` brings it back)")


@app.command()
def destroy(
    name: str = typer.Argument(..., help="Agent name."),
    namespace: str = NamespaceOption,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait."),
) -> None:
    """Delete an agent and everything it owns: container, volume, memory, record.

    Example:

      den destroy research-analyst --yes
    """
    from den.cli import cluster
    from den.operator import names

    if cluster.context():
        if not yes and not typer.confirm(f"Destroy agent {name} and its PVC in context {cluster.context()}?",
                                         default=False):
            raise typer.Exit(1)
        return cluster.delete([name], namespace, destroy=True, timeout=timeout)
    from den.operator.controller import ensure_operator
    from den.operator.store import open_store

    with open_store() as store:
        agent = store.get(name, namespace)
        if not yes and not typer.confirm(
            f"Destroy agent {name}, its container and its volume {store.installation.volume_name(name, namespace)} "
            "(memory and workspace)?", default=False,
        ):
            raise typer.Exit(1)
        if agent.metadata.finalizers:
            store.add_finalizer(name, namespace, names.FINALIZER_DESTROY)
        store.delete(name, namespace)
        if store.find(name, namespace) is not None:
            ensure_operator()
            wait_for(store, [(namespace, name)], lambda a: a is None, timeout, "gone")
    say(f"agent.den.dev/{name} destroyed")


def _uptime(started: str | None) -> str:
    from datetime import UTC, datetime

    from den.cli.output import duration

    if not started or started.startswith("0001"):
        return "-"
    then = datetime.fromisoformat(started[:19] + "+00:00")
    return duration((datetime.now(UTC) - then).total_seconds())


def _mb(value: int) -> str:
    return f"{value / (1024 * 1024):.0f}Mi"


@app.command()
def status(
    output: Format = typer.Option(Format.table, "--output", "-o", help="table, json or yaml."),
    namespace: str = typer.Option(None, "--namespace", "-n", help="Only this namespace."),
) -> None:
    """Every agent with phase, endpoint, CPU %, memory, uptime and today's model use; the gateway.

    Examples:

      den status

      den status -o json
    """
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    from den.cli import cluster

    if cluster.context():
        return cluster.status(namespace, output)
    from den.cli.resources import unwatched
    from den.operator import names
    from den.operator.controller import operator_pid
    from den.operator.store import open_store

    with open_store() as store:
        agents = store.list(namespace)
        installation = store.installation
        why = unwatched(store)
    stats: list[dict | None] = [None] * len(agents)
    running = [i for i, a in enumerate(agents) if a.status and a.status.phase == "Running"]
    gateway: dict[str, Any] = {"name": installation.gateway, "phase": "NotRunning"}
    ledger: dict[str, dict] = {}
    if agents:
        from den.operator.docker_backend import DockerBackend
        from den.operator.gateway import read_ledger

        backend = DockerBackend(installation=installation)
        with ThreadPoolExecutor(max_workers=8) as pool:
            sampled = pool.submit(backend.gateway_stats)
            for index, found in zip(running, pool.map(lambda i: backend.stats(agents[i]), running), strict=True):
                stats[index] = dataclasses.asdict(found) if found else None
            gateway_sample = sampled.result()
        endpoint = backend.gateway_endpoint()
        if gateway_sample is not None:
            gateway.update(phase="Running", endpoint=endpoint, **dataclasses.asdict(gateway_sample))
        if endpoint:
            try:
                today = read_ledger(endpoint)
                ledger = {entry["agent"]: entry for entry in today.get("agents", [])}
                gateway["day"] = today.get("day")
            except Exception as exc:  # starting or restarting
                gateway["ledger_error"] = str(exc)
    rows = []
    for agent, facts in zip(agents, stats, strict=True):
        entry = ledger.get(agent.key)
        usage = agent.status.usage.model_dump() if agent.status and agent.status.usage else None
        if entry is not None:
            usage = {"day": entry.get("day"), "requests": entry.get("requests", 0),
                     "refused": entry.get("refused", 0), "tokens": (entry.get("tokens") or {}).get("total", 0),
                     "costUsd": entry.get("cost_usd", 0.0), "overBudget": bool(entry.get("over_budget")),
                     "budget": entry.get("budget")}
        rows.append({
            "name": agent.name,
            "namespace": agent.namespace,
            "phase": ("Unknown" if why else agent.status.phase) if agent.status else "Pending",
            **({"stale": why} if why and agent.status else {}),
            "endpoint": agent.status.endpoint if agent.status else None,
            "cpu_percent": facts["cpu_percent"] if facts else None,
            "memory_used": facts["memory_used"] if facts else None,
            "memory_limit": facts["memory_limit"] if facts else None,
            "started_at": facts["started_at"] if facts else None,
            "usage": usage,
        })
    if output != Format.table:
        emit({"installation": installation.id, "operator": {"pid": operator_pid()}, "gateway": gateway,
              "agents": rows}, output)
        return

    def spend(usage: dict | None) -> str:
        if not usage:
            return "-"
        text = f"{usage['tokens']} tok ${usage['costUsd']:.4f}"
        if usage.get("refused"):
            text += f" ({usage['refused']} refused{', OVER BUDGET' if usage.get('overBudget') else ''})"
        return text

    table(
        ["NAME", "PHASE", "ENDPOINT", "CPU", "MEMORY", "UPTIME", "TODAY"],
        [[r["name"], f"{r['phase']} ({r['stale']})" if r.get("stale") else r["phase"], r["endpoint"] or "-",
          f"{r['cpu_percent']}%" if r["cpu_percent"] is not None else "-",
          f"{_mb(r['memory_used'])}/{_mb(r['memory_limit'])}" if r["memory_used"] is not None else "-",
          _uptime(r["started_at"]), spend(r["usage"])] for r in rows]
        + ([[gateway["name"], gateway["phase"], gateway.get("endpoint") or "-",
             f"{gateway['cpu_percent']}%" if "cpu_percent" in gateway else "-",
             f"{_mb(gateway['memory_used'])}/{_mb(gateway['memory_limit'])}" if "memory_used" in gateway else "-",
             _uptime(gateway.get("started_at")), "(model gateway)"]] if agents else []),
        empty="No agents. Try: den init && den up",
    )
    pid = operator_pid()
    err_console().print((f"operator: running (pid {pid})" if pid else "operator: not running (den up starts it)")
                        + f"; installation {installation.id} ({names.den_home()})")


@app.command()
def logs(
    name: str = typer.Argument(..., help="Agent name."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: int = typer.Option(None, "--tail", help="Only the last N lines."),
    namespace: str = NamespaceOption,
) -> None:
    """Print an agent's logs (one JSON object per line).

    Examples:

      den logs research-analyst --tail 20

      den logs research-analyst -f

      den --context kind-dev logs research-analyst --tail 50   (the pod's log, as kubectl logs)
    """
    from den.cli import cluster

    if cluster.context():
        cluster.logs(name, namespace, follow=follow, tail=tail)
        return
    from den.operator.docker_backend import DockerBackend
    from den.operator.store import open_store

    with open_store() as store:
        agent = store.get(name, namespace)
        backend = DockerBackend(installation=store.installation)
    out = sys.stdout.buffer
    for chunk in backend.logs(agent, follow=follow, tail=tail):
        out.write(chunk)
        out.flush()


@app.command(name="exec", context_settings={"allow_interspersed_args": False})
def exec_(
    name: str = typer.Argument(..., help="Agent name."),
    command: list[str] = typer.Argument(..., help="Command to run inside the agent's container."),
    interactive: bool = typer.Option(False, "--interactive", "-i", help="Keep stdin open."),
    tty: bool = typer.Option(False, "--tty", "-t", help="Allocate a TTY."),
    namespace: str = NamespaceOption,
) -> None:
    """Run a command inside an agent's container; its exit code is passed through.

    Examples:

      den exec research-analyst -- ls -la /den

      den exec -it research-analyst -- bash

      den --context kind-dev exec research-analyst -- ls /den   (through kubectl exec)
    """
    from den.cli import cluster

    if command and command[0] == "--":
        command = command[1:]
    if cluster.context():
        return cluster.exec_(name, namespace, command, interactive=interactive, tty=tty)
    from den.operator.docker_backend import DockerBackend
    from den.operator.store import open_store

    with open_store() as store:
        agent = store.get(name, namespace)
        backend = DockerBackend(installation=store.installation)
    if interactive or tty:
        argv = backend.exec_argv(agent, command, interactive=interactive, tty=tty)
        os.execvp(argv[0], argv)
    result = backend.exec(agent, command)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    sys.stderr.flush()
    raise typer.Exit(result.exit_code)


@app.command()
def api(
    name: str = typer.Argument(..., help="Agent name."),
    output: Format = typer.Option(Format.table, "--output", "-o", help="table (text) or json."),
    namespace: str = NamespaceOption,
) -> None:
    """How to call an agent's OpenAI-compatible API: URL, model id, a ready curl line.

    Examples:

      den api research-analyst

      den api research-analyst -o json | jq -r .base_url

      den --context kind-dev api research-analyst   (in-cluster URL, token, port-forward line)
    """
    from den.cli import cluster

    if cluster.context():
        cluster.api(name, namespace, output)
        return
    from den.api.errors import DenError
    from den.operator.store import open_store

    with open_store() as store:
        agent = store.get(name, namespace)
    endpoint = agent.status.endpoint if agent.status else None
    if not endpoint:
        raise DenError(f"agent {name} has no endpoint yet (phase {agent.status.phase if agent.status else 'Pending'})",
                       hint="den up … and wait for Ready; den status")
    from den.operator.secrets import read_token

    token = read_token(agent) or ""
    body = json.dumps({"model": name, "messages": [{"role": "user", "content": "Hello!"}]})
    info = {
        "name": name,
        "endpoint": endpoint,
        "base_url": f"{endpoint}/v1",
        "model": name,
        "token": token,
        "curl": f"curl -s {endpoint}/v1/chat/completions -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d '{body}'",
    }
    if output != Format.table:
        emit(info, output)
        return
    say(f"base_url: {info['base_url']}")
    say(f"model:    {name}")
    say(f"token:    {token}   (send as Authorization: Bearer …; stored 0600 in $DEN_HOME/tokens)")
    say(f"status:   {endpoint}/den/v1/status")
    typer.echo(info["curl"])


def _memory_stats(agent: Any) -> dict[str, Any]:
    """Counts by kind, facts and size of the agent's memory, asked of the running agent."""
    import httpx

    from den.operator.secrets import read_token

    endpoint = agent.status.endpoint if agent.status else None
    if not endpoint:
        return {"error": "the agent is not serving: its memory is on its volume, shown while it runs"}
    token = read_token(agent)
    try:
        response = httpx.get(f"{endpoint}/den/v1/memory/stats", timeout=5,
                             headers={"Authorization": f"Bearer {token}"} if token else {})
    except httpx.HTTPError as exc:
        return {"error": f"cannot reach the agent: {type(exc).__name__}"}
    if response.status_code != 200:
        return {"error": f"the agent answered {response.status_code}"}
    return response.json()


@app.command()
def inspect(
    name: str = typer.Argument(..., help="Agent name."),
    namespace: str = NamespaceOption,
) -> None:
    """Everything about one agent: resolved config (secrets masked), conditions, events, container.

    Examples:

      den inspect research-analyst

      den --context kind-dev inspect research-analyst   (the Agent, StatefulSet, Secret and Events)
    """
    from den.cli import cluster

    if cluster.context():
        return cluster.inspect(name, namespace)
    from den.api.contract import TOKEN_ENV, provider_key_name
    from den.operator.docker_backend import DockerBackend
    from den.operator.secrets import LocalCredentials, MissingVariable, mask
    from den.operator.store import open_store

    with open_store() as store:
        agent = store.get(name, namespace)
        events = store.events(name, namespace, limit=10)
        installation = store.installation
    try:
        delivered = dict(LocalCredentials().secrets_for(agent, make_token=False).values)
        env: dict[str, Any] = {k: mask(v) for k, v in sorted(delivered.items())}
    except MissingVariable as exc:
        env = {"error": exc.message}
    try:
        key_known = LocalCredentials().provider_key_for(agent) is not None
    except MissingVariable:
        key_known = False
    key_name = provider_key_name(agent.spec.model.provider)
    facts: dict[str, Any] = {}
    try:
        found = DockerBackend(installation=installation).facts(agent)
    except Exception as exc:  # inspect still shows the stored side without Docker
        found = None
        facts["error"] = str(exc)
    if found is not None:
        facts.update({
            "id": found.id, "name": found.name, "image": found.image, "state": found.state,
            "startedAt": found.started_at, "restartCount": found.restart_count,
            "nanoCpus": found.nano_cpus, "memoryBytes": found.memory_bytes, "ports": found.ports,
            "readOnlyRootfs": found.read_only_rootfs, "capDrop": found.cap_drop,
        })
    emit({
        "agent": agent.manifest(),
        "memory": _memory_stats(agent),
        "deliveredEnv": env,
        "deliveredEnvNote": f"inside the agent (its env file); {TOKEN_ENV} is its API token",
        "gatewayOnly": {key_name: "held by the model gateway, never delivered to the agent"
                        if key_known else "not set (den auth or the environment of den up)"},
        "network": network_facts(agent),
        "container": facts or None,
        "events": [e.as_dict() for e in events],
    }, Format.yaml)


def network_facts(agent) -> dict[str, Any]:
    """The effective network policy: what the agent reaches, from where, and what was counted."""
    from den.api.netpolicy import reaches

    status = agent.status.network if agent.status and agent.status.network else None
    policy = str(agent.spec.runtime.network)
    facts: dict[str, Any] = {"policy": policy, "reaches": reaches(policy)}
    if policy == "filtered":
        facts["allow"] = list(agent.spec.runtime.allow)
    if status is not None:
        facts.update({"address": status.address, "allowed": status.allowed, "refused": status.refused,
                      "lastRefused": status.lastRefused})
    return facts
