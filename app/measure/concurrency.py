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
