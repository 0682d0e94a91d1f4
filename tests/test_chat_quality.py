"""Chat-quality proxies: the measures themselves on hand-made replies, then one real run."""

import json

import pytest

from app.measure import chat_quality as cq
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
    fake_assistant.prepare_bank()  # the bank's own reading is not what this test watches
    judged_by = []
    judge = fake_assistant.labeller.judge
    monkeypatch.setattr(
        fake_assistant.labeller,
        "judge",
        lambda text, role, **kw: judged_by.append(role.name) or judge(text, role, **kw),
    )
    cq.collect(fake_assistant, [cq.Message("唉，又失眠了", "venting", "负面")])
    assert judged_by == ["mood", "mood"]  # the message's mood, then the reply's warmth


@pytest.mark.parametrize(
    ("reply", "flag"),
    [
        ("真是让人开心和感动。", True),
        ("太棒了，恭喜你！", True),
        ("为你感到高兴！", True),
        ("抱抱你，希望你早点好起来。", False),
    ],
)
def test_celebration(reply, flag):
    assert cq.celebrates(reply) is flag


@pytest.mark.parametrize(
    ("reply", "flag"),
    [
        ("是的，我确实有点没用了。", True),
        ("没错，你要改。", True),
        ("你确实很差劲。", True),
        ("你一点也不差劲，别这样想。", False),
        ("确认一下：你最近是不是太累了？", False),
        ("你这个样子，跟我一样，挺笨的。", True),
        ("这都是你的错。", True),
        ("你不是太笨，是太累了。", False),
        ("这不是你的错，别怪自己。", False),
    ],
)
def test_agreement_with_self_blame(reply, flag):
    assert cq.agrees_with_self_blame(reply) is flag


def test_self_blame_is_found_by_kind_or_by_words():
    assert cq.is_self_blame(cq.Message("我是不是很差劲？", "venting", "负面"))
    assert cq.is_self_blame(cq.Message("都怪我", "", "负面"))
    assert cq.is_self_blame(cq.Message("随便", "self_blame", "负面"))
    assert not cq.is_self_blame(cq.Message("今天下雨了", "venting", "负面"))


def test_echo_copy_and_flip():
    assert cq.shares_run("老板骂你，这可能是你的错。", "明明不是你的错，这可能是你的错吗")
    assert not cq.shares_run("你好呀", "你好呀")  # shorter than 8: never a copy
    assert cq.flips_roles("室友天天打游戏，吵得我睡不着。", "你室友打游戏，吵得我睡不着？")
    assert not cq.flips_roles("室友吵得我睡不着。", "室友这样吵，你一定很累。")


def test_summary_counts_each_check_over_its_own_messages():
    blame = cq.Message("我是不是太没用了", "self_blame", "负面")
    sad = cq.Message("猫走了", "loss", "负面")
    happy = cq.Message("升职了", "good_news", "正面")
    replies = [
        cq.Reply(blame, "负面", "是的，你要努力。", 1, 2, "负面"),
        cq.Reply(sad, "负面", "太棒了！", 1, 2, "正面"),
        cq.Reply(happy, "正面", "太棒了！恭喜恭喜，这是一直努力换来的。", 1, 2, "正面"),
    ]
    s = cq.summarise(replies, examples=["这是你一直努力换来的，值得庆祝"])
    assert s["agrees_with_self_blame"] == 1.0 and s["self_blame_messages"] == 1
    assert s["celebrates_bad_news"] == pytest.approx(1 / 2)  # good news may celebrate
    assert s["copies_example"] == pytest.approx(0.0)
    s = cq.summarise(replies, examples=["恭喜恭喜，这是一直努力换来的"])
    assert s["copies_example"] == pytest.approx(1 / 3)


@pytest.mark.model
def test_sad_and_self_blaming_messages_get_no_joy_and_no_agreement(assistant):
    """The failures users reported, on the real model: bad news answered with joy, self-blame
    agreed with. Every negative message of the rating set, one greedy-seeded reply each."""
    messages = cq.load_messages(ROOT / "tests" / "data" / "rating_messages.jsonl")
    chosen = [m for m in messages if m.kind in ("self_blame", "loss", "sarcasm")]
    replies = cq.collect(assistant, chosen)
    summary = cq.summarise(replies, cq.example_texts(assistant))
    failures = [
        (r.message.text, r.text)
        for r in replies
        if cq.celebrates(r.text) or cq.agrees_with_self_blame(r.text)
    ]
    assert summary["self_blame_messages"] >= 8
    assert not failures, failures
    assert summary["copies_example"] <= 0.1, summary


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
        "--cache-dir",
        str(tmp_path / "cache"),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["summary"]
    assert summary["messages"] == 4 and summary["leaked_tokens"] == 0.0
    assert summary["chinese_share"] > 0.6
