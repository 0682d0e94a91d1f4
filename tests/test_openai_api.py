"""The OpenAI API a desktop app can rely on: every field honoured or refused, never ignored.

Fast tests drive the FastAPI app in-process on the scripted fake engine (what reaches the core,
which field a 400 names); the integration tests run `allinone serve` on the real model and use
the official `openai` client, as an app would.
"""

from __future__ import annotations

import base64
import json
import math

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.errors import SchemaError
from app.roles.json_output import JsonFormat
from app.roles.tools import Tool, split_tool_calls
from app.server.app import create_app
from tests.test_server import start_server

HELLO = [{"role": "user", "content": "你好"}]
MOOD_SCHEMA = {
    "type": "object",
    "properties": {
        "mood": {"type": "string", "enum": ["正面", "负面"]},
        "detail": {
            "type": "object",
            "properties": {"reason": {"type": "string"}, "score": {"type": "integer"}},
            "required": ["reason", "score"],
            "additionalProperties": False,
        },
    },
    "required": ["mood", "detail"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "查询一个城市今天的天气",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


# -- fast: the fake engine behind the real app ------------------------------------------------


@pytest.fixture
def app_client(fake_assistant):
    with TestClient(create_app(lambda: fake_assistant)) as client:
        yield client


def post(client, body, path="/v1/chat/completions"):
    return client.post(path, json=body)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"bogus": 1}, "bogus"),
        ({"logit_bias": {"100": 5}}, "logit_bias"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"n": 9}, "n"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ],
)
def test_a_field_not_honoured_is_a_400_naming_it(app_client, extra, param):
    response = post(app_client, {"messages": HELLO, **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_harmless_fields_are_accepted(app_client):
    body = {"messages": HELLO, "user": "u1", "store": False, "metadata": {"a": "b"}}
    body |= {"modalities": ["text"], "logit_bias": None, "service_tier": "auto"}
    assert post(app_client, body).status_code == 200


def test_usage_counts_what_the_engine_evaluated_and_sampled(app_client, fake_engine):
    fake_engine.enqueue_reply(["一", "二", "三"])
    body = post(app_client, {"messages": HELLO}).json()
    assert body["choices"][0]["message"]["content"] == "一二三"
    usage = body["usage"]
    assert usage["completion_tokens"] == 3
    assert usage["prompt_tokens"] == len(fake_engine.last_prompt.tokens)
    assert usage["total_tokens"] == usage["prompt_tokens"] + 3


def test_n_choices_take_consecutive_seeds(app_client, fake_engine):
    seeds = []
    original = fake_engine.stream

    def recording(prompt, sampling, **kwargs):
        seeds.append(sampling.seed)
        return original(prompt, sampling, **kwargs)

    fake_engine.stream = recording
    body = post(app_client, {"messages": HELLO, "n": 3, "seed": 40}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert seeds == [40, 41, 42]


def test_sampling_fields_reach_the_engine(app_client, fake_engine):
    body = {"messages": HELLO, "presence_penalty": 1.5, "frequency_penalty": -0.5}
    body |= {"stop": "。", "max_completion_tokens": 17, "logprobs": True, "top_logprobs": 3}
    assert post(app_client, body).status_code == 200
    sampling = fake_engine.last_sampling
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (1.5, -0.5)
    assert sampling.stop == ("。",) and sampling.max_tokens == 17 and sampling.top_logprobs == 3


def test_json_mode_takes_the_plain_path_with_the_schema_in_the_prompt(app_client, fake_engine):
    fake_engine.enqueue_reply(['{"mood": "正面", "detail": {"reason": "好", "score": 1}}'])
    response_format = {"type": "json_schema", "json_schema": {"name": "m", "schema": MOOD_SCHEMA}}
    body = {"messages": HELLO, "response_format": response_format}
    assert post(app_client, body).status_code == 200
    sampling = fake_engine.last_sampling
    assert sampling.grammar == JsonFormat.from_schema(MOOD_SCHEMA).grammar
    assert sampling.banned == () and sampling.max_sentences == 0 and sampling.stop == ()
    assert sampling.no_repeat == 0 and sampling.repeat_penalty == 1.0
    system = fake_engine.last_messages[0]["content"]
    assert '"enum": ["正面", "负面"]' in system and "JSON" in system


def test_a_schema_the_grammar_cannot_enforce_names_the_part(app_client):
    schema = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    response = post(app_client, {"messages": HELLO, "response_format": response_format})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "response_format.json_schema.schema.properties.age.minimum"
    assert "minimum" in error["message"]


def test_tools_on_a_template_without_them_are_prose_or_refused(app_client, fake_engine):
    """A model whose template cannot show tools (Qwen1.5) answers a client that offers tools
    anyway (Open WebUI offers its own with every message) in prose, and says so; a client that
    requires a call is refused."""
    fake_engine.supports_tools = False
    fake_engine.enqueue_reply(["你好呀"])
    response = post(app_client, {"messages": HELLO, "tools": [WEATHER]})
    assert response.json()["choices"][0]["message"]["content"] == "你好呀"
    assert "cannot show tools" in response.headers["x-allinone-tools"]
    body = {"messages": HELLO, "tools": [WEATHER], "tool_choice": "required"}
    response = post(app_client, body)
    assert response.status_code == 400
    assert "no tools section" in response.json()["error"]["message"]


def test_a_forced_call_starts_the_turn_and_comes_back_as_tool_calls(app_client, fake_engine):
    fake_engine.enqueue_reply(['{"name": "get_weather", "arguments": {"city": "北京"}}'])
    choice = {"type": "function", "function": {"name": "get_weather"}}
    body = {"messages": HELLO, "tools": [WEATHER], "tool_choice": choice}
    answer = post(app_client, body).json()["choices"][0]
    assert fake_engine.last_tools[0]["function"]["name"] == "get_weather"
    assert fake_engine.last_sampling.grammar  # the call is grammar-bound
    assert answer["finish_reason"] == "tool_calls"
    call = answer["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "北京"}


def test_a_tool_result_turn_reaches_the_template(app_client, fake_engine):
    call = {"id": "c1", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city": "北京"}'}
    messages = [
        {"role": "user", "content": "北京天气？"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "晴，25度"},
        {"role": "user", "content": "那要带伞吗？"},
    ]
    assert post(app_client, {"messages": messages, "tools": [WEATHER]}).status_code == 200
    [decided] = [asked for kind, asked in fake_engine.calls if kind == "opening"]
    assert [m["role"] for m in decided] == ["system", "user", "assistant", "tool", "user"]
    assert decided[2]["tool_calls"][0]["function"]["arguments"] == {"city": "北京"}
    # no call (the fake's chance is 0): the answer is the chat role's prose, after the same turns
    roles = [m["role"] for m in fake_engine.last_messages]
    assert roles[-4:] == ["user", "assistant", "tool", "user"]


def test_a_tools_request_calls_or_answers_in_prose_as_the_model_leans(app_client, fake_engine):
    body = {"messages": HELLO, "tools": [WEATHER]}
    fake_engine.call_chance = 0.2
    fake_engine.enqueue_reply(["你好呀"])
    prose = post(app_client, body)
    assert prose.json()["choices"][0]["message"]["content"] == "你好呀"
    assert "prose" in prose.headers["x-allinone-tools"]
    assert not fake_engine.last_tools, "the prose is written without the tools block"
    fake_engine.call_chance = 0.8
    fake_engine.enqueue_reply(['{"name": "get_weather", "arguments": {"city": "北京"}}'])
    called = post(app_client, body)
    assert called.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert fake_engine.last_sampling.grammar, "the call is bound by the tools' grammar"
    assert called.headers["x-allinone-tools"].startswith("1 tools offered; call")


def test_label_roles_refuse_what_a_label_cannot_mean(app_client):
    for extra, param in [({"n": 2}, "n"), ({"logprobs": True}, "logprobs")]:
        body = {"model": "allinone:sentiment", "messages": HELLO, **extra}
        response = post(app_client, body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param
    answer = post(app_client, {"model": "allinone:sentiment", "messages": HELLO}).json()
    assert answer["usage"]["prompt_tokens"] > 0 and answer["usage"]["completion_tokens"] == 2


def test_a_tools_request_decided_as_prose_streams_piece_by_piece(app_client, fake_engine):
    fake_engine.call_chance = 0.1
    fake_engine.enqueue_reply(["别", "担心", "。"])
    body = {"messages": HELLO, "tools": [WEATHER], "stream": True}
    with app_client.stream("POST", "/v1/chat/completions", json=body) as response:
        events = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
    chunks = [json.loads(event) for event in events[:-1]]
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert [piece for piece in pieces if piece] == ["别", "担心", "。"], "not one whole message"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_streamed_label_ends_with_the_usage_chunk(app_client):
    body = {"model": "allinone:sentiment", "messages": HELLO, "stream": True}
    body["stream_options"] = {"include_usage": True}
    with app_client.stream("POST", "/v1/chat/completions", json=body) as response:
        events = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text in ("正面", "负面") and chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(
    ("body", "param"),
    [({"input": [[1, 2]]}, "input"), ({"input": "a", "dimensions": 8}, "dimensions")],
)
def test_embeddings_refuse_what_they_cannot_do(app_client, body, param):
    response = post(app_client, body, "/v1/embeddings")
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_embeddings_shape_and_base64(app_client):
    plain = post(app_client, {"input": ["好天气", "坏电池"]}, "/v1/embeddings").json()
    assert [d["index"] for d in plain["data"]] == [0, 1] and plain["usage"]["prompt_tokens"] == 6
    vector = np.array(plain["data"][0]["embedding"])
    assert math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-5)
    packed = post(app_client, {"input": "好天气", "encoding_format": "base64"}, "/v1/embeddings")
    decoded = np.frombuffer(base64.b64decode(packed.json()["data"][0]["embedding"]), "<f4")
    assert np.allclose(decoded, vector)


# -- pure logic -------------------------------------------------------------------------------


def test_split_tool_calls_keeps_what_does_not_parse_as_text():
    tools = [Tool("get_weather")]
    text = '好的。<tool_call>\n{"name": "get_weather", "arguments": {"city": "上海"}}\n</tool_call>'
    content, calls = split_tool_calls(text, tools)
    assert content == "好的。" and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "上海"}
    broken = "<tool_call>{not json</tool_call>"
    assert split_tool_calls(broken, tools) == (broken, [])
    unknown = '<tool_call>{"name": "rm", "arguments": {}}</tool_call>'
    assert split_tool_calls(unknown, tools)[1] == []


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"type": "strng"}, "type"),
        ({"properties": {"a": {"type": "array", "uniqueItems": True}}}, "properties.a.uniqueItems"),
        ({"anyOf": [{"type": "string", "format": "email"}]}, "anyOf[0].format"),
        ({"properties": {"a": {"$ref": "https://x/y"}}}, "properties.a.$ref"),
        ({"type": "string", "pattern": "a+"}, "pattern"),
    ],
)
def test_check_schema_names_the_part(schema, path):
    with pytest.raises(SchemaError) as caught:
        JsonFormat.from_schema(schema)
    assert caught.value.path == path


def test_a_schema_grammar_keeps_raw_control_characters_out_of_strings():
    grammar = JsonFormat.from_schema({"type": "string"}).grammar
    assert r'char ::= [^"\\\x7F\x00-\x1F]' in grammar


# -- integration: the real model behind `allinone serve`, the official client --------------

model = pytest.mark.model


@pytest.fixture(scope="module")
def served(model_path, tmp_path_factory):
    process, base = start_server(model_path, tmp_path_factory.mktemp("api") / "server.log")
    yield base
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def client(served):
    from openai import OpenAI

    return OpenAI(base_url=served + "/v1", api_key="not-needed", timeout=300)


def ask(client, text, **options):
    messages = [{"role": "user", "content": text}]
    return client.chat.completions.create(model="allinone", messages=messages, **options)


@model
def test_usage_on_every_answer(client):
    reply = ask(client, "你好，今天天气不错", temperature=0, max_tokens=30)
    usage = reply.usage
    assert usage.prompt_tokens > 20 and 0 < usage.completion_tokens <= 30
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    label = client.chat.completions.create(
        model="allinone:sentiment", messages=[{"role": "user", "content": "太差了"}]
    )
    assert label.usage.prompt_tokens > 20 and label.usage.completion_tokens == 1


@model
def test_stream_with_usage_and_logprobs_counts_every_token(client):
    stream = ask(
        client,
        "推荐一本书",
        temperature=0,
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
        logprobs=True,
        top_logprobs=2,
    )
    chunks = list(stream)
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    logprobs = [c.choices[0].logprobs for c in chunks[:-1] if c.choices[0].logprobs]
    streamed = [entry for part in logprobs for entry in part.content or []]
    assert final.usage.completion_tokens == len(streamed) > 0
    assert final.usage.prompt_tokens > 0
    assert all(len(entry.top_logprobs) == 2 for entry in streamed)


@model
def test_n_choices_with_different_seeds_differ(client):
    reply = ask(client, "给我讲一个小故事的开头", n=2, seed=11, temperature=1.0, max_tokens=30)
    assert [choice.index for choice in reply.choices] == [0, 1]
    first, second = (choice.message.content for choice in reply.choices)
    assert first and second and first != second


@model
def test_logprobs_shape_and_values(client):
    reply = ask(client, "你好", temperature=0, max_tokens=20, logprobs=True, top_logprobs=3)
    choice = reply.choices[0]
    entries = choice.logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        tops = [alt.logprob for alt in entry.top_logprobs]
        assert tops == sorted(tops, reverse=True) and all(lp <= 0 for lp in tops)
        # Greedy: the token taken is the most likely one, and its logprob is that one's.
        assert entry.token == entry.top_logprobs[0].token
        assert math.isclose(entry.logprob, tops[0], abs_tol=1e-6)
    written = b"".join(bytes(entry.bytes) for entry in entries).decode("utf-8", "replace")
    assert written.startswith(choice.message.content)


@model
def test_json_object_mode_answers_json(client):
    reply = ask(
        client,
        "用 JSON 介绍你自己：名字和爱好。",
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


@model
def test_json_schema_answer_parses_and_validates(client):
    reply = ask(
        client,
        "这家餐厅的菜太难吃了，服务员还很凶。分析这条评论的情感。",
        temperature=0.7,
        seed=3,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "review", "schema": MOOD_SCHEMA, "strict": True},
        },
    )
    answer = json.loads(reply.choices[0].message.content)
    assert set(answer) == {"mood", "detail"} and answer["mood"] in ("正面", "负面")
    assert set(answer["detail"]) == {"reason", "score"}
    assert isinstance(answer["detail"]["reason"], str)
    assert isinstance(answer["detail"]["score"], int)


@model
def test_bad_schema_and_unknown_field_are_400s(client):
    from openai import BadRequestError

    bad = {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 2}}}
    with pytest.raises(BadRequestError) as caught:
        ask(
            client,
            "hi",
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": bad}},
        )
    assert "properties.n.multipleOf" in str(caught.value)
    with pytest.raises(BadRequestError) as caught:
        ask(client, "hi", extra_body={"mirostat": 2})
    assert "mirostat" in str(caught.value)


@model
def test_penalties_change_what_is_written(client):
    prompt = "请把“好的”这个词重复写十遍，用逗号隔开。"
    plain = ask(client, prompt, temperature=0, max_tokens=40).choices[0].message.content
    options = {"presence_penalty": 2.0, "frequency_penalty": 2.0}
    penalised = ask(client, prompt, temperature=0, max_tokens=40, **options)
    text = penalised.choices[0].message.content
    assert text != plain
    assert text.count("好的") < plain.count("好的")


@model
@pytest.mark.parametrize("stream", [False, True])
def test_a_named_tool_choice_returns_a_parseable_call(client, stream):
    options = {
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0,
    }
    if stream:
        chunks = list(ask(client, "北京今天天气怎么样？", stream=True, **options))
        calls = [c for chunk in chunks for c in (chunk.choices[0].delta.tool_calls or [])]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    else:
        reply = ask(client, "北京今天天气怎么样？", **options)
        calls, finish = reply.choices[0].message.tool_calls, [reply.choices[0].finish_reason]
    assert finish == ["tool_calls"] and calls[0].function.name == "get_weather"
    assert "北京" in json.loads(calls[0].function.arguments)["city"]


@model
def test_tool_choice_required_calls_a_tool(client):
    reply = ask(client, "上海天气如何？", tools=[WEATHER], tool_choice="required", temperature=0)
    call = reply.choices[0].message.tool_calls[0]
    assert isinstance(json.loads(call.function.arguments)["city"], str)


@model
def test_embeddings_put_near_sentences_closer(client, served):
    texts = [
        "今天天气很好，阳光明媚。",
        "今天阳光灿烂，天气不错。",
        "这台笔记本电脑的电池续航很差。",
    ]
    result = client.embeddings.create(model="allinone", input=texts)  # base64 by default
    vectors = np.array([item.embedding for item in result.data])
    assert vectors.shape[0] == 3 and result.usage.prompt_tokens > 0
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    near, far = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert near > far and near < 0.9999, "each vector must come from its own text"
    plain = httpx.post(served + "/v1/embeddings", json={"input": texts[0]}, timeout=60).json()
    # One text alone vs three decoded together (the list path): the same up to rounding.
    assert np.allclose(plain["data"][0]["embedding"], vectors[0], atol=1e-3)
