"""Provider keys and ``${VAR}`` references: resolved at start time, never stored in the state store.

``den auth PROVIDER`` keeps keys in ``$DEN_HOME/credentials`` (JSON, mode
0600; refused, like ssh does, when others can read it). ``den up`` resolves
the Agentfile's ``runtime.env`` references from the caller's environment and
those credentials into ``$DEN_HOME/secrets/<namespace>.<name>.json`` (0600),
which the operator hands to the container as a file on the agent's volume:
never as ``-e`` flags that ``docker inspect`` would show.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from den.api.errors import CredentialsError, DenError
from den.api.resource import Agent
from den.operator import names

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def provider_key_name(provider: str) -> str:
    """``openai`` -> ``OPENAI_API_KEY`` (litellm's convention)."""
    return re.sub(r"[^A-Z0-9]", "_", provider.upper()) + "_API_KEY"


def _write_private(path: Path, data: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(dict(data), handle, indent=2, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); refusing to use it",
            hint=f"chmod 600 {path}",
        )


def load_credentials(path: Path | None = None) -> dict[str, str]:
    path = path or names.credentials_path()
    if not path.exists():
        return {}
    _check_private(path)
    try:
        data = json.loads(path.read_text() or "{}")
    except json.JSONDecodeError as exc:
        raise CredentialsError(f"{path} is not valid JSON: {exc}") from None
    return {str(k): str(v) for k, v in data.items()}


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


def mask(value: str) -> str:
    return value[:3] + "…" + value[-4:] if len(value) > 10 else "****"


def resolve_env(agent: Agent, environ: Mapping[str, str], credentials: Mapping[str, str]) -> dict[str, str]:
    """The environment the agent's runtime gets: ``runtime.env`` resolved, plus its provider's key."""
    lookup = {provider_key_name(p): k for p, k in credentials.items()}
    lookup.update(environ)
    resolved: dict[str, str] = {}
    for key, value in agent.spec.runtime.env.items():
        missing = [v for v in _REFERENCE.findall(value) if v not in lookup]
        if missing:
            raise DenError(
                f"agent {agent.name}: runtime.env.{key} references ${{{missing[0]}}}, which is not set",
                hint=f"export {missing[0]}=... or run: den auth <provider>",
            )
        resolved[key] = _REFERENCE.sub(lambda m: lookup[m.group(1)], value)
    key_name = provider_key_name(agent.spec.model.provider)
    if key_name not in resolved and key_name in lookup:
        resolved[key_name] = lookup[key_name]
    return resolved


def runtime_env_path(agent: Agent) -> Path:
    return names.den_home() / "secrets" / f"{agent.namespace}.{agent.name}.json"


def write_runtime_env(agent: Agent, env: Mapping[str, str]) -> None:
    _write_private(runtime_env_path(agent), env)


def read_runtime_env(agent: Agent) -> dict[str, str]:
    path = runtime_env_path(agent)
    if not path.exists():
        return {}
    _check_private(path)
    return json.loads(path.read_text())


def forget_runtime_env(agent: Agent) -> None:
    runtime_env_path(agent).unlink(missing_ok=True)
