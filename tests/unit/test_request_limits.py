"""The size rules, pure: the body limit middleware, the request limit of a window, the context rule."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from den.api.agentfile import AgentSpec
from den.runtime.agent.context import overflow, request_limit
from den.runtime.agent.sessions import Sessions
from den.runtime.body_limit import BodyLimitMiddleware, BodyTooLarge, size_text

MIB = 1024 * 1024


def spec(**model) -> AgentSpec:
    return AgentSpec.model_validate({"model": {"provider": "openai", "name": "m", **model}})


# -- the body limit ---------------------------------------------------------------------------------


class Exchange:
    """One request through the middleware: the body in ``pieces``, what the app and the client saw."""

    def __init__(self, pieces: list[bytes], headers: list[tuple[bytes, bytes]] = ()) -> None:
        self.pieces = list(pieces)
        self.headers = list(headers)
        self.received = 0  # body messages the middleware or the app took
        self.sent: list[dict] = []
        self.app_read = b""
        self.app_called = False

    async def receive(self) -> dict:
        if not self.pieces:
            return {"type": "http.disconnect"}
        self.received += 1
        piece = self.pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(self.pieces)}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    async def app(self, scope, receive, send) -> None:
        """Reads the whole body like FastAPI; a body it cannot read is its 400."""
        self.app_called = True
        try:
            while True:
                message = await receive()
                self.app_read += message.get("body", b"")
                if not message.get("more_body"):
                    break
        except BodyTooLarge:
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"cannot parse"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read %d" % len(self.app_read)})

    def run(self, limit: int) -> tuple[int, dict | bytes]:
        middleware = BodyLimitMiddleware(self.app, limit=lambda scope: limit, where="send less")
        scope = {"type": "http", "method": "POST", "path": "/", "headers": self.headers}
        asyncio.run(middleware(scope, self.receive, self.send))
        status = self.sent[0]["status"]
        body = b"".join(m.get("body", b"") for m in self.sent[1:])
        return status, json.loads(body) if status == 413 else body


def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    exchange = Exchange([b"a" * 600, b"b" * 400], [(b"content-length", b"1000")])
    assert exchange.run(1000) == (200, b"read 1000")


def test_a_declared_length_over_the_limit_is_refused_before_the_app_and_the_body_is_drained() -> None:
    exchange = Exchange([b"x" * 1000] * 5, [(b"content-length", b"5000")])
    status, body = exchange.run(1024)
    assert status == 413 and not exchange.app_called and exchange.received == 5
    assert body == {"error": {"message": "the request body is larger than this server accepts (1 KiB); send less",
                              "type": "invalid_request_error", "param": None, "code": "request_too_large"}}


def test_a_client_waiting_for_100_continue_gets_the_refusal_without_sending_the_body() -> None:
    exchange = Exchange([b"x" * 5000], [(b"content-length", b"5000"), (b"expect", b"100-continue")])
    assert exchange.run(1024)[0] == 413 and exchange.received == 0


def test_a_chunked_body_is_cut_off_as_it_passes_the_limit_and_the_apps_answer_replaced() -> None:
    exchange = Exchange([b"x" * 400] * 10)  # no Content-Length
    status, body = exchange.run(1000)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert exchange.app_called and len(exchange.app_read) == 800  # the third piece was never handed over
    assert exchange.received == 10  # the rest was read and dropped, so the client hears the answer
    assert [m["type"] for m in exchange.sent] == ["http.response.start", "http.response.body"]


def test_sizes_are_said_in_the_largest_whole_unit() -> None:
    assert [size_text(n) for n in (MIB, 32 * MIB, 4096, 1500)] == ["1 MiB", "32 MiB", "4 KiB", "1500 bytes"]


# -- the agent's limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "limit"), [
    (None, MIB), (8192, MIB), (131072, MIB), (262144, 2 * MIB), (1024 * 1024, 8 * MIB), (10_000_000, 32 * MIB),
])
def test_the_request_limit_is_8_bytes_per_token_of_the_window_within_1_and_32_mib(window, limit) -> None:
    assert request_limit(spec(context_window=window)) == limit


def test_runtime_max_request_bytes_overrides_the_windows_rule() -> None:
    agent = AgentSpec.model_validate({"model": {"provider": "openai", "name": "m"},
                                      "runtime": {"max_request_bytes": 4096}})
    assert request_limit(agent) == 4096


def test_a_newest_message_too_long_by_its_characters_is_refused_without_counting_its_words() -> None:
    problem = overflow(spec(), [{"role": "user", "content": "x" * 40000}])
    assert problem is not None and "at least 10004 tokens" in problem and "8192 tokens" in problem


def test_a_message_of_many_short_words_is_refused_by_its_word_estimate() -> None:
    text = "a " * 4000  # 8000 characters (2000 tokens by length), 4000 words (5334 by words)
    assert overflow(spec(context_window=4096), [{"role": "user", "content": text}]) is not None
    assert overflow(spec(context_window=16384), [{"role": "user", "content": text}]) is None


def test_only_the_newest_user_message_must_fit_older_ones_are_dropped_to_fit_later() -> None:
    old = {"role": "user", "content": "x" * 100000}
    assert overflow(spec(), [old, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "hi"}]) is None
    assert overflow(spec(), [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x" * 100000}]) is None
    assert overflow(spec(), []) is None


def test_a_session_keeps_its_newest_messages_within_its_byte_bound(tmp_path) -> None:
    sessions = Sessions(tmp_path / "sessions.db", max_bytes=2000)
    messages = [{"role": "user", "content": f"{i} " + "x" * 300} for i in range(20)]
    sessions.save("s", messages)
    kept = sessions.load("s")
    assert kept == messages[-len(kept):] and 4 <= len(kept) <= 6
    sessions.save("big", [{"role": "user", "content": "y" * 5000}])
    assert len(sessions.load("big")) == 1  # the newest is kept whatever its size


def test_the_gateway_will_not_start_with_a_body_limit_that_is_not_a_number_of_bytes(tmp_path) -> None:
    env = {**os.environ, "DEN_GATEWAY_MAX_REQUEST_BYTES": "lots", "DEN_GATEWAY_CONFIG_DIR": str(tmp_path),
           "DEN_GATEWAY_DATA": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "den.runtime.gateway"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "DEN_GATEWAY_MAX_REQUEST_BYTES: expected a number of bytes (1024 or more), got 'lots'" in done.stdout
