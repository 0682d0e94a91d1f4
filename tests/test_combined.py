"""Feel + reply on the real model: the published demo and its happy twin."""

import pytest

pytestmark = pytest.mark.model


def test_scolded_by_the_boss_gets_negative_and_a_reply(assistant):
    verdict, stream = assistant.respond("今天又被老板骂了。", temperature=0.0, max_tokens=80)
    assert verdict.label == "负面"
    reply = "".join(stream)
    assert len(reply) >= 5
    assert "负面" not in reply and "<|" not in reply


def test_good_news_gets_positive(assistant):
    verdict, stream = assistant.respond(
        "我今天升职加薪了，太开心了！", temperature=0.0, max_tokens=60
    )
    assert verdict.label == "正面"
    assert "".join(stream).strip()


def test_tone_follows_the_verdict(assistant):
    """The negative tone instruction is in the prompt the model saw; the positive one is not."""
    engine = assistant.engine
    role = assistant.roles.chat
    prefix = assistant._prefix_messages(role, "负面")
    sampling, _ = assistant._sampling(role, {})
    prompt = assistant._fit_history(role, prefix, 1, "今天又被老板骂了。", [], sampling)
    text = engine.llm.detokenize(prompt.tokens, special=True).decode("utf-8")
    negative, positive = role.tones["负面"].instruction, role.tones["正面"].instruction
    assert negative in text and positive not in text
