"""Provider keys, ``${VAR}`` references and per-agent tokens, owned by the reconciler.

Provider keys go to the model gateway only (``$DEN_HOME/gateway/keys.json``,
mounted read-only into it): never into an agent. An agent gets its resolved
``runtime.env`` less any model provider key, its API token, and its gateway
token (worthless anywhere but at the gateway, for that agent).

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

from den.api.contract import GATEWAY_TOKEN_ENV, GATEWAY_URL_ENV, TOKEN_ENV, provider_key_name
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


def _lookup(sources: tuple[Mapping[str, str], ...], variable: str) -> str | None:
    return next((source[variable] for source in sources if variable in source), None)


def resolve_env(agent: Agent, *sources: Mapping[str, str]) -> dict[str, str]:
    """``runtime.env`` with every ``${VAR}`` resolved (first source wins), less the model
    provider's key variable (that goes to the gateway, not the agent). Raises
    :class:`MissingVariable` naming the first unresolved reference."""
    key_name = provider_key_name(agent.spec.model.provider)
    resolved: dict[str, str] = {}
    for key, value in agent.spec.runtime.env.items():
        for variable in _REFERENCE.findall(value):
            if _lookup(sources, variable) is None:
                raise MissingVariable(agent, key, variable)
        if key != key_name:
            resolved[key] = _REFERENCE.sub(lambda m: _lookup(sources, m.group(1)) or "", value)
    return resolved


def provider_key(agent: Agent, *sources: Mapping[str, str]) -> str | None:
    """The model provider's key for ``agent`` (for the gateway): ``runtime.env`` naming the
    key variable wins, then the sources by variable name."""
    key_name = provider_key_name(agent.spec.model.provider)
    declared = agent.spec.runtime.env.get(key_name)
    if declared is not None:
        value = _REFERENCE.sub(lambda m: _lookup(sources, m.group(1)) or "", declared)
        return value or None
    return _lookup(sources, key_name)


# -- API tokens -------------------------------------------------------------------------


def token_path(agent: Agent) -> Path:
    return names.tokens_dir() / f"{agent.namespace}.{agent.name}"


def read_token(agent: Agent) -> str | None:
    path = token_path(agent)
    return path.read_text().strip() or None if path.exists() else None


def ensure_token(agent: Agent, *, kind: str = "api") -> str:
    """The agent's API token (or, with ``kind="gateway"``, its gateway token), made once and
    kept across down/up so clients keep working."""
    path = token_path(agent) if kind == "api" else gateway_token_path(agent)
    return _ensure_secret(path, "den_" if kind == "api" else "dengw_")


def _ensure_secret(path: Path, prefix: str) -> str:
    """A random secret kept in ``path`` (0600); made once, race-free: two workers asking at
    once get the same value (the file appears whole, by link, or not at all)."""
    existing = path.read_text().strip() if path.exists() else ""
    if existing:
        return existing
    token = prefix + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        token = path.read_text().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return token


def gateway_token_path(agent: Agent) -> Path:
    return names.tokens_dir() / f"{agent.namespace}.{agent.name}.gateway"


def admin_token() -> str:
    """The token the CLI reads the gateway's ledger with (never given to an agent)."""
    return _ensure_secret(names.tokens_dir() / "gateway-admin", "denadm_")


# -- what the reconciler delivers -------------------------------------------------------


class LocalCredentials:
    """The reconciler's source of an agent's private environment on this machine."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def _sources(self, agent: Agent) -> tuple[Mapping[str, str], ...]:
        by_variable = {provider_key_name(p): k for p, k in load_credentials().items()}
        return (_read_private_json(captured_env_path(agent)), by_variable, self.environ)

    def secrets_for(self, agent: Agent, *, make_token: bool = True) -> AgentSecrets:
        """What the agent gets: resolved ``runtime.env`` (no provider key), its API token, the
        gateway's URL and its gateway token. Raises :class:`MissingVariable`. With
        ``make_token=False`` (``den inspect``) missing tokens are left missing."""
        env = resolve_env(agent, *self._sources(agent))
        env[GATEWAY_URL_ENV] = names.gateway_url()
        gateway = ensure_token(agent, kind="gateway") if make_token else (
            gateway_token_path(agent).read_text().strip() if gateway_token_path(agent).exists() else None)
        token = ensure_token(agent) if make_token else read_token(agent)
        if gateway:
            env[GATEWAY_TOKEN_ENV] = gateway
        if token:
            env[TOKEN_ENV] = token
        return AgentSecrets(env)

    def provider_key_for(self, agent: Agent) -> str | None:
        """The model provider key this agent's calls carry at the gateway, if any source has it."""
        return provider_key(agent, *self._sources(agent))

    def forget(self, agent: Agent) -> None:
        """Remove the agent's token and captured environment (``den destroy``)."""
        token_path(agent).unlink(missing_ok=True)
        gateway_token_path(agent).unlink(missing_ok=True)
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
