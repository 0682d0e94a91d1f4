"""`chat --session NAME` and `allinone sessions`: real processes on the real model, and the
commands' output and exit codes on a scripted engine (fast)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner

from app import cli
from app.cli import common
from app.roles.conversations import items_text
from app.roles.store import ConversationStore
from tests.conftest import run_cli


@pytest.fixture
def runner(monkeypatch, fake_assistant, tmp_path):
    """The CLI on the scripted engine, with ALLINONE_STORE in a temporary folder."""
    monkeypatch.setattr(common, "load_assistant", lambda settings: fake_assistant)
    monkeypatch.setenv("ALLINONE_STORE", str(tmp_path / "env-store.sqlite3"))
    return CliRunner()


@pytest.fixture
def no_model(monkeypatch, tmp_path):
    """The sessions commands must never load a model: loading one fails the test."""

    def refuse(settings):
        raise AssertionError("sessions loaded the model")

    monkeypatch.setattr(common, "load_assistant", refuse)
    monkeypatch.setenv("ALLINONE_STORE", str(tmp_path / "env-store.sqlite3"))
    return CliRunner()


def stored_turns(path, name):
    with ConversationStore(path) as store:
        return store.turns(name)


def chat_once(runner, store, text, *extra):
    return runner.invoke(
        cli.main,
        ["chat", "--session", "work", "--once", text, "--store", str(store), *extra],
        catch_exceptions=False,
    )


# -- chat --session, on the scripted engine --------------------------------------------------


def test_a_session_is_created_then_continued_with_its_history(runner, fake_engine, tmp_path):
    store = tmp_path / "s.sqlite3"
    fake_engine.enqueue_choice([0.1, 0.9])
    fake_engine.enqueue_reply(["别", "难过", "。"])
    first = chat_once(runner, store, "今天又被老板骂了。")
    assert first.exit_code == 0
    assert first.stdout == "[情感: 负面 0.90]\n别难过。\n", "the same output as plain chat"
    assert first.stderr.startswith("新对话 work")

    fake_engine.enqueue_reply(["嗯"])
    second = chat_once(runner, store, "还是难受", "--no-sentiment")
    assert second.exit_code == 0 and second.stdout == "嗯\n"
    assert "继续对话 work（1 轮）" in second.stderr
    contents = [m["content"] for m in fake_engine.last_messages]
    assert contents[-3:] == ["今天又被老板骂了。", "别难过。", "还是难受"]

    turns = stored_turns(store, "work")
    assert [items_text(t.input_items) for t in turns] == ["今天又被老板骂了。", "还是难受"]
    assert turns[0].verdict["label"] == "负面" and turns[1].verdict is None
    assert turns[1].previous_id == turns[0].id
    assert all(turn.status == "completed" for turn in turns)


def test_plain_chat_touches_no_store(runner, fake_engine, tmp_path):
    result = runner.invoke(cli.main, ["chat", "--once", "你好"], catch_exceptions=False)
    assert result.exit_code == 0
    assert not (tmp_path / "env-store.sqlite3").exists()


def test_session_repl_keeps_every_turn_and_reset_keeps_the_session(runner, fake_engine, tmp_path):
    store = tmp_path / "s.sqlite3"
    for pieces in (["一"], ["二"], ["三"]):
        fake_engine.enqueue_reply(pieces)
    stdin = "你好\n/reset\n再说一句\n/exit\n"
    result = runner.invoke(
        cli.main,
        ["chat", "--session", "r", "--no-sentiment", "--store", str(store)],
        input=stdin,
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    assert "/reset 不会清空它" in result.stdout
    turns = stored_turns(store, "r")
    assert [items_text(t.input_items) for t in turns] == ["你好", "再说一句"]
    contents = [m["content"] for m in fake_engine.last_messages]
    assert contents[-3:] == ["你好", "一", "再说一句"], "the session's history still counts"


def test_session_needs_a_name_and_a_bad_store_fails_before_the_model(no_model, tmp_path):
    result = no_model.invoke(cli.main, ["chat", "--session", " ", "--once", "你好"])
    assert result.exit_code == 5 and "--session needs a name" in result.output
    bad = tmp_path / "bad.sqlite3"
    bad.write_text("not a database", encoding="utf-8")
    result = no_model.invoke(
        cli.main, ["chat", "--session", "a", "--once", "你好", "--store", str(bad)]
    )
    assert result.exit_code == 7 and str(bad) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- sessions, on the scripted engine ---------------------------------------------------------


def fill(runner, fake_engine, store):
    """Two conversations: 'work' (two turns, the first felt 负面) and 'home'."""
    fake_engine.enqueue_choice([0.07, 0.93])
    fake_engine.enqueue_reply(["辛苦了"])
    assert chat_once(runner, store, "我叫小林，今天很累。").exit_code == 0
    fake_engine.enqueue_choice([0.8, 0.2])
    fake_engine.enqueue_reply(["真好"])
    assert chat_once(runner, store, "晚上吃了火锅").exit_code == 0
    fake_engine.enqueue_choice([0.9, 0.1])
    fake_engine.enqueue_reply(["好呀"])
    result = runner.invoke(
        cli.main, ["chat", "--session", "home", "--once", "周末去爬山", "--store", str(store)]
    )
    assert result.exit_code == 0


def test_list_shows_newest_first_and_an_empty_store_says_so(runner, fake_engine, tmp_path):
    store = tmp_path / "s.sqlite3"
    empty = runner.invoke(cli.main, ["sessions", "list", "--store", str(store)])
    assert empty.exit_code == 0 and "No conversations yet" in empty.output
    fill(runner, fake_engine, store)
    result = runner.invoke(cli.main, ["sessions", "list", "--store", str(store)])
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TURNS", "UPDATED", "TITLE"]
    assert lines[1].split()[0:2] == ["home", "1"] and lines[1].endswith("周末去爬山")
    assert lines[2].split()[0:2] == ["work", "2"] and lines[2].endswith("我叫小林，今天很累。")


def test_show_prints_each_turn_with_its_mood_and_marks_an_unfinished_one(
    runner, fake_engine, tmp_path
):
    store = tmp_path / "s.sqlite3"
    fill(runner, fake_engine, store)
    with ConversationStore(store) as opened:  # a turn whose writer died before its reply
        opened.begin_turn("work", None, [{"type": "message", "role": "user", "content": "喂"}])
    result = runner.invoke(cli.main, ["sessions", "show", "work", "--store", str(store)])
    assert result.exit_code == 0
    text = result.stdout
    assert "对话 work（3 轮" in text
    assert "你 > 我叫小林，今天很累。\n[情感: 负面 0.93]\n助手 > 辛苦了" in text
    assert "你 > 晚上吃了火锅\n[情感: 正面 0.80]\n助手 > 真好" in text
    assert "你 > 喂\n（未完成" in text


def test_delete_asks_first_unless_yes(runner, fake_engine, tmp_path):
    store = tmp_path / "s.sqlite3"
    fill(runner, fake_engine, store)
    args = ["sessions", "delete", "work", "--store", str(store)]
    kept = runner.invoke(cli.main, args, input="n\n")
    assert kept.exit_code != 0 and len(stored_turns(store, "work")) == 2
    gone = runner.invoke(cli.main, args, input="y\n")
    assert gone.exit_code == 0 and stored_turns(store, "work") == []
    result = runner.invoke(cli.main, ["sessions", "delete", "home", "--yes", "--store", str(store)])
    assert result.exit_code == 0
    with ConversationStore(store) as opened:
        assert opened.conversations() == []


def test_export_writes_jsonl_to_stdout_or_a_file(runner, fake_engine, tmp_path):
    store = tmp_path / "s.sqlite3"
    fill(runner, fake_engine, store)
    result = runner.invoke(cli.main, ["sessions", "export", "work", "--store", str(store)])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["role"], r["content"]) for r in rows] == [
        ("user", "我叫小林，今天很累。"),
        ("assistant", "辛苦了"),
        ("user", "晚上吃了火锅"),
        ("assistant", "真好"),
    ]
    assert rows[0]["verdict"] == {"label": "负面", "confidence": 0.93}
    out = tmp_path / "work.jsonl"
    args = ["sessions", "export", "work", "-o", str(out), "--store", str(store)]
    assert runner.invoke(cli.main, args).exit_code == 0
    assert out.read_text(encoding="utf-8") == result.stdout
    assert not list(tmp_path.glob("*.partial"))


def test_a_missing_name_exits_non_zero_with_a_hint(no_model, tmp_path):
    store = str(tmp_path / "s.sqlite3")
    out = tmp_path / "never.jsonl"
    for command in (["show", "nope"], ["delete", "nope", "--yes"], ["export", "nope", "-o", out]):
        result = no_model.invoke(cli.main, ["sessions", *map(str, command), "--store", store])
        assert result.exit_code == 5, command
        assert "allinone sessions list" in result.stderr
    assert not out.exists()


def test_sessions_read_allinone_store_from_the_environment(no_model, tmp_path):
    with ConversationStore(tmp_path / "env-store.sqlite3") as opened:
        opened.begin_turn(opened.create_conversation("from-env").id, None, [])
    result = no_model.invoke(cli.main, ["sessions", "list"])
    assert result.exit_code == 0 and "from-env" in result.stdout


def test_a_corrupt_store_is_one_line_and_the_store_error_code(no_model, tmp_path):
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x07" * 5000)
    before = bad.read_bytes()
    result = no_model.invoke(cli.main, ["sessions", "list", "--store", str(bad)])
    assert result.exit_code == 7
    assert result.stderr.count("\n") == 1 and str(bad) in result.stderr
    assert "Traceback" not in result.output
    assert bad.read_bytes() == before


def test_every_sessions_command_explains_its_flags(no_model):
    for command in ("list", "show", "delete", "export"):
        result = no_model.invoke(cli.main, ["sessions", command, "--help"])
        assert result.exit_code == 0
        assert "--store" in result.stdout and "ALLINONE_STORE" in result.stdout
        assert "conversations.sqlite3" in result.stdout, "the default is shown"
    assert "[default: ask first]" in no_model.invoke(cli.main, ["sessions", "delete", "-h"]).stdout
    assert "[default: stdout]" in no_model.invoke(cli.main, ["sessions", "export", "-h"]).stdout
    chat_help = no_model.invoke(cli.main, ["chat", "--help"]).stdout
    for flag in ("--session", "--store", "--keep-days"):
        assert flag in chat_help


# -- real processes, the real model -------------------------------------------------------------


@pytest.mark.model
def test_real_session_continues_in_a_second_process(model_path, tmp_path):
    store = str(tmp_path / "real.sqlite3")
    common_args = ["--store", store, "--model", str(model_path), "--max-tokens", "24"]
    common_args += ["--temperature", "0"]
    first = run_cli("chat", "--session", "xiaolin", "--once", "我叫小林，今天很累。", *common_args)
    assert first.returncode == 0, first.stderr
    assert "新对话 xiaolin" in first.stderr
    assert first.stdout.startswith("[情感: 负面 ")
    second = run_cli("chat", "--session", "xiaolin", "--once", "我叫什么名字？", *common_args)
    assert second.returncode == 0, second.stderr
    assert "继续对话 xiaolin（1 轮）" in second.stderr

    shown = run_cli("sessions", "show", "xiaolin", "--store", store)
    assert shown.returncode == 0, shown.stderr
    assert "你 > 我叫小林，今天很累。\n[情感: 负面 " in shown.stdout
    assert "你 > 我叫什么名字？\n[情感: " in shown.stdout
    assert shown.stdout.count("助手 > ") == 2

    turns = stored_turns(store, "xiaolin")
    assert len(turns) == 2 and all(turn.status == "completed" for turn in turns)
    assert turns[1].previous_id == turns[0].id, "the second turn's history held the first"
    assert turns[0].model and turns[0].usage["output_tokens"] > 0
    first_reply = items_text(turns[0].output_items)
    assert first_reply and first_reply in first.stdout

    listed = run_cli("sessions", "list", "--store", store)
    assert "xiaolin" in listed.stdout and "我叫小林，今天很累。" in listed.stdout


def test_real_sessions_process_on_a_corrupt_store(tmp_path):
    bad = tmp_path / "bad.sqlite3"
    db = sqlite3.connect(bad)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.commit()
    db.close()
    before = bad.read_bytes()
    result = run_cli("sessions", "show", "x", "--store", str(bad), timeout=60)
    assert result.returncode == 7
    assert result.stderr.strip().startswith("Error: ") and "\n" not in result.stderr.strip()
    assert bad.read_bytes() == before
    missing = run_cli("sessions", "delete", "x", "--yes", "--store", str(tmp_path / "n.db"))
    assert missing.returncode == 5 and "allinone sessions list" in missing.stderr
