"""`classify FILE` stopped by a real signal (Ctrl-C or kill -9) mid-run, then run again.

The 100k-line runs use a fast scripted engine in a real `allinone classify` process, so the
file machinery (journal, resume, atomic output) meets real signals at full speed; a shorter run
does the same on the real model.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, write

FAST_CLI = """
import sys, time
from app import cli
from app.cli import common
from app.config import load_settings
from app.roles.assistant import Assistant
from app.roles.prompts import load_roles
from tests.conftest import FakeEngine

class ByParity(FakeEngine):
    # Row i says "第i条": even i is 正面, odd i is 负面, so every output row can be checked.
    def choose(self, prompt, labels, *, layers=()):
        time.sleep(0.00005)
        text = "".join(map(chr, prompt.tokens))  # the fake's tokens are characters
        number = int(text.rsplit("第", 1)[1].split("条")[0])
        return ([0.9, 0.1] if number % 2 == 0 else [0.1, 0.9]), []

roles = load_roles("prompts.yaml").model_copy(update={"heads": {}})
common.load_assistant = lambda settings: Assistant(ByParity(), roles, load_settings())
cli.main(sys.argv[1:], prog_name="allinone")
"""


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _stop_when_journal_has(process, journal, rows: int, sig: int) -> int:
    """Send `sig` once the journal holds `rows` rows; returns how many it held then."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {process.stderr.read()}")
        if journal.exists():
            held = journal.read_bytes().count(b"\n") - 1  # minus the header
            if held >= rows:
                process.send_signal(sig)
                return held
        time.sleep(0.005)
    pytest.fail("the journal never grew")


def _labels(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_100k_line_file_interrupted_half_way_resumes_without_loss_or_repeat(tmp_path, sig):
    total = 100_000
    source = write(tmp_path / "in.txt", "".join(f"第{i}条\n" for i in range(total)))
    target = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.partial.jsonl"
    command = [sys.executable, "-c", FAST_CLI, "classify", str(source), "-o", str(target)]

    first = _start(command)
    _stop_when_journal_has(first, journal, total // 2, sig)
    _, stderr = first.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert first.returncode == 130 and "Interrupted" in stderr
        assert "Traceback" not in stderr
    else:
        assert first.returncode == -signal.SIGKILL
    assert not target.exists(), "no half output under the final name"

    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "resumed from an earlier run" in second.stderr
    rows = _labels(target)
    assert [row["text"] for row in rows] == [f"第{i}条" for i in range(total)]
    assert [row["label"] for row in rows] == [
        "正面" if i % 2 == 0 else "负面" for i in range(total)
    ]
    assert not journal.exists()


@pytest.mark.model
def test_real_model_run_stopped_by_ctrl_c_resumes_to_the_same_labels(model_path, tmp_path):
    texts = [f"第{i}家店，{'菜很好吃，服务周到' if i % 2 else '菜又贵又难吃'}。" for i in range(24)]
    source = write(tmp_path / "in.txt", "\n".join(texts) + "\n")
    target = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.partial.jsonl"
    # Four rows a model call, so the journal grows in steps a signal can land between.
    command = [
        *[sys.executable, "-m", "app.cli", "classify", str(source)],
        *["--window", "4", "-o", str(target)],
    ]
    first = _start(command)
    _stop_when_journal_has(first, journal, 6, signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130 and "Traceback" not in stderr
    assert not target.exists()

    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    resumed = _labels(target)
    whole = tmp_path / "whole.jsonl"
    third = subprocess.run(
        [*command[:-1], str(whole)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert third.returncode == 0, third.stderr
    assert [row["text"] for row in resumed] == texts
    assert resumed == _labels(whole), "resuming gives exactly the rows of an uninterrupted run"
