"""den dev: tools for developing with Den and trying it without a provider key."""

from __future__ import annotations

from pathlib import Path

import typer

dev_app = typer.Typer(
    help="Tools for developing with Den and trying it offline (no provider key needed).",
    no_args_is_help=True,
)


@dev_app.command("model")
def model(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="Port to listen on."),
    rules: Path = typer.Option(
        None, "--rules", exists=True, dir_okay=False, readable=True,
        help="YAML list of {match: REGEX, reply: TEXT} rules, tried before the built-in ones.",
    ),
    log: Path = typer.Option(
        None, "--log", dir_okay=False, help="Also append every request received to this file (JSON lines).",
    ),
) -> None:
    """Serve Den's scripted OpenAI-compatible model: deterministic answers, any API key.

    It answers "Hello from the scripted model. You said: <your message>",
    "ECHO SYSTEM" with the system prompt, "TOOL:<name> <json>" with a tool
    call (when the request offers that tool) and a tool result with "Tool
    result: <content>". GET /requests shows every request it received.

    Examples:

      den dev model

      den dev model --port 9000 --rules rules.yaml --log requests.jsonl

      den dev model --host 0.0.0.0   # reachable from agent containers

    Then point an Agentfile at it:

    \b
      model: {provider: openai, name: scripted, base_url: http://host.docker.internal:8765/v1}
    """
    from den.api.errors import DenError
    from den.runtime.scripted_model import load_rules, main

    try:
        if rules is not None:
            load_rules(rules)  # fail here, with the file's name, rather than in the server
    except (OSError, ValueError) as exc:
        raise DenError(f"cannot use the rules file: {exc}", hint="each rule is {match: REGEX, reply: TEXT}") from None
    typer.echo(f"scripted model on http://{host}:{port}/v1 (requests: http://{host}:{port}/requests); Ctrl-C stops it")
    main(host, port, log, rules)


from den.cli.main import app  # noqa: E402  (registered last, like the other command modules)

app.add_typer(dev_app, name="dev")
