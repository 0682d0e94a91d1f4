"""Best of several drafts: the judge's pick is sent, drafts are closed, the YAML is checked."""

import numpy as np
import pytest

from app.errors import PromptsError
from app.llm.completion import Completion
from app.roles.drafts import DRAFT_FOR_JUDGE, best_draft
from app.roles.prompts import load_roles
from tests.conftest import copy_prompts, run_cli, shipped_prompts_text


def test_the_judges_best_draft_is_sent_whole(fake_assistant, fake_engine):
    for pieces in (["还", "行"], ["听起来", "很", "委屈"], ["哦"]):
        fake_engine.enqueue_reply(pieces)
    fake_engine.enqueue_choice([0.3, 0.7])  # the judge on draft 1
    fake_engine.enqueue_choice([0.9, 0.1])  # draft 2: the best
    fake_engine.enqueue_choice([0.6, 0.4])
    reply = fake_assistant.reply("今天又被老板骂了。", candidates=3, seed=10)
    assert list(reply) == ["听起来很委屈"]
    assert reply.completion_tokens == 3 and reply.finish_reason == "stop"
    # Drafts 2 and up sample at draft_temperature with the seeds after the reply's.
    last = fake_engine.last_sampling
    assert (last.seed, last.temperature) == (12, 0.8)
    judged = [messages for kind, messages in fake_engine.calls if kind == "choose"]
    last_judged = DRAFT_FOR_JUDGE.format(message="今天又被老板骂了。", reply="哦")
    assert judged[-1][-1]["content"] == last_judged


def test_one_candidate_streams_token_by_token(fake_assistant, fake_engine):
    fake_engine.enqueue_reply(["别", "难过"])
    assert list(fake_assistant.reply("今天又被老板骂了。", candidates=1)) == ["别", "难过"]
    assert all(kind != "choose" for kind, _ in fake_engine.calls)


def test_an_empty_draft_is_never_sent(fake_assistant, fake_engine):
    fake_engine.enqueue_reply([])
    fake_engine.enqueue_reply(["嗯"])
    fake_engine.enqueue_choice([0.1, 0.9])  # only the non-empty draft is judged
    assert fake_assistant.reply("在吗", candidates=2).text() == "嗯"


def test_candidates_without_a_judge_are_refused(fake_engine, tmp_path):
    """Drafts nothing can pick among would be silently dropped: say so instead."""
    from app.config import load_settings
    from app.errors import InputError
    from app.roles.assistant import Assistant

    text = shipped_prompts_text().replace("    judged_by: reply-judge\n", "")
    roles = load_roles(copy_prompts(tmp_path, text))
    settings = load_settings(cache_dir=tmp_path / "cache")
    assistant = Assistant(fake_engine, roles.model_copy(update={"heads": {}}), settings)
    with pytest.raises(InputError, match="needs a judge.*judged_by"):
        assistant.reply("今天又被老板骂了。", candidates=2)


def test_closing_the_reply_closes_every_draft():
    """A client that leaves mid-drafting: every draft is told to stop (the scheduler frees the
    slot of a cancelled reply at its next step), started or not."""
    drafts = [Completion(5).run(iter(["一", "二"])) for _ in range(2)]
    outer = Completion(5)
    outer.run(best_draft(outer, drafts, lambda text: 1.0))
    outer.cancelled = True  # as close() from the server's thread sets it
    assert list(outer) == []
    assert all(draft.cancelled for draft in drafts)


@pytest.mark.parametrize(
    ("judged_by", "expected"),
    [
        ("", "nothing picks among the drafts"),  # no judge at all
        ("    judged_by: assistant\n", "must name a role with a 'labels' output"),
    ],
)
def test_drafts_need_a_two_label_judge(tmp_path, judged_by, expected):
    text = shipped_prompts_text().replace("      candidates: 1\n", "      candidates: 3\n")
    path = copy_prompts(tmp_path, text.replace("    judged_by: reply-judge\n", judged_by))
    with pytest.raises(PromptsError, match=expected):
        load_roles(path)


@pytest.mark.model
def test_real_drafts_send_the_judges_pick(assistant):
    """The reply is the draft the judge scores highest, and each draft is what the same settings
    give alone (the first greedy, then the next seeds at the draft temperature)."""
    text = "今天又被老板骂了，明明不是我的错。"
    _, reply = assistant.respond(text, candidates=3, seed=5)
    chosen = reply.text()
    drafts = [
        assistant.respond(text, seed=5)[1].text().strip(),
        assistant.respond(text, seed=6, temperature=0.8)[1].text().strip(),
        assistant.respond(text, seed=7, temperature=0.8)[1].text().strip(),
    ]
    scores = [
        assistant.classify(DRAFT_FOR_JUDGE.format(message=text, reply=d), "reply-judge")
        for d in drafts
    ]
    best = int(np.argmax([verdict.probabilities["好"] for verdict in scores]))
    assert chosen == drafts[best]
    assert reply.usage.completion_tokens > 0 and reply.finish_reason in ("stop", "length")


@pytest.mark.model
def test_real_chat_once_with_drafts(model_path):
    result = run_cli("chat", "--once", "失眠好几天了，白天一点精神都没有。", "--candidates", "2")
    assert result.returncode == 0, result.stderr
    first, reply = result.stdout.split("\n", 1)
    assert first.startswith("[情感: ") and reply.strip()
    assert "Traceback" not in result.stderr
