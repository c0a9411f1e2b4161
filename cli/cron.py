"""den cron: an agent's schedules (its Agentfile's and its own), their history, run now, suspend."""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer

from den.cli.main import app
from den.cli.output import Format, emit, table
from den.cli.resources import NamespaceOption, TokenOption, UrlOption


class CronAction(str, Enum):
    list = "list"
    run = "run"
    history = "history"
    suspend = "suspend"
    resume = "resume"


def _call(name: str, namespace: str, method: str, path: str, timeout: float = 30,
          target: tuple[str | None, str | None] = (None, None)) -> Any:
    import httpx

    from den.api.errors import DenError
    from den.cli.connect import _target

    endpoint, headers = _target(name, namespace, *target, command="cron")
    try:
        response = httpx.request(method, f"{endpoint}/den/v1/cron{path}", headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise DenError(f"cannot reach the agent at {endpoint}: {exc}", hint="den status") from None
    if response.status_code == 404 and path:
        raise DenError(f"agent {name}: {_message(response)}", hint=f"den cron {name}")
    if response.status_code >= 400:
        raise DenError(f"the agent answered {response.status_code}: {_message(response)}")
    return response.json()


def _message(response: Any) -> str:
    try:
        return str(response.json()["error"]["message"])
    except Exception:
        return response.text[:300]


def _when(text: str | None) -> str:
    return (text or "-").replace("T", " ").replace("Z", "")


def _runs_table(items: list[dict[str, Any]]) -> None:
    table(["ENTRY", "ORIGIN", "TRIGGER", "SCHEDULED", "STARTED", "STATUS", "TOKENS", "OUTPUT / REASON"],
          [[r["entry"], r["origin"], r["trigger"], _when(r.get("scheduled")), _when(r.get("started")),
            r["status"], str(r.get("tokens", 0)), (r.get("reason") or r.get("output") or "")[:60]]
           for r in items], empty="No runs yet.")


@app.command()
def cron(
    name: str = typer.Argument(..., help="Agent name."),
    action: CronAction = typer.Argument(CronAction.list, help="list (default), run, history, suspend or resume."),
    entry: str = typer.Argument(None, help="The cron entry (needed by run, suspend and resume)."),
    output: Format = typer.Option(Format.table, "--output", "-o", help="table, json or yaml."),
    url: str = UrlOption,
    token: str = TokenOption,
    namespace: str = NamespaceOption,
) -> None:
    """An agent's cron entries (from its Agentfile, and the tasks it scheduled itself: origin
    agent), their history; run one now, suspend or resume one. `run` waits for the outcome and
    exits non-zero unless the run succeeded.

    Examples:

      den cron research-analyst

      den cron research-analyst run morning-briefing

      den cron research-analyst history morning-briefing

      den cron research-analyst suspend morning-briefing

      kubectl port-forward svc/den-research-analyst 8800:8800 &
      den --context kind-dev cron research-analyst --url http://127.0.0.1:8800
    """
    from functools import partial

    from den.api.errors import DenError

    call = partial(_call, target=(url, token))

    if action in (CronAction.run, CronAction.suspend, CronAction.resume) and not entry:
        raise DenError(f"den cron {name} {action.value} needs the entry's name", hint=f"den cron {name}")
    if action == CronAction.list:
        data = call(name, namespace, "GET", "")
        if output != Format.table:
            emit(data, output)
            return
        table(["ENTRY", "SCHEDULE", "ORIGIN", "NEXT RUN", "LAST RUN", "LAST RESULT"],
              [[e["name"], e["schedule"] + ("" if e.get("timezone", "UTC") == "UTC" else f" ({e['timezone']})"),
                e["origin"], "suspended" if e.get("suspended") else _when(e.get("next_run")),
                _when(e.get("last_run")), e.get("last_result") or "-"]
               for e in data.get("entries", [])], empty="No cron entries.")
        return
    if action == CronAction.history:
        data = call(name, namespace, "GET", f"/{entry}/runs" if entry else "/history")
        if output != Format.table:
            emit(data, output)
            return
        _runs_table(data.get("items", []))
        return
    if action == CronAction.run:
        record = call(name, namespace, "POST", f"/{entry}/run", timeout=24 * 3600)
        if output != Format.table:
            emit(record, output)
        else:
            typer.echo(f"{entry}: {record['status']} ({record.get('tokens', 0)} tokens)"
                       + (f": {record['reason']}" if record.get("reason") else ""))
            if record.get("output"):
                typer.echo(record["output"])
        if record.get("status") != "succeeded":
            raise typer.Exit(1)
        return
    data = call(name, namespace, "POST", f"/{entry}/{action.value}")
    if output != Format.table:
        emit(data, output)
        return
    typer.echo(f"{entry}: {'suspended' if data.get('suspended') else 'resumed, next run ' + _when(data.get('next_run'))}")
