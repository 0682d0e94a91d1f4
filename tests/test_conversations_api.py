"""The Python API of kept conversations: `Assistant.conversations()` lists, opens, continues
and deletes the conversations in the store the settings name."""

from __future__ import annotations

from app.config import load_settings
from app.roles.assistant import Assistant


def test_say_keeps_each_turn_and_the_next_one_sees_it(fake_assistant, fake_engine, tmp_path):
    fake_assistant.settings = load_settings(store=tmp_path / "c.sqlite3")
    conversations = fake_assistant.conversations()
    assert conversations is fake_assistant.conversations(), "one store per Assistant"
    fake_engine.enqueue_choice([0.1, 0.9])
    fake_engine.enqueue_reply(["别", "难过"])
    said = conversations.say(None, "今天又被老板骂了。", create_as="工作")
    assert "".join(said.stream) == "别难过"
    assert said.verdict is not None and said.verdict.label == "负面"
    fake_engine.enqueue_choice([0.1, 0.9])
    "".join(conversations.say("工作", "还要加班。").stream)
    asked = [message["content"] for message in fake_engine.last_messages]
    assert "别难过" in asked, "turn 2's prompt holds turn 1's reply"
    [listed] = conversations.list()
    assert (listed.name, listed.turn_count) == ("工作", 2)
    turns = conversations.open("工作")
    assert [turn.status for turn in turns] == ["completed", "completed"]
    assert turns[0].verdict["label"] == "负面"
    conversations.delete("工作")
    assert conversations.list() == []


def test_the_store_path_comes_from_the_settings(fake_engine, tmp_path):
    from app.roles.prompts import load_roles
    from tests.conftest import ROOT

    settings = load_settings(store=tmp_path / "here.sqlite3", cache_dir=tmp_path)
    roles = load_roles(ROOT / "prompts.yaml")
    assistant = Assistant(fake_engine, roles.model_copy(update={"heads": {}}), settings)
    assert assistant.conversations().store.path == tmp_path / "here.sqlite3"
