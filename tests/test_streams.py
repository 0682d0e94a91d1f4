"""Lists decoded several texts per llama.cpp call must give exactly the one-text verdicts."""

from __future__ import annotations

import numpy as np

from app.dispatcher import Assistant
from app.hidden import LayerTap

# Pairs of equal token length (so the list path decodes them together) and odd ones out.
TEXTS = [
    "这家酒店的服务非常好。",
    "这家酒店的服务非常差。",
    "房间干净，早餐也不错，下次还来。",
    "房间很脏，早餐也难吃，再也不来了。",
    "物流太慢了。",
    "物流很快。",
    "屏幕清晰，电池耐用，性价比很高，推荐购买。",
    "屏幕模糊，电池不耐用，性价比很低，不推荐。",
]


def test_list_verdicts_are_bit_identical_to_one_by_one(assistant: Assistant) -> None:
    one_by_one = [assistant.sentiment(text) for text in TEXTS]
    listed = list(assistant.classify_many(TEXTS))
    assert assistant.engine._streams is not None, "no two texts were decoded together"
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
    pooled = tap.pooled_each(4, 2)
    states = rows.reshape(2, 3, 4)
    assert pooled.shape == (2, 1, 8)
    np.testing.assert_array_equal(pooled[:, 0, :4], states[:, -1])
    np.testing.assert_array_equal(pooled[:, 0, 4:], states.mean(axis=1))
    np.testing.assert_array_equal(tap.pooled_each(4, 1)[0], tap.pooled(4))
