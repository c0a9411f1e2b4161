"""Fixtures for HTTP integration tests: the scripted model and a runtime serving one agent.

Both run under uvicorn in a background thread on a free 127.0.0.1 port (the
``serve_app`` helper of ``tests/conftest.py``) and are shut down when the
test ends, even when it fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, serve_app

__all__ = ["AUTH", "TOKEN", "ScriptedModel", "agent_resource", "free_port", "serve_app"]

#: The API token ``serve_runtime`` gives an agent unless the test passes its own env.
TOKEN = "den_test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class ScriptedModel:
    """A running scripted model: its root URL, its OpenAI base URL and its request log."""

    url: str

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def requests(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/requests", timeout=10).json()

    def all_chat_bodies(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests() if r["path"].endswith("/chat/completions")]

    def chat_bodies(self) -> list[dict[str, Any]]:
        """The agent's own turns (not the memory's background calls: :meth:`memory_bodies`)."""
        return [b for b in self.all_chat_bodies() if not is_memory_call(b)]

    def memory_bodies(self) -> list[dict[str, Any]]:
        """Fact extraction and summaries, made after a turn off the response path."""
        return [b for b in self.all_chat_bodies() if is_memory_call(b)]

    def clear(self) -> None:
        httpx.delete(f"{self.url}/requests", timeout=10)


def is_memory_call(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    first = str(messages[0].get("content") or "") if messages else ""
    return first.startswith(("DEN-FACT-EXTRACTION", "DEN-SUMMARY"))


@pytest.fixture
def scripted_model() -> Iterator[ScriptedModel]:
    from den.runtime.scripted_model import create_scripted_app

    with serve_app(create_scripted_app()) as url:
        yield ScriptedModel(url)


def agent_resource(name: str = "test-bot", *, generation: int = 3, tools: list[str] | None = None, **model: Any):
    """An Agent resource, as the operator writes to DEN_CONFIG; ``model`` overrides spec.model."""
    from den.api.resource import Agent

    return Agent.model_validate({
        "apiVersion": "den.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name, "namespace": "default", "generation": generation},
        "spec": {
            "model": {"provider": "openai", "name": "scripted", "temperature": 0.3, "max_tokens": 123, **model},
            "identity": {"system_prompt": "You are Test Bot.",
                         "personality": {"tone": "formal", "verbosity": "concise"}},
            "tools": tools or [],
        },
    })


@pytest.fixture
def serve_runtime() -> Iterator[Callable[..., str]]:
    """Serve ``create_app(agent, env=...)``; returns the runtime's root URL.

    The agent's API token is :data:`TOKEN` (send :data:`AUTH`) unless ``env`` says otherwise."""
    from den.runtime.app import create_app

    with contextlib.ExitStack() as stack:

        def start(agent, env: Mapping[str, str] | None = None, home=None, config_path=None) -> str:
            return stack.enter_context(serve_app(create_app(agent, env={"DEN_API_TOKEN": TOKEN, **(env or {})},
                                                            home=home, config_path=config_path)))

        yield start


@dataclass
class Gateway:
    """A running model gateway over a config folder the test writes (as the operator does)."""

    url: str
    config_dir: Any
    admin_token: str

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def write(self, agents: dict[str, dict[str, Any]], keys: dict[str, str] | None = None) -> None:
        """``agents``: gateway token -> {name, model, budget}; written as hashes, like the operator."""
        import hashlib
        import json

        def digest(text: str) -> str:
            return hashlib.sha256(text.encode()).hexdigest()

        config = {"admin_token_sha256": digest(self.admin_token),
                  "agents": {digest(t): {"namespace": "default", **e} for t, e in agents.items()}}
        for name, data in (("agents.json", config), ("keys.json", keys or {})):
            tmp = self.config_dir / f"{name}.tmp"
            tmp.write_text(json.dumps(data))
            tmp.replace(self.config_dir / name)

    def ledger(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/den/v1/ledger", timeout=10,
                         headers={"Authorization": f"Bearer {self.admin_token}"}).json()


@pytest.fixture
def serve_gateway(tmp_path) -> Iterator[Callable[..., Gateway]]:
    """Start model gateways (``data`` keeps the ledger: pass the same folder to restart one)."""
    from den.runtime.gateway.app import build_app

    with contextlib.ExitStack() as stack:

        def start(*, data=None, direct: bool = True) -> Gateway:
            config_dir = tmp_path / "gateway-config"
            config_dir.mkdir(exist_ok=True)
            url = stack.enter_context(serve_app(build_app(config_dir, data or tmp_path / "gateway-data",
                                                          direct=direct)))
            return Gateway(url, config_dir, "denadm_test-admin")

        yield start
