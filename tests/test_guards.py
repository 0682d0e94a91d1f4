"""Guards: banned token sequences, the reply's own runs, and sentence limits."""

import pytest

from app.llm import Sampling
from app.llm.bans import Ban, copy_runs
from app.llm.generation import SentenceCount, could_start_stop


def test_one_token_sequences_are_banned_at_every_step():
    ban = Ban([(7,)])
    assert ban.banned_after([]) == {7}
    assert ban.banned_after([1, 2, 3]) == {7}


def test_longer_sequences_ban_their_last_token_only_after_the_rest():
    ban = Ban([(1, 2, 3), (9, 2)])
    assert ban.banned_after([]) == set()
    assert ban.banned_after([5, 1, 2]) == {3}
    assert ban.banned_after([1, 9]) == {2}
    assert ban.banned_after([1, 2, 4]) == set()


def test_added_runs_stop_loops():
    ban = Ban()
    assert not ban
    ban.add([4, 5, 6])
    assert ban and ban.banned_after([4, 5]) == {6}


def test_copy_runs_cut_overlapping_windows():
    assert copy_runs([1, 2, 3, 4], 3) == [(1, 2, 3), (2, 3, 4)]
    assert copy_runs([1, 2], 3) == []
    assert copy_runs([1, 2, 3], 0) == [] and copy_runs([1, 2, 3], 1) == []


@pytest.mark.parametrize(
    ("pieces", "limit", "kept"),
    [
        (["你好。", "我在。", "再见。", "多余"], 2, "你好。我在。"),
        (["真的吗？！", "是", "的。", "还有"], 1, "真的吗？！"),
        (["等等……", "好。", "嗯"], 1, "等等……好。"),
        (["他说：“好。”", "然后"], 1, "他说：“好。”"),
        (["一。二。三"], 0, "一。二。三"),
    ],
)
def test_sentence_count_cuts_after_the_last_sentence_asked_for(pieces, limit, kept):
    counter, text = SentenceCount(limit), ""
    for piece in pieces:
        text += piece
        after = counter.after(piece)
        if after is not None:
            text = text[: len(text) - after]
            break
    assert text == kept


@pytest.mark.model
@pytest.mark.parametrize(
    ("text", "stops", "held"),
    [
        ("你好", ("\n\n",), 0),  # nothing a stop starts with: all of it goes at once
        ("你好\n", ("\n\n",), 1),
        ("你好\n\n", ("\n\n",), 1),  # (a whole stop is cut before this is asked)
        ("今天天", ("天天气",), 2),  # the longest end a stop starts with, not the shortest
        ("今天", ("天气很好", "今天天气"), 2),
        ("", ("。",), 0),
        ("好", (), 0),
    ],
)
def test_only_what_could_start_a_stop_string_is_held_back(text, stops, held):
    assert could_start_stop(text, stops) == held


def test_a_stop_string_spanning_pieces_still_cuts_the_reply_before_it(assistant):
    """Pieces go out as soon as they cannot begin a stop string; one that starts in one token
    and ends in a later one must still never reach the reader."""
    full = "".join(assistant.reply("介绍一下北京", temperature=0.0, max_tokens=60))
    tokens = [
        assistant.engine.piece(t).decode("utf-8", "ignore") for t in assistant.engine.tokenize(full)
    ]
    # a stop string made of the end of one token and the start of the next
    at = next(i for i in range(2, len(tokens) - 1) if tokens[i] and tokens[i + 1])
    stop = tokens[at][-1] + tokens[at + 1][:1]
    cut = "".join(assistant.reply("介绍一下北京", temperature=0.0, max_tokens=60, stop=[stop]))
    assert stop in full
    assert cut == full[: full.index(stop)]


def test_avoided_words_never_appear_and_would_without_the_ban(assistant):
    """On the real model: good news answered greedily says 恭喜/开心 unless they are banned."""
    engine = assistant.engine
    role = assistant.roles.chat
    prompt = assistant.prompt_builder.fit_history(
        role,
        assistant.prompt_builder.prefix_messages(role, "正面"),
        1,
        "我今天升职了，太开心了！",
        [],
        Sampling(temperature=0.0, max_tokens=60),
    )
    words = ["恭喜", "开心", "太棒了", "高兴"]
    free = "".join(engine.stream(prompt, Sampling(temperature=0.0, max_tokens=60)))
    assert any(word in free for word in words), f"control reply has none of {words}: {free}"
    banned = tuple(engine.phrase_tokens(words))
    guarded = "".join(
        engine.stream(prompt, Sampling(temperature=0.0, max_tokens=60, banned=banned))
    )
    assert guarded and not any(word in guarded for word in words), guarded


@pytest.mark.model
def test_phrase_tokens_include_every_token_containing_the_word(assistant):
    engine = assistant.engine
    sequences = engine.phrase_tokens(["开心"])
    assert tuple(engine.tokenize("开心")) in sequences
    singles = [seq[0] for seq in sequences if len(seq) == 1]
    assert len(singles) >= 2  # 开心 itself and at least one longer token (很开心)
    assert all("开心".encode() in engine.piece(token) for token in singles)


@pytest.mark.model
def test_a_phrase_is_banned_however_its_tokens_fall(assistant):
    """Words slipped past the ban of each phrase's own tokens: "对你的错误" is 你的 + 错误,
    "骂你是因为你的" is 是因为 + 你的, "真是太棒了" is 真是太 + 棒 + 了. Each is banned now."""
    engine = assistant.engine

    def pieces(text: str) -> list[bytes]:
        return [engine.piece(token) for token in engine.tokenize(text)]

    for phrase, sentence in (
        ("你的错", "对你的错误"),
        ("因为你", "骂你是因为你的不诚实"),
        ("太棒了", "服务周到，真是太棒了。"),  # 真是太 + 棒 + 了
    ):
        tokens = engine.tokenize(sentence)
        banned = Ban(engine.phrase_tokens([phrase]))
        cut = [i for i in range(len(tokens)) if tokens[i] in banned.banned_after(tokens[:i])]
        assert cut, (phrase, pieces(sentence))
    harmless = engine.tokenize("这不是因为别人，是你太累了")
    ban = Ban(engine.phrase_tokens(["因为你"]))
    assert not [i for i in range(len(harmless)) if harmless[i] in ban.banned_after(harmless[:i])]


@pytest.mark.model
def test_no_repeat_and_max_sentences_shape_a_real_reply(assistant):
    engine = assistant.engine
    role = assistant.roles.chat
    prompts = assistant.prompt_builder
    prompt = prompts.fit_history(
        role, prompts.prefix_messages(role), 1, "介绍一下怎么学做饭。", [], Sampling()
    )
    greedy = Sampling(temperature=0.0, max_tokens=120, repeat_penalty=1.0)
    loose = "".join(engine.stream(prompt, greedy))
    short = "".join(engine.stream(prompt, Sampling(**{**greedy.__dict__, "max_sentences": 2})))
    assert sum(loose.count(mark) for mark in "。！？") > 2, loose
    assert sum(short.count(mark) for mark in "。！？") == 2 and short.endswith(("。", "！", "？"))
    assert loose.startswith(short)
    no_loops = "".join(engine.stream(prompt, Sampling(**{**greedy.__dict__, "no_repeat": 3})))
    runs = [no_loops[i : i + 12] for i in range(len(no_loops) - 11)]
    assert len(runs) == len(set(runs)), no_loops
