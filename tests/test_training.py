"""Training a head for another model: rows, sampling, resumable features, where heads live."""

import gzip
import json

import numpy as np
import pytest

from app import cli
from app.cli import common
from app.errors import InputError
from app.jobs import training
from app.roles import user_heads
from app.roles.prompts import load_roles
from tests.conftest import ROOT, FakeEngine, write


@pytest.fixture(autouse=True)
def user_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_the_shipped_rows_are_the_training_file_and_balance_to_14800():
    texts, labels = training.read_labelled_rows(training.TRAIN_ROWS)
    assert len(texts) >= 14800 and set(labels) == {"正面", "负面"}
    picked = training.balanced_sample(texts, labels, ("正面", "负面"), 14800, seed=13)
    assert sum(label == "正面" for _, label in picked) == 7400


def test_rows_read_from_csv_and_gzip_alike(tmp_path):
    text = "text,label\n好,正面\n差,负面\n"
    plain = write(tmp_path / "a.csv", text)
    packed = tmp_path / "a.csv.gz"
    packed.write_bytes(gzip.compress(text.encode("utf-8")))
    assert (
        training.read_labelled_rows(plain)
        == training.read_labelled_rows(packed)
        == (["好", "差"], ["正面", "负面"])
    )
    with pytest.raises(InputError, match="'text' and 'label'"):
        training.read_labelled_rows(write(tmp_path / "b.csv", "words,mood\n好,正面\n"))
    with pytest.raises(InputError, match="not found"):
        training.read_labelled_rows(tmp_path / "missing.csv")


def test_the_sample_is_balanced_repeatable_and_refuses_what_it_cannot_balance():
    texts = [f"t{i}" for i in range(30)]
    labels = ["正面"] * 20 + ["负面"] * 10
    first = training.balanced_sample(texts, labels, ("正面", "负面"), 20, seed=1)
    assert first == training.balanced_sample(texts, labels, ("正面", "负面"), 20, seed=1)
    assert sorted(label for _, label in first) == ["正面"] * 10 + ["负面"] * 10
    with pytest.raises(InputError, match="10 of 负面"):
        training.balanced_sample(texts, labels, ("正面", "负面"), 24, seed=1)


def test_heads_live_per_user_keyed_by_model_and_role(tmp_path):
    path = training.user_head_path("Qwen2.5 Coder 0.5B/Instruct", "mood")
    assert (
        path
        == tmp_path / "data" / "allinone" / "heads" / "qwen2.5-coder-0.5b-instruct" / "mood.json"
    )


def test_features_are_kept_in_chunks_and_a_second_run_reads_them(tmp_path, fake_assistant):
    role = fake_assistant.roles.get("sentiment")
    texts = [f"文本{i}" for i in range(training.CHUNK + 5)]
    states, first = training.extract(fake_assistant, role, texts, (14, 15), tmp_path / "w")
    assert states.shape == (len(texts), 2, FakeEngine.hidden_size) and first is None
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [
        "chunk-00000.npz",
        "chunk-00001.npz",
    ]

    def no_model(*args, **kwargs):
        raise AssertionError("every chunk was saved: nothing should be decoded again")

    fake_assistant.engine.read_states_many = no_model
    again, _ = training.extract(fake_assistant, role, texts, (14, 15), tmp_path / "w")
    assert np.array_equal(states, again)
    # Asking for the label logits too decodes again (full passes) and keeps the same states.
    del fake_assistant.engine.read_states_many
    both, first = training.extract(
        fake_assistant, role, texts, (14, 15), tmp_path / "w", with_logits=True
    )
    assert both.shape == states.shape and len(first) == len(texts)


def test_train_head_command_writes_the_user_head_the_loader_finds(fake_assistant, monkeypatch):
    from click.testing import CliRunner

    monkeypatch.setattr(common, "load_assistant", lambda settings: fake_assistant)
    result = CliRunner().invoke(
        cli.main, ["train-head", "--role", "mood", "--rows", "40"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    path = training.user_head_path(FakeEngine.model_name, "mood")
    assert str(path) in result.output and json.loads(path.read_text())["model"] == "Fake Model"
    roles = load_roles(ROOT / "prompts.yaml")
    assert user_heads.find_user_head("Fake Model", roles.get("mood")) is not None
    assert training.heads_missing(roles, "Fake Model") == ["sentiment", "sentiment-fast"]


def test_a_head_for_an_edited_prompt_is_not_used(fake_assistant, monkeypatch):
    from click.testing import CliRunner

    monkeypatch.setattr(common, "load_assistant", lambda settings: fake_assistant)
    CliRunner().invoke(cli.main, ["train-head", "--rows", "20"], catch_exceptions=False)
    role = load_roles(ROOT / "prompts.yaml").sentiment
    edited = role.model_copy(update={"system": role.system + "改了"})
    assert user_heads.find_user_head("Fake Model", role) is not None
    assert user_heads.find_user_head("Fake Model", edited) is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--layers", "x-y"], "FIRST-LAST"),
        (["--layers", "9-3"], "names no layer"),
        (["--role", "assistant"], "exactly two"),
    ],
)
def test_bad_train_head_flags_are_one_line_errors(fake_assistant, monkeypatch, flags, message):
    from click.testing import CliRunner

    monkeypatch.setattr(common, "load_assistant", lambda settings: fake_assistant)
    result = CliRunner().invoke(cli.main, ["train-head", *flags])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


@pytest.mark.model
def test_ctrl_c_keeps_the_finished_chunks_and_the_same_command_resumes(model_path, tmp_path):
    """A real process, a real SIGINT after the first chunk is saved: exit 130 with the resume
    hint, then the same command finishes without decoding that chunk again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = os.environ | {"XDG_DATA_HOME": str(tmp_path / "d"), "XDG_CACHE_HOME": str(tmp_path / "c")}
    command = [
        sys.executable, "-m", "app.cli", "train-head", "--role", "mood",
        "--rows", str(training.CHUNK + 40), "--model", str(model_path),
        "--out", str(tmp_path / "mood.json"),
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    chunks = tmp_path / "c" / "allinone" / "train-head"
    deadline = time.monotonic() + 300
    while not list(chunks.glob("*/chunk-00000.npz")) and time.monotonic() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "run the same command again to resume" in stderr.lower() and "Traceback" not in stderr
    (first,) = chunks.glob("*/chunk-00000.npz")
    saved_at = first.stat().st_mtime_ns
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert first.stat().st_mtime_ns == saved_at, "the finished chunk was computed again"
    assert json.loads((tmp_path / "mood.json").read_text())["labels"] == ["正面", "负面"]
