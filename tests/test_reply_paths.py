"""Every path a chat reply takes is felt and guarded; only JSON and tool calls skip both.

On the fake engine: what each front end asks of the model (the tone in the system prompt, the
words banned while sampling) and what it tells the client (the verdict). The real model's
replies through the real server are checked in tests/test_harm.py.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from app.server.app import create_app
from tests.test_openai_api import WEATHER

MOTHER = "我妈住院了，我在外地回不去。"
NEGATIVE = [0.1, 0.9]  # the mood step's probabilities for [正面, 负面]


@pytest.fixture
def app_client(fake_assistant):
    with TestClient(create_app(lambda: fake_assistant)) as client:
        yield client


def banned_words(fake_engine) -> set[str]:
    """The fake's tokens are characters: each banned sequence spelled back."""
    return {"".join(map(chr, tokens)) for tokens in fake_engine.last_sampling.banned}


def chat(client, text: str, **extra) -> dict:
    body = {"messages": [{"role": "user", "content": text}], **extra}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_chat_completion_is_felt_and_says_its_verdict(app_client, fake_engine, fake_assistant):
    fake_engine.enqueue_choice(NEGATIVE)
    answer = chat(app_client, MOTHER)
    assert answer["sentiment"] == {"label": "负面", "confidence": 0.9}
    instruction = fake_assistant.roles.chat.tones["负面"].instruction.strip()
    assert instruction in fake_engine.last_messages[0]["content"], "the tone steers the reply"
    assert {"恭喜", "是的", "因为你"} <= banned_words(fake_engine)


def test_every_streamed_chunk_carries_the_verdict(app_client, fake_engine):
    fake_engine.enqueue_choice(NEGATIVE)
    fake_engine.enqueue_reply(["别", "担心"])
    body = {"messages": [{"role": "user", "content": MOTHER}], "stream": True}
    with app_client.stream("POST", "/v1/chat/completions", json=body) as response:
        events = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks and all(chunk["sentiment"]["label"] == "负面" for chunk in chunks)


def test_prose_to_a_tools_request_is_felt_like_any_chat_reply(app_client, fake_engine):
    fake_engine.call_chance = 0.1
    fake_engine.enqueue_choice(NEGATIVE)
    answer = chat(app_client, "我是不是太没用了？", tools=[WEATHER])
    assert answer["sentiment"]["label"] == "负面"
    assert {"是的", "没用"} <= banned_words(fake_engine)


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [WEATHER], "tool_choice": "required"},
        {"response_format": {"type": "json_object"}},
    ],
    ids=["tool call", "json"],
)
def test_only_json_and_tool_calls_skip_the_mood_step_and_the_guards(app_client, fake_engine, extra):
    fake_engine.enqueue_reply(['{"name": "get_weather", "arguments": {"city": "杭州"}}'])
    answer = chat(app_client, "杭州今天天气怎么样？", **extra)
    assert "sentiment" not in answer
    assert not fake_engine.last_sampling.banned, "a ban could cut the very word JSON must copy"
    assert not [call for call in fake_engine.calls if call[0] == "choose"], "no mood step"


def test_the_responses_api_reports_the_verdict_of_prose_to_a_tools_request(app_client, fake_engine):
    fake_engine.call_chance = 0.1
    fake_engine.enqueue_choice(NEGATIVE)
    tool = {"type": "function", **WEATHER["function"]}
    body = {"model": "allinone", "input": MOTHER, "tools": [tool], "store": False}
    response = app_client.post("/v1/responses", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["sentiment"] == "负面"


def test_grave_news_may_be_named_only_after_the_person_named_it(fake_assistant, fake_engine):
    "".join(fake_assistant.reply(MOTHER))
    assert {"去世", "车祸", "分手", "癌"} <= banned_words(fake_engine)
    "".join(fake_assistant.reply("奶奶上周去世了，我一直睡不着。"))
    banned = banned_words(fake_engine)
    assert "去世" not in banned and "节哀" not in banned, "the person said it: it may be named"
    assert "车祸" in banned


def test_grave_news_from_an_earlier_turn_of_the_person_stays_allowed(fake_assistant, fake_engine):
    from app.roles.assistant import Turn

    history = [Turn("user", "我和男朋友分手了。"), Turn("assistant", "抱抱你。")]
    "".join(fake_assistant.reply("还是忍不住想他。", history))
    assert "分手" not in banned_words(fake_engine)
    history = [Turn("user", "最近好累。"), Turn("assistant", "你们分手了吗？")]
    "".join(fake_assistant.reply("还是很累。", history))
    assert "分手" in banned_words(fake_engine), "only the person's own words allow it"


def test_a_reply_not_felt_avoids_every_tones_words(fake_assistant, fake_engine):
    "".join(fake_assistant.reply("今天又被老板骂了。"))
    assert {"恭喜", "是的", "划算", "因为你"} <= banned_words(fake_engine)
    assert not [call for call in fake_engine.calls if call[0] == "choose"], "reply() never feels"


def test_answer_feels_unless_told_not_to_and_guards_either_way(fake_assistant, fake_engine):
    fake_engine.enqueue_choice(NEGATIVE)
    verdict, completion = fake_assistant.answer(MOTHER)
    "".join(completion)
    assert verdict is not None and verdict.label == "负面"
    assert "去世" in banned_words(fake_engine)
    verdict, completion = fake_assistant.answer(MOTHER, steer=False)
    "".join(completion)
    assert verdict is None and "去世" in banned_words(fake_engine)
