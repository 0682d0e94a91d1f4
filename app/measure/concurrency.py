"""Several chats at once on one model: what continuous batching (app/llm/scheduler.py) buys.

Measured in one process on one loaded Assistant, with greedy replies that run to their token
limit (no sentence limit, no stop string) so every reply is the same length:

- one chat alone: time to its first piece and its generation speed;
- `streams` chats at once from as many threads: their total tokens over the wall time;
- a sentiment request sent while they stream: how long it takes;
- greedy replies alone vs decoded beside others: how many are identical.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PROMPTS = [
    "写一篇关于春天的长文章，越详细越好。",
    "详细介绍一下你最喜欢的城市。",
    "讲一个很长的童话故事。",
    "一步一步地教我做红烧肉。",
    "描述一次难忘的旅行。",
    "说说读书有哪些好处，越多越好。",
    "介绍一下熊猫的生活习性。",
    "写一封给十年后的自己的信。",
]
QUESTIONS = ["推荐一本书吧", "周末做什么好？", "最近睡不好怎么办？", "你好", "今天好累"]


def _reply(assistant, text: str, max_tokens: int):
    options = {"temperature": 0.0, "max_tokens": max_tokens, "max_sentences": 0, "stop": []}
    return assistant.reply(text, **options)


def _timed(assistant, text: str, max_tokens: int) -> dict[str, float]:
    """One reply consumed to its end: start, first piece and end times, tokens made."""
    started = time.perf_counter()
    completion = _reply(assistant, text, max_tokens)
    first = None
    for _piece in completion:
        first = first or time.perf_counter()
    ended = time.perf_counter()
    return {
        "start": started,
        "first": first or ended,
        "end": ended,
        "tokens": completion.usage.completion_tokens,
    }


def alone(assistant, max_tokens: int = 64, repeats: int = 3) -> dict[str, float]:
    """Median first piece (ms) and tokens/s of one chat with nothing else running."""
    # The role prefix is cached from here on; a message not timed below, since a repeated one
    # would find its whole prompt still in the KV with --parallel 1 (a new message never does).
    _timed(assistant, QUESTIONS[0], 4)
    runs = [_timed(assistant, PROMPTS[i % len(PROMPTS)], max_tokens) for i in range(repeats)]
    return {
        "first_piece_ms": statistics.median((r["first"] - r["start"]) * 1000 for r in runs),
        "tokens_per_s": statistics.median(
            (r["tokens"] - 1) / (r["end"] - r["first"]) for r in runs if r["tokens"] > 1
        ),
    }


def together(assistant, streams: int = 4, max_tokens: int = 64) -> dict[str, float]:
    """`streams` chats started at once: aggregate tokens/s, and a sentiment request's latency
    sent once they all stream."""
    runs: list[dict[str, float]] = []
    firsts: list[float] = []
    streaming = threading.Event()  # all have begun (or, one reply at a time, one has ended)

    def one(text: str) -> None:
        begin = time.perf_counter()
        completion = _reply(assistant, text, max_tokens)
        first = None
        for _piece in completion:
            if first is None:  # never wait here: with --parallel 1 this thread holds the model
                first = time.perf_counter()
                firsts.append(first)
                if len(firsts) == streams:
                    streaming.set()
        end = time.perf_counter()
        runs.append({"start": begin, "first": first or end, "end": end})
        runs[-1]["tokens"] = completion.usage.completion_tokens
        streaming.set()

    assistant.sentiment("服务很好")  # a running server has the label role's prefix cached
    threads = [
        threading.Thread(target=one, args=(PROMPTS[i % len(PROMPTS)],)) for i in range(streams)
    ]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    streaming.wait(timeout=600)
    asked = time.perf_counter()
    label = assistant.sentiment("这家酒店太棒了，服务热情！").label
    label_ms = (time.perf_counter() - asked) * 1000
    for thread in threads:
        thread.join()
    wall = max(r["end"] for r in runs) - begin
    return {
        "streams": streams,
        "tokens": sum(r["tokens"] for r in runs),
        "tokens_per_s": sum(r["tokens"] for r in runs) / wall,
        "first_piece_ms": statistics.median((r["first"] - r["start"]) * 1000 for r in runs),
        "sentiment_ms": label_ms,
        "sentiment_label": label,
    }


def identical(assistant, count: int, streams: int = 4, max_tokens: int = 32) -> dict[str, int]:
    """How many of `count` greedy replies are the same decoded alone and beside others."""
    texts = [QUESTIONS[i % len(QUESTIONS)] + "!" * (i // len(QUESTIONS)) for i in range(count)]

    def text_of(text: str) -> str:
        return _reply(assistant, text, max_tokens).text()

    solo = [text_of(text) for text in texts]
    with ThreadPoolExecutor(max_workers=streams) as pool:
        batched = list(pool.map(text_of, texts))
    return {"replies": count, "identical": sum(a == b for a, b in zip(solo, batched, strict=True))}


def table(rows: Sequence[tuple[str, dict[str, float], dict[str, float]]]) -> str:
    """Markdown: one row per configuration (name, `alone` result, `together` result)."""
    lines = [
        "| run | alone: first piece ms | alone: tokens/s | together: streams | together: "
        "tokens/s (x alone) | sentiment during them, ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, solo, many in rows:
        ratio = many["tokens_per_s"] / solo["tokens_per_s"]
        lines.append(
            f"| {name} | {solo['first_piece_ms']:.0f} | {solo['tokens_per_s']:.1f} | "
            f"{many['streams']:.0f} | {many['tokens_per_s']:.1f} ({ratio:.2f}x) | "
            f"{many['sentiment_ms']:.0f} |"
        )
    return "\n".join(lines)


# -- through a real server, with the official openai client ----------------------------------

SERVED_TOKENS = 96  # per reply: long enough that generation, not the mood step, dominates
LABEL_AFTER_S = 1.0  # a sentiment request this long after the chats start (during admissions)


def _served_chat(client, text: str, max_tokens: int) -> dict[str, float]:
    """One streamed chat completion: start, first piece and end times, completion tokens."""
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model="allinone",
        messages=[{"role": "user", "content": text}],
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    first, tokens = None, 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    ended = time.perf_counter()
    return {"start": started, "first": first or ended, "end": ended, "tokens": tokens}


def _label_ms(base_url: str, text: str) -> float:
    import httpx

    started = time.perf_counter()
    response = httpx.post(f"{base_url}/v1/sentiment", json={"input": text}, timeout=120)
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000


def served(base_url: str, streams: int = 4, max_tokens: int = SERVED_TOKENS) -> dict[str, Any]:
    """Chats through `allinone serve` at `base_url`, each a streamed chat completion with its
    mood step, as a client sends it. One alone (median of 3, each a new message) against
    `streams` started at once: completion tokens over the wall time, start to last end, both
    ways. A sentiment request LABEL_AFTER_S after they start (while they are admitted), and
    more once all stream (steady state)."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="local", max_retries=0, timeout=600)
    _served_chat(client, QUESTIONS[0], 8)  # prefixes cached, as on a server in use
    _label_ms(base_url, "服务很好")
    solo = [_served_chat(client, PROMPTS[i], max_tokens) for i in range(3)]
    alone_rate = statistics.median(r["tokens"] / (r["end"] - r["start"]) for r in solo)
    runs: list[dict[str, float]] = []
    texts = [PROMPTS[(3 + i) % len(PROMPTS)] + "。" * (i // len(PROMPTS)) for i in range(streams)]
    threads = [
        threading.Thread(target=lambda t=t: runs.append(_served_chat(client, t, max_tokens)))
        for t in texts
    ]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(LABEL_AFTER_S)
    during_admission = _label_ms(base_url, "这家酒店太棒了，服务热情！")
    steady = []
    while any(thread.is_alive() for thread in threads) and len(steady) < 5:
        time.sleep(0.5)
        if any(thread.is_alive() for thread in threads):
            steady.append(_label_ms(base_url, SENTIMENT_TEXTS[len(steady) % 3]))
    for thread in threads:
        thread.join()
    wall = max(r["end"] for r in runs) - begin
    together_rate = sum(r["tokens"] for r in runs) / wall
    return {
        "streams": streams,
        "max_tokens": max_tokens,
        "alone_tokens_per_s": alone_rate,
        "alone_tokens": [r["tokens"] for r in solo],
        "alone_first_piece_ms": statistics.median((r["first"] - r["start"]) * 1000 for r in solo),
        "together_tokens_per_s": together_rate,
        "together_tokens": [r["tokens"] for r in runs],
        "ratio": together_rate / alone_rate,
        "first_piece_ms": statistics.median((r["first"] - r["start"]) * 1000 for r in runs),
        "sentiment_after_start_ms": during_admission,
        "sentiment_steady_ms": steady,
    }


SENTIMENT_TEXTS = ["快递太慢了", "房间干净，早餐丰富", "一般般吧"]
