"""den auth: provider keys kept in $DEN_HOME/credentials (mode 0600)."""

from __future__ import annotations

import sys

import typer

from den.cli.main import app
from den.cli.output import say, table


@app.command()
def auth(
    args: list[str] = typer.Argument(..., help="PROVIDER | list | remove PROVIDER"),
    stdin: bool = typer.Option(False, "--stdin", help="Read the key from standard input."),
) -> None:
    """Store a provider key for agents to use (never written to the state store).

    Examples:

      den auth openai                       # asks for the key (hidden)

      echo "$KEY" | den auth anthropic --stdin

      den auth list

      den auth remove openai
    """
    from den.api.contract import provider_key_name
    from den.api.errors import DenError
    from den.operator.secrets import load_credentials, mask, remove_credential, save_credential

    if args[0] == "list":
        keys = load_credentials()
        table(["PROVIDER", "ENV", "KEY"], [[p, provider_key_name(p), mask(k)] for p, k in sorted(keys.items())],
              empty="No keys stored. Try: den auth openai")
        return
    if args[0] == "remove":
        if len(args) != 2:
            raise DenError("usage: den auth remove PROVIDER")
        if not remove_credential(args[1]):
            raise DenError(f"no key stored for {args[1]}", hint="den auth list")
        say(f"removed the key for {args[1]}")
        return
    if len(args) != 1:
        raise DenError("usage: den auth PROVIDER [--stdin] | den auth list | den auth remove PROVIDER")
    provider = args[0].lower()
    key = sys.stdin.readline().strip() if stdin else typer.prompt(f"{provider} API key", hide_input=True)
    save_credential(provider, key)
    say(f"stored the key for {provider} ({mask(key)}); agents using provider {provider} get it as "
        f"{provider_key_name(provider)} (running agents pick it up within seconds)")
