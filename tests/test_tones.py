"""How the mood step shapes a reply: examples per tone, retrieved turns, banned words and runs."""

import pytest

from app.roles.bank import Exchange
from app.roles.prompts import parse_roles
from tests.conftest import ROOT, FakeEngine

TONED = {
    "roles": {
        "sentiment": {
            "system": "判断情感",
            "output": {"kind": "labels", "labels": ["正面", "负面"]},
        },
        "chat": {
            "system": "你是朋友",
            "output": {"kind": "text"},
            "steered_by": "sentiment",
            "examples": [
                {"input": "升职了", "output": "恭喜你呀", "tone": "正面"},
                {"input": "好累", "output": "抱抱你", "tone": "负面"},
                {"input": "你是谁", "output": "我是小暖"},
            ],
            "tones": {
                "负面": {"instruction": "安慰对方", "avoid": ["恭喜"]},
                "正面": {"instruction": "为对方高兴", "confident": 0.9},
            },
            "generation": {"no_copy": 3},
        },
    },
    "defaults": {"chat": "chat"},
}


@pytest.fixture
def toned(fake_engine: FakeEngine, tmp_path):
    from app.config import load_settings
    from app.roles.assistant import Assistant

    roles = parse_roles(TONED, ROOT / "prompts.yaml")
    return Assistant(fake_engine, roles, load_settings(cache_dir=tmp_path))


def shown(fake_engine: FakeEngine) -> list[str]:
    return [m["content"] for m in fake_engine.calls[-1][1]]


def test_a_sad_message_never_sees_the_celebration_example(toned, fake_engine):
    fake_engine.enqueue_choice([0.1, 0.9])
    list(toned.respond("我失恋了")[1])
    contents = shown(fake_engine)
    assert "抱抱你" in contents and "我是小暖" in contents
    assert "恭喜你呀" not in contents


def test_good_news_sees_its_own_example(toned, fake_engine):
    fake_engine.enqueue_choice([0.95, 0.05])
    list(toned.respond("考上了")[1])
    contents = shown(fake_engine)
    assert "恭喜你呀" in contents and "抱抱你" not in contents


def test_the_tone_bans_its_words_and_an_unsure_verdict_bans_every_tone_word(toned, fake_engine):
    word = tuple(fake_engine.tokenize("恭喜"))
    fake_engine.enqueue_choice([0.1, 0.9])
    list(toned.respond("丢了钱包")[1])
    assert word in fake_engine.last_sampling.banned
    fake_engine.enqueue_choice([0.95, 0.05])  # sure it is good news: celebrate freely
    list(toned.respond("中奖了")[1])
    assert word not in fake_engine.last_sampling.banned
    fake_engine.enqueue_choice([0.6, 0.4])  # 正面, but under the tone's 0.9
    list(toned.respond("真不错，又加班")[1])
    assert word in fake_engine.last_sampling.banned


def test_no_run_of_the_message_or_the_shown_turns_may_be_copied(toned, fake_engine):
    fake_engine.enqueue_choice([0.1, 0.9])
    list(toned.respond("老板又骂我了")[1])
    banned = fake_engine.last_sampling.banned
    assert tuple(fake_engine.tokenize("老板又")) in banned  # the message
    assert tuple(fake_engine.tokenize("安慰对")) in banned  # the instructions
    assert tuple(fake_engine.tokenize("抱抱你")) in banned  # a turn shown
    assert tuple(fake_engine.tokenize("恭喜你")) not in banned  # a turn NOT shown
    assert fake_engine.last_sampling.no_repeat == 3  # nor a run of the reply itself


def test_retrieved_turns_follow_the_fixed_ones_and_a_neutral_group_sets_the_tone(
    fake_assistant, fake_engine, monkeypatch
):
    bank = fake_assistant.roles.banks["assistant"]
    question = Exchange(topic="question", mood="中性", input="怎么早起", output="定个闹钟吧")
    monkeypatch.setattr(bank, "shots", lambda *args: [question])
    fake_engine.enqueue_choice([0.2, 0.8])  # the mood step calls the question 负面
    list(fake_assistant.respond("怎么才能不赖床？")[1])
    messages = fake_engine.calls[-1][1]
    role = fake_assistant.roles.chat
    assert messages[0]["content"].endswith(role.tones["中性"].instruction)
    assert [m["content"] for m in messages[-3:-1]] == ["怎么早起", "定个闹钟吧"]
    banned = set(fake_engine.last_sampling.banned)
    assert tuple(fake_engine.tokenize("是的")) not in banned, "a question may be answered yes"
    assert tuple(fake_engine.tokenize("太棒了")) in banned, "a plain answer celebrates nothing"


def test_the_shipped_chat_role_bans_ai_words_in_every_tone(fake_assistant, fake_engine):
    fake_engine.enqueue_choice([0.95, 0.05])
    list(fake_assistant.respond("今天好开心")[1])
    assert tuple(fake_engine.tokenize("人工智能")) in fake_engine.last_sampling.banned


def test_an_unsure_verdict_lets_the_nearest_group_of_any_mood_set_the_tone(
    fake_assistant, fake_engine, monkeypatch
):
    bank = fake_assistant.roles.banks["assistant"]
    asked = []
    sarcasm = Exchange(topic="sarcasm", mood="负面", input="真幸运，又堵车", output="堵车真磨人")
    good = Exchange(topic="good_news", mood="正面", input="考过了", output="太好了，恭喜")
    nearest = [sarcasm]

    def shots(features, k, mood, known):
        asked.append(mood)
        return list(nearest)

    monkeypatch.setattr(bank, "shots", shots)
    role = fake_assistant.roles.chat
    fake_engine.enqueue_choice([0.7, 0.3])  # 正面, under the tone's 0.9: unsure
    verdict, stream = fake_assistant.respond("真不错，又下雨了")
    list(stream)
    assert verdict.label == "正面" and asked == [None]
    assert fake_engine.calls[-1][1][0]["content"].endswith(role.tones["负面"].instruction)
    nearest[0] = good
    fake_engine.enqueue_choice([0.95, 0.05])  # sure, and the bank agrees: its mood's groups
    list(fake_assistant.respond("考上研究生了")[1])
    assert asked[-2:] == [None, "正面"]


def test_a_sure_verdict_the_bank_disagrees_with_is_unsure(fake_assistant, fake_engine, monkeypatch):
    """Sarcasm reads as 正面 at 0.9+ too; its nearest exchanges (of any mood) are 负面: the
    two readings disagree, so nothing is celebrated and the 负面 group sets the tone."""
    bank = fake_assistant.roles.banks["assistant"]
    sarcasm = Exchange(topic="sarcasm", mood="负面", input="真幸运，又堵车", output="堵车真磨人")
    asked = []

    def shots(features, k, mood, known):
        asked.append(mood)
        return [sarcasm]

    monkeypatch.setattr(bank, "shots", shots)
    role = fake_assistant.roles.chat
    fake_engine.enqueue_choice([0.97, 0.03])
    verdict, stream = fake_assistant.respond("真棒，排了两个小时队，轮到我刚好卖完。")
    list(stream)
    assert verdict.label == "正面" and asked == [None, None]
    assert fake_engine.calls[-1][1][0]["content"].endswith(role.tones["负面"].instruction)
    banned = {"".join(map(chr, tokens)) for tokens in fake_engine.last_sampling.banned}
    assert {"太棒了", "恭喜", "划算"} <= banned


def test_a_small_context_drops_retrieved_turns_before_refusing(fake_assistant, monkeypatch):
    from tests.conftest import FakeEngine

    bank = fake_assistant.roles.banks["assistant"]
    long_turn = Exchange(topic="t", mood="负面", input="长" * 300, output="长" * 300)
    monkeypatch.setattr(bank, "shots", lambda *args: [long_turn])
    small = FakeEngine(n_ctx=700)  # room for the system prompt and a message, not the turn
    fake_assistant.engine = small
    small.enqueue_choice([0.1, 0.9])
    verdict, stream = fake_assistant.respond("心情不好")
    assert "".join(stream) and verdict.label == "负面"
    assert "长" * 300 not in [m["content"] for m in small.calls[-1][1]]


def test_each_group_prefix_is_kept_on_disk_once_and_offered_back(fake_assistant, fake_engine):
    bank = fake_assistant.roles.banks["assistant"]
    k = fake_assistant.roles.chat.bank.k
    kept = sorted((fake_assistant.settings.cache_dir / "prefixes").glob("*.kv"))
    assert len(kept) == len(bank.groups(k)) > 10  # written when the fixture prepared the bank
    fake_engine.enqueue_choice([0.1, 0.9])
    list(fake_assistant.respond("最近压力好大")[1])
    assert len(fake_engine.prefixes) == 1  # the message's group, offered from its file
    assert next(iter(fake_engine.prefixes.values())).startswith(b"kv:")


@pytest.mark.model
def test_a_group_prefix_from_disk_gives_the_reply_the_memory_gives(assistant):
    assistant.prepare_bank()
    message = "今天考试没考好，心里很难受。"
    _, stream = assistant.respond(message, temperature=0.0, max_tokens=40)
    in_memory = "".join(stream)
    assistant.engine.forget(prefixes=True)  # as a fresh process: nothing held
    _, stream = assistant.respond(message, temperature=0.0, max_tokens=40)
    assert "".join(stream) == in_memory
