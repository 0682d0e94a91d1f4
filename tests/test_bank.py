"""The example bank: loading, group choice, mood filter, the vector cache, the shipped bank."""

import json

import numpy as np
import pytest

from app.errors import PromptsError
from app.measure import chat_quality as cq
from app.roles.bank import ExampleBank, Exchange, load_bank
from tests.conftest import ROOT, write

BANK = ROOT / "banks" / "chat.yaml"


def small_bank() -> ExampleBank:
    exchanges = [
        Exchange(topic="loss", mood="负面", input="猫走了", output="抱抱你"),
        Exchange(topic="loss", mood="负面", input="外婆走了", output="我在"),
        Exchange(topic="loss", mood="负面", input="狗走了", output="它很爱你"),
        Exchange(topic="news", mood="正面", input="升职了", output="恭喜"),
        Exchange(topic="question", mood="中性", input="怎么睡好", output="早点睡"),
    ]
    bank = ExampleBank(BANK, exchanges, "digest")
    vectors = {
        "猫走了": [1, 0, 0],
        "狗走了": [0.9, 0.1, 0],  # the loss group's mean: its most typical exchange
        "外婆走了": [0.8, 0.2, 0],
        "升职了": [0.9, 0, 0.1],  # close to the losses, but a 正面 exchange
        "怎么睡好": [0, 0, 1],
    }
    bank.index(lambda texts: np.array([vectors[t] for t in texts], dtype=np.float32))
    return bank


def test_a_negative_message_never_sees_a_celebration():
    bank = small_bank()
    shots = bank.shots(np.array([0.92, 0.0, 0.08]), 2, "负面", ("正面", "负面"))
    assert all(shot.mood == "负面" for shot in shots)
    assert [shot.topic for shot in shots] == ["loss", "loss"]


def test_the_group_most_typical_exchange_comes_last():
    bank = small_bank()
    shots = bank.shots(np.array([1.0, 0.0, 0.0]), 3, "负面", ("正面", "负面"))
    assert len(shots) == 3
    assert shots[-1].input == "狗走了"


def test_moods_the_steering_role_does_not_know_are_always_candidates():
    bank = small_bank()
    shots = bank.shots(np.array([0.0, 0.0, 1.0]), 2, "正面", ("正面", "负面"))
    assert [shot.input for shot in shots] == ["怎么睡好"]


def test_vectors_are_cached_and_reused(tmp_path):
    cache = tmp_path / "banks" / "x.npy"
    exchanges = [Exchange(mood="负面", input=f"消息{i}", output="好") for i in range(3)]
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.eye(3, dtype=np.float32)

    ExampleBank(BANK, exchanges, "d").index(embed, cache)
    again = ExampleBank(BANK, exchanges, "d")
    again.index(embed, cache)
    assert len(calls) == 1 and again.indexed
    assert not list(cache.parent.glob("*.partial*"))


def test_a_broken_cache_is_computed_again(tmp_path):
    cache = write(tmp_path / "x.npy", "not numpy")
    exchanges = [Exchange(mood="负面", input="a", output="b")]
    bank = ExampleBank(BANK, exchanges, "d")
    bank.index(lambda texts: np.ones((1, 2), dtype=np.float32), cache)
    assert bank.indexed and np.load(cache).shape == (1, 2)


def test_shipped_vectors_are_used_when_no_cache_is_there_and_never_written(tmp_path):
    exchanges = [Exchange(mood="负面", input=f"消息{i}", output="好") for i in range(3)]
    cache, shipped = tmp_path / "cache" / "x.npy", tmp_path / "shipped.npy"
    np.save(shipped, np.eye(3, dtype=np.float32))
    calls = []
    bank = ExampleBank(BANK, exchanges, "d")
    bank.index(lambda texts: calls.append(texts) or np.ones((3, 3)), cache, shipped)
    assert bank.indexed and calls == [] and not cache.exists()


def test_shipped_vectors_of_another_bank_are_passed_over(tmp_path):
    exchanges = [Exchange(mood="负面", input=f"消息{i}", output="好") for i in range(3)]
    cache, shipped = tmp_path / "cache" / "x.npy", tmp_path / "shipped.npy"
    np.save(shipped, np.eye(2, dtype=np.float32))  # two rows: not these three exchanges
    bank = ExampleBank(BANK, exchanges, "d")
    bank.index(lambda texts: np.eye(3, dtype=np.float32), cache, shipped)
    assert np.load(cache).shape == (3, 3) and np.load(shipped).shape == (2, 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("exchanges: []", "non-empty 'exchanges:'"),
        ("exchanges:\n  - {mood: 负面, input: a}", "exchange 1: output"),
        ("exchanges:\n  - {mood: 负面, input: a, output: b, extra: 1}", "exchange 1: extra"),
        ("exchanges: [", "not valid UTF-8 YAML"),
    ],
)
def test_bad_bank_files_name_the_file_and_exchange(tmp_path, text, expected):
    path = write(tmp_path / "bank.yaml", text)
    with pytest.raises(PromptsError, match=expected) as caught:
        load_bank(path, "prompts.yaml: role 'assistant', field 'bank'")
    assert str(path) in str(caught.value)


def test_the_shipped_bank_covers_every_topic_and_keeps_its_own_rules():
    bank = load_bank(BANK, "test")
    topics = {exchange.topic for exchange in bank.exchanges}
    assert len(bank.exchanges) >= 150
    assert {"work", "study", "family", "health", "loss", "love", "money", "loneliness"} <= topics
    assert {"good_news", "sarcasm", "question", "self_doubt"} <= topics
    inputs = [exchange.input for exchange in bank.exchanges]
    assert len(set(inputs)) == len(inputs)
    for exchange in bank.exchanges:
        if exchange.mood == "负面":
            assert not cq.celebrates(exchange.output), exchange
        assert not cq.agrees_with_self_blame(exchange.output), exchange
        assert not cq.AI_MENTION.search(exchange.output), exchange


def test_the_rating_set_is_new_to_the_model():
    """No rating message shares 8 characters in a row with the bank, the role's examples, the
    proxy message set, the tuning messages or any reply the reply judge was fit on: a rating
    must measure replies to messages the configuration never saw."""
    data = ROOT / "tests" / "data"
    ratings = cq.load_messages(data / "rating_messages.jsonl")
    seen = [text for e in load_bank(BANK, "test").exchanges for text in (e.input, e.output)]
    for name in ("chat_messages.jsonl", "tuning_messages.jsonl"):
        seen += [m.text for m in cq.load_messages(data / name)]
    judged = ROOT / "docs" / "ratings" / "judge" / "ratings.jsonl"
    seen += [json.loads(line)["message"] for line in judged.read_text("utf-8").splitlines()]
    prompts = (ROOT / "prompts.yaml").read_text(encoding="utf-8")
    assert len(ratings) >= 60
    for message in ratings:
        assert not cq.shares_run(message.text, prompts), message.text
        assert not any(cq.shares_run(message.text, text) for text in seen), message.text
    assert len({m.text for m in ratings}) == len(ratings)
