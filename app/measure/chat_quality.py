"""Chat quality, measured by automatic checks (blind human-style ratings live in scripts/).

Over a set of everyday messages (venting, good news, questions, sarcasm, self-blame), each
answered with the combined feel + reply flow, we count the failures users reported, each by a
plain text rule: replies to negative messages that celebrate (恭喜, 太棒了...), replies that agree
with self-blame ("是的，..." to "我是不是很没用"), replies that repeat 8+ characters of the message
(echo) or of a few-shot / bank example (copying), that mention being an AI, or that flip who is
who (the user's own "我" words come back as the assistant's: "吵得我睡不着"). Plus proxies: the
share of Chinese characters, leaked special tokens, length, repetition (distinct-2), and whether
replies to negative messages are warm (the role that steers the tone judges the reply 正面).
The rules are proxies too: they catch the reported failure shapes, not every bad reply.
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
CELEBRATION = re.compile(
    r"恭喜|祝贺|庆祝|太棒了|太好了|真棒|好消息|为你(感到)?(高兴|开心)|让人(开心|高兴)|真是(开心|高兴)"
)
SELF_BLAME = re.compile(
    r"我(是不是|真的?|太|好|就是|怎么这么|总是|果然)?.{0,3}"
    r"(没用|差劲|失败|笨|蠢|废物|一无是处|不行|做不好|拖后腿|配不上|不够好|很差|太差)"
    r"|一事无成|都怪我|都是我的错"
)
AGREEMENT = re.compile(
    r"^[\s“\"]*(是的|没错|对[的啊呀]?[，,。！!]|确实|的确)"
    r"|(?<!不是)(?<!不)(?<!别)(确实|的确|就是|真的|很|太|挺|有点|真)"
    r"(没用|差劲|失败|笨|蠢|不行|不够好|无趣)"
    r"|(?<!不)(?<!不是)是你的错|(?<!别)(?<!不)(?<!难)怪你"
)
COPY_RUN = 8  # characters in a row that count as an echo or a copy


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


def shares_run(text: str, other: str, n: int = COPY_RUN) -> bool:
    """Whether `text` repeats `n` or more characters in a row of `other` (spaces ignored)."""
    a, b = "".join(text.split()), "".join(other.split())
    return any(a[i : i + n] in b for i in range(len(a) - n + 1))


def celebrates(reply: str) -> bool:
    return bool(CELEBRATION.search(reply))


def is_self_blame(message: Message) -> bool:
    return message.kind == "self_blame" or bool(SELF_BLAME.search(message.text))


def agrees_with_self_blame(reply: str) -> bool:
    return bool(AGREEMENT.search(reply))


def flips_roles(message: str, reply: str) -> bool:
    """The user's own first-person words come back in the reply ("吵得我睡不着" answered with
    "...吵得我睡不着"): any 3 characters in a row of the message with 我 in them."""
    runs = {message[i : i + 3] for i in range(len(message) - 2) if "我" in message[i : i + 3]}
    return any(run in reply for run in runs)


def example_texts(assistant) -> list[str]:
    """Every few-shot turn the chat role may show: its examples and its bank's exchanges."""
    role = assistant.roles.chat
    bank = assistant.roles.banks.get(role.name)
    shown = [*role.examples, *(bank.exchanges if bank else ())]
    return [text for example in shown for text in (example.input, example.output)]


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


def summarise(replies: Sequence[Reply], examples: Sequence[str] = ()) -> dict[str, float]:
    """Every check and proxy over `replies`; `examples`: the texts a reply must not copy."""
    texts = [reply.text for reply in replies]
    negative = [reply for reply in replies if reply.message.mood == "负面"]
    blaming = [reply for reply in replies if is_self_blame(reply.message)]
    moods = [reply for reply in replies if reply.message.mood in ("正面", "负面")]
    return {
        "messages": len(replies),
        "celebrates_bad_news": _share(negative, lambda r: celebrates(r.text)),
        "agrees_with_self_blame": _share(blaming, lambda r: agrees_with_self_blame(r.text)),
        "self_blame_messages": len(blaming),
        "echoes_message": _share(replies, lambda r: shares_run(r.text, r.message.text)),
        "copies_example": _share(
            replies, lambda r: any(shares_run(r.text, example) for example in examples)
        ),
        "flips_roles": _share(replies, lambda r: flips_roles(r.message.text, r.text)),
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


def _share(replies: Sequence[Reply], failed: Callable[[Reply], bool]) -> float:
    return sum(map(failed, replies)) / len(replies) if replies else float("nan")


CHECKS = (  # (summary key, what it counts, target)
    ("celebrates_bad_news", "replies to negative messages that celebrate", "0%"),
    ("agrees_with_self_blame", "replies that agree with self-blame", "0%"),
    ("echoes_message", f"replies repeating {COPY_RUN}+ characters of the message", "<= 10%"),
    ("copies_example", f"replies copying {COPY_RUN}+ characters of an example", "<= 5%"),
    ("ai_mentions", "replies mentioning AI / model / program", "0%"),
    ("flips_roles", "replies flipping who is who (the user's 我-words)", "0%"),
)


def table(summary: dict[str, float]) -> str:
    checks = [
        (name, f"{summary[key]:.1%}", f"target {target}")
        for key, name, target in CHECKS
        if key != "ai_mentions"
    ]
    rows = [
        *checks,
        ("Chinese characters in replies", f"{summary['chinese_share']:.1%}", "higher is better"),
        (
            "replies mentioning AI / model / program",
            f"{summary['ai_mentions']:.1%}",
            "target 0%: the role forbids it",
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
