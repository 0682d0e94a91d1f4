"""Dispatch logic on a scripted engine: routing, the combined flow, history, input checks."""

import pytest

from app.errors import InputError, InputTooLong, UnknownRole
from app.roles.assistant import Turn, Verdict
from app.roles.bank import Exchange


def test_sentiment_picks_the_most_likely_label(fake_assistant, fake_engine):
    fake_engine.enqueue_choice([0.2, 0.8])
    verdict = fake_assistant.sentiment("今天又被老板骂了。")
    assert verdict == Verdict("负面", 0.8, {"正面": 0.2, "负面": 0.8})
    system = fake_engine.calls[-1][1][0]
    assert system["role"] == "system" and "情感分析" in system["content"]


def test_respond_uses_the_verdict_to_pick_the_reply_tone(fake_assistant, fake_engine):
    fake_engine.enqueue_choice([0.1, 0.9])
    fake_engine.enqueue_reply(["别", "难过"])
    verdict, stream = fake_assistant.respond("今天又被老板骂了。")
    assert verdict.label == "负面"
    assert "".join(stream) == "别难过"
    kind, messages = fake_engine.calls[-1]
    tone = fake_assistant.roles.chat.tones["负面"]
    assert kind == "stream" and messages[0]["content"].endswith(tone.instruction)
    assert messages[-1] == {"role": "user", "content": "今天又被老板骂了。"}


def test_positive_message_gets_the_positive_tone(fake_assistant, fake_engine, monkeypatch):
    bank = fake_assistant.roles.banks[fake_assistant.roles.chat.name]
    good = Exchange(topic="good_news", mood="正面", input="考过了", output="真为你高兴")
    monkeypatch.setattr(bank, "shots", lambda *_: [good])  # the bank agrees: a good-news group
    fake_engine.enqueue_choice([0.95, 0.05])
    _, stream = fake_assistant.respond("我升职了！")
    list(stream)
    assert fake_engine.calls[-1][1][0]["content"].endswith(
        fake_assistant.roles.chat.tones["正面"].instruction
    )


def test_reply_keeps_history_in_order_after_the_few_shot_turns(fake_assistant, fake_engine):
    history = [Turn("user", "第一句"), Turn("assistant", "回答一")]
    list(fake_assistant.reply("第二句", history))
    messages = fake_engine.calls[-1][1]
    n_examples = len(fake_assistant.roles.chat.examples)
    assert [m["content"] for m in messages[1 + 2 * n_examples :]] == ["第一句", "回答一", "第二句"]


def test_long_history_drops_oldest_exchanges_first(fake_assistant, fake_engine):
    fake_engine.n_ctx = 900
    history = []
    for i in range(20):
        history += [Turn("user", f"问题{i}" * 10), Turn("assistant", f"回答{i}" * 10)]
    list(fake_assistant.reply("最新的问题", history, max_tokens=50))
    contents = [m["content"] for m in fake_engine.calls[-1][1]]
    assert contents[-1] == "最新的问题"
    assert "问题19" * 10 in contents and "问题0" * 10 not in contents
    kept = [c for c in contents if c.startswith(("问题", "回答"))]
    assert kept[0].startswith("问题"), "turns must stay paired (user first)"


def test_a_message_longer_than_the_context_is_refused(fake_assistant, fake_engine):
    fake_engine.n_ctx = 600
    with pytest.raises(InputTooLong):
        fake_assistant.sentiment("长" * 5000)
    with pytest.raises(InputTooLong):
        list(fake_assistant.reply("长" * 5000))


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_input_is_refused(fake_assistant, text):
    with pytest.raises(InputError, match="empty"):
        fake_assistant.sentiment(text)
    with pytest.raises(InputError, match="empty"):
        fake_assistant.reply(text)


def test_run_routes_label_and_text_roles(fake_assistant, fake_engine):
    fake_engine.enqueue_choice([0.7, 0.3])
    assert fake_assistant.run("sentiment", "好").label == "正面"
    fake_engine.enqueue_reply(["你好"])
    assert "".join(fake_assistant.run("assistant", "嗨")) == "你好"


def test_wrong_kind_of_role_is_a_clear_error(fake_assistant):
    with pytest.raises(InputError, match="labels"):
        fake_assistant.reply("hi", role="sentiment")
    with pytest.raises(InputError, match="free text"):
        fake_assistant.classify("hi", role="assistant")
    with pytest.raises(UnknownRole):
        fake_assistant.run("nope", "hi")


def test_sampling_overrides_and_unknown_options(fake_assistant, fake_engine):
    list(fake_assistant.reply("hi", temperature=0.0, max_tokens=7, seed=5))
    assert (fake_engine.last_sampling.temperature, fake_engine.last_sampling.max_tokens) == (0.0, 7)
    assert fake_engine.last_sampling.seed == 5
    with pytest.raises(InputError, match="tempreature"):
        fake_assistant.reply("hi", tempreature=0.5)
