"""Lists decoded several texts per llama.cpp call must give exactly the one-text verdicts."""

from __future__ import annotations

import numpy as np

from app.llm.hidden import LayerTap
from app.llm.streams import plan
from app.roles.assistant import Assistant

# Texts of close token lengths: the list path decodes them together, the shorter ones padded.
TEXTS = [
    "这家酒店的服务非常好。",
    "这家酒店的服务非常差。",
    "房间干净，早餐也不错，下次还来。",
    "房间很脏，早餐也难吃，再也不来了。",
    "物流太慢了。",
    "物流很快。",
    "屏幕清晰，电池耐用，性价比很高，推荐购买。",
    "屏幕模糊，电池不耐用，性价比很低，不推荐。",
    "还行吧。",
    "一般般，没什么特别的，不过价格还算公道。",
]


def test_some_texts_share_a_call_padded_to_a_longer_one(assistant: Assistant) -> None:
    """Guards the test below: it must exercise padding, not only equal lengths."""
    role = assistant.roles.get("sentiment")
    prompts = [assistant.prompt_for(role, text) for text in TEXTS]
    lengths = [len(p.tokens) - p.prefix_len for p in prompts]
    groups = plan(lengths, streams=7, n_batch=assistant.engine.n_batch, slack=8)
    assert any(len({lengths[i] for i in group}) > 1 for group in groups)


def test_list_verdicts_are_bit_identical_to_one_by_one(assistant: Assistant) -> None:
    one_by_one = [assistant.sentiment(text) for text in TEXTS]
    listed = list(assistant.classify_many(TEXTS))
    assert assistant.engine.labels.stream_batch_made, "no two texts were decoded together"
    assert [v.probabilities for v in listed] == [v.probabilities for v in one_by_one]
    # And again, with the streams already holding the prefix (the cheap reset path).
    assert [v.probabilities for v in assistant.classify_many(TEXTS)] == [
        v.probabilities for v in one_by_one
    ]
    assert {v.label for v in listed} == {"正面", "负面"}


def test_list_path_without_head_matches_label_logits(assistant: Assistant) -> None:
    role = assistant.roles.get("sentiment")
    prompts = [assistant.prompt_for(role, text) for text in TEXTS]
    together = assistant.engine.choose_many(prompts, role.labels)
    alone = [assistant.engine.choose(prompt, role.labels) for prompt in prompts]
    assert [p for p, _ in together] == [p for p, _ in alone]


def test_pooled_each_splits_the_batch_rows_by_sequence() -> None:
    tap = LayerTap()
    rows = np.arange(2 * 3 * 4, dtype=np.float32)  # 2 sequences x 3 tokens x 4 features
    tap._rows = [[rows[:12], rows[12:]]]  # arrives in two chunks, as llama.cpp may hand it over
    pooled = tap.pooled_each(4, [3, 3])
    states = rows.reshape(2, 3, 4)
    assert pooled.shape == (2, 1, 8)
    np.testing.assert_array_equal(pooled[:, 0, :4], states[:, -1])
    np.testing.assert_array_equal(pooled[:, 0, 4:], states.mean(axis=1))


def test_pooled_each_leaves_the_padding_out() -> None:
    tap = LayerTap()
    rows = np.arange(2 * 3 * 4, dtype=np.float32)
    tap._rows = [[rows]]
    states = rows.reshape(2, 3, 4)
    pooled = tap.pooled_each(4, [2, 3])  # the first sequence: 2 tokens + 1 of padding
    np.testing.assert_array_equal(pooled[0, 0, :4], states[0, 1])
    np.testing.assert_array_equal(pooled[0, 0, 4:], states[0, :2].mean(axis=0))
    np.testing.assert_array_equal(pooled[1, 0, 4:], states[1].mean(axis=0))
    tap._rows = [[rows[:8]]]  # one text of two tokens, as the one-text path pools it
    np.testing.assert_array_equal(tap.pooled(4), pooled[0])


def test_plan_groups_close_lengths_within_the_limits() -> None:
    lengths = [10, 50, 12, 11, 300, 19, 18, 40]
    groups = plan(lengths, streams=3, n_batch=512, slack=8)
    assert groups == [[0, 3, 2], [6, 5], [7], [1], [4]]
    assert plan([200, 200, 200], streams=7, n_batch=512, slack=8) == [[0, 1], [2]]
    assert plan([], streams=7, n_batch=512, slack=8) == []
    assert sorted(i for g in plan(lengths, streams=7, n_batch=64, slack=0) for i in g) == list(
        range(8)
    )
