"""The ``den`` command: the app, global options and error handling.

Commands live in modules named for what they do (``resources.py`` for
validate/apply/get/delete/events, ``init.py`` for init); each registers on
:data:`app`. Heavy libraries are imported inside commands, never here.
"""

from __future__ import annotations

import sys

import typer

from den import __version__
from den.api.contract import offline_litellm

offline_litellm()

app = typer.Typer(
    name="den",
    help=(
        "Den: Docker for AI agents.\n\n"
        "Write an Agentfile, then give the agent a home:\n\n"
        "  den init --name helper --model openai/gpt-4o-mini --non-interactive\n\n"
        "  den validate Agentfile\n\n"
        "  den apply -f Agentfile\n\n"
        "  den get agents"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state: dict = {"debug": False, "context": None}
#: Global options the commands read (``--debug``, ``--context``).
state = _state


def _version(value: bool) -> None:
    if value:
        typer.echo(f"den {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    context: str = typer.Option(
        None, "--context", envvar="DEN_CONTEXT", metavar="NAME",
        help=("A kubeconfig context: up, down, get, status, delete, destroy, logs, api and inspect act "
              "on that cluster's Agents; exec runs kubectl exec; connect, memory and cron go through "
              "a kubectl port-forward (--url)."),
    ),
) -> None:
    """Den: Docker for AI agents."""
    _state["debug"] = debug
    _state["context"] = context


def _register() -> None:
    from den.cli import (  # noqa: F401  (commands register themselves)
        auth,
        cluster,
        connect,
        cron,
        dev,
        init,
        lifecycle,
        memory,
        operator,
        resources,
    )


def run() -> None:
    """Entry point of the ``den`` console script."""
    from den.api.errors import DenError, InvalidAgentfile

    _register()
    debug = "--debug" in sys.argv
    try:
        app(prog_name="den")
    except InvalidAgentfile as exc:
        if debug:
            raise
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        sys.exit(exc.exit_code)
    except DenError as exc:
        if debug:
            raise
        from den.cli.output import error

        error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
