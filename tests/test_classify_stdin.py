"""`classify -` (or no argument, input piped in): one text a line, one label line each, in order,
each printed as soon as it is labelled. The logic on the fake engine, then real processes on the
real model: a pipe, a slow pipe, a bad line, a terminal."""

import os
import pty
import queue
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

from app import cli
from app.cli import common
from tests.conftest import run_cli

POSITIVE, NEGATIVE = "这家酒店很干净", "房间有异味"
GENEROUS = 300  # seconds: only so that a broken build fails instead of hanging


@pytest.fixture
def runner(monkeypatch, fake_assistant):
    monkeypatch.setattr(common, "load_assistant", lambda settings: fake_assistant)
    return CliRunner()


@pytest.mark.parametrize("args", [["classify", "-"], ["classify"]])
def test_each_line_gets_one_label_line_in_order(runner, fake_engine, args):
    fake_engine.enqueue_choice([0.75, 0.25])
    fake_engine.enqueue_choice([0.1, 0.9])
    result = runner.invoke(cli.main, args, input="a\nb\n", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout == "正面\t0.7500\n负面\t0.9000\n"  # as `classify TEXT` prints one
    texts = [messages[-1]["content"] for kind, messages in fake_engine.calls if kind == "choose"]
    assert [text[-1] for text in texts] == ["a", "b"]  # in the role's prompt, in order


def test_empty_lines_are_skipped_and_the_last_line_needs_no_newline(runner, fake_engine):
    fake_engine.enqueue_choice([0.75, 0.25])
    fake_engine.enqueue_choice([0.1, 0.9])
    result = runner.invoke(
        cli.main, ["classify", "-"], input="a\n\n   \r\nb", catch_exceptions=False
    )
    assert result.stdout == "正面\t0.7500\n负面\t0.9000\n"
    assert result.stderr == ""


def test_a_bad_line_stops_the_run_or_is_skipped_by_on_error(runner, fake_engine):
    lines = "好\n".encode() + b"\xff\n" + "差\n".encode()
    fake_engine.enqueue_choice([0.75, 0.25])
    stopped = runner.invoke(cli.main, ["classify", "-"], input=lines)
    assert stopped.exit_code == 5
    assert stopped.stdout == "正面\t0.7500\n"  # the lines before it are answered
    assert stopped.stderr.startswith("Error: standard input, line 2: not valid UTF-8")
    assert "--on-error skip" in stopped.stderr

    fake_engine.enqueue_choice([0.75, 0.25])
    fake_engine.enqueue_choice([0.1, 0.9])
    skipped = runner.invoke(cli.main, ["classify", "-", "--on-error", "skip"], input=lines)
    assert skipped.exit_code == 0
    assert skipped.stdout == "正面\t0.7500\n负面\t0.9000\n"
    assert skipped.stderr == "Skipped line 2: not valid UTF-8 (re-save the file as UTF-8)\n"


def test_a_line_too_long_for_the_context_is_a_bad_line(runner, fake_engine):
    fake_engine.enqueue_choice([0.75, 0.25])
    lines = "好\n" + "长" * 3000 + "\n"
    stopped = runner.invoke(cli.main, ["classify", "-"], input=lines)
    assert stopped.exit_code == 5
    assert stopped.stderr.startswith("Error: standard input, line 2: ")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--restart"], "--restart needs"),
        (["--ray", "local", "-o", "out.csv"], "-o and --ray need"),
        (["-o", "out.csv"], "-o needs"),
    ],
)
def test_flags_that_need_a_file_are_a_one_line_usage_error(runner, fake_engine, flags, named):
    for args in (["classify", "-", *flags], ["classify", *flags]):
        result = runner.invoke(cli.main, args, input="a\n")
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"Error: {named}")
        assert "give it: allinone classify IN.txt -o OUT.csv" in result.stderr
        assert result.stdout == ""
    assert not [call for call in fake_engine.calls if call[0] == "choose"]


def test_help_explains_standard_input():
    text = " ".join(CliRunner().invoke(cli.main, ["classify", "--help"]).output.split())
    assert "[TEXT|FILE|-]" in text
    assert "no argument, with input piped in" in text and "Empty lines are skipped" in text
    assert "[default: stop]" in text


def test_no_argument_on_a_terminal_is_a_usage_error():
    """A real terminal (a pseudo-terminal) as standard input: nothing is waited for."""
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "classify"],
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=GENEROUS,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 2
    assert "Missing TEXT|FILE" in result.stderr and "pipe texts in" in result.stderr
    assert "Traceback" not in result.stderr


def classify_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "classify", *args],
        input=f"{POSITIVE}\n{NEGATIVE}\n",
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.model
def test_real_pipe_with_and_without_dash(model_path):
    one = run_cli("classify", POSITIVE, "--model", str(model_path))
    for args in (["-"], []):
        piped = classify_process(*args, "--model", str(model_path))
        assert piped.returncode == 0, piped.stderr
        labels = [line.split("\t")[0] for line in piped.stdout.splitlines()]
        assert labels == ["正面", "负面"]
        assert piped.stdout.splitlines()[0] == one.stdout.strip()  # the same line as for TEXT


@pytest.mark.model
def test_real_slow_pipe_gets_each_label_before_it_sends_the_next_line(model_path):
    """The writer holds line 2 back until line 1's label has been read from the pipe: with a
    program that waited for more input, or kept its output in a buffer, this never ends."""
    command = [sys.executable, "-m", "app.cli", "classify", "-", "--model", str(model_path)]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(command, **pipes) as process:
        lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(out) for out in process.stdout], daemon=True
        ).start()
        try:
            process.stdin.write(f"{POSITIVE}\n".encode())
            process.stdin.flush()
            first = lines.get(timeout=GENEROUS)  # line 2 is not written yet
            process.stdin.write(f"{NEGATIVE}\n".encode())
            process.stdin.close()
            second = lines.get(timeout=GENEROUS)
            assert process.wait(timeout=GENEROUS) == 0, process.stderr.read()
        finally:
            process.kill()
    assert first.decode().split("\t")[0] == "正面"
    assert second.decode().split("\t")[0] == "负面"


@pytest.mark.model
def test_real_line_longer_than_the_context_follows_on_error(model_path):
    long_line = "长" * 3000
    text = f"{POSITIVE}\n{long_line}\n{NEGATIVE}\n"
    model = ["--model", str(model_path), "--ctx", "512"]
    stopped = subprocess.run(
        [sys.executable, "-m", "app.cli", "classify", *model],
        input=text,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert stopped.returncode == 5
    assert [line.split("\t")[0] for line in stopped.stdout.splitlines()] == ["正面"]
    assert stopped.stderr.startswith("Error: standard input, line 2: ")
    assert "context window" in stopped.stderr and "Traceback" not in stopped.stderr

    skipped = subprocess.run(
        [sys.executable, "-m", "app.cli", "classify", "-", "--on-error", "skip", *model],
        input=text,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert skipped.returncode == 0, skipped.stderr
    assert [line.split("\t")[0] for line in skipped.stdout.splitlines()] == ["正面", "负面"]
    assert skipped.stderr.startswith("Skipped line 2: ") and "context window" in skipped.stderr
