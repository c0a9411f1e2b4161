"""The one error hierarchy of Den.

Every error a user can cause or meet is a :class:`DenError`. The CLI turns it
into a message (never a traceback, unless ``--debug``) and an exit code.
"""

from __future__ import annotations

from dataclasses import dataclass


class DenError(Exception):
    """Base of every error Den reports to a user."""

    exit_code = 1
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input: where it is and what was expected."""

    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class InvalidAgentfile(DenError):
    """One or more inputs failed validation; nothing was stored."""

    exit_code = 1

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class NotFound(DenError):
    exit_code = 3


class Conflict(DenError):
    """A write carried a stale resourceVersion (optimistic concurrency)."""

    exit_code = 4


class AlreadyExists(Conflict):
    exit_code = 4


class BackendUnavailable(DenError):
    """Docker (or the Kubernetes API) cannot be reached."""

    exit_code = 5


class WaitTimeout(DenError):
    exit_code = 6


class CredentialsError(DenError):
    exit_code = 7
