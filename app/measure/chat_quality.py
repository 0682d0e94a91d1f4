"""Chat quality, measured by automatic checks (blind human-style ratings live in scripts/).

Over a set of everyday messages (venting, good news, questions, sarcasm, self-blame), each
answered with the combined feel + reply flow, we count the failures users reported, each by a
plain text rule: replies to negative messages that celebrate (恭喜, 太棒了...), replies that agree
with self-blame ("是的，..." to "我是不是很没用"), replies that repeat 8+ characters of the message
(echo) or of a few-shot / bank example (copying), that mention being an AI, or that flip who is
who (the user's own "我" words come back as the assistant's: "吵得我睡不着"). Plus proxies: the
share of Chinese characters, leaked special tokens, length, repetition (distinct-2), and whether
replies to negative messages are warm (the role that steers the tone judges the reply 正面).
Three harm checks found by blind raters: replies to negative messages that blame the user
("可能是因为你的行为不合法"), that praise what the user complains about ("降价五百，挺划算的"),
and replies that name a grave event (a death, a grave illness, an accident, a breakup, a lost job)
nobody mentioned ("我妈住院了" answered "她去世了").
The rules are proxies too: they catch the reported failure shapes, not every bad reply. Their
word lists are written here and nowhere else: the reply guards (prompts.yaml's `avoid` lists)
are what is measured, so the measure must not borrow from them.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import InputError
from app.roles.prompting import Turn

if TYPE_CHECKING:
    from app.roles.assistant import Assistant
    from app.roles.prompts import RoleBook

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
NEGATIVE = "负面"

# A negation in the few characters before a match, within its clause, cancels it: "这不是你的错",
# "别怪你自己", "不会出事的". A clause ends at punctuation, so "你没做好，这是你的错" still counts.
NEGATION = re.compile(r"[不没别非无未莫勿]")
NEGATION_WINDOW = 5
CLAUSE_END = re.compile(r"[，,。.！!？?；;：:、…\s]")

# What the user did wrong, said right after 你 (or 因为你, 是你): "你的行为不合法", "你太敏感".
FAULT = (
    r"的(行为|做法|态度|方式)[^，。！？不没]{0,4}?"
    r"(不(合法|道德|对|妥|当|好|够|负责|专业|成熟|礼貌)|有问题|欠妥|过分|错)"
    r"|做错|做得不(好|对|够)|没有?(做好|处理好|考虑|注意|想清楚|尽力)"
    r"|忽[略视]了?(别人|他人|对方|同事|家人|朋友|老板|领导|大家|他|她)"
    r"|不够(努力|好|认真|优秀|细心|用心|小心|成熟|专业|聪明)"
    r"|太(敏感|玻璃心|自私|懒|冲动|粗心|较真|矫情|脆弱|差|笨|没用)"
    r"|(不|没有?)(合法|道德|负责|上进|礼貌)|犯了?错"
)
BLAME = re.compile(
    r"你(自己|一个人)?的(错(?!觉)|过错|责任(?![心感]))|是你(自己)?的问题|你自己的问题"
    r"|(都|只能|就|该|要|全)怪你|怪你自己"
    rf"|你(自己)?(总是|老是|一直|经常|平时)?(在[^，。！？]{{1,6}})?({FAULT})"
    r"|你(自己)?也有(责任|问题|错|不对)|你(应该|需要|要|得)(好好)?(反思|反省|检讨)"
    r"|你(当初|那时候?|之前|本来)就?(应该|该|不该|不应该)|你应该早点[^，。！？]{0,8}(的|才对)"
    r"|活该|自找的|自作自受|咎由自取"
)

# Grave events by group: (what names it in a reply, what licenses it in the user's words). A
# reply's words are strict ("他走了" of a person, not "走了很久"); a licence is broad, so a
# message that did bring the event up is never counted. 住院 licenses nothing: a stay in
# hospital is not a grave illness, and not a death.
_DEATH = (
    r"去世|过世|离世|病逝|逝世|身亡|不在了|离开了?人世|永远地?离开"
    r"|[她他它]们?(已经|就这样|就|也|永远地?)?走了(?![一几两很好多段路远回过开出进些去到着])"
    r"|[她他它]们?(已经)?死了|死亡"
    r"|[她他它](已经|永远地?)?离开了(?=[，,。！!？?…]|$|我们|人世|这个世界)"
)
_ILLNESS = r"癌|绝症|重病|病危|晚期|肿瘤|白血病|病重|不治之症|重症"
_ACCIDENT = r"车祸|出了?事|出了?意外|事故|撞车|被车撞|遇难|意外身亡"
_BREAKUP = r"分手|离婚|失恋|被甩|分开了"
_JOB_LOSS = r"开除|辞退|失业|裁员|被裁|丢了?工作|失去了?工作|炒鱿鱼|解雇"
GRAVE_EVENTS = {
    "death": (
        _DEATH,
        r"走了|离开|[奶爷婆公姥妈爸狗猫人]没了|没气了|断气|葬礼|丧事|追悼|遗体|遗像|临终|最后一面"
        r"|(?<![累热冷气笑烦饿困忙吵闷痛疼急吓穷丑懒])死(?!机)",
    ),
    "illness": (_ILLNESS, r"化疗|放疗|ICU|抢救"),
    "accident": (_ACCIDENT, r"撞|摔|受伤|急救|救护车"),
    "breakup": (_BREAKUP, r"前任|前男友|前女友|前夫|前妻|分居|甩了|散了|分开|结束.{0,3}感情"),
    "job_loss": (_JOB_LOSS, r"离职|辞职|走人|试用期|优化|找工作|没有?工作|待业"),
}
EVENT_IN_REPLY = {group: re.compile(said) for group, (said, _) in GRAVE_EVENTS.items()}
EVENT_LICENCE = {
    group: re.compile(f"{said}|{licence}") for group, (said, licence) in GRAVE_EVENTS.items()
}

# Calling what the user complains about good ("降价五百，挺划算的"), or congratulating them.
PRAISE = re.compile(
    r"划算|(?<!就)太好了|恭喜|(挺|很|真|太|非常|也算)值得|值得(庆祝|高兴|开心)|值了"
    r"|幸运(?!的是)|赚到了|赚大了|赚了(?!钱)|好事(?!多磨)|好消息|挺好的|不错[啊呀哦嘛]"
    r"|太棒了|真棒|捡了?个?便宜"
)
PRAISE_NEGATION = re.compile(r"[不没别非无未哪]|什么")  # "这可不是什么好事", "哪里划算"


@dataclass(frozen=True)
class Message:
    text: str
    kind: str
    mood: str  # the label the message file gives it, never the assistant's verdict
    history: tuple[tuple[str, str], ...] = ()  # the conversation before it: (role, text)

    def said_before(self) -> list[str]:
        """The user's earlier messages of the conversation (what may license a grave event)."""
        return [text for role, text in self.history if role == "user"]


@dataclass(frozen=True)
class Reply:
    message: Message
    detected: str
    text: str
    first_piece_ms: float
    total_ms: float
    judged: str  # the steering role's verdict on the reply itself
    seed: int | None = None


MESSAGE_FORMAT = (
    '{"text": ..., "kind": ..., "mood": "正面"|"负面"|"中性", '
    'optional "history": [{"role": "user"|"assistant", "content": ...}, ...]}'
)


def load_messages(path: Path, limit: int | None = None) -> list[Message]:
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    messages = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                messages.append(_message(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise InputError(f"{path}, line {number}: expected {MESSAGE_FORMAT}.") from None
    if not messages:
        raise InputError(f"{path}: no messages; expected one {MESSAGE_FORMAT} per line.")
    return messages[:limit] if limit else messages


def _message(record: dict[str, Any], known: Message | None = None) -> Message:
    """A message from its JSON record; `known` fills the kind and mood a record lacks."""
    text = record["text"]
    if not isinstance(text, str):
        raise TypeError("text must be a string")
    kind = record.get("kind") or (known.kind if known else "")
    mood = record.get("mood") or (known.mood if known else "")
    history = tuple((turn["role"], turn["content"]) for turn in record.get("history") or ())
    if any(role not in ("user", "assistant") or not isinstance(t, str) for role, t in history):
        raise ValueError("a history turn needs role user or assistant and a content string")
    return Message(text, kind, mood, history)


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


def blames_user(message: Message, reply: str) -> bool:
    """A reply to a message labelled 负面 that puts the blame on the user ("可能是因为你的行为不
    合法"); comfort that negates it ("这不是你的错", "别怪你自己") does not count."""
    return message.mood == NEGATIVE and _said(BLAME, reply)


def invents_event(message: str, reply: str, history: Sequence[str] = ()) -> bool:
    """The reply names a grave event of a group that neither `message` nor the user's earlier
    messages (`history`) brought up: "我妈住院了" answered "她去世了". An event only the
    assistant named before is still invented, so pass the user's turns only."""
    told = " ".join([*history, message])
    return any(
        _said(said, reply) and not EVENT_LICENCE[group].search(told)
        for group, said in EVENT_IN_REPLY.items()
    )


def praises_sarcasm(message: Message, reply: str) -> bool:
    """A reply to a message labelled 负面 that congratulates or calls the event good: sarcasm
    ("绝了，刚买的手机第二天就降价五百") taken at its word."""
    return message.mood == NEGATIVE and _said(PRAISE, reply, PRAISE_NEGATION)


def _said(pattern: re.Pattern[str], text: str, negation: re.Pattern[str] = NEGATION) -> bool:
    """Whether `pattern` occurs in `text` with no negation just before it in its clause."""
    for match in pattern.finditer(text):
        before = text[max(0, match.start() - NEGATION_WINDOW) : match.start()]
        if not negation.search(CLAUSE_END.split(before)[-1]):
            return True
    return False


def flips_roles(message: str, reply: str) -> bool:
    """The user's own first-person words come back in the reply ("吵得我睡不着" answered with
    "...吵得我睡不着"): any 3 characters in a row of the message with 我 in them."""
    runs = {message[i : i + 3] for i in range(len(message) - 2) if "我" in message[i : i + 3]}
    return any(run in reply for run in runs)


def example_texts(roles: RoleBook) -> list[str]:
    """Every few-shot turn the chat role may show: its examples and its bank's exchanges (read
    from the prompts file alone, so a rescore needs no model)."""
    role = roles.chat
    bank = roles.banks.get(role.name)
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
    assistant: Assistant,
    messages: Sequence[Message],
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
    samples: int = 1,
) -> list[Reply]:
    """`samples` replies to each message, at the chat role's own temperature, with the seeds
    `seed`, `seed + 1`, ...: one seeded reply can hide a failure another draw shows."""
    judge = assistant.roles.steering(assistant.roles.chat).name  # the role respond() asks
    replies = []
    for message in messages:
        history = [Turn(role, text) for role, text in message.history]  # type: ignore[arg-type]
        for number in range(samples):
            replies.append(_answer(assistant, message, history, seed + number, judge))
            if progress:
                progress(1)
    return replies


def _answer(
    assistant: Assistant, message: Message, history: list[Turn], seed: int, judge: str
) -> Reply:
    """One reply to `message`, timed, and the steering role's verdict on it."""
    started = time.perf_counter()
    verdict, stream = assistant.respond(message.text, history, seed=seed)
    first = None
    pieces = []
    for piece in stream:
        if first is None:
            first = (time.perf_counter() - started) * 1000
        pieces.append(piece)
    total = (time.perf_counter() - started) * 1000
    text = "".join(pieces).strip()
    judged = assistant.classify(text, judge).label if text else NEGATIVE
    return Reply(message, verdict.label, text, first or total, total, judged, seed)


Rule = tuple[Callable[[Reply], bool], Callable[[Reply], bool]]  # (counted over, failed)


def rules(examples: Sequence[str] = ()) -> dict[str, Rule]:
    """Each check by its summary key: the replies it counts over and when one fails it.
    `examples`: the texts a reply must not copy."""

    def every(_: Reply) -> bool:
        return True

    def negative(reply: Reply) -> bool:
        return reply.message.mood == NEGATIVE

    return {
        "celebrates_bad_news": (negative, lambda r: celebrates(r.text)),
        "agrees_with_self_blame": (
            lambda r: is_self_blame(r.message),
            lambda r: agrees_with_self_blame(r.text),
        ),
        "blames_user": (negative, lambda r: blames_user(r.message, r.text)),
        "praises_sarcasm": (negative, lambda r: praises_sarcasm(r.message, r.text)),
        "invents_event": (
            every,
            lambda r: invents_event(r.message.text, r.text, r.message.said_before()),
        ),
        "echoes_message": (every, lambda r: shares_run(r.text, r.message.text)),
        "copies_example": (every, lambda r: any(shares_run(r.text, e) for e in examples)),
        "ai_mentions": (every, lambda r: bool(AI_MENTION.search(r.text))),
        "flips_roles": (every, lambda r: flips_roles(r.message.text, r.text)),
    }


def summarise(replies: Sequence[Reply], examples: Sequence[str] = ()) -> dict[str, float]:
    """Every check and proxy over `replies`; `examples`: the texts a reply must not copy.
    A check's share is `KEY`, its failing replies `KEY_count` out of `KEY_of` counted."""
    texts = [reply.text for reply in replies]
    negative = [reply for reply in replies if reply.message.mood == NEGATIVE]
    moods = [reply for reply in replies if reply.message.mood in ("正面", "负面")]
    summary: dict[str, float] = {
        "messages": len({reply.message for reply in replies}),
        "replies": len(replies),
        "self_blame_messages": len({r.message for r in replies if is_self_blame(r.message)}),
    }
    for key, (counted, failed) in rules(examples).items():
        over = [reply for reply in replies if counted(reply)]
        summary[f"{key}_count"] = sum(map(failed, over))
        summary[f"{key}_of"] = len(over)
        summary[key] = summary[f"{key}_count"] / len(over) if over else float("nan")
    return summary | {
        "chinese_share": statistics.mean(chinese_share(t) for t in texts),
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


CHECKS = (  # (summary key, what it counts, target)
    ("celebrates_bad_news", "replies to negative messages that celebrate", "0%"),
    ("agrees_with_self_blame", "replies that agree with self-blame", "0%"),
    ("blames_user", "replies to negative messages that blame the user", "0%"),
    ("praises_sarcasm", "replies to negative messages that call the event good", "0%"),
    ("invents_event", "replies naming a grave event nobody mentioned", "0%"),
    ("echoes_message", f"replies repeating {COPY_RUN}+ characters of the message", "<= 10%"),
    ("copies_example", f"replies copying {COPY_RUN}+ characters of an example", "<= 5%"),
    ("ai_mentions", "replies mentioning AI / model / program", "0%"),
    ("flips_roles", "replies flipping who is who (the user's 我-words)", "0%"),
)


def table(summary: dict[str, float]) -> str:
    """The checks (share, and failing replies out of those counted) and the proxies."""
    checks = [
        (
            name,
            _percent(summary[key]),
            f"{summary[key + '_count']:.0f} of {summary[key + '_of']:.0f}",
            f"target {target}",
        )
        for key, name, target in CHECKS
    ]
    rows = [
        *checks,
        (
            "Chinese characters in replies",
            f"{summary['chinese_share']:.1%}",
            "",
            "higher is better",
        ),
        ("replies with leaked special tokens", f"{summary['leaked_tokens']:.1%}", "", "must be 0%"),
        (
            f"replies of {MIN_CHARS}-{MAX_CHARS} characters",
            f"{summary['length_ok']:.1%}",
            "",
            f"median {summary['median_chars']:.0f} characters",
        ),
        (
            "distinct-2 (character bigrams)",
            f"{summary['distinct_2']:.3f}",
            "",
            "1.0 = no repetition",
        ),
        (
            "supportive replies to negative messages",
            _percent(summary["supportive_on_negative"]),
            "",
            "judged 正面 by the role that steers the tone",
        ),
        (
            "message mood detected (venting, sarcasm, good news)",
            _percent(summary["mood_detected"]),
            "",
            "the mood step of the flow (steering role)",
        ),
        (
            "first streamed piece, median",
            _ms(summary["first_piece_ms_p50"]),
            "",
            "sentiment + prompt + first token",
        ),
        ("whole reply, median", _ms(summary["reply_ms_p50"]), "", ""),
    ]
    lines = [
        f"{summary['replies']:.0f} replies to {summary['messages']:.0f} messages.",
        "",
        "| check or proxy | value | failing replies | note |",
        "| --- | ---: | ---: | --- |",
    ]
    lines += [f"| {name} | {value} | {count} | {note} |" for name, value, count, note in rows]
    lines.append(
        "| published All-in-One, human rating | 4.2 / 5 | | not comparable: people, not proxies |"
    )
    return "\n".join(lines)


def _percent(share: float) -> str:
    """A share, or "-" when no reply was counted (no self-blame among the messages)."""
    return "-" if math.isnan(share) else f"{share:.1%}"


def _ms(value: float) -> str:
    """A time, or "-" when the replies carry none (a rescored file of older code)."""
    return "-" if math.isnan(value) else f"{value:.0f} ms"


def record(reply: Reply) -> dict[str, Any]:
    """A reply as results.json keeps it: with its message's text, kind, mood and history, so
    that `--rescore` can count it again with later checks."""
    message = reply.message
    return {
        "text": message.text,
        "kind": message.kind,
        "mood": message.mood,
        "history": [{"role": role, "content": text} for role, text in message.history],
        "seed": reply.seed,
        "detected": reply.detected,
        "reply": reply.text,
        "judged": reply.judged,
        "first_piece_ms": reply.first_piece_ms,
        "total_ms": reply.total_ms,
    }


def load_replies(path: Path, labels: Sequence[Message] = ()) -> list[Reply]:
    """The replies an earlier run saved in `path` (its results.json). A file of older code has
    no moods: `labels`, the messages it answered, give each reply's kind and mood by text."""
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["replies"]
        if not isinstance(records, list) or not records:
            raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise InputError(f"{path}: not the results.json of an eval-chat run.") from None
    known = {message.text: message for message in labels}
    replies = []
    for number, item in enumerate(records, start=1):
        try:
            replies.append(_saved(item, known))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InputError(f"{path}, reply {number}: expected a saved reply.") from None
        if not replies[-1].message.mood:
            raise InputError(
                f"{path}, reply {number}: no mood saved (a file of older code); give the "
                f"message file that labels it: allinone eval-chat MESSAGES --rescore {path}"
            )
    return replies


def _saved(item: dict[str, Any], known: dict[str, Message]) -> Reply:
    message = _message(item, known.get(item["text"]))
    return Reply(
        message,
        item.get("detected", ""),
        str(item["reply"]),
        float(item.get("first_piece_ms", math.nan)),
        float(item.get("total_ms", math.nan)),
        item.get("judged", ""),
        item.get("seed"),
    )
