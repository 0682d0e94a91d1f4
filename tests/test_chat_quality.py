"""Chat-quality proxies: the measures themselves on hand-made replies, then one real run."""

import json

import pytest

from app import chat_quality as cq
from tests.conftest import ROOT, run_cli


def test_chinese_share_and_distinct_2():
    assert cq.chinese_share("你好hi") == pytest.approx(0.5)
    assert cq.distinct_2("哈哈哈哈") == pytest.approx(1 / 3)
    assert cq.distinct_2("今天天气好") == 1.0


@pytest.mark.parametrize(
    ("text", "flag"),
    [("作为一个AI，我不能", True), ("我是一个语言模型", True), ("抱抱你，会好的", False)],
)
def test_ai_mention(text, flag):
    assert bool(cq.AI_MENTION.search(text)) is flag


def test_summary_on_hand_made_replies():
    neg = cq.Message("难过", "venting", "负面")
    pos = cq.Message("开心", "good_news", "正面")
    replies = [
        cq.Reply(neg, "负面", "抱抱你，一切都会好起来的。", 100, 500, "正面"),
        cq.Reply(neg, "正面", "作为AI我无法理解<|im_end|>", 100, 500, "负面"),
        cq.Reply(pos, "正面", "太棒了，恭喜你呀！", 100, 500, "正面"),
    ]
    s = cq.summarise(replies)
    assert s["ai_mentions"] == pytest.approx(1 / 3)
    assert s["leaked_tokens"] == pytest.approx(1 / 3)
    assert s["supportive_on_negative"] == pytest.approx(0.5)
    assert s["mood_detected"] == pytest.approx(2 / 3)


def test_replies_are_judged_by_the_role_that_steers_the_tone(fake_assistant, monkeypatch):
    judged_by = []
    classify = fake_assistant.classify
    monkeypatch.setattr(
        fake_assistant,
        "classify",
        lambda text, role=None: judged_by.append(role) or classify(text, role),
    )
    cq.collect(fake_assistant, [cq.Message("唉，又失眠了", "venting", "负面")])
    assert judged_by == ["mood", "mood"]  # the message's mood, then the reply's warmth


def test_shipped_message_set_is_well_formed():
    messages = cq.load_messages(ROOT / "tests" / "data" / "chat_messages.jsonl")
    assert len(messages) == 50
    assert {m.kind for m in messages} == {"venting", "good_news", "question", "sarcasm"}


@pytest.mark.model
def test_real_chat_quality_run(tmp_path, model_path):
    result = run_cli(
        "eval-chat",
        "--limit",
        "4",
        "--out",
        str(tmp_path),
        "--model",
        str(model_path),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["summary"]
    assert summary["messages"] == 4 and summary["leaked_tokens"] == 0.0
    assert summary["chinese_share"] > 0.6
