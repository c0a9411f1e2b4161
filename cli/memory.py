"""den memory: browse and add to an agent's memory through the Den Protocol."""

from __future__ import annotations

import typer

from den.cli.main import app
from den.cli.output import Format, emit, table
from den.cli.resources import NamespaceOption


@app.command()
def memory(
    name: str = typer.Argument(..., help="Agent name."),
    query: str = typer.Option(None, "--search", "-s", help="Search memories for this text."),
    add: str = typer.Option(None, "--add", help="Write this text to the agent's memory."),
    limit: int = typer.Option(20, "--limit", help="How many memories to show."),
    output: Format = typer.Option(Format.table, "--output", "-o", help="table, json or yaml."),
    namespace: str = NamespaceOption,
) -> None:
    """Browse, search and add to an agent's memory (it lives on the agent's volume).

    Examples:

      den memory research-analyst

      den memory research-analyst --search "quarterly report"

      den memory research-analyst --add "The user prefers short answers."
    """
    import httpx

    from den.api.errors import DenError
    from den.cli.connect import _target

    endpoint, headers = _target(name, namespace)
    try:
        if add is not None:
            response = httpx.post(f"{endpoint}/den/v1/memory", json={"text": add}, headers=headers, timeout=30)
        else:
            params = {"limit": limit, **({"q": query} if query else {})}
            response = httpx.get(f"{endpoint}/den/v1/memory", params=params, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise DenError(f"cannot reach the agent at {endpoint}: {exc}", hint="den status") from None
    if response.status_code >= 400:
        raise DenError(f"the agent answered {response.status_code}: {response.text[:300]}")
    data = response.json()
    if output != Format.table:
        emit(data, output)
        return
    if add is not None:
        typer.echo(f"remembered (id {data.get('id')})")
        return
    items = data.get("items", [])
    table(["ID", "WHEN", "TEXT"], [[str(i.get("id", "")), str(i.get("created", ""))[:19], i.get("text", "")]
                                   for i in items], empty="No memories yet.")
