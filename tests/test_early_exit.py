"""Early exit: a role decided by its head stops the forward pass after the head's deepest layer.

The decision and confidence must be bit-identical to a full pass, on the one-text and the list
paths; the stopped pass's logits must be impossible to read; and nothing after it (another
label, a chat reply) may see its half-computed KV.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.llm import Sampling
from app.llm.hidden import LayerTap
from app.roles.assistant import Assistant
from tests.test_streams import TEXTS

pytestmark = pytest.mark.model


def _head_and_prompts(assistant: Assistant, role_name: str = "sentiment"):
    role = assistant.roles.get(role_name)
    head = assistant.head_for(role)
    assert head is not None, "the shipped head must fit the mirror model"
    return role, head, [assistant.prompt_for(role, text) for text in TEXTS]


def test_stopped_pass_gives_the_full_pass_states_bit_for_bit(assistant: Assistant) -> None:
    role, head, prompts = _head_and_prompts(assistant)
    engine = assistant.engine
    for prompt in prompts:
        _, full = engine.choose(prompt, role.labels, layers=head.layers)
        stopped = engine.read_states(prompt, head.layers)
        assert engine.tap.cut_short, "the pass was not stopped early"
        assert np.array_equal(stopped, full)


def test_list_path_stops_early_with_the_same_states(assistant: Assistant) -> None:
    role, head, prompts = _head_and_prompts(assistant)
    engine = assistant.engine
    calls = list(engine.labels.stream_sets(prompts))
    assert any(prefix is not None and len(ids) > 2 for ids, prefix, _ in calls)
    full = [states for _, states in engine.choose_many(prompts, role.labels, layers=head.layers)]
    stopped = engine.read_states_many(prompts, head.layers)
    assert engine.tap.cut_short
    assert all(np.array_equal(a, b) for a, b in zip(stopped, full, strict=True))


def test_verdicts_equal_the_head_on_a_full_pass(assistant: Assistant) -> None:
    role, head, prompts = _head_and_prompts(assistant)
    expected = [
        head.probability(assistant.engine.choose(p, role.labels, layers=head.layers)[1])
        for p in prompts
    ]
    alone = [assistant.sentiment(text) for text in TEXTS]
    listed = list(assistant.classify_many(TEXTS))
    assert [v.probabilities["正面"] for v in alone] == expected
    assert [v.probabilities["正面"] for v in listed] == expected
    assert {v.label for v in alone} == {"正面", "负面"}


def test_logits_of_a_stopped_pass_cannot_be_read(assistant: Assistant) -> None:
    role, head, prompts = _head_and_prompts(assistant)
    engine = assistant.engine
    engine.read_states(prompts[0], head.layers)
    with pytest.raises(RuntimeError, match="stopped early"):
        engine.kv.last_logits()
    with pytest.raises(ValueError, match="logits"):  # the list path refuses it too
        engine.labels.stream_batch().decode(prompts[0].tokens[:1], [[1, 2]], (), logits=False)
    engine.choose(prompts[0], role.labels)  # a full pass makes them readable again
    assert engine.kv.last_logits().shape == (engine.n_vocab,)


def test_nothing_after_a_stopped_pass_sees_its_kv(assistant: Assistant) -> None:
    """Label logits and a greedy reply are the same before and after stopped passes."""
    role, head, prompts = _head_and_prompts(assistant)
    engine = assistant.engine
    chat = assistant.roles.get("assistant")
    reply_prompt = assistant.prompt_for(chat, TEXTS[0])
    greedy = Sampling(temperature=0, max_tokens=12)
    engine.forget(prefixes=True)
    before_label = engine.choose(prompts[1], role.labels)[0]
    before_reply = "".join(engine.stream(reply_prompt, greedy))
    for prompt in prompts:
        engine.read_states(prompt, head.layers)
    engine.read_states_many(prompts, head.layers)
    # Same text, same role: a full pass must not reuse the stopped pass's cells.
    engine.read_states(prompts[1], head.layers)
    assert engine.choose(prompts[1], role.labels)[0] == before_label
    engine.read_states(prompts[1], head.layers)
    assert "".join(engine.stream(reply_prompt, greedy)) == before_reply


def test_roles_without_a_head_and_grammar_decoding_run_the_full_pass(
    assistant: Assistant,
) -> None:
    engine = assistant.engine
    verdict = assistant.classify(TEXTS[0], decode="logits")
    assert not engine.tap.cut_short and not engine.kv.logits_stale
    assert verdict.label in ("正面", "负面")
    assert assistant.classify(TEXTS[0], decode="grammar").label in ("正面", "负面")
    assert not engine.kv.logits_stale


def test_watch_with_stop_ends_only_after_the_deepest_layer(monkeypatch) -> None:
    """The callback's answers, on fake tensors (no copy: their sizes do not match float32)."""
    import app.llm.hidden as hidden

    names = {1: b"l_out-14", 2: b"l_out-18", 3: b"l_out-19"}
    monkeypatch.setattr(hidden, "tensor_name", names.get)
    monkeypatch.setattr(hidden, "tensor_floats", lambda tensor: None)
    tap = LayerTap()
    with tap.watch([14, 18], stop=True):
        assert tap.on_tensor(1, True, 0) is True
        assert tap.on_tensor(3, True, 0) is False  # not watched: not asked for
        assert tap.on_tensor(1, False, 0) is True  # layer 14: go on
        assert not tap.cut_short
        assert tap.on_tensor(2, False, 0) is False  # layer 18, the deepest: stop
        assert tap.cut_short
    with tap.watch([14, 18]):  # without stop: never cut short
        assert tap.on_tensor(2, False, 0) is True
        assert not tap.cut_short
