"""den connect: chat with an agent through its OpenAI-compatible API.

Streams the answer as it is written and shows tool progress, which the
runtime sends as a documented extension OpenAI clients ignore: stream chunks
whose delta is empty and that carry a ``den`` object (``{"type":
"tool_call", "tool": ..., "arguments": ...}``).
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable

import typer

from den.cli.main import app
from den.cli.resources import NamespaceOption, TokenOption, UrlOption


def _target(name: str, namespace: str, url: str | None = None, token: str | None = None,
            command: str = "connect") -> tuple[str, dict[str, str]]:
    """The agent's endpoint and auth headers; ``command`` names the caller in the hint."""
    from den.api.errors import DenError
    from den.cli import cluster

    if cluster.context():
        # The agent is only reachable inside the cluster: through a port-forward the user runs.
        info = cluster.api_info(name, namespace)
        if not url:
            raise DenError(f"agent {name} serves inside the cluster ({info['endpoint']}); "
                           f"den {command} needs a way in from this machine",
                           hint=f"run {info['port_forward']}\n  then den --context {cluster.context()} "
                                f"{command} {name} --url http://127.0.0.1:8800")
        return url.rstrip("/"), {"Authorization": f"Bearer {token or info['token']}"}
    if url:
        return url.rstrip("/"), ({"Authorization": f"Bearer {token}"} if token else {})
    from den.operator.secrets import read_token
    from den.operator.store import open_store

    with open_store() as store:
        agent = store.get(name, namespace)
    endpoint = agent.status.endpoint if agent.status else None
    if not endpoint:
        raise DenError(f"agent {name} is not serving (phase {agent.status.phase if agent.status else 'Pending'})",
                       hint=f"den up … then den connect {name}")
    headers = {}
    token = token or read_token(agent)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return endpoint, headers


def stream_answer(
    endpoint: str,
    headers: dict[str, str],
    model: str,
    message: str,
    session: str,
    on_text: Callable[[str], None],
    on_event: Callable[[dict], None],
) -> None:
    import httpx

    from den.api.errors import DenError

    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": message}], "user": session}
    try:
        with httpx.stream("POST", f"{endpoint}/v1/chat/completions", json=body,
                          headers={**headers, "X-Den-Session": session}, timeout=300) as response:
            if response.status_code != 200:
                response.read()
                raise DenError(f"the agent answered {response.status_code}: {response.text[:500]}")
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "den" in chunk:
                    on_event(chunk["den"])
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        on_text(text)
    except httpx.HTTPError as exc:
        raise DenError(f"cannot reach the agent at {endpoint}: {exc}", hint="den status") from None


@app.command()
def connect(
    name: str = typer.Argument(..., help="Agent name."),
    message: str = typer.Option(None, "--message", "-m", help="Ask one question, print the answer, exit."),
    session: str = typer.Option(None, "--session", help="Continue this conversation (default: a new one)."),
    url: str = UrlOption,
    token: str = TokenOption,
    namespace: str = NamespaceOption,
) -> None:
    """Chat with an agent (streaming, with live tool progress).

    In the chat: /quit leaves, /reset starts a new conversation, /memory shows
    what the agent remembers.

    Examples:

      den connect research-analyst

      den connect research-analyst -m "Summarise today's notes" > answer.txt

      kubectl port-forward svc/den-research-analyst 8800:8800 &
      den --context kind-dev connect research-analyst --url http://127.0.0.1:8800
    """
    from den.cli.output import err_console

    endpoint, headers = _target(name, namespace, url, token)
    session = session or f"connect-{uuid.uuid4().hex[:12]}"
    if message is not None:
        parts: list[str] = []
        stream_answer(endpoint, headers, name, message, session, parts.append, lambda event: None)
        sys.stdout.write("".join(parts).strip() + "\n")
        return
    console = err_console()
    console.print(f"connected to [bold]{name}[/bold] at {endpoint} (session {session}); /quit to leave")

    from rich.markup import escape

    def show_event(event: dict) -> None:
        if event.get("type") == "tool_call":
            line = f"[tool:{event.get('tool')}] {str(event.get('arguments', ''))[:200]}"
            console.print(f"[dim]{escape(line)}[/dim]")
        elif event.get("type") == "revise":
            console.print("[dim]\\[check] revising the answer[/dim]")

    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            sys.stdout.write("\n")
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return
        if text == "/reset":
            session = f"connect-{uuid.uuid4().hex[:12]}"
            console.print(f"[dim]new conversation (session {session})[/dim]")
            continue
        if text == "/memory":
            _show_memory(endpoint, headers)
            continue
        sys.stdout.write(f"{name}> ")
        stream_answer(endpoint, headers, name, text, session,
                      lambda t: (sys.stdout.write(t), sys.stdout.flush()), show_event)
        sys.stdout.write("\n")


def _show_memory(endpoint: str, headers: dict[str, str]) -> None:
    import httpx

    from den.cli.output import say

    response = httpx.get(f"{endpoint}/den/v1/memory", headers=headers, timeout=30)
    if response.status_code != 200:
        say(f"memory unavailable ({response.status_code})")
        return
    items = response.json().get("items", [])
    if not items:
        say("(no memories yet)")
    for item in items:
        say(f"- {item.get('text', item)}")
