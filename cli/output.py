"""How the CLI prints: rich tables for people, ``-o json|yaml`` for programs.

rich is imported lazily (the CLI must start fast); it honours ``NO_COLOR``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class Format(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


@cache
def console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """A line for people (rich markup allowed)."""
    console().print(message)


def warn(message: str) -> None:
    err_console().print(f"[yellow]warning:[/yellow] {message}")


def error(message: str, hint: str | None = None) -> None:
    from rich.markup import escape

    err_console().print(f"[bold red]error:[/bold red] {escape(message)}")
    if hint:
        err_console().print(f"[dim]hint:[/dim] {escape(hint)}")


def emit(data: Any, fmt: Format) -> None:
    """Machine-readable output on stdout, never wrapped or coloured."""
    if fmt == Format.json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    else:
        from den.api.loader import dump_yaml

        sys.stdout.write(dump_yaml(data))
    sys.stdout.flush()


def table(columns: list[str], rows: list[list[str]], *, empty: str = "Nothing found.") -> None:
    if not rows:
        err_console().print(empty)
        return
    from rich import box
    from rich.table import Table

    view = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        view.add_column(column, overflow="fold")
    for row in rows:
        view.add_row(*row)
    console().print(view)


def age(timestamp: str | None) -> str:
    """Kubernetes-style age: 42s, 5m, 3h, 2d."""
    if not timestamp:
        return "-"
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "-"
    return duration((datetime.now(UTC) - then).total_seconds())


def duration(seconds: float) -> str:
    """42s, 5m, 3h, 2d: the largest whole unit, as kubectl prints ages."""
    whole = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"
