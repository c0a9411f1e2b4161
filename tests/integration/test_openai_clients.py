"""Real OpenAI clients against an agent served in-process, the scripted model behind it.

A Den agent is a drop-in model: the caller's parameters reach the model (capped by the
Agentfile), the caller's tools are offered beside the agent's own and their calls come back to
the caller, usage adds up streamed or not, and the Responses API answers too
(docs/openai-compat.md).
"""

from __future__ import annotations

import json

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.integration.conftest import AUTH, TOKEN, ScriptedModel, agent_resource

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK_WEATHER = 'TOOL:get_weather {"city": "Oslo"}'


@pytest.fixture
def agent(scripted_model: ScriptedModel, serve_runtime) -> str:
    resource = agent_resource(tools=["memo_write", "memo_search"], base_url=scripted_model.base_url)
    spec = resource.spec.model_copy(update={"memory": resource.spec.memory.model_copy(
        update={"fact_extraction": False})})
    return serve_runtime(resource.model_copy(update={"spec": spec}))


def client_of(url: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# -- parameters ----------------------------------------------------------------------------


def test_the_callers_parameters_reach_the_model_and_max_tokens_is_capped_by_the_agentfile(
        agent, scripted_model) -> None:
    client_of(agent).chat.completions.create(
        model="x", messages=user("hi"), temperature=0.1, seed=7, stop=["END"], max_tokens=33, top_p=0.5,
        presence_penalty=0.5, frequency_penalty=-0.5, logit_bias={"50256": -100}, user="someone")
    client_of(agent).chat.completions.create(model="x", messages=user("again"), max_completion_tokens=100000)
    first, second = scripted_model.chat_bodies()
    assert {k: first[k] for k in ("temperature", "seed", "stop", "max_tokens", "top_p", "presence_penalty",
                                  "frequency_penalty", "logit_bias", "user")} == {
        "temperature": 0.1, "seed": 7, "stop": ["END"], "max_tokens": 33, "top_p": 0.5, "presence_penalty": 0.5,
        "frequency_penalty": -0.5, "logit_bias": {"50256": -100}, "user": "someone"}
    # What the caller leaves out is the Agentfile's; max_tokens never goes above the Agentfile's 123.
    assert second["temperature"] == 0.3 and second["max_tokens"] == 123
    assert "seed" not in second and "max_completion_tokens" not in second


def test_the_callers_parameters_reach_the_model_through_the_gateway(
        scripted_model, serve_gateway, serve_runtime) -> None:
    gateway = serve_gateway()
    gateway.write({"gw-token": {"name": "test-bot", "budget": {}, "model": {
        "provider": "openai", "name": "scripted", "base_url": scripted_model.base_url,
        "temperature": 0.3, "max_tokens": 123}}}, {"OPENAI_API_KEY": "sk-test"})
    url = serve_runtime(agent_resource(), env={"DEN_GATEWAY_URL": gateway.base_url, "DEN_GATEWAY_TOKEN": "gw-token"})
    client_of(url).chat.completions.create(model="x", messages=user("hi"), temperature=0.1, seed=7,
                                           response_format={"type": "json_object"})
    [body] = scripted_model.chat_bodies()
    assert (body["temperature"], body["seed"], body["response_format"]) == (0.1, 7, {"type": "json_object"})


def test_a_json_schema_response_format_gets_an_answer_that_matches_it(agent, scripted_model) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                               "unit": {"enum": ["C", "F"]}},
              "required": ["city", "days", "unit"], "additionalProperties": False}
    answer = client_of(agent).chat.completions.create(
        model="x", messages=user("Oslo for three days"),
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": schema, "strict": True}})
    data = json.loads(answer.choices[0].message.content)
    assert set(data) == {"city", "days", "unit"} and isinstance(data["days"], int) and data["unit"] == "C"
    [body] = scripted_model.chat_bodies()
    assert body["response_format"]["json_schema"]["schema"] == schema


@pytest.mark.parametrize(("field", "value"), [
    ("logprobs", True), ("top_logprobs", 3), ("functions", [{"name": "f"}]), ("audio", {"voice": "alloy"}),
    ("modalities", ["text", "audio"]), ("web_search_options", {}),
    ("response_format", {"type": "json_schema"}), ("tool_choice", "sometimes"),
])
def test_a_field_den_cannot_honour_is_refused_with_a_400_naming_it(agent, field, value) -> None:
    answer = httpx.post(f"{agent}/v1/chat/completions", headers=AUTH, timeout=30,
                        json={"messages": user("hi"), field: value})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"].startswith(field)


# -- the caller's tools --------------------------------------------------------------------


def test_a_caller_tool_call_comes_back_as_tool_calls_and_the_result_is_answered(agent, scripted_model) -> None:
    client = client_of(agent)
    messages = user(ASK_WEATHER)
    first = client.chat.completions.create(model="x", messages=messages, tools=[WEATHER],
                                           tool_choice="auto", parallel_tool_calls=False)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Oslo"})
    offered = {t["function"]["name"] for t in scripted_model.chat_bodies()[0]["tools"]}
    assert offered == {"memo_write", "memo_search", "get_weather"}
    assert scripted_model.chat_bodies()[0]["tool_choice"] == "auto"
    assert scripted_model.chat_bodies()[0]["parallel_tool_calls"] is False
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    second = client.chat.completions.create(model="x", messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Tool result: sunny, 21 C"
    last = scripted_model.chat_bodies()[-1]["messages"]
    assert last[0]["content"].startswith("You are Test Bot.")  # the agent answers, as itself
    assert [m["role"] for m in last[1:]] == ["user", "assistant", "tool"]


def test_a_session_keeps_the_caller_tool_call_so_the_result_alone_continues_it(
        scripted_model, serve_runtime, tmp_path) -> None:
    url = serve_runtime(agent_resource(base_url=scripted_model.base_url), home=tmp_path / "home")
    client = client_of(url)
    session = {"X-Den-Session": "weather"}
    first = client.chat.completions.create(model="x", messages=user(ASK_WEATHER), tools=[WEATHER],
                                           extra_headers=session)
    [call] = first.choices[0].message.tool_calls
    second = client.chat.completions.create(
        model="x", tools=[WEATHER], extra_headers=session,
        messages=[{"role": "tool", "tool_call_id": call.id, "content": "snow"}])
    assert second.choices[0].message.content == "Tool result: snow"
    sent = scripted_model.chat_bodies()[-1]["messages"]
    assert sent[2]["tool_calls"][0]["id"] == call.id and sent[3]["tool_call_id"] == call.id


def test_a_streamed_caller_tool_call_arrives_in_openais_delta_format(agent) -> None:
    chunks = list(client_of(agent).chat.completions.create(model="x", messages=user(ASK_WEATHER), tools=[WEATHER],
                                                           stream=True))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_the_agents_own_tools_still_run_inside_when_the_caller_offers_tools(agent) -> None:
    asked = 'TOOL:memo_write {"text": "kept inside"}'
    answer = client_of(agent).chat.completions.create(model="x", messages=user(asked), tools=[WEATHER])
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == "Tool result: remembered (memo 1)"


def test_a_caller_tool_named_like_one_of_the_agents_is_refused(agent) -> None:
    clash = {"type": "function", "function": {"name": "memo_write", "parameters": {"type": "object"}}}
    answer = httpx.post(f"{agent}/v1/chat/completions", headers=AUTH, timeout=30,
                        json={"messages": user("hi"), "tools": [clash]})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "tools" and "memo_write" in answer.json()["error"]["message"]


# -- usage ---------------------------------------------------------------------------------


def test_streamed_usage_equals_the_unstreamed_usage_of_the_same_turn(agent) -> None:
    client = client_of(agent)
    asked = user('TOOL:memo_search {"query": "notes"}\nTOOL:memo_search {"query": "more notes"}')
    plain = client.chat.completions.create(model="x", messages=asked)
    chunks = list(client.chat.completions.create(model="x", messages=asked, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    streamed = chunks[-1].usage
    assert streamed.total_tokens > 0 and plain.usage.total_tokens > 0
    assert streamed.model_dump() == plain.usage.model_dump()
    assert plain.model_extra["den"]["steps"][1]["tool"] == "memo_search"  # three model calls, summed


@pytest.mark.asyncio
async def test_the_async_client_gets_the_same_answer(agent) -> None:
    client = AsyncOpenAI(base_url=f"{agent}/v1", api_key=TOKEN, max_retries=0)
    answer = await client.chat.completions.create(model="x", messages=user("async"))
    stream = await client.chat.completions.create(model="x", messages=user("async"), stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert answer.choices[0].message.content == text == "Hello from the scripted model. You said: async"
    await client.close()


# -- the Responses API ---------------------------------------------------------------------

WEATHER_FUNCTION = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
                    "parameters": WEATHER["function"]["parameters"]}


def test_responses_create_is_answered_by_the_agent_with_its_instructions_and_usage(agent, scripted_model) -> None:
    response = client_of(agent).responses.create(model="x", input="hello there", instructions="Answer briefly.",
                                                 temperature=0.2, max_output_tokens=40)
    assert response.status == "completed" and response.model == "test-bot"
    assert response.output_text == "Hello from the scripted model. You said: hello there"
    assert response.usage.total_tokens > 0
    [body] = scripted_model.chat_bodies()
    assert body["messages"][0]["content"].startswith("You are Test Bot.")
    assert body["messages"][1] == {"role": "system", "content": "Answer briefly."}
    assert (body["temperature"], body["max_tokens"]) == (0.2, 40)


def test_a_streamed_response_sends_openais_event_sequence(agent) -> None:
    events = list(client_of(agent).responses.create(model="x", input="stream me", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text == "Hello from the scripted model. You said: stream me"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.usage.total_tokens > 0


def test_a_response_function_call_round_trip_continues_from_the_previous_response(agent, scripted_model) -> None:
    client = client_of(agent)
    first = client.responses.create(model="x", input=ASK_WEATHER, tools=[WEATHER_FUNCTION])
    [call] = [item for item in first.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Oslo"})
    second = client.responses.create(model="x", previous_response_id=first.id, tools=[WEATHER_FUNCTION],
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "rain"}])
    assert second.output_text == "Tool result: rain"
    sent = scripted_model.chat_bodies()[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]


def test_a_streamed_response_function_call_arrives_as_function_call_events(agent) -> None:
    events = list(client_of(agent).responses.create(model="x", input=ASK_WEATHER, tools=[WEATHER_FUNCTION],
                                                    stream=True))
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done and done[0].name == "get_weather" and json.loads(done[0].arguments) == {"city": "Oslo"}
    assert [o.type for o in events[-1].response.output] == ["function_call"]


def test_a_response_not_stored_cannot_be_continued(agent) -> None:
    client = client_of(agent)
    first = client.responses.create(model="x", input="forget me", store=False)
    answer = httpx.post(f"{agent}/v1/responses", headers=AUTH, timeout=30,
                        json={"input": "again", "previous_response_id": first.id})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "previous_response_id"


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools"),
    ({"input": "hi", "tools": [{"type": "function", "name": "memo_write"}]}, "tools"),
    ({"input": [{"type": "computer_call"}]}, "input.0.type"),
    ({"input": "hi", "background": True}, "background"),
    ({"input": "hi", "temperature": 3}, "temperature"),
])
def test_a_responses_request_den_cannot_honour_is_a_400_naming_the_field(agent, body, param) -> None:
    answer = httpx.post(f"{agent}/v1/responses", headers=AUTH, timeout=30, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


# -- openai-agents and langchain-openai ----------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_an_openai_agents_agent_runs_its_function_tool_through_the_den_agent(agent, api) -> None:
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=f"{agent}/v1", api_key=TOKEN, max_retries=0)
    kind = OpenAIChatCompletionsModel if api == "chat_completions" else OpenAIResponsesModel
    caller = Agent(name="caller", instructions="Use the tools.", model=kind(model="x", openai_client=client),
                   tools=[get_weather])
    result = await Runner.run(caller, ASK_WEATHER)
    assert result.final_output == "Tool result: sunny in Oslo"
    await client.close()


def test_langchain_invoke_stream_and_bind_tools_get_the_agents_answers(agent) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{agent}/v1", api_key=TOKEN, model="x", max_retries=0, temperature=0.2)
    assert llm.invoke("hi").content == "Hello from the scripted model. You said: hi"
    assert "".join(chunk.content for chunk in llm.stream("hi")) == "Hello from the scripted model. You said: hi"
    [call] = llm.bind_tools([WEATHER]).invoke(ASK_WEATHER).tool_calls
    assert (call["name"], call["args"]) == ("get_weather", {"city": "Oslo"})


def test_the_gateway_caps_max_tokens_at_the_agentfiles_whoever_asks(scripted_model, serve_gateway) -> None:
    gateway = serve_gateway()
    gateway.write({"gw-token": {"name": "test-bot", "budget": {}, "model": {
        "provider": "openai", "name": "scripted", "base_url": scripted_model.base_url, "max_tokens": 123}}},
        {"OPENAI_API_KEY": "sk-test"})
    for limit in ({"max_tokens": 100000}, {"max_completion_tokens": 100000}):
        answer = httpx.post(f"{gateway.base_url}/chat/completions", timeout=30,
                            headers={"Authorization": "Bearer gw-token"}, json={"messages": user("hi"), **limit})
        assert answer.status_code == 200, answer.text
    first, second = scripted_model.chat_bodies()
    assert first["max_tokens"] == 123
    assert second["max_completion_tokens"] == 123 and "max_tokens" not in second


def test_a_pydantic_answer_comes_back_parsed_by_schema_and_by_a_forced_tool(agent) -> None:
    import openai
    from pydantic import BaseModel

    class Trip(BaseModel):
        city: str
        days: int

    client = client_of(agent)
    parsed = client.chat.completions.parse(model="x", messages=user("Oslo for three days"), response_format=Trip)
    assert parsed.choices[0].message.parsed == Trip(city="Hello from the scripted model. You said: Oslo for "
                                                         "three days", days=11)
    # instructor's TOOLS mode: the answer is a call of a tool whose parameters are the model's schema.
    forced = client.chat.completions.create(
        model="x", messages=user("Oslo"), tools=[openai.pydantic_function_tool(Trip)],
        tool_choice={"type": "function", "function": {"name": "Trip"}})
    [call] = forced.choices[0].message.tool_calls
    assert Trip.model_validate_json(call.function.arguments).days >= 0
    assert forced.choices[0].finish_reason == "tool_calls"


def test_usage_counts_the_judges_model_calls_streamed_or_not(scripted_model, serve_runtime) -> None:
    from den.api.resource import Agent
    from den.runtime.scripted_model import prompt_words

    data = agent_resource(base_url=scripted_model.base_url).model_dump(mode="json")
    data["spec"]["checks"] = [{"name": "polite", "description": "The answer is polite.", "kind": "llm"}]
    data["spec"]["memory"]["fact_extraction"] = False
    client = client_of(serve_runtime(Agent.model_validate(data)))
    scripted_model.clear()
    plain = client.chat.completions.create(model="x", messages=user("hi"))
    calls = scripted_model.chat_bodies()
    assert len(calls) == 2  # the answer and the judge's verdict
    assert plain.usage.prompt_tokens == sum(prompt_words(b["messages"]) for b in calls)
    chunks = list(client.chat.completions.create(model="x", messages=user("hi"), stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage.model_dump() == plain.usage.model_dump()
