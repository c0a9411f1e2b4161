"""den operator run|status|stop: the local control loop."""

from __future__ import annotations

from pathlib import Path

import typer

from den.cli.main import app
from den.cli.output import say

operator_app = typer.Typer(help="The local operator that keeps agents converged.", no_args_is_help=True)
app.add_typer(operator_app, name="operator")


@operator_app.command("run")
def run(
    log_file: Path = typer.Option(None, "--log-file", help="Write logs here instead of stderr."),
    kubernetes: bool = typer.Option(
        False, "--kubernetes", help="Converge Agent custom resources on a cluster (kopf) instead of Docker."),
    namespaces: list[str] = typer.Option(
        None, "--namespace", "-n", metavar="NAMESPACE", help="With --kubernetes: a namespace to watch (repeatable; all when none)."),
    context: str = typer.Option(None, "--context", metavar="CONTEXT", help="With --kubernetes: the kubeconfig context (in-cluster when unset)."),
) -> None:
    """Run the operator in the foreground (den up starts one in the background).

    On a cluster (the operator image's entry point, as the Helm chart runs it) the same
    reconciler converges Agent resources into StatefulSets, Services, NetworkPolicies and Secrets.

    Examples:

      den operator run

      den operator run --kubernetes --namespace agents
    """
    if kubernetes:
        from den.operator.kopf_operator import run as run_kubernetes

        raise typer.Exit(run_kubernetes(namespaces=list(namespaces or []), context=context))
    from den.operator.controller import run_operator

    raise typer.Exit(run_operator(log_file=log_file))


@operator_app.command("status")
def status() -> None:
    """Is the operator running?

    Example:

      den operator status
    """
    from den.operator.controller import operator_pid
    from den.operator.names import operator_log_path

    pid = operator_pid()
    if pid:
        say(f"operator running (pid {pid}); log: {operator_log_path()}")
    else:
        say("operator not running (den up starts it)")
        raise typer.Exit(1)


@operator_app.command("stop")
def stop() -> None:
    """Stop the background operator (agents keep running).

    Example:

      den operator stop
    """
    from den.operator.controller import stop_operator

    pid = stop_operator()
    say(f"operator (pid {pid}) stopped" if pid else "operator was not running")
