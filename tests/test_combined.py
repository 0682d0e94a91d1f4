"""Feel + reply on the real model: the published demo and its happy twin."""

import pytest

from app.roles.replying import reply_settings

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
    prompts = assistant.prompt_builder
    prefix = prompts.prefix_messages(role, "负面")
    sampling, _, _ = reply_settings(role, {}, assistant.settings.seed)
    prompt = prompts.fit_history(role, prefix, 1, "今天又被老板骂了。", [], sampling)
    text = engine.llm.detokenize(prompt.tokens, special=True).decode("utf-8")
    negative, positive = role.tones["负面"].instruction, role.tones["正面"].instruction
    assert negative in text and positive not in text


def test_a_fact_from_an_earlier_turn_survives_the_retrieved_examples(assistant):
    """Feel + reply puts tone and bank turns before the history: the history must still count."""
    from app.roles.assistant import Turn

    question = "我的猫叫什么名字？"
    history = [Turn("user", "我养了一只猫，叫咪咪。"), Turn("assistant", "好可爱呀！")]
    _, stream = assistant.respond(question, history, temperature=0.0, max_tokens=40)
    with_history = "".join(stream)
    _, stream = assistant.respond(question, temperature=0.0, max_tokens=40)
    assert "咪咪" in with_history, with_history
    assert "咪咪" not in "".join(stream), "the name can only come from the history"


def test_the_reported_failures_do_not_come_back(assistant):
    """Each message a user reported, answered as shipped (seeded): no joy at a death, no "是的"
    to self-blame, no praise of the rain, no flipped "吵得我睡不着"."""
    from app.measure import chat_quality as cq

    cases = {
        "我家猫昨天走了，它陪了我十二年。": cq.celebrates,
        "我是不是太没用了，什么都做不好。": cq.agrees_with_self_blame,
        "太好了，又下雨了，我刚洗的车。": lambda reply: "好天气" in reply or cq.celebrates(reply),
        "室友天天半夜打游戏，吵得我睡不着。": lambda reply: cq.flips_roles(
            "室友天天半夜打游戏，吵得我睡不着。", reply
        ),
    }
    for message, failed in cases.items():
        _, stream = assistant.respond(message)
        reply = "".join(stream)
        assert reply and not failed(reply), (message, reply)
