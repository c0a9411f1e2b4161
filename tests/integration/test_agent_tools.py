"""Tools through the agent, over real HTTP: multi-step calls, the interceptor, confinement, limits, loops."""

from __future__ import annotations

import asyncio
import http.server
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from den.api.resource import Agent
from den.runtime.tools.base import NetworkPolicy, ToolContext
from den.runtime.tools.registry import BUILTINS, ToolInterceptor
from tests.integration.conftest import AUTH, ScriptedModel, agent_resource, serve_app

TOOLS = ["file_read", "file_write", "file_list", "shell_exec", "memo_write", "memo_search", "http_request"]


def agent_with(base_url: str, **spec) -> Agent:
    data = agent_resource(base_url=base_url).model_dump(mode="json")
    data["spec"].update({"tools": TOOLS, **spec})
    return Agent.model_validate(data)


def ask(url: str, text: str) -> dict:
    response = httpx.post(f"{url}/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": text}]}, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_two_step_tool_conversation_writes_then_reads_a_file(scripted_model, serve_runtime) -> None:
    url = serve_runtime(agent_with(scripted_model.base_url))
    body = ask(url, 'TOOL:file_write {"path": "notes/a.txt", "content": "forty-two"}\n'
                    'TOOL:file_read {"path": "notes/a.txt"}')
    assert body["choices"][0]["message"]["content"] == "Tool result: forty-two"
    assert [s["tool"] for s in body["den"]["steps"]] == ["file_write", "file_read"]
    offered = {t["function"]["name"] for t in scripted_model.chat_bodies()[0]["tools"]}
    assert offered == set(TOOLS)
    stats = httpx.get(f"{url}/den/v1/status", headers=AUTH).json()["tools"]
    assert stats["calls"] == {"file_write": 1, "file_read": 1}


def test_an_unlisted_tool_is_refused_when_the_model_asks_and_when_called_directly(scripted_model, serve_runtime) -> None:
    url = serve_runtime(agent_with(scripted_model.base_url, tools=["file_read"]))
    body = ask(url, 'TOOL!:shell_exec {"command": "echo pwned"}')
    answer = body["choices"][0]["message"]["content"]
    assert "not permitted" in answer and "pwned" not in answer.replace("echo pwned", "")
    direct = httpx.post(f"{url}/den/v1/tools/shell_exec", json={"command": "echo pwned"}, headers=AUTH)
    assert direct.status_code == 403 and "not permitted" in direct.json()["error"]["message"]
    bad = httpx.post(f"{url}/den/v1/tools/file_read", json={"nope": 1}, headers=AUTH)
    assert bad.status_code == 422 and "path" in bad.json()["error"]["message"]
    assert httpx.post(f"{url}/den/v1/tools/file_read", content=b"{not json",
                      headers={"Content-Type": "application/json", **AUTH}).status_code == 400
    status = httpx.get(f"{url}/den/v1/status", headers=AUTH).json()
    assert status["tools"]["refused"] == {"shell_exec": 2} and status["tools"]["refused_total"] == 2
    listed = httpx.get(f"{url}/den/v1/tools", headers=AUTH).json()["tools"]
    assert [t["function"]["name"] for t in listed] == ["file_read"]


def test_memory_written_over_the_protocol_is_recalled_into_the_context(scripted_model, serve_runtime) -> None:
    url = serve_runtime(agent_with(scripted_model.base_url))
    assert httpx.post(f"{url}/den/v1/memory", json={"text": "The user's cat is called Miso."}, headers=AUTH).status_code == 201
    found = httpx.get(f"{url}/den/v1/memory", params={"q": "cat"}, headers=AUTH).json()
    assert found["items"][0]["text"] == "The user's cat is called Miso." and found["total"] == 1
    scripted_model.clear()
    ask(url, "What is my cat called?")
    system = scripted_model.chat_bodies()[0]["messages"][0]["content"]
    assert "Miso" in system


def context(tmp_path: Path, mode: str = "host", allow: list[str] | None = None) -> ToolContext:
    return ToolContext(agent="t", home=tmp_path, network=NetworkPolicy(mode, allow or []))


def call(ctx: ToolContext, name: str, args: dict):
    interceptor = ToolInterceptor({name: BUILTINS[name]()}, ctx)
    return asyncio.run(interceptor.call(name, args))


def test_schedule_task_creates_updates_lists_and_deletes_within_its_bounds(tmp_path: Path) -> None:
    from den.runtime.scheduler import TaskScheduler

    scheduler = TaskScheduler(tmp_path / "schedule.db", max_tasks=2, min_interval=3600,
                              reserved=lambda: {"briefing"})
    ctx = ToolContext(agent="t", home=tmp_path, scheduler=scheduler)
    stored = call(ctx, "schedule_task", {"name": "daily", "schedule": "0 9 * * *", "prompt": "report"})
    assert stored.ok and stored.content.startswith("scheduled task daily (0 9 * * *, UTC)")
    updated = call(ctx, "schedule_task", {"action": "update", "name": "daily", "schedule": "0 10 * * *",
                                          "prompt": "report", "timezone": "Europe/Paris"})
    assert updated.ok and [(t["name"], t["schedule"], t["timezone"], t["origin"]) for t in scheduler.list()] == [
        ("daily", "0 10 * * *", "Europe/Paris", "agent")]
    too_often = call(ctx, "schedule_task", {"name": "poll", "schedule": "*/5 * * * *", "prompt": "poll"})
    assert not too_often.ok and "runs every 300 s at the shortest" in too_often.content
    assert "runtime.task_min_interval" in too_often.content
    taken = call(ctx, "schedule_task", {"name": "briefing", "schedule": "@daily", "prompt": "x"})
    assert not taken.ok and "Agentfile's cron section" in taken.content
    bad = call(ctx, "schedule_task", {"name": "bad", "schedule": "every day", "prompt": "report"})
    assert not bad.ok and "not a valid cron expression" in bad.content
    zone = call(ctx, "schedule_task", {"name": "bad", "schedule": "@daily", "prompt": "r", "timezone": "Mars/Base"})
    assert not zone.ok and "not an IANA time zone" in zone.content
    assert call(ctx, "schedule_task", {"name": "weekly", "schedule": "@weekly", "prompt": "w"}).ok
    full = call(ctx, "schedule_task", {"name": "third", "schedule": "@daily", "prompt": "t"})
    assert not full.ok and "you already have 2 tasks, the most allowed (runtime.max_tasks = 2)" in full.content
    listed = call(ctx, "schedule_task", {"action": "list"})
    assert listed.ok and [t["name"] for t in listed.data["tasks"]] == ["daily", "weekly"]
    assert call(ctx, "schedule_task", {"action": "delete", "name": "weekly"}).ok
    gone = call(ctx, "schedule_task", {"action": "delete", "name": "weekly"})
    assert not gone.ok and "no task named 'weekly'" in gone.content
    assert [t["name"] for t in scheduler.list()] == ["daily"]


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/../../b", "link-out/secret", "dirlink/x.txt"])
def test_file_tools_refuse_paths_that_leave_the_workspace(tmp_path: Path, path: str) -> None:
    ctx = context(tmp_path / "home")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("top secret")
    (ctx.workspace / "link-out").symlink_to(outside)
    (ctx.workspace / "dirlink").symlink_to(outside, target_is_directory=True)
    for tool, args in (("file_read", {"path": path}), ("file_write", {"path": path, "content": "x"})):
        result = call(ctx, tool, args)
        assert not result.ok and "secret" not in result.content.replace("link-out/secret", "")
    assert not (outside / "x.txt").exists() and (outside / "secret").read_text() == "top secret"


def test_file_tools_work_inside_the_workspace(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    assert call(ctx, "file_write", {"path": "d/f.txt", "content": "hi"}).ok
    assert call(ctx, "file_read", {"path": "d/f.txt"}).content == "hi"
    listing = call(ctx, "file_list", {"recursive": True})
    assert "d/f.txt" in listing.content


def test_shell_exec_reports_exit_codes_and_times_out_cleanly(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    done = call(ctx, "shell_exec", {"command": "echo out; echo err >&2; exit 3"})
    assert not done.ok and done.data["exit_code"] == 3 and "out" in done.data["stdout"]
    started = time.monotonic()
    slow = call(ctx, "shell_exec", {"command": "sleep 30 & sleep 30", "timeout": 1})
    assert "timed out after 1 s" in slow.content and time.monotonic() - started < 10
    big = call(ctx, "shell_exec", {"command": "head -c 200000 /dev/zero | tr '\\0' a"})
    assert "[truncated" in big.data["stdout"]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/big":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * (3 * 1024 * 1024))
        elif self.path == "/slow":
            time.sleep(3)
            self.send_response(200)
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><title>T</title><script>evil()</script><h1>Head</h1><p>Body text</p></html>")

    def log_message(self, *args) -> None:
        return


@pytest.fixture
def site():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_request_respects_size_and_time_caps_and_the_network_policy(tmp_path: Path, site: str) -> None:
    ctx = context(tmp_path)
    big = call(ctx, "http_request", {"url": f"{site}/big"})
    assert big.data["truncated"] and big.data["bytes"] == 1024 * 1024
    slow = call(ctx, "http_request", {"url": f"{site}/slow", "timeout": 0.5})
    assert not slow.ok and "Timeout" in slow.content
    page = call(ctx, "web_fetch", {"url": f"{site}/page"})
    assert "Body text" in page.content and "evil" not in page.content and "# Head" in page.content
    assert "blocked by network policy: 127.0.0.1" in call(context(tmp_path, "none"), "http_request", {"url": site}).content
    filtered = context(tmp_path, "filtered", ["example.com"])
    assert "blocked by network policy: 127.0.0.1" in call(filtered, "web_fetch", {"url": site}).content


def test_a_loop_never_exceeds_max_iterations(scripted_model, serve_runtime) -> None:
    url = serve_runtime(agent_with(scripted_model.base_url,
                                   loops=[{"type": "research", "max_iterations": 3, "tools": ["memo_search"]}]))
    scripted_model.clear()
    run = httpx.post(f"{url}/den/v1/runs", json={"goal": "find the answer", "loop": "research"}, timeout=60, headers=AUTH).json()
    assert run["status"] == "exhausted" and len(run["iterations"]) == 3
    assert [offered_tools(body) for body in scripted_model.chat_bodies()] == [["memo_search"]] * 3
    assert httpx.get(f"{url}/den/v1/runs/{run['id']}", headers=AUTH).json()["iterations"][2]["number"] == 3
    missing = httpx.post(f"{url}/den/v1/runs", json={"goal": "x", "loop": "verify"}, headers=AUTH)
    assert missing.status_code == 422 and "not declared" in missing.json()["error"]["message"]


def test_a_custom_tool_from_an_entry_point_works_end_to_end(scripted_model, serve_runtime, tmp_path, monkeypatch) -> None:
    package = tmp_path / "site"
    (package / "den_word_count_test").mkdir(parents=True)
    (package / "den_word_count_test" / "__init__.py").write_text(
        "from pydantic import BaseModel\n"
        "from den.runtime.tools.base import DenTool, ToolResult\n"
        "class Args(BaseModel):\n    text: str\n"
        "class WordCount(DenTool):\n"
        "    name = 'word_count'\n    description = 'Count words.'\n    Arguments = Args\n"
        "    async def run(self, args, ctx):\n        return ToolResult(True, f'{len(args.text.split())} words')\n"
    )
    info = package / "den_word_count_test-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: den-word-count-test\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[den.tools]\nword_count = den_word_count_test:WordCount\n")
    monkeypatch.syspath_prepend(str(package))
    url = serve_runtime(agent_with(scripted_model.base_url, tools=["word_count"],
                                   custom_tools=[{"name": "word_count"}]))
    body = ask(url, 'TOOL:word_count {"text": "one two three"}')
    assert body["choices"][0]["message"]["content"] == "Tool result: 3 words"
    assert os.environ.get("DEN_API_TOKEN") is None


def offered_tools(body: dict) -> list[str]:
    """The names of the tools a chat request offered the model (none: ``[]``)."""
    return sorted(tool["function"]["name"] for tool in body.get("tools") or [])


#: The loop each of the runner's prompts belongs to, by how the prompt starts.
LOOP_PROMPTS = {"Research goal": "research", "Plan how": "plan", "Goal: ": "execute", "Verify this work": "verify"}


def loop_of(body: dict) -> str:
    prompt = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    (loop,) = [loop for start, loop in LOOP_PROMPTS.items() if prompt.startswith(start)]
    return loop


def test_the_chain_runs_the_loops_in_agentfile_order(serve_runtime) -> None:
    from den.runtime.scripted_model import create_scripted_app
    from tests.conftest import serve_app

    rules = [
        {"match": "^Research goal", "reply": "SUFFICIENT: the sky is blue"},
        {"match": "^Plan how", "reply": '["look up", "write it down"]'},
        {"match": "^Goal: .*Execute step", "reply": "done"},
        {"match": "^Verify this work", "reply": '{"pass": true, "reason": "meets the criteria"}'},
    ]
    with serve_app(create_scripted_app(rules)) as model_url:
        url = serve_runtime(agent_with(f"{model_url}/v1", loops=[
            {"type": "research", "max_iterations": 2}, {"type": "plan", "max_iterations": 2},
            {"type": "execute", "max_iterations": 5}, {"type": "verify", "max_iterations": 2},
        ]))
        run = httpx.post(f"{url}/den/v1/runs", json={"goal": "why is the sky blue", "chain": True}, timeout=60, headers=AUTH).json()
    assert run["status"] == "succeeded", run
    assert run["loops"] == ["research", "plan", "execute", "verify"]
    assert run["plan"] == ["look up", "write it down"] and run["done_steps"] == run["plan"]
    assert [i["loop"] for i in run["iterations"]] == ["research", "plan", "execute", "execute", "verify"]


def test_each_loop_offers_the_model_only_its_own_tools(serve_runtime) -> None:
    from den.runtime.scripted_model import create_scripted_app

    rules = [
        {"match": "^Research goal", "reply": "SUFFICIENT: the sky is blue"},
        {"match": "^Plan how", "reply": '["write it down"]'},
        {"match": "^Goal: .*Execute step", "reply": "done"},
        {"match": "^Verify this work", "reply": '{"pass": true, "reason": "meets the criteria"}'},
    ]
    subsets = {"research": ["http_request", "memo_search"], "plan": [],
               "execute": ["file_read", "file_write", "shell_exec"], "verify": ["file_read"]}
    with serve_app(create_scripted_app(rules)) as model_url:
        url = serve_runtime(agent_with(f"{model_url}/v1", loops=[
            {"type": loop, "max_iterations": 2, "tools": tools} for loop, tools in subsets.items()
        ]))
        run = httpx.post(f"{url}/den/v1/runs", json={"goal": "why is the sky blue", "chain": True}, timeout=60, headers=AUTH).json()
        bodies = ScriptedModel(model_url).chat_bodies()
    assert run["status"] == "succeeded", run
    assert [loop_of(body) for body in bodies] == ["research", "plan", "execute", "verify"]
    for body in bodies:
        assert offered_tools(body) == subsets[loop_of(body)], loop_of(body)
