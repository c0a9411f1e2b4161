"""The runtime's settings and the two files the operator hands it.

Everything the runtime reads from its environment is read here, once:

=================  ========================  ===========================================
``DEN_CONFIG``     ``/den/.den/agent.json``  the Agent resource manifest (JSON)
``DEN_ENV_FILE``   ``/den/.den/env.json``    a JSON object of environment variables
                                             (API token, gateway URL and token,
                                             resolved ``runtime.env``: never provider keys)
``DEN_HOST``       ``0.0.0.0``               address the API listens on
``DEN_PORT``       ``8800``                  port the API listens on
``DEN_HOME_DIR``   ``/den``                  the agent's home (its volume)
``DEN_LOG_LEVEL``  ``info``                  debug, info, warning or error
=================  ========================  ===========================================

The env file holds secrets: its contents are loaded into ``os.environ`` and
never logged (only how many variables it held).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from den.api.contract import CONFIG_FILE, CONTAINER_PORT, ENV_FILE, HOME_DIR
from den.api.resource import Agent

PREFIX = "DEN_"


class ConfigError(Exception):
    """The runtime cannot start: a message saying which file or variable is wrong."""


class Settings(BaseModel):
    """``DEN_*`` environment variables (pydantic-settings is not a runtime dependency)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: Path = Field(Path(CONFIG_FILE), description="DEN_CONFIG")
    env_file: Path = Field(Path(ENV_FILE), description="DEN_ENV_FILE")
    host: str = Field("0.0.0.0", min_length=1, description="DEN_HOST")
    port: int = Field(CONTAINER_PORT, ge=1, le=65535, description="DEN_PORT")
    home_dir: Path = Field(Path(HOME_DIR), description="DEN_HOME_DIR")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="DEN_LOG_LEVEL")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for field in cls.model_fields:
            variable = PREFIX + field.upper()
            if variable in environ:
                values[field] = environ[variable].lower() if field == "log_level" else environ[variable]
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{PREFIX}{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"invalid runtime settings: {problems}") from None


def read_env_file(path: Path) -> dict[str, str]:
    """The environment variables in ``path`` (a JSON object of strings); ``{}`` if it is absent."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        # The message names the file and the position only, never its content.
        raise ConfigError(f"{path}: not a readable JSON file ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object of environment variables")
    bad = sorted(str(k) for k, v in data.items() if not isinstance(v, str))
    if bad:
        raise ConfigError(f"{path}: values must be strings (not for {', '.join(bad)})")
    return data


def apply_env(env: Mapping[str, str], environ: MutableMapping[str, str] | None = None) -> None:
    """Load ``env`` into the process environment (it wins over the image's variables)."""
    target = os.environ if environ is None else environ
    target.update(env)


def read_agent(path: Path) -> Agent:
    """The Agent resource in ``path`` (the full manifest: apiVersion, kind, metadata, spec)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (set DEN_CONFIG to the agent's JSON)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file: {exc}") from None
    try:
        return Agent.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path}: not a valid Agent resource: {problems}") from None
