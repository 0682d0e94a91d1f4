"""What a caller adds around a role's prompt (instructions, truncation), and a conversation's
steady start: each turn's prompt begins with the last one's, so the KV of the earlier turns is
reused, while every message's own mood still steers its reply."""

from __future__ import annotations

import pytest

from app.errors import InputTooLong
from app.roles.assistant import Assistant, Turn
from app.roles.bank import Exchange

SAD, GLAD = [0.1, 0.9], [0.95, 0.05]  # the mood step's 正面 / 负面 probabilities


def system_turn(fake_engine) -> str:
    return fake_engine.last_messages[0]["content"]


def test_instructions_follow_the_roles_own_prompt(fake_assistant, fake_engine):
    role = fake_assistant.roles.chat
    fake_assistant.reply("你好", instructions="请用一句话回答。").text()
    system = system_turn(fake_engine)
    assert system.startswith(role.system_prompt(None).rstrip())
    assert system.endswith("请用一句话回答。")
    fake_engine.enqueue_choice(SAD)
    fake_assistant.respond("今天又被老板骂了。", instructions="请用一句话回答。")[1].text()
    assert system_turn(fake_engine).endswith("请用一句话回答。")
    assert role.tones["负面"].instruction.strip() in system_turn(fake_engine)


def test_instructions_reach_json_and_tool_replies(fake_assistant, fake_engine):
    from app.roles.json_output import JsonFormat

    fake_engine.enqueue_reply(['{"a": 1}'])
    asked = {"json_format": JsonFormat.any_object(), "instructions": "只写键 a。"}
    fake_assistant.reply("给我 JSON", **asked)
    assert "只写键 a。" in system_turn(fake_engine)


def long_history(turns: int) -> list[Turn]:
    history = []
    for number in range(turns):
        history += [Turn("user", f"第{number}个问题，" * 20), Turn("assistant", "好的。" * 20)]
    return history


def test_truncation_auto_drops_old_turns_and_disabled_refuses(fake_assistant, fake_engine):
    history = long_history(40)  # ~10,000 characters: far over the fake's 2048 tokens
    fake_assistant.reply("还记得吗？", history).text()
    kept = [m for m in fake_engine.last_messages if m["role"] != "system"]
    assert 1 < len(kept) < 1 + 2 * 40, "the oldest turns were dropped, the newest kept"
    assert kept[-2]["content"] == history[-1].content
    with pytest.raises(InputTooLong, match="truncation is disabled"):
        fake_assistant.reply("还记得吗？", history, truncation="disabled")


def test_a_conversation_keeps_its_openings_start_and_notes_a_new_mood(
    fake_assistant, fake_engine, monkeypatch
):
    role = fake_assistant.roles.chat
    bank = fake_assistant.roles.banks[role.name]

    def shots(features, k, mood, known):  # the bank agrees with every verdict
        return [Exchange(topic="daily", mood=mood or "正面", input="嗯", output="好")]

    monkeypatch.setattr(bank, "shots", shots)
    fake_engine.enqueue_choice(SAD)
    fake_assistant.respond("今天又被老板骂了。")[1].text()
    first = list(fake_engine.last_prompt.tokens)
    history = [Turn("user", "今天又被老板骂了。"), Turn("assistant", "好的")]
    fake_engine.enqueue_choice(GLAD)  # the new message; the opening's verdict is remembered
    verdict, reply = fake_assistant.respond("不过晚上吃到了好吃的！", history)
    reply.text()
    assert verdict.label == "正面"
    second = list(fake_engine.last_prompt.tokens)
    assert second[: len(first)] == first, "turn 2 starts with turn 1"
    glad_note = {"role": "system", "content": role.tones["正面"].instruction.strip()}
    assert fake_engine.last_messages[-2] == glad_note
    # Turn 3: turn 2's note stays before turn 2's message, so turn 3 starts with turn 2 whole.
    history += [Turn("user", "不过晚上吃到了好吃的！"), Turn("assistant", "好的")]
    fake_engine.enqueue_choice(SAD)
    fake_assistant.respond("又要加班。", history)[1].text()
    assert fake_engine.last_prompt.tokens[: len(second)] == second, "turn 3 starts with turn 2"
    assert fake_engine.last_messages[-2]["role"] == "assistant", "the opening's mood: no note"
    assert fake_engine.last_messages.count(glad_note) == 1


@pytest.mark.model
def test_a_follow_up_turn_reuses_the_earlier_turns_kv(assistant: Assistant) -> None:
    options = {"temperature": 0.0, "max_tokens": 24}
    first_text = "我叫林小雨，今天有点累。"
    verdict, first = assistant.respond(first_text, **options)
    reply = first.text()
    history = [Turn("user", first_text), Turn("assistant", reply)]
    second_text = "你还记得我叫什么吗？"
    _, second = assistant.respond(second_text, history, **options)
    second.text()
    assert second.usage.cached_tokens >= first.usage.prompt_tokens, (
        "turn 2 decodes only what turn 1 did not hold",
        first.usage,
        second.usage,
    )
