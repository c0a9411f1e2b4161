"""`den connect` against a real runtime over HTTP (the agent's record points at it)."""

from __future__ import annotations

from den.api.resource import AgentStatus
from den.operator.store import Store
from tests.integration.conftest import TOKEN, agent_resource


def register(den_home, name: str, endpoint: str) -> None:
    """Record the agent as Running at ``endpoint`` with the token ``serve_runtime`` gave it."""
    with Store(den_home / "state.db") as store:
        agent = agent_resource(name)
        store.apply(agent)
        store.update_status(name, "default", AgentStatus(phase="Running", endpoint=endpoint))
    tokens = den_home / "tokens"
    tokens.mkdir(mode=0o700, exist_ok=True)
    (tokens / f"default.{name}").write_text(TOKEN + "\n")


def test_connect_chats_shows_tool_progress_memory_and_quits(den, den_home, scripted_model, serve_runtime) -> None:
    agent = agent_resource("chatty", base_url=scripted_model.base_url)
    data = agent.model_dump(mode="json")
    data["spec"]["tools"] = ["memo_write"]
    url = serve_runtime(type(agent).model_validate(data))
    register(den_home, "chatty", url)
    session = 'hello there\nTOOL:memo_write {"text": "likes tea"}\n/memory\n/reset\n/quit\n'
    result = den("connect", "chatty", input=session)
    assert result.code == 0, result.output
    assert "chatty> Hello from the scripted model. You said: hello there" in result.stdout
    assert "[tool:memo_write]" in result.stderr
    assert "- likes tea" in result.stdout
    assert "new conversation" in result.stderr


def test_connect_m_prints_just_the_answer(den, den_home, scripted_model, serve_runtime) -> None:
    url = serve_runtime(agent_resource("quiet", base_url=scripted_model.base_url))
    register(den_home, "quiet", url)
    result = den("connect", "quiet", "-m", "one question")
    assert result.code == 0 and result.stdout == "Hello from the scripted model. You said: one question\n"


def test_connect_to_an_agent_that_is_not_serving_says_so(den, den_home) -> None:
    with Store(den_home / "state.db") as store:
        store.apply(agent_resource("idle"))
    result = den("connect", "idle", "-m", "hi")
    assert result.code == 1 and "is not serving" in result.stderr
