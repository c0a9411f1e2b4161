"""Provider keys, ``${VAR}`` references and per-agent API tokens, owned by the reconciler.

Nothing here is ever written to the state store, a log or a container's
configuration. Three sources resolve an agent's ``runtime.env``, first wins:

1. the environment of the ``den up`` / ``den apply`` that stored the agent:
   the CLI captures the variables the Agentfile references (and the model
   provider's key) into ``$DEN_HOME/env/<namespace>.<name>.json`` (0600);
2. ``den auth PROVIDER`` keys in ``$DEN_HOME/credentials`` (0600; refused,
   like ssh does, when others can read it), as ``<PROVIDER>_API_KEY``;
3. the operator's own environment.

Each agent's API token lives in ``$DEN_HOME/tokens/<namespace>.<name>`` (0600),
made by the reconciler the first time it sees the agent, however the agent
was created, and kept across down/up so clients keep working. The reconciler
delivers token and resolved variables to the agent privately, and a change of
either (a rotated key, a new token) is part of what it compares.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from den.api.contract import TOKEN_ENV, provider_key_name
from den.api.errors import CredentialsError, DenError
from den.api.resource import Agent
from den.operator import names
from den.operator.plan import AgentSecrets

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class MissingVariable(DenError):
    """A ``${VAR}`` in ``runtime.env`` has no value in any source."""

    def __init__(self, agent: Agent, field: str, variable: str) -> None:
        super().__init__(
            f"agent {agent.name}: runtime.env.{field} references ${{{variable}}}, which is not set",
            hint=f"export {variable}=... and run den up again, or: den auth <provider>",
        )
        self.variable = variable


# -- private files --------------------------------------------------------------------


def _write_private(path: Path, data: Mapping[str, str] | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        if isinstance(data, str):
            handle.write(data)
        else:
            json.dump(dict(data), handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); refusing to use it",
            hint=f"chmod 600 {path}",
        )


def _read_private_json(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    _check_private(path)
    try:
        data = json.loads(path.read_text() or "{}")
    except json.JSONDecodeError as exc:
        raise CredentialsError(f"{path} is not valid JSON: {exc}") from None
    return {str(k): str(v) for k, v in data.items()}


def mask(value: str) -> str:
    return value[:3] + "…" + value[-4:] if len(value) > 10 else "****"


# -- den auth ---------------------------------------------------------------------------


def load_credentials(path: Path | None = None) -> dict[str, str]:
    """``den auth`` keys by provider name."""
    return _read_private_json(path or names.credentials_path())


def save_credential(provider: str, key: str, path: Path | None = None) -> None:
    if not key.strip():
        raise CredentialsError("the key is empty")
    path = path or names.credentials_path()
    data = load_credentials(path)
    data[provider] = key.strip()
    _write_private(path, data)


def remove_credential(provider: str, path: Path | None = None) -> bool:
    path = path or names.credentials_path()
    data = load_credentials(path)
    if provider not in data:
        return False
    del data[provider]
    _write_private(path, data)
    return True


# -- the environment of den up / den apply ---------------------------------------------


def referenced_variables(agent: Agent) -> list[str]:
    """The variables ``runtime.env`` references, plus the model provider's key variable."""
    found = [v for value in agent.spec.runtime.env.values() for v in _REFERENCE.findall(value)]
    found.append(provider_key_name(agent.spec.model.provider))
    return list(dict.fromkeys(found))


def captured_env_path(agent: Agent) -> Path:
    return names.den_home() / "env" / f"{agent.namespace}.{agent.name}.json"


def capture_env(agent: Agent, environ: Mapping[str, str]) -> None:
    """Keep the values ``agent`` references from the caller's environment (0600), replacing
    what an earlier ``den up`` captured: the newest environment is the one that counts."""
    captured = {v: environ[v] for v in referenced_variables(agent) if v in environ}
    path = captured_env_path(agent)
    if captured or path.exists():
        _write_private(path, captured)


def resolve_env(agent: Agent, *sources: Mapping[str, str]) -> dict[str, str]:
    """``runtime.env`` with every ``${VAR}`` resolved (first source wins), plus the provider's
    key when a source has it. Raises :class:`MissingVariable` naming the first unresolved one."""
    def lookup(variable: str) -> str | None:
        return next((source[variable] for source in sources if variable in source), None)

    resolved: dict[str, str] = {}
    for key, value in agent.spec.runtime.env.items():
        for variable in _REFERENCE.findall(value):
            if lookup(variable) is None:
                raise MissingVariable(agent, key, variable)
        resolved[key] = _REFERENCE.sub(lambda m: lookup(m.group(1)) or "", value)
    key_name = provider_key_name(agent.spec.model.provider)
    provider_key = lookup(key_name)
    if key_name not in resolved and provider_key is not None:
        resolved[key_name] = provider_key
    return resolved


# -- API tokens -------------------------------------------------------------------------


def token_path(agent: Agent) -> Path:
    return names.tokens_dir() / f"{agent.namespace}.{agent.name}"


def read_token(agent: Agent) -> str | None:
    path = token_path(agent)
    return path.read_text().strip() or None if path.exists() else None


def ensure_token(agent: Agent) -> str:
    """The agent's token, made once and kept across down/up (clients keep working)."""
    existing = read_token(agent)
    if existing:
        return existing
    token = "den_" + secrets.token_urlsafe(32)
    _write_private(token_path(agent), token + "\n")
    return token


# -- what the reconciler delivers -------------------------------------------------------


class LocalCredentials:
    """The reconciler's source of an agent's private environment on this machine."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def secrets_for(self, agent: Agent, *, make_token: bool = True) -> AgentSecrets:
        """Token plus resolved ``runtime.env``; raises :class:`MissingVariable`. With
        ``make_token=False`` (``den inspect``) a missing token is left missing."""
        by_variable = {provider_key_name(p): k for p, k in load_credentials().items()}
        captured = _read_private_json(captured_env_path(agent))
        env = resolve_env(agent, captured, by_variable, self.environ)
        token = ensure_token(agent) if make_token else read_token(agent)
        return AgentSecrets({**env, TOKEN_ENV: token} if token else env)

    def forget(self, agent: Agent) -> None:
        """Remove the agent's token and captured environment (``den destroy``)."""
        token_path(agent).unlink(missing_ok=True)
        captured_env_path(agent).unlink(missing_ok=True)
        # The secrets file of Den 0.1 (resolved at `den up`), if one is left.
        (names.den_home() / "secrets" / f"{agent.namespace}.{agent.name}.json").unlink(missing_ok=True)

    def version(self) -> tuple[float, ...]:
        """Changes when any source file changes: the operator re-reconciles on it."""
        stamps = []
        for path in (names.credentials_path(), names.den_home() / "env", names.tokens_dir()):
            try:
                stamps.append(path.stat().st_mtime_ns)
            except FileNotFoundError:
                stamps.append(0)
        return tuple(stamps)
