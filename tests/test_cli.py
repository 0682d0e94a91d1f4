"""The CLI: output shape and exit codes, on a fake engine (fast) and as a real process."""

import json
import socket

import pytest
from click.testing import CliRunner

from app import cli
from app.cli import common
from tests.conftest import run_cli, write


@pytest.fixture
def runner(monkeypatch, fake_assistant):
    monkeypatch.setattr(common, "load_assistant", lambda settings: fake_assistant)
    return CliRunner()


def test_chat_once_prints_sentiment_then_the_streamed_reply(runner, fake_engine):
    fake_engine.enqueue_choice([0.1, 0.9])
    fake_engine.enqueue_reply(["别", "难过", "。"])
    result = runner.invoke(
        cli.main, ["chat", "--once", "今天又被老板骂了。"], catch_exceptions=False
    )
    assert result.exit_code == 0
    assert result.output == "[情感: 负面 0.90]\n别难过。\n"


def test_chat_repl_keeps_history_and_resets(runner, fake_engine):
    for pieces in (["一"], ["二"], ["三"]):
        fake_engine.enqueue_reply(pieces)
    stdin = "你好\n再说一句\n/reset\n第三句\n/exit\n"
    result = runner.invoke(
        cli.main, ["chat", "--no-sentiment"], input=stdin, catch_exceptions=False
    )
    assert result.exit_code == 0
    streams = [messages for kind, messages in fake_engine.calls if kind == "stream"]
    contents = [[m["content"] for m in messages] for messages in streams]
    assert contents[1][-3:] == ["你好", "一", "再说一句"]
    assert "你好" not in contents[2], "/reset clears the history"


def test_chat_once_with_empty_text_exits_non_zero(runner):
    result = runner.invoke(cli.main, ["chat", "--once", "  "])
    assert result.exit_code == 5
    assert "needs some text" in result.output


def test_classify_one_text(runner, fake_engine):
    fake_engine.enqueue_choice([0.75, 0.25])
    result = runner.invoke(cli.main, ["classify", "很好"], catch_exceptions=False)
    assert result.output == "正面\t0.7500\n"


def test_classify_file_to_csv(runner, tmp_path):
    source = write(tmp_path / "in.txt", "好\n\n差\n")
    result = runner.invoke(cli.main, ["classify", str(source), "-o", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()[
        0
    ] == "text,label,confidence"
    assert "Skipped 1 empty rows (lines 2)" in result.output


def test_classify_missing_input_file_with_output(runner, tmp_path):
    result = runner.invoke(
        cli.main, ["classify", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o.csv")]
    )
    assert result.exit_code == 5 and "file not found" in result.output


def test_unknown_role_exit_code(runner):
    result = runner.invoke(cli.main, ["run", "nope", "hi"])
    assert result.exit_code == 4 and "Unknown role 'nope'" in result.output


def test_every_flag_has_help_with_default():
    result = CliRunner().invoke(cli.main, ["chat", "--help"])
    for flag in ("--model", "--ctx", "--threads", "--prompts", "--seed", "--temperature"):
        line = next(line for line in result.output.splitlines() if line.strip().startswith(flag))
        assert line, flag
    assert result.output.count("[default:") >= 10


def test_roles_lists_the_shipped_roles():
    result = CliRunner().invoke(cli.main, ["roles"])
    assert (
        "sentiment" in result.output
        and "正面/负面" in result.output
        and "assistant" in result.output
    )


@pytest.mark.model
def test_real_chat_once(model_path):
    result = run_cli(
        "chat", "--once", "今天又被老板骂了。", "--temperature", "0", "--max-tokens", "40"
    )
    assert result.returncode == 0, result.stderr
    first, reply = result.stdout.split("\n", 1)
    assert first.startswith("[情感: 负面 ")
    assert reply.strip()
    assert "Traceback" not in result.stderr


@pytest.mark.model
def test_real_classify_csv_to_jsonl(model_path, tmp_path):
    source = write(tmp_path / "in.csv", "id,text\n1,服务很好，非常满意\n2,太差了，再也不来\n")
    target = tmp_path / "out.jsonl"
    result = run_cli("classify", str(source), "-o", str(target))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["label"]) for r in rows] == [("1", "正面"), ("2", "负面")]
    assert all(0.5 <= r["confidence"] <= 1 for r in rows)


@pytest.mark.model
def test_real_input_longer_than_context_is_a_clear_error(model_path):
    result = run_cli("classify", "长" * 3000, "--ctx", "512")
    assert result.returncode == 5
    assert "context window" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a model at all", "not a GGUF model"), (b"GGUF" + b"\x03\x00" * 200, "could not load")],
)
def test_real_corrupt_model_file_is_a_clear_error(tmp_path, content, message):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    result = run_cli("classify", "好", "--model", str(bad))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_real_missing_model_prints_the_download_command(tmp_path):
    result = run_cli("chat", "--once", "你好", "--models-dir", str(tmp_path))
    assert result.returncode == 2
    assert "allinone download" in result.stderr


def test_serve_on_a_busy_port_is_a_clear_error_before_loading():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli.main, ["serve", "--port", str(port)])
    assert result.exit_code == 5
    assert f"127.0.0.1:{port}" in result.output and "Pick another --port" in result.output


def test_classify_file_bad_rows_stop_or_skip(runner, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes("很好\n".encode() + b"\xff\n" + "太差\n".encode())
    stopped = runner.invoke(cli.main, ["classify", str(source)])
    assert stopped.exit_code == 5 and "line 2: not valid UTF-8" in stopped.output
    skipped = runner.invoke(
        cli.main, ["classify", str(source), "-o", str(tmp_path / "o.csv"), "--on-error", "skip"]
    )
    assert skipped.exit_code == 0, skipped.output
    assert "Skipped bad row, line 2: not valid UTF-8" in skipped.output
    assert len((tmp_path / "o.csv").read_text(encoding="utf-8").splitlines()) == 3


def test_one_conversation_commands_make_no_reply_slots_unless_asked(monkeypatch):
    from app.cli.chat import one_conversation

    monkeypatch.delenv("ALLINONE_PARALLEL", raising=False)
    assert one_conversation({"parallel": None})["parallel"] == 1
    assert one_conversation({"parallel": 3})["parallel"] == 3
    monkeypatch.setenv("ALLINONE_PARALLEL", "2")
    assert one_conversation({"parallel": None})["parallel"] is None  # the setting reads the env
