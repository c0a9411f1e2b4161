"""What the gateway serves: agents by token hash, their model settings and budgets, and the keys.

The operator writes two files into the gateway's config folder (mounted
read-only): ``agents.json`` (``{"admin_token_sha256", "agents": {sha256(token):
{namespace, name, model, budget}}}``) and ``keys.json`` (``{"OPENAI_API_KEY":
"..."}``). They are re-read when they change (a stat per lookup), so a
rotated key or a new agent reaches the gateway without a restart. Tokens are
only ever compared as hashes; keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from den.api.contract import provider_key_name


@dataclass(frozen=True)
class ModelSettings:
    provider: str
    name: str
    base_url: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None

    @property
    def openai_compatible(self) -> bool:
        """Forwarded as is (no translation): OpenAI itself, or any server at a ``base_url``."""
        return self.provider == "openai" or bool(self.base_url)

    @property
    def litellm_id(self) -> str:
        return f"openai/{self.name}" if self.base_url else f"{self.provider}/{self.name}"


@dataclass(frozen=True)
class Budget:
    usd_per_day: float | None = None
    tokens_per_day: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"usd_per_day": self.usd_per_day, "tokens_per_day": self.tokens_per_day}


@dataclass(frozen=True)
class AgentEntry:
    namespace: str
    name: str
    model: ModelSettings
    budget: Budget

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ConfigError(Exception):
    """A config file is missing or malformed (the gateway keeps serving what it had)."""


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:  # the message never carries the content
        raise ConfigError(f"{path}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def _entry(data: dict) -> AgentEntry:
    model = data.get("model") or {}
    budget = data.get("budget") or {}
    return AgentEntry(
        namespace=str(data.get("namespace") or "default"), name=str(data["name"]),
        model=ModelSettings(provider=str(model["provider"]), name=str(model["name"]),
                            base_url=model.get("base_url") or None, temperature=model.get("temperature"),
                            max_tokens=model.get("max_tokens")),
        budget=Budget(usd_per_day=budget.get("usd_per_day"), tokens_per_day=budget.get("tokens_per_day")),
    )


class GatewayConfig:
    """The config folder, re-read whenever one of its files changes."""

    def __init__(self, folder: Path, environ: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.environ = dict(os.environ if environ is None else environ)
        self._lock = threading.Lock()
        self._stamps: tuple = ()
        self._agents: dict[str, AgentEntry] = {}
        self._keys: dict[str, str] = {}
        self._admin: str | None = None
        self.loaded = False
        self.refresh()

    def refresh(self) -> None:
        stamps = (_stamp(self.folder / "agents.json"), _stamp(self.folder / "keys.json"))
        if stamps == self._stamps:
            return
        with self._lock:
            if stamps == self._stamps:
                return
            config, keys = _read(self.folder / "agents.json"), _read(self.folder / "keys.json")
            agents = {str(digest): _entry(entry) for digest, entry in (config.get("agents") or {}).items()}
            self._agents, self._admin = agents, config.get("admin_token_sha256")
            self._keys = {str(k): str(v) for k, v in keys.items() if v}
            self._stamps = stamps
            self.loaded = stamps[0] is not None

    def agent(self, token: str) -> AgentEntry | None:
        """The agent a gateway token belongs to, or None."""
        if not token:
            return None
        self.refresh()
        return self._agents.get(sha256(token))

    def is_admin(self, token: str) -> bool:
        self.refresh()
        return bool(token and self._admin) and hmac.compare_digest(sha256(token), self._admin or "")

    def key_for(self, model: ModelSettings) -> str | None:
        """The provider key for ``model``: ``keys.json``, else the gateway's own environment
        (as of the last refresh: the request's :meth:`agent` lookup has just made one)."""
        variable = provider_key_name(model.provider)
        return self._keys.get(variable) or self.environ.get(variable)

    def secrets(self) -> list[str]:
        """Every key value, for redaction from error bodies and logs."""
        return [v for v in self._keys.values() if v]

    def agents(self) -> list[AgentEntry]:
        self.refresh()
        return list(self._agents.values())
