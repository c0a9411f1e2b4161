"""validate, apply, get, delete, events: the declarative side of Den."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import typer

from den.cli.main import app
from den.cli.output import Format, age, emit, say, table

RESOURCE_NAMES = {"agent", "agents", "ag"}
NamespaceOption = typer.Option("default", "--namespace", "-n", help="Namespace of the agent.")
#: Where to reach a running agent instead of its status endpoint (with --context: the local end of
#: a ``kubectl port-forward``), and the token to send (default: the stored one, or its Secret's).
UrlOption = typer.Option(None, "--url", help="Reach the agent at this URL (e.g. a kubectl port-forward) "
                                             "instead of the endpoint in its status.")
TokenOption = typer.Option(None, "--token",
                           help="The agent's API token (default: the stored one; with --context, its Secret's).")


def _check_resource(resource: str) -> None:
    if resource.lower() not in RESOURCE_NAMES:
        from den.api.errors import DenError
        from den.api.suggest import did_you_mean

        raise DenError(
            f"unknown resource type {resource!r}{did_you_mean(resource, sorted(RESOURCE_NAMES))}",
            hint="den knows one resource type: agents (also agent, ag)",
        )


def source_label(path: Path) -> str:
    """A stable label value naming where an apply came from (a directory or a file)."""
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


def load_inputs(paths: list[Path], *, label: bool = True) -> list:
    """Load files, directories or ``-`` (stdin); all-or-nothing.

    With ``label``, each agent is labelled with where it came from, so a
    later ``apply --prune`` of the same directory knows what it created.
    """
    from den.api.errors import InvalidAgentfile
    from den.api.loader import Loaded, load_paths, load_text
    from den.operator.names import ANNOTATION_SOURCE_PATH, LABEL_SOURCE

    loaded: list[Loaded] = []
    problems = []
    for path in paths:
        if str(path) == "-":
            items, found = load_text(sys.stdin.read(), "<stdin>")
            loaded.extend(items)
            problems.extend(found)
            continue
        try:
            items = load_paths([path])
        except InvalidAgentfile as exc:
            problems.extend(exc.problems)
            continue
        origin = source_label(path)
        for item in items if label else []:
            meta = item.agent.metadata
            meta.labels.setdefault(LABEL_SOURCE, origin)
            meta.annotations.setdefault(ANNOTATION_SOURCE_PATH, str(path.resolve()))
        loaded.extend(items)
    if problems:
        raise InvalidAgentfile(problems)
    return loaded


@app.command()
def validate(
    paths: list[Path] = typer.Argument(..., help="Agentfiles, resource YAML files, directories or - (stdin)."),
) -> None:
    """Check Agentfiles without storing anything.

    Prints one line per problem, FILE:LINE: field.path: message, and exits 1
    when anything is wrong.

    Examples:

      den validate Agentfile

      den validate agents/
    """
    for item in load_inputs(paths, label=False):
        say(f"[green]valid[/green] {item.source}: agent {item.agent.name}")


@app.command()
def apply(
    filename: list[Path] = typer.Option(
        ..., "--filename", "-f", help="File, directory (recursively) or - for stdin."
    ),
    prune: bool = typer.Option(
        False, "--prune", help="Delete agents an earlier apply of this directory created that are gone from it."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; store nothing."),
) -> None:
    """Create or update agents from Agentfiles (declarative, idempotent).

    A directory is applied all-or-nothing: one invalid file and nothing is
    stored.

    Examples:

      den apply -f Agentfile

      den apply -f agents/ --prune      # GitOps: the directory is the truth

      den apply -f agents/ --dry-run
    """
    from den.api.errors import DenError
    from den.operator.names import LABEL_SOURCE
    from den.operator.secrets import capture_env
    from den.operator.store import open_store

    if prune and (len(filename) != 1 or not filename[0].is_dir()):
        raise DenError("--prune needs exactly one directory", hint="den apply -f agents/ --prune")
    loaded = load_inputs(filename)
    selector = f"{LABEL_SOURCE}={source_label(filename[0])}" if prune else None
    with open_store() as store:
        results = store.apply_all([item.agent for item in loaded], prune_selector=selector, dry_run=dry_run)
    if not dry_run:  # ${VAR}s resolve from this environment (see `den up --help`)
        for item in loaded:
            capture_env(item.agent, os.environ)
    suffix = " (dry run)" if dry_run else ""
    for result in results:
        say(f"agent.den.dev/{result.agent.name} {result.action}{suffix}")


def unwatched(store) -> str | None:
    """Why the stored statuses may be stale, or None: no operator runs to look at the world
    (like a node whose kubelet stopped posting, the phase then is Unknown)."""
    from den.operator.controller import operator_pid

    if operator_pid():
        return None
    seen = store.last_heartbeat()
    return f"operator not running, last seen {age(seen)} ago" if seen else "operator not running"


def shown(manifest: dict, why: str | None) -> dict:
    """An agent's manifest as ``den get -o json|yaml`` shows it: with nobody watching, its phase
    is Unknown and its Ready condition says why (the stored status is left as it was)."""
    status = manifest.get("status")
    if not why or not status:
        return manifest
    from den.api.resource import now

    ready = {"type": "Ready", "status": "Unknown", "reason": "OperatorNotRunning",
             "message": f"{why}; the last status seen was {status.get('phase')} (den up or den operator start)",
             "lastTransitionTime": now()}
    conditions = [c for c in status.get("conditions", []) if c.get("type") != "Ready"]
    return {**manifest, "status": {**status, "phase": "Unknown", "conditions": [ready, *conditions]}}


def _row(agent, all_namespaces: bool, why: str | None = None) -> list[str]:
    status = agent.status
    model = f"{agent.spec.model.provider}/{agent.spec.model.name}"
    phase = status.phase if status else "Pending"
    if agent.metadata.deletionTimestamp:
        phase = "Terminating"
    elif why and status:
        phase = f"Unknown ({why})"
    row = [agent.name, phase, model, (status.endpoint if status else None) or "-",
           age(agent.metadata.creationTimestamp)]
    return [agent.namespace, *row] if all_namespaces else row


@app.command()
def get(
    resource: str = typer.Argument(..., help="agents (or agent, ag)."),
    name: str = typer.Argument(None, help="One agent's name."),
    output: Format = typer.Option(Format.table, "--output", "-o", help="table, json or yaml."),
    namespace: str = NamespaceOption,
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A", help="Every namespace."),
    selector: str = typer.Option(None, "--selector", "-l", help="Label selector, e.g. team=research."),
) -> None:
    """List agents, or show one as a full Agent resource.

    Examples:

      den get agents

      den get agent research-analyst -o yaml

      den get agents -l team=research -o json
    """
    from den.cli import cluster

    _check_resource(resource)
    if cluster.context():
        return cluster.get(name, namespace, all_namespaces, output, selector)
    from den.operator.store import open_store

    with open_store() as store:
        if name:
            agents = [store.get(name, namespace)]
        else:
            agents = store.list(None if all_namespaces else namespace, selector)
        why = unwatched(store)
    if output != Format.table:
        if name:
            emit(shown(agents[0].manifest(), why), output)
        else:
            emit({"apiVersion": "v1", "kind": "List", "items": [shown(a.manifest(), why) for a in agents]}, output)
        return
    columns = ["NAME", "PHASE", "MODEL", "ENDPOINT", "AGE"]
    if all_namespaces:
        columns = ["NAMESPACE", *columns]
    table(columns, [_row(a, all_namespaces, why) for a in agents],
          empty=f"No agents found in namespace {namespace}." if not all_namespaces else "No agents found.")


@app.command()
def delete(
    resource: str = typer.Argument(..., help="agent"),
    names: list[str] = typer.Argument(..., help="Agent names."),
    namespace: str = NamespaceOption,
) -> None:
    """Delete agents from the store (the operator cleans up what they owned).

    Example:

      den delete agent research-analyst
    """
    from den.cli import cluster

    _check_resource(resource)
    if cluster.context():
        return cluster.delete(names, namespace, destroy=False)
    from den.operator.store import open_store

    with open_store() as store:
        for name in names:
            gone = store.delete(name, namespace)
            if gone.metadata.deletionTimestamp and gone.metadata.finalizers:
                from den.operator.controller import ensure_operator

                ensure_operator()  # the finalizer's owner finishes the cleanup
                say(f"agent.den.dev/{name} marked for deletion (waiting for: {', '.join(gone.metadata.finalizers)})")
            else:
                say(f"agent.den.dev/{name} deleted")


@app.command()
def events(
    name: str = typer.Argument(None, help="Only this agent's events."),
    namespace: str = typer.Option(None, "--namespace", "-n", help="Only this namespace."),
    limit: int = typer.Option(50, "--limit", help="How many of the newest events."),
    output: Format = typer.Option(Format.table, "--output", "-o", help="table, json or yaml."),
) -> None:
    """Show what the control plane did, newest last.

    Examples:

      den events

      den events research-analyst -o json
    """
    from den.operator.store import open_store

    with open_store() as store:
        found = store.events(name, namespace, limit=limit)
    if output != Format.table:
        emit([e.as_dict() for e in found], output)
        return
    table(
        ["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        [[age(e.time), e.type, e.reason, f"agent/{e.name}", e.message] for e in found],
        empty="No events.",
    )
