"""The example bank made ready lazily: the vectors up front, each group's prompt prefix on the
first reply of its group (app/roles/bank_cache.py), and the same shots as reading it all first."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from app.config import load_settings
from app.roles.assistant import Assistant
from app.roles.bank import ExampleBank
from app.roles.head import features
from app.roles.prompts import load_roles
from tests.conftest import ROOT, FakeEngine, copy_prompts, run_cli

MESSAGE = "今天又被老板骂了。"


class CountingEngine(FakeEngine):
    """The fake engine, counting the prefixes it decodes to hand out as states."""

    def __init__(self) -> None:
        super().__init__()
        self.decoded: list[tuple[int, ...]] = []

    def prefix_state(self, prompt):  # type: ignore[no-untyped-def]
        self.decoded.append(tuple(prompt.tokens[: prompt.prefix_len]))
        return super().prefix_state(prompt)


def fresh(cache: Path) -> tuple[Assistant, CountingEngine]:
    """An assistant as a new process meets it: nothing prepared, the cache folder as it is."""
    engine = CountingEngine()
    roles = load_roles(ROOT / "prompts.yaml")
    settings = load_settings(cache_dir=cache)
    return Assistant(engine, roles.model_copy(update={"heads": {}}), settings), engine


def kept(cache: Path) -> list[Path]:
    return sorted((cache / "prefixes").glob("*.kv"))


def groups_of(assistant: Assistant) -> list:
    role = assistant.roles.chat
    return assistant.roles.banks[role.name].groups(role.bank.k)


def answer(assistant: Assistant, text: str = MESSAGE, **options: object) -> None:
    assistant.engine.enqueue_choice([0.1, 0.9])  # type: ignore[attr-defined]
    list(assistant.respond(text, **options)[1])


def test_a_first_reply_decodes_and_keeps_its_own_group_prefix_alone(tmp_path):
    assistant, engine = fresh(tmp_path)
    answer(assistant)
    assert len(engine.decoded) == 1 and len(kept(tmp_path)) == 1
    prompt = engine.last_prompt
    assert engine.decoded[0] == tuple(prompt.tokens[: prompt.prefix_len])  # the reply's own
    assert kept(tmp_path)[0].read_bytes().startswith(b"kv:")


def test_a_later_process_restores_that_prefix_from_disk(tmp_path):
    answer(fresh(tmp_path)[0])
    assistant, engine = fresh(tmp_path)
    answer(assistant)
    assert engine.decoded == [] and len(engine.prefixes) == 1
    assert len(kept(tmp_path)) == 1


def test_another_group_is_decoded_when_it_is_first_answered(tmp_path, monkeypatch):
    assistant, engine = fresh(tmp_path)
    assistant.prepare_bank(prefixes=False)  # the vectors, to know the groups
    bank = assistant.roles.banks["assistant"]
    first, second = [shots for shots in groups_of(assistant) if shots[-1].mood == "负面"][:2]
    monkeypatch.setattr(bank, "shots", lambda *args: first)
    answer(assistant, "第一条")
    answer(assistant, "第二条")  # the same group: its prefix is on disk now
    assert len(engine.decoded) == 1
    monkeypatch.setattr(bank, "shots", lambda *args: second)
    answer(assistant, "第三条")
    assert len(engine.decoded) == 2 and len(kept(tmp_path)) == 2


def test_a_prefix_under_the_callers_own_instructions_is_not_kept(tmp_path):
    assistant, engine = fresh(tmp_path)
    answer(assistant, instructions="回答要简短。")
    assert engine.decoded == [] and kept(tmp_path) == []


def test_prepare_bank_with_prefixes_keeps_every_group_once(tmp_path):
    assistant, engine = fresh(tmp_path)
    assistant.prepare_bank()
    count = len(groups_of(assistant))
    assert len(engine.decoded) == len(kept(tmp_path)) == count > 10
    assistant, engine = fresh(tmp_path)
    assistant.prepare_bank()
    answer(assistant)
    assert engine.decoded == []


def test_preparing_for_chat_reads_the_vectors_and_decodes_no_prefix(tmp_path):
    assistant, engine = fresh(tmp_path)
    assistant.prepare_bank(prefixes=False)
    assert assistant.roles.banks["assistant"].indexed
    assert engine.decoded == [] and kept(tmp_path) == []
    assert len(list((tmp_path / "banks").glob("*.npy"))) == 1


def test_progress_moves_only_for_real_work_and_after_the_line_that_explains_it(tmp_path, caplog):
    events: list[object] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.append("explained")

    recorder = Recorder()
    logging.getLogger("app.roles.bank_cache").addHandler(recorder)
    try:
        assistant, _ = fresh(tmp_path)
        progress = lambda done, total: events.append((done, total))  # noqa: E731
        assistant.prepare_bank(progress=progress, prefixes=False)
        count = len(assistant.roles.banks["assistant"].exchanges)
        assert events[0] == "explained" and events[1] == (0, count)
        assert events[-1] == (count, count) and len(events) > 3
        events.clear()
        fresh(tmp_path)[0].prepare_bank(progress=progress, prefixes=False)  # from the cache
        assert events == []
    finally:
        logging.getLogger("app.roles.bank_cache").removeHandler(recorder)


def test_the_prefixes_bar_counts_on_after_the_exchanges(tmp_path):
    assistant, _ = fresh(tmp_path)
    seen: list[tuple[int, int]] = []
    assistant.prepare_bank(progress=lambda done, total: seen.append((done, total)))
    exchanges = len(assistant.roles.banks["assistant"].exchanges)
    total = exchanges + len(groups_of(assistant))
    assert seen[-1] == (total, total)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_vectors_shipped_for_the_loaded_model_are_read_instead_of_the_bank(tmp_path):
    engine = CountingEngine()
    roles = load_roles(copy_prompts(tmp_path / "shipped"))  # a bank folder this test may write
    settings = load_settings(cache_dir=tmp_path / "cache")
    assistant = Assistant(engine, roles.model_copy(update={"heads": {}}), settings)
    role = assistant.roles.chat
    bank = assistant.roles.banks[role.name]
    steering = assistant.labeller.label_role(assistant.roles.steering(role).name)
    _, shipped = assistant.bank_cache.vector_files(
        role, bank, steering, assistant.bank_cache.layers(steering)
    )
    shipped.parent.mkdir(exist_ok=True)
    np.save(shipped, np.eye(len(bank.exchanges), 8, dtype=np.float32))
    moves: list[tuple[int, int]] = []
    assistant.prepare_bank(progress=lambda *move: moves.append(move), prefixes=False)
    assert bank.indexed and moves == [] and engine.calls == []
    assert not (tmp_path / "cache" / "banks").exists()


# -- the real model ----------------------------------------------------------------------


@pytest.mark.model
def test_shipped_and_batched_vectors_pick_the_shots_reading_one_by_one_picks(assistant):
    """A first run takes the vectors shipped for this model, or reads the bank with the list
    path; either way the shots must be the ones the eager one-text-a-call reading gives, for
    every message of the chat set and every mood. The shipped file must match today's key."""
    role = assistant.roles.chat
    bank = assistant.roles.banks[role.name]
    steering = assistant.labeller.label_role(assistant.roles.steering(role).name)
    layers = assistant.bank_cache.layers(steering)
    _, shipped = assistant.bank_cache.vector_files(role, bank, steering, layers)
    assert shipped.is_file(), "stale or missing: run python scripts/ship_bank_vectors.py"
    texts = [exchange.input for exchange in bank.exchanges]
    together = assistant.bank_cache.vectors(texts, steering, layers)
    alone = np.stack(
        [features(assistant.labeller.judge(t, steering, layers=layers)[1]) for t in texts]
    )
    assert np.array_equal(together, alone)
    assert np.allclose(np.load(shipped), alone, rtol=0, atol=1e-4)
    eager, *others = (ExampleBank(bank.path, bank.exchanges, bank.digest) for _ in range(3))
    eager.index(lambda _: alone)
    others[0].index(lambda _: together)
    others[1].index(lambda _: pytest.fail("the shipped file was not read"), None, shipped)
    lines = (ROOT / "tests" / "data" / "chat_messages.jsonl").read_text("utf-8").splitlines()
    for message in [json.loads(line)["text"] for line in lines]:
        found = features(assistant.labeller.judge(message, steering, layers=layers)[1])
        for mood in (None, *steering.labels):
            shots = eager.shots(found, role.bank.k, mood, steering.labels)
            for other in others:
                assert other.shots(found, role.bank.k, mood, steering.labels) == shots, message


@pytest.mark.model
def test_a_fresh_first_chat_answers_and_keeps_only_its_group_prefix(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    cache = tmp_path / "cache"
    result = run_cli("chat", "--once", MESSAGE, "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    badge, reply = result.stdout.strip().splitlines()[:2]
    assert badge.startswith("[情感: ") and reply.strip()
    assert "Traceback" not in result.stderr
    # The vectors shipped for this model: nothing read, nothing written but the one prefix.
    assert "Reading" not in result.stderr
    assert not (cache / "banks").exists()
    assert len(kept(cache)) == 1
