"""Continuous batching (app/llm/scheduler.py): replies from several threads decoded together.

The session's assistant runs with the default --parallel 4. The properties: every reply is its
own (never mixed with another), honours its own settings, a closed reply frees its slot for a
waiting one, and a label request is served while replies stream.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.llm.fair_lock import FairLock
from app.roles.assistant import Assistant, Turn

ROOT = Path(__file__).resolve().parent.parent
LONG = "写一篇关于春天的长文章，越详细越好。"
QUESTIONS = ["推荐一本书吧", "周末做什么好？", "最近睡不好怎么办？", "你好"]


def long_reply(assistant: Assistant, text: str = LONG, **options: object):
    """A greedy reply that runs to its token limit (no sentence limit, no stop string)."""
    settings = {"temperature": 0.0, "max_tokens": 64, "max_sentences": 0, "stop": [], **options}
    return assistant.reply(text, **settings)


def first_piece(completion) -> str:
    return next(completion)


@pytest.mark.model
def test_four_threads_get_their_own_replies(assistant: Assistant) -> None:
    assert assistant.engine.parallel == 4, "the session runs with --parallel 4"

    def reply(question: str) -> str:
        return assistant.reply(question, temperature=0.0, max_tokens=32).text()

    alone = [reply(question) for question in QUESTIONS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(reply, QUESTIONS))
    assert all(text.strip() for text in together)
    assert together == alone, "a reply decoded beside others is the reply it is alone"


@pytest.mark.model
def test_fifty_chat_replies_are_the_same_alone_and_beside_three_others(
    assistant: Assistant,
) -> None:
    """Every message of the chat set through the whole reply path (mood step, tone, guards),
    greedy: once alone, then four at a time, each decoded beside three others."""
    lines = (ROOT / "tests" / "data" / "chat_messages.jsonl").read_text("utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line.strip()]
    assert len(texts) == 50

    def reply(text: str) -> str:
        _verdict, completion = assistant.answer(text, temperature=0.0, max_tokens=24)
        return completion.text()

    alone = [reply(text) for text in texts]
    assert all(text.strip() for text in alone)
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(reply, texts))
    differ = [(t, a, b) for t, a, b in zip(texts, alone, together, strict=True) if a != b]
    assert not differ, f"{len(differ)} of 50 replies changed when batched: {differ[:3]}"


@pytest.mark.model
def test_each_stream_keeps_its_own_settings(assistant: Assistant) -> None:
    def sampled(seed: int):
        return long_reply(assistant, "讲一个小故事。", temperature=0.9, seed=seed, max_tokens=24)

    alone = sampled(5).text()
    requests = {
        "short": lambda: long_reply(assistant, max_tokens=5),
        "stop": lambda: long_reply(assistant, "数到二十，用中文逗号分隔。", stop=["五"]),
        "seed a": lambda: sampled(5),
        "seed b": lambda: sampled(5),
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_finished, make) for name, make in requests.items()}
        done = {name: future.result() for name, future in futures.items()}
    short = done["short"]
    assert short.usage.completion_tokens == 5 and short.finish_reason == "length"
    assert "五" not in done["stop"].text() and done["stop"].finish_reason == "stop"
    assert done["seed a"].text() == done["seed b"].text() == alone


def _finished(make):
    completion = make()
    completion.text()
    return completion


@pytest.mark.model
def test_a_label_request_is_served_while_four_replies_stream(assistant: Assistant) -> None:
    streams = [long_reply(assistant, LONG + str(n)) for n in range(4)]
    ended: list[float] = []
    started = threading.Barrier(5)

    def consume(completion) -> None:
        first_piece(completion)
        started.wait()
        completion.text()
        ended.append(time.monotonic())

    threads = [threading.Thread(target=consume, args=(s,)) for s in streams]
    for thread in threads:
        thread.start()
    started.wait()  # every reply is generating
    verdict = assistant.sentiment("这家酒店太棒了，服务热情！")
    answered = time.monotonic()
    for thread in threads:
        thread.join()
    assert verdict.label == "正面"
    assert answered < min(ended), "the label waited for a reply to finish"
    assert all(s.usage.completion_tokens == 64 for s in streams)


@pytest.mark.model
def test_a_closed_reply_frees_its_slot_for_a_waiting_one(assistant: Assistant) -> None:
    streams = [long_reply(assistant, LONG + str(n)) for n in range(4)]
    for stream in streams:
        first_piece(stream)  # all four slots busy
    fifth = long_reply(assistant, "你好", max_tokens=8)
    streams[0].close()
    assert first_piece(fifth)  # it got the freed slot while three replies still run
    assert all(stream.finish_reason is None for stream in streams[1:])
    assert streams[0].finish_reason is None and streams[0].usage.completion_tokens < 64
    for stream in [*streams[1:], fifth]:
        stream.text()
    assert all(stream.finish_reason == "length" for stream in streams[1:])


@pytest.mark.model
def test_parallel_one_generates_alone_on_the_engines_context(
    assistant: Assistant, model_path, tmp_path
) -> None:
    single = Assistant.load(model=model_path, parallel=1, cache_dir=tmp_path, heads=False)
    try:
        completion = single.reply("你好", temperature=0.0, max_tokens=16)
        assert completion.text().strip() and completion.finish_reason in ("stop", "length")
        assert single.engine.scheduler is None, "no second context with --parallel 1"
        with pytest.raises(StopIteration):
            next(completion)
        # A slot starts from the role prefix's state as the engine's own context does, so a
        # greedy reply is the same either way (a prefix state the slots could not read would
        # be decoded again: slower, and rounded differently).
        for question in QUESTIONS:
            single.engine.forget()  # the rest after the prefix decoded in one call, as in a slot
            alone = single.reply(question, temperature=0.0, max_tokens=32)
            slotted = assistant.reply(question, temperature=0.0, max_tokens=32)
            assert slotted.text() == alone.text()
            assert slotted.usage.cached_tokens == alone.usage.cached_tokens > 0
    finally:
        single.engine.close()


def test_fair_lock_is_granted_in_arrival_order() -> None:
    lock, order = FairLock(), []
    lock.__enter__()  # held: the others queue

    def take(name: str) -> None:
        with lock:
            order.append(name)

    threads = []
    for name in "abc":
        thread = threading.Thread(target=take, args=(name,))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # let it queue before the next one asks
    lock.__exit__()
    with lock:  # asked last: served after a, b, c
        order.append("main")
    for thread in threads:
        thread.join()
    assert order == ["a", "b", "c", "main"]


@pytest.mark.model
def test_a_conversations_next_turn_continues_in_its_slot(assistant: Assistant) -> None:
    first_text = "我养了一只猫，叫咪咪。"
    first = assistant.reply(first_text, temperature=0.0, max_tokens=24)
    answer = first.text()
    history = [Turn("user", first_text), Turn("assistant", answer)]
    others = [long_reply(assistant, question, max_tokens=8) for question in QUESTIONS[:3]]
    for other in others:  # other conversations meanwhile take the other free slots
        other.text()
    second = assistant.reply("它叫什么名字？", history, temperature=0.0, max_tokens=24)
    assert "咪咪" in second.text()
    # Only the new message was decoded: the first turn's prompt and reply were still held.
    assert second.usage.cached_tokens >= first.usage.prompt_tokens + 1


@pytest.mark.model
def test_a_process_that_only_labels_makes_no_reply_context(model_path, tmp_path) -> None:
    labeller = Assistant.load(model=model_path, parallel=4, cache_dir=tmp_path, heads=False)
    try:
        assert labeller.sentiment("服务很好").label == "正面"
        assert labeller.engine.scheduler is None, "the slots' KV is made at the first reply"
    finally:
        labeller.engine.close()
