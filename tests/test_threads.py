"""One Assistant shared by several threads: every answer is whole and the same as alone."""

from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.model

TEXTS = [
    "这家酒店太棒了，服务热情！",
    "质量太差了，用两天就坏了。",
    "今天升职加薪了，开心！",
    "又被老板骂了，好难过。",
    "房间很干净，早餐也丰富。",
    "物流太慢，客服也不理人。",
]
QUESTIONS = ["推荐一本书吧", "周末做什么好？", "最近睡不好怎么办？"]


def test_threads_get_the_same_answers_as_one_caller(assistant):
    def reply(question):
        return "".join(assistant.reply(question, temperature=0.0, max_tokens=24))

    alone_labels = [assistant.sentiment(text).probabilities for text in TEXTS]
    alone_replies = [reply(question) for question in QUESTIONS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        labels = pool.map(lambda text: assistant.sentiment(text).probabilities, TEXTS * 2)
        replies = pool.map(reply, QUESTIONS * 2)
        labels, replies = list(labels), list(replies)
    for got, want in zip(labels, alone_labels * 2, strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    assert replies == alone_replies * 2, "streams from different threads never interleave"
