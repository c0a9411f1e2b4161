"""A slow SQLite or file call never stalls the runtime: it runs off the event loop.

Each case makes one store call hang until the test lets it go, sends a request that
reaches it, and checks that other requests are all answered while that call still hangs.
Were the call made on the event loop, nothing else would be answered until it gave up
waiting (after HOLD seconds) and returned.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from den.api.resource import Agent
from den.runtime.state import RuntimeState
from den.runtime.tools import files
from tests.integration.conftest import agent_resource, serve_app

AUTH = {"Authorization": "Bearer t"}
HOLD = 5.0  # seconds a held call waits for the test before it gives up and goes on


@dataclass
class Slow:
    """The request to send, and which call on its way (``attribute`` of ``owner``) hangs."""

    owner: Callable[[RuntimeState], Any]
    attribute: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] | None = None


def chat(text: str) -> dict[str, Any]:
    return {"model": "test-bot", "messages": [{"role": "user", "content": text}]}


CASES = {
    "memory search": Slow(lambda s: s.memory, "search", "GET", "/den/v1/memory?q=deadline"),
    "status counting memos": Slow(lambda s: s.memory, "count", "GET", "/den/v1/status"),
    "runs list": Slow(lambda s: s.runs.store, "list", "GET", "/den/v1/runs"),
    "run lookup": Slow(lambda s: s.runs.store, "get", "GET", "/den/v1/runs/run-nope"),
    "memo_search tool": Slow(lambda s: s.memory, "search", "POST", "/den/v1/tools/memo_search",
                             {"query": "deadline"}),
    "schedule_task tool": Slow(lambda s: s.interceptor.ctx.scheduler, "schedule", "POST",
                               "/den/v1/tools/schedule_task",
                               {"name": "daily", "schedule": "0 9 * * *", "prompt": "report"}),
    "file_read tool": Slow(lambda s: files, "confined", "POST", "/den/v1/tools/file_read",
                           {"path": "notes.txt"}),
    "recall in a chat turn": Slow(lambda s: s.memory, "search", "POST", "/v1/chat/completions",
                                  chat("when is the deadline?")),
    "session merge": Slow(lambda s: s.sessions, "load", "POST", "/v1/chat/completions",
                          chat("hello"), {"X-Den-Session": "s1"}),
    "session save": Slow(lambda s: s.sessions, "save", "POST", "/v1/chat/completions",
                         chat("hello"), {"X-Den-Session": "s1"}),
}

#: Requests that touch nothing the held call holds: each must be answered meanwhile.
OTHERS = [
    ("GET", "/den/v1/tools", None),
    ("GET", "/v1/models", None),
    ("POST", "/den/v1/memory", {"text": "the deadline moved to Friday"}),
    ("GET", "/healthz", None),
]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RuntimeState]]:
    """One agent (with a volume, so it keeps sessions) for every case: its URL and its state."""
    from den.runtime.app import create_app
    from den.runtime.scripted_model import create_scripted_app

    with serve_app(create_scripted_app()) as model_url:
        data = agent_resource(base_url=f"{model_url}/v1").model_dump(mode="json")
        data["spec"]["tools"] = ["memo_search", "schedule_task", "file_read"]
        app = create_app(Agent.model_validate(data), env={"DEN_API_TOKEN": "t"},
                         home=tmp_path_factory.mktemp("home"))
        with serve_app(app) as url:
            yield url, app.state.runtime


class Hold:
    """``owner.attribute``, once called, waits for :meth:`release` (at most HOLD seconds)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: Any, attribute: str) -> None:
        self.entered = threading.Event()
        self._released = threading.Event()
        self.gave_up = False
        original = getattr(owner, attribute)

        def held(*args: Any, **kwargs: Any) -> Any:
            self.entered.set()
            if not self._released.wait(HOLD):
                self.gave_up = True
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, attribute, held)

    def release(self) -> None:
        self._released.set()


def send(url: str, method: str, path: str, body: dict[str, Any] | None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.request(method, url + path, json=body, headers={**AUTH, **(headers or {})}, timeout=30)


@pytest.mark.parametrize("slow", CASES.values(), ids=CASES.keys())
def test_other_requests_are_answered_while_one_waits_on_the_store(
    slow: Slow, runtime: tuple[str, RuntimeState], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = runtime
    hold = Hold(monkeypatch, slow.owner(state), slow.attribute)

    with ThreadPoolExecutor(len(OTHERS) + 1) as pool:
        held = pool.submit(send, url, slow.method, slow.path, slow.body, slow.headers)
        assert hold.entered.wait(10), f"{slow.method} {slow.path} never reached {slow.attribute}"
        others = [pool.submit(send, url, method, path, body) for method, path, body in OTHERS]
        try:
            answered = [future.result(timeout=HOLD + 10) for future in others]
        finally:
            hold.release()
        held_response = held.result(timeout=30)

    assert not hold.gave_up, (
        f"while {slow.method} {slow.path} waited in {slow.attribute}, no other request was answered: "
        "that call blocks the event loop"
    )
    for (method, path, _), response in zip(OTHERS, answered, strict=True):
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    assert held_response.status_code < 500, held_response.text
