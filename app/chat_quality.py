"""Chat quality, measured by proxies (there are no human raters here).

Over a set of everyday messages (venting, good news, questions, sarcasm), each answered with the
combined feel + reply flow, we measure what can be measured: the share of Chinese characters, any
mention of being an AI/model/program (the role forbids it), leaked role or special tokens, length
within bounds, repetition (distinct-2: unique character bigrams over all bigrams), and whether
replies to negative messages are supportive (the role that steers the chat's tone, the same one
that read the message's mood, judges the reply warm, i.e. 正面).
These are proxies, reported next to the published 4.2/5 human score as what they are.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.errors import InputError

AI_MENTION = re.compile(
    r"人工智能|AI|语言模型|模型|程序|机器人|智能助手|助手|ChatGPT|Qwen|通义|阿里云", re.I
)
SPECIAL_TOKEN = re.compile(r"<\|[^|>]*\|>|<\|")
MIN_CHARS, MAX_CHARS = 8, 300


@dataclass(frozen=True)
class Message:
    text: str
    kind: str
    mood: str


@dataclass(frozen=True)
class Reply:
    message: Message
    detected: str
    text: str
    first_piece_ms: float
    total_ms: float
    judged: str  # the steering role's verdict on the reply itself


def load_messages(path: Path, limit: int | None = None) -> list[Message]:
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    messages = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                messages.append(
                    Message(record["text"], record.get("kind", ""), record.get("mood", ""))
                )
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(
                    f'{path}, line {number}: expected {{"text": ..., "kind": ..., "mood": ...}}.'
                ) from None
    return messages[:limit] if limit else messages


def chinese_share(text: str) -> float:
    letters = [c for c in text if not c.isspace() and c.isprintable()]
    return sum("\u4e00" <= c <= "\u9fff" for c in letters) / len(letters) if letters else 0.0


def distinct_2(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    bigrams = list(zip(chars, chars[1:], strict=False))
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def collect(
    assistant,
    messages: Sequence[Message],
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
) -> list[Reply]:
    judge = assistant.roles.steering(assistant.roles.chat).name  # the role respond() asks
    replies = []
    for message in messages:
        started = time.perf_counter()
        verdict, stream = assistant.respond(message.text, seed=seed)
        first = None
        pieces = []
        for piece in stream:
            if first is None:
                first = (time.perf_counter() - started) * 1000
            pieces.append(piece)
        total = (time.perf_counter() - started) * 1000
        text = "".join(pieces).strip()
        judged = assistant.classify(text, judge).label if text else "负面"
        replies.append(Reply(message, verdict.label, text, first or total, total, judged))
        if progress:
            progress(1)
    return replies


def summarise(replies: Sequence[Reply]) -> dict[str, float]:
    texts = [reply.text for reply in replies]
    negative = [reply for reply in replies if reply.message.mood == "负面"]
    moods = [reply for reply in replies if reply.message.mood in ("正面", "负面")]
    return {
        "messages": len(replies),
        "chinese_share": statistics.mean(chinese_share(t) for t in texts),
        "ai_mentions": sum(bool(AI_MENTION.search(t)) for t in texts) / len(texts),
        "leaked_tokens": sum(bool(SPECIAL_TOKEN.search(t)) for t in texts) / len(texts),
        "length_ok": sum(MIN_CHARS <= len(t) <= MAX_CHARS for t in texts) / len(texts),
        "median_chars": statistics.median(len(t) for t in texts),
        "distinct_2": statistics.mean(distinct_2(t) for t in texts),
        "supportive_on_negative": (sum(r.judged == "正面" for r in negative) / len(negative))
        if negative
        else float("nan"),
        "mood_detected": (sum(r.detected == r.message.mood for r in moods) / len(moods))
        if moods
        else float("nan"),
        "first_piece_ms_p50": statistics.median(r.first_piece_ms for r in replies),
        "reply_ms_p50": statistics.median(r.total_ms for r in replies),
    }


def table(summary: dict[str, float]) -> str:
    rows = [
        ("Chinese characters in replies", f"{summary['chinese_share']:.1%}", "higher is better"),
        (
            "replies mentioning AI / model / program",
            f"{summary['ai_mentions']:.1%}",
            "the role forbids it: 0% is the goal",
        ),
        ("replies with leaked special tokens", f"{summary['leaked_tokens']:.1%}", "must be 0%"),
        (
            f"replies of {MIN_CHARS}-{MAX_CHARS} characters",
            f"{summary['length_ok']:.1%}",
            f"median {summary['median_chars']:.0f} characters",
        ),
        ("distinct-2 (character bigrams)", f"{summary['distinct_2']:.3f}", "1.0 = no repetition"),
        (
            "supportive replies to negative messages",
            f"{summary['supportive_on_negative']:.1%}",
            "judged 正面 by the role that steers the tone",
        ),
        (
            "message mood detected (venting, sarcasm, good news)",
            f"{summary['mood_detected']:.1%}",
            "the mood step of the flow (steering role)",
        ),
        (
            "first streamed piece, median",
            f"{summary['first_piece_ms_p50']:.0f} ms",
            "sentiment + prompt + first token",
        ),
        ("whole reply, median", f"{summary['reply_ms_p50']:.0f} ms", ""),
    ]
    lines = ["| proxy | value | note |", "| --- | ---: | --- |"]
    lines += [f"| {name} | {value} | {note} |" for name, value, note in rows]
    lines.append(
        "| published All-in-One, human rating | 4.2 / 5 | not comparable: people, not proxies |"
    )
    return "\n".join(lines)
