"""OpenAI's Responses API (POST /v1/responses) on the conversation store.

Fast tests drive the app in-process on the scripted fake engine (which field a 400 names, what
reaches the prompt, the event order); the integration tests run `allinone serve` on the real
model with a temporary store and use the official `openai` client (and the openai-agents SDK), as
an app would: chains by previous_response_id, streaming, tools, JSON, a restart and a kill -9.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3

import httpx
import pytest
from fastapi.testclient import TestClient

from app.llm import Completion
from app.server.app import create_app
from tests.test_server import start_server

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "查询一个城市今天的天气",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
DISABLED = {"truncation": "disabled"}
CALL_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
]


def collapsed(kinds):
    """Event types with runs of deltas counted once."""
    return [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1] or "delta" not in k]


# -- fast: the fake engine behind the real app ------------------------------------------------


@pytest.fixture
def app_client(fake_assistant, tmp_path, monkeypatch):
    monkeypatch.setenv("ALLINONE_STORE", str(tmp_path / "store.sqlite3"))
    fake_assistant.settings.store = tmp_path / "store.sqlite3"
    with TestClient(create_app(lambda: fake_assistant)) as client:
        yield client


def post(client, body):
    return client.post("/v1/responses", json=body)


def sse_events(text):
    """(event, data) of each server-sent event in a response body."""
    events, kind = [], None
    for line in text.splitlines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind is not None:
            events.append((kind, json.loads(line.removeprefix("data: "))))
            kind = None
    return events


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"bogus": 1}, "bogus"),
        ({"background": True}, "background"),
        ({"conversation": "conv_123"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"text": {"verbosity": "high"}}, "text.verbosity"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [WEATHER, {"type": "file_search"}]}, "tools[1].type"),
        ({"tools": [{**WEATHER, "name": "bad name"}]}, "tools[0].name"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"stream_options": {"include_obfuscation": False}}, "stream_options"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"truncation": "sometimes"}, "truncation"),
    ],
)
def test_a_field_not_honoured_is_a_400_naming_it(app_client, extra, param):
    response = post(app_client, {"input": "你好", **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("item", "param"),
    [
        (
            {"role": "user", "content": [{"type": "input_image", "image_url": "x"}]},
            "input[0].content[0].type",
        ),
        ({"type": "item_reference", "id": "msg_1"}, "input[0].type"),
        ({"role": "tool", "content": "hi"}, "input[0].role"),
        ({"role": "user", "content": "hi", "name": "x"}, "input[0].name"),
        (
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"},
            "input[0].arguments",
        ),
    ],
)
def test_an_input_item_this_model_cannot_read_is_a_400_naming_it(app_client, item, param):
    response = post(app_client, {"input": [item]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_fields_an_agents_sdk_sends_are_accepted(app_client):
    body = {
        "input": [{"role": "user", "content": "你好"}],
        "include": [],
        "parallel_tool_calls": True,
        "reasoning": {"effort": None, "summary": None},
        "metadata": {"trace": "1"},
        "service_tier": "auto",
        "prompt_cache_key": "k",
        "safety_identifier": "u1",
        "user": "u1",
        "store": False,
        "truncation": "auto",
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "top_logprobs": 0,
        "background": False,
    }
    response = post(app_client, body)
    assert response.status_code == 200, response.text
    assert response.json()["output"][0]["content"][0]["text"] == "好的"


def test_instructions_and_system_messages_are_added_to_the_role_prompt(app_client, fake_engine):
    body = {
        "instructions": "回答要简短。",
        "input": [
            {"role": "developer", "content": "用户叫阿明。"},
            {"role": "user", "content": "你好"},
        ],
        "store": False,
    }
    assert post(app_client, body).status_code == 200
    system = fake_engine.last_messages[0]
    assert system["role"] == "system"
    assert system["content"].startswith("你是小暖")  # the role's own prompt stays first
    assert "回答要简短。" in system["content"] and "用户叫阿明。" in system["content"]
    roles = [m["role"] for m in fake_engine.last_messages[1:]]
    assert "developer" not in roles and roles[-1] == "user"


def test_chat_completions_add_system_messages_the_same_way(app_client, fake_engine):
    messages = [{"role": "system", "content": "用户叫阿明。"}, {"role": "user", "content": "你好"}]
    response = app_client.post("/v1/chat/completions", json={"messages": messages})
    assert response.status_code == 200, response.text
    system = fake_engine.last_messages[0]["content"]
    assert system.startswith("你是小暖") and system.endswith("用户叫阿明。")


def test_a_chain_reaches_the_prompt_and_the_verdict_the_metadata(app_client, fake_engine):
    fake_engine.enqueue_choice([0.1, 0.9])
    first = post(app_client, {"input": "我叫林小雨。"}).json()
    assert first["metadata"] == {"sentiment": "负面", "sentiment_confidence": "0.9"}
    second = post(app_client, {"input": "我叫什么？", "previous_response_id": first["id"]}).json()
    shown = [(m["role"], m["content"]) for m in fake_engine.last_messages[-3:]]
    assert shown == [("user", "我叫林小雨。"), ("assistant", "好的"), ("user", "我叫什么？")]
    items = app_client.get(f"/v1/responses/{second['id']}/input_items?order=asc").json()
    texts = [item["content"][0]["text"] for item in items["data"]]
    assert texts == ["我叫林小雨。", "好的", "我叫什么？"]
    assert items["first_id"] == items["data"][0]["id"] and not items["has_more"]


def test_an_unknown_or_unkept_previous_response_is_a_404(app_client):
    unkept = post(app_client, {"input": "你好", "store": False}).json()["id"]
    kept = post(app_client, {"input": "你好"}).json()["id"]
    assert app_client.delete(f"/v1/responses/{kept}").json()["deleted"] is True
    for missing in ("resp_nope", unkept, kept):
        response = post(app_client, {"input": "再见", "previous_response_id": missing})
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["param"] == "previous_response_id"
        assert error["code"] == "previous_response_not_found"
        assert app_client.get(f"/v1/responses/{missing}").status_code == 404
    assert app_client.delete(f"/v1/responses/{kept}").status_code == 404


def test_a_tool_result_is_answered_after_the_call(app_client, fake_engine):
    call = {"type": "function_call", "call_id": "c1", "name": "get_weather"}
    call["arguments"] = '{"city": "北京"}'
    body = {
        "input": [
            {"role": "user", "content": "北京天气？"},
            call,
            {"type": "function_call_output", "call_id": "c1", "output": "晴，25度"},
        ],
        "tools": [WEATHER],
    }
    assert post(app_client, body).status_code == 200
    roles = [m["role"] for m in fake_engine.last_messages]
    assert roles[-3:] == ["user", "assistant", "user"]
    assert fake_engine.last_messages[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert fake_engine.last_messages[-1]["content"] == "<tool_response>\n晴，25度\n</tool_response>"


def test_truncation_disabled_refuses_what_auto_shortens(app_client):
    long_turns = []
    for index in range(12):
        long_turns.append({"role": "user", "content": f"第{index}件事：" + "很长的话" * 40})
        long_turns.append({"role": "assistant", "content": "嗯。"})
    body = {"input": [*long_turns, {"role": "user", "content": "总结一下"}], "store": False}
    refused = post(app_client, {**body, "truncation": "disabled"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "context_length_exceeded"
    assert post(app_client, body).status_code == 200


def test_a_forty_turn_chain_never_fails_with_truncation_auto(app_client):
    previous = None
    for turn in range(40):
        body = {"input": f"第{turn}条消息：" + "今天发生了很多事情。" * 8}
        response = post(app_client, {**body, "previous_response_id": previous})
        assert response.status_code == 200, (turn, response.text)
        previous = response.json()["id"]
    items = app_client.get(f"/v1/responses/{previous}/input_items?limit=100").json()
    assert len(items["data"]) == 79  # 39 earlier turns' input and output, and this input
    refused = post(app_client, {"input": "还有", "previous_response_id": previous, **DISABLED})
    assert refused.json()["error"]["code"] == "context_length_exceeded"


def test_a_reply_that_breaks_mid_stream_ends_in_response_failed(app_client, fake_engine):
    def broken(prompt, sampling, *, reply_start=""):
        completion = Completion(len(prompt.tokens))

        def pieces():
            yield "你"
            raise RuntimeError("the engine broke")

        return completion.run(pieces())

    fake_engine.stream = broken
    events = sse_events(post(app_client, {"input": "你好", "stream": True}).text)
    assert events[-1][0] == "response.failed"
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and "the engine broke" in failed["error"]["message"]
    assert app_client.get(f"/v1/responses/{failed['id']}").json()["status"] == "failed"


def test_the_stream_events_come_in_order_with_rising_sequence_numbers(app_client, fake_engine):
    fake_engine.enqueue_reply(["你", "好", "呀"])
    response = post(app_client, {"input": "你好", "stream": True})
    events = sse_events(response.text)
    assert all(kind == data["type"] for kind, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert collapsed([kind for kind, _ in events]) == TEXT_EVENTS
    assert [d["delta"] for k, d in events if k.endswith(".delta")] == ["你", "好", "呀"]
    final = events[-1][1]["response"]
    assert final["output"][0]["content"][0]["text"] == "你好呀"
    assert final["metadata"]["sentiment"] == events[0][1]["response"]["metadata"]["sentiment"]
    kept = app_client.get(f"/v1/responses/{final['id']}").json()
    assert kept["status"] == "completed" and kept["output"] == final["output"]


def test_a_tools_request_decided_as_prose_streams_its_text(app_client, fake_engine):
    fake_engine.call_chance = 0.1  # below the call threshold: the reply is prose
    fake_engine.enqueue_reply(["别", "担心", "。"])
    response = post(app_client, {"input": "你好", "tools": [WEATHER], "stream": True})
    events = sse_events(response.text)
    assert collapsed([kind for kind, _ in events]) == TEXT_EVENTS
    assert [d["delta"] for k, d in events if k.endswith(".delta")] == ["别", "担心", "。"]
    assert "prose" in response.headers["x-allinone-tools"]


# -- the real model behind `allinone serve` ---------------------------------------------------


def serve(model_path, store, log_path):
    """`allinone serve` on a free loopback port, keeping conversations in `store`."""
    return start_server(model_path, log_path, store=store, seconds=120)


def stop(process):
    process.terminate()
    process.wait(timeout=60)


@pytest.fixture(scope="module")
def served(model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("responses")
    process, base = serve(model_path, folder / "store.sqlite3", folder / "server.log")
    yield base
    stop(process)


def openai_client(base):
    from openai import OpenAI

    return OpenAI(base_url=base + "/v1", api_key="not-needed", timeout=300)


@pytest.fixture
def client(served):
    return openai_client(served)


@pytest.mark.model
def test_create_answers_a_text(client):
    response = client.responses.create(model="allinone", input="今天天气不错。", temperature=0)
    assert response.status in ("completed", "incomplete")
    assert response.output_text.strip() and "<|" not in response.output_text
    assert response.metadata["sentiment"] in ("正面", "负面")
    assert 0 < float(response.metadata["sentiment_confidence"]) <= 1
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert client.responses.retrieve(response.id).output_text == response.output_text


@pytest.mark.model
def test_stream_true_gives_the_event_sequence(client):
    stream = client.responses.create(
        model="allinone", input="推荐一本书吧。", temperature=0, stream=True
    )
    events = list(stream)
    kinds = [event.type for event in events]
    assert collapsed(kinds) == TEXT_EVENTS[:-1] + [kinds[-1]]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type.endswith(".delta"))
    assert deltas.strip() and deltas == events[-1].response.output_text


@pytest.mark.model
def test_the_stream_helper_accumulates_the_final_response(client):
    with client.responses.stream(
        model="allinone", input="你好，我今天升职了！", temperature=0, max_output_tokens=200
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "".join(deltas) and final.output_text.strip()
    assert final.metadata["sentiment"] == "正面"


@pytest.mark.model
def test_a_three_turn_chain_remembers_and_survives_a_restart(model_path, tmp_path):
    """Under greedy decoding. The opening is "你好！我叫林小雨。" rather than "我叫林小雨。": to
    the bare sentence the 0.5B model answers as if it were its own name, and the chat's guard
    against copying the message bends its echo to "林雨", which turn 3 then repeats."""
    store = tmp_path / "store.sqlite3"
    process, base = serve(model_path, store, tmp_path / "server.log")
    try:
        client = openai_client(base)
        say = {"temperature": 0, "max_output_tokens": 200}
        first = client.responses.create(model="allinone", input="你好！我叫林小雨。", **say)
        second = client.responses.create(
            model="allinone", input="今天下雨了，有点冷。", previous_response_id=first.id, **say
        )
    finally:
        stop(process)
    process, base = serve(model_path, store, tmp_path / "server.log")
    try:
        client = openai_client(base)
        third = client.responses.create(
            model="allinone", input="请问我叫什么名字？", previous_response_id=second.id, **say
        )
        assert "林小雨" in third.output_text, third.output_text
        assert third.usage.input_tokens > second.usage.input_tokens
        items = client.responses.input_items.list(third.id, order="asc").data
        texts = [part.text for item in items for part in item.content]
        assert texts[0] == "你好！我叫林小雨。" and texts[-1] == "请问我叫什么名字？"
        assert first.output_text in texts and second.output_text in texts
        assert client.responses.retrieve(first.id).output_text == first.output_text
    finally:
        stop(process)


@pytest.mark.model
def test_a_json_schema_format_answers_json_that_matches(client):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model="allinone",
        input="我下周要去杭州玩三天。提取城市和天数。",
        text={"format": {"type": "json_schema", "name": "trip", "schema": schema}},
        temperature=0,
    )
    answer = json.loads(response.output_text)
    assert set(answer) == {"city", "days"} and isinstance(answer["days"], int)
    assert response.metadata == {}  # no mood step on a JSON reply


@pytest.mark.model
def test_a_forced_function_tool_gives_a_parsed_call(client):
    response = client.responses.create(
        model="allinone",
        input="北京今天天气怎么样？",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=0,
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert set(json.loads(calls[0].arguments)) == {"city"}
    assert calls[0].call_id and calls[0].id.startswith("fc_")


@pytest.mark.model
def test_a_streamed_call_gives_the_call_events(client):
    with client.responses.stream(
        model="allinone",
        input="北京今天天气怎么样？",
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert collapsed(kinds) == CALL_EVENTS
    assert final.output[0].type == "function_call"
    assert json.loads(final.output[0].arguments)["city"]


@pytest.mark.model
def test_a_tool_round_trip_ends_in_a_text_answer(client):
    """The call's result goes back as a function_call_output item on the call's response,
    with the user's question after it: given the bare result, the 0.5B model writes the same
    call again (as JSON text, under greedy decoding and sampling alike)."""
    asked = client.responses.create(
        model="allinone",
        input="北京今天天气怎么样？",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=0,
    )
    call = next(item for item in asked.output if item.type == "function_call")
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "晴，25度，微风"}
    answered = client.responses.create(
        model="allinone",
        input=[result, {"role": "user", "content": "所以北京天气怎么样？"}],
        previous_response_id=asked.id,
        tools=[WEATHER],
        temperature=0,
    )
    assert [item.type for item in answered.output] == ["message"], answered.output
    assert "25" in answered.output_text or "晴" in answered.output_text, answered.output_text
    items = client.responses.input_items.list(answered.id, order="asc").data
    assert [item.type for item in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]


@pytest.mark.model
def test_bad_requests_are_the_errors_openai_gives(client):
    import openai

    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="allinone", input="你好", tools=[{"type": "web_search"}])
    assert refused.value.body["param"] == "tools[0].type"
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="allinone", input="你好", previous_response_id="resp_missing")
    assert missing.value.body["code"] == "previous_response_not_found"
    unkept = client.responses.create(
        model="allinone", input="你好", store=False, max_output_tokens=5
    )
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="allinone", input="再说一遍", previous_response_id=unkept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)
    turns = [{"role": "user", "content": "今天发生了很多事情。" * 30}] * 80  # > 8192 tokens
    with pytest.raises(openai.BadRequestError) as too_long:
        client.responses.create(model="allinone", input=turns, truncation="disabled")
    assert too_long.value.body["code"] == "context_length_exceeded"


@pytest.mark.model
def test_get_and_delete(client):
    made = client.responses.create(model="allinone", input="你好", max_output_tokens=20)
    kept = client.responses.retrieve(made.id)
    assert kept.id == made.id and kept.output_text == made.output_text
    assert kept.usage.input_tokens == made.usage.input_tokens
    client.responses.delete(made.id)
    import openai

    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(made.id)


@pytest.mark.model
def test_an_agents_sdk_run_calls_the_tool_and_answers(served):
    from agents import (
        Agent,
        ModelSettings,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI, DefaultAsyncHttpxClient

    set_tracing_disabled(True)
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """查询一个城市今天的天气。"""
        asked.append(city)
        return "晴，25度，微风"

    # No kept-alive connections: run_sync's event loop is gone when the run ends, and a pooled
    # socket of a closed loop could not be closed any more.
    http = DefaultAsyncHttpxClient(limits=httpx.Limits(max_keepalive_connections=0))
    client = AsyncOpenAI(
        base_url=served + "/v1", api_key="not-needed", timeout=300, http_client=http
    )
    model = OpenAIResponsesModel(model="allinone", openai_client=client)
    agent = Agent(
        name="天气助手",
        instructions="用工具查询天气，再用一句话告诉用户。",
        model=model,
        tools=[get_weather],
        model_settings=ModelSettings(tool_choice="get_weather", temperature=0),
    )
    result = Runner.run_sync(agent, "北京今天天气怎么样？", max_turns=4)
    assert asked and asked[0]  # the tool ran with the city the model gave
    first, last = result.raw_responses[0], result.raw_responses[-1]
    assert [item.type for item in first.output] == ["function_call"]
    assert isinstance(result.final_output, str) and result.final_output.strip()
    assert [item.type for item in last.output] == ["message"]


@pytest.mark.model
def test_a_kill_in_the_middle_of_a_stream_keeps_the_store_whole(model_path, tmp_path):
    store = tmp_path / "store.sqlite3"
    process, base = serve(model_path, store, tmp_path / "server.log")
    try:
        client = openai_client(base)
        first = client.responses.create(model="allinone", input="我叫林小雨。", temperature=0)
        body = {
            "input": "给我讲一个很长的故事，越长越好。",
            "previous_response_id": first.id,
            "stream": True,
            "max_output_tokens": 400,
        }
        interrupted = None
        with httpx.stream("POST", base + "/v1/responses", json=body, timeout=300) as response:
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = json.loads(line[6:])
                if data["type"] == "response.created":
                    interrupted = data["response"]["id"]
                if data["type"] == "response.output_text.delta":
                    os.kill(process.pid, signal.SIGKILL)
                    break
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    process, base = serve(model_path, store, tmp_path / "server.log")
    try:
        kept = httpx.get(f"{base}/v1/responses/{first.id}", timeout=30).json()
        assert kept["status"] == "completed" and kept["output"][0]["content"][0]["text"]
        after = httpx.get(f"{base}/v1/responses/{interrupted}", timeout=30)
        assert after.status_code == 404 or after.json()["status"] != "completed"
        client = openai_client(base)
        again = client.responses.create(
            model="allinone", input="我叫什么名字？", previous_response_id=first.id
        )
        assert again.status in ("completed", "incomplete")
    finally:
        stop(process)
