"""den memory: browse, search, add, forget, export and import an agent's memory (Den Protocol)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from den.cli.main import app
from den.cli.output import Format, emit, table
from den.cli.resources import NamespaceOption, TokenOption, UrlOption

ACTIONS = ("list", "search", "add", "forget", "facts", "export", "import")


@app.command()
def memory(
    name: str = typer.Argument(..., help="Agent name."),
    action: str = typer.Argument("list", help="list, search, add, forget, facts, export or import."),
    value: str = typer.Argument(None, help="The query (search), the text (add) or the id (forget)."),
    query: str = typer.Option(None, "--search", "-s", help="Same as the search action."),
    add: str = typer.Option(None, "--add", help="Same as the add action."),
    kind: str = typer.Option(None, "--kind", "-k", help="Only these kinds: memo, fact, message, summary (comma-separated)."),
    history: bool = typer.Option(False, "--history", help="facts: also the superseded and deleted ones."),
    limit: int = typer.Option(20, "--limit", help="How many memories to show."),
    output: Format = typer.Option(Format.table, "--output", "-o", help="table, json or yaml."),
    url: str = UrlOption,
    token: str = TokenOption,
    namespace: str = NamespaceOption,
) -> None:
    """Browse an agent's memory (it lives on the agent's volume; the agent reaches only its own).

    Examples:

      den memory scout                                # the newest memories, with their kinds

      den memory scout search "quarterly report"      # hybrid recall, with scores

      den memory scout add "The user prefers short answers."

      den memory scout forget 42

      den memory scout facts --history                # current facts, and what they replaced

      den memory scout export > scout.jsonl           # a backup (memories and facts)

      den memory other import < scout.jsonl           # into another agent

      den --context kind-dev memory scout --url http://127.0.0.1:8800   # through a kubectl port-forward
    """
    import httpx

    from den.api.errors import DenError
    from den.cli.connect import _target

    if query is not None:
        action, value = "search", query
    elif add is not None:
        action, value = "add", add
    if action not in ACTIONS:
        raise DenError(f"unknown action {action!r} for den memory", hint=f"one of: {', '.join(ACTIONS)}")
    if action in ("search", "add", "forget") and not value:
        raise DenError(f"den memory {name} {action} needs a {'query' if action == 'search' else 'text' if action == 'add' else 'memory id'}")
    if action == "forget" and not value.isdigit():
        raise DenError(f"a memory id is a number, got {value!r}", hint=f"den memory {name} search \"...\"")
    endpoint, headers = _target(name, namespace, url, token, command="memory")
    base = f"{endpoint}/den/v1/memory"
    params: dict[str, Any] = {"limit": limit, **({"kind": kind} if kind else {})}
    try:
        if action == "add":
            response = httpx.post(base, json={"text": value}, headers=headers, timeout=30)
        elif action == "forget":
            response = httpx.delete(f"{base}/{value}", headers=headers, timeout=30)
        elif action == "facts":
            response = httpx.get(f"{base}/facts", params={"history": history}, headers=headers, timeout=30)
        elif action == "export":
            response = httpx.get(f"{base}/export", headers=headers, timeout=300)
        elif action == "import":
            response = httpx.post(f"{base}/import", content=sys.stdin.buffer.read(), headers=headers, timeout=300)
        else:
            response = httpx.get(base, params={**params, **({"q": value} if action == "search" else {})},
                                 headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise DenError(f"cannot reach the agent at {endpoint}: {exc}", hint="den status") from None
    if response.status_code == 404 and action == "forget":
        raise DenError(f"agent {name} has no memory {value}")
    if response.status_code >= 400:
        raise DenError(f"the agent answered {response.status_code}: {response.text[:300]}")
    if action == "export":
        sys.stdout.write(response.text)
        return
    data = response.json()
    if output != Format.table:
        emit(data, output)
        return
    if action == "add":
        typer.echo(f"remembered (id {data.get('id')})")
    elif action == "forget":
        typer.echo(f"forgot memory {value}")
    elif action == "import":
        typer.echo(f"imported {data['memories']} memories and {data['facts']} facts "
                   f"({data['skipped']} already there)")
    elif action == "facts":
        table(["ID", "SUBJECT", "PREDICATE", "OBJECT", "STATUS", "SINCE", "MEMORY"],
              [[str(f["id"]), f["subject"], f["predicate"], f["object"],
                f["status"] + (f" by {f['superseded_by']}" if f.get("superseded_by") else ""),
                str(f["valid_from"])[:19], str(f["memory_id"])] for f in data.get("items", [])],
              empty="No facts yet.")
    else:
        items = data.get("items", [])
        columns = ["ID", "KIND", "WHEN", "TEXT"] + (["SCORE", "VIA"] if action == "search" else [])
        table(columns, [[str(i.get("id", "")), i.get("kind", ""), str(i.get("created", ""))[:19], i.get("text", ""),
                         *([f"{i.get('score', 0):.4f}", i.get("via") or ""] if action == "search" else [])]
                        for i in items], empty="No memories found." if action == "search" else "No memories yet.")
