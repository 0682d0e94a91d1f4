"""File classification: formats, row errors, and resuming without losing or repeating rows."""

import csv
import json

import pytest

from app.errors import InputError
from app.jobs.files import classify_file, read_rows
from tests.conftest import write


def fake_label(text):
    return ("正面" if "好" in text else "负面"), 0.9


def test_txt_rows_keep_line_numbers(tmp_path):
    rows = list(read_rows(write(tmp_path / "in.txt", "很好\n\n太差\n")))
    assert [(r.line, r.text) for r in rows] == [(1, "很好"), (2, ""), (3, "太差")]


def test_csv_keeps_other_columns_and_adds_label_and_confidence(tmp_path):
    source = write(tmp_path / "in.csv", "id,text,extra\n1,很好,a\n2,太差,b\n")
    target = tmp_path / "out.csv"
    classify_file(source, target, fake_label)
    with target.open(encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert rows == [
        {"id": "1", "text": "很好", "extra": "a", "label": "正面", "confidence": "0.9"},
        {"id": "2", "text": "太差", "extra": "b", "label": "负面", "confidence": "0.9"},
    ]


def test_jsonl_in_jsonl_out(tmp_path):
    source = write(tmp_path / "in.jsonl", '{"text": "很好", "n": 1}\n{"text": "太差", "n": 2}\n')
    target = tmp_path / "out.jsonl"
    classify_file(source, target, fake_label)
    out = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert out == [
        {"text": "很好", "n": 1, "label": "正面", "confidence": 0.9},
        {"text": "太差", "n": 2, "label": "负面", "confidence": 0.9},
    ]


def test_empty_rows_are_skipped_and_reported_by_line(tmp_path):
    source = write(tmp_path / "in.txt", "很好\n   \n太差\n\n")
    summary = classify_file(source, tmp_path / "out.jsonl", fake_label)
    assert summary.done == 2 and summary.skipped_lines == (2, 4)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("in.csv", "id,body\n1,x\n", "no 'text' column"),
        ("in.jsonl", '{"text": "ok"}\n{oops\n', "line 2: not valid JSON"),
        ("in.jsonl", '{"text": 5}\n', "line 1: expected an object"),
        ("in.xlsx", "x", "unsupported input type"),
    ],
)
def test_bad_input_files_say_where(tmp_path, name, content, message):
    source = write(tmp_path / name, content)
    with pytest.raises(InputError, match=message):
        classify_file(source, tmp_path / "out.csv", fake_label)


def test_invalid_utf8_stops_at_its_line_by_default(tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes("好\n".encode() + b"\xff\xfe bad\n")
    with pytest.raises(InputError, match="line 2: not valid UTF-8.*--on-error skip"):
        classify_file(source, tmp_path / "out.csv", fake_label)
    assert not (tmp_path / "out.csv").exists(), "no output file until every row is done"


@pytest.mark.parametrize(
    ("name", "content", "bad_lines"),
    [
        ("in.txt", "好\n".encode() + b"\xff bad\n" + "差\n".encode(), [2]),
        ("in.csv", "id,text\n1,好\n".encode() + b"2,\xc3(\n" + "3,差\n".encode(), [3]),
        ("in.jsonl", '{"text": "好"}\n{oops\n{"text": 5}\n{"text": "差"}\n'.encode(), [2, 3]),
    ],
)
def test_skip_leaves_bad_rows_out_and_lists_them(tmp_path, name, content, bad_lines):
    source = tmp_path / name
    source.write_bytes(content)
    target = tmp_path / "out.jsonl"
    summary = classify_file(source, target, fake_label, on_error="skip")
    assert [line for line, _ in summary.bad_rows] == bad_lines
    labels = [json.loads(line)["label"] for line in target.read_text(encoding="utf-8").splitlines()]
    assert labels == ["正面", "负面"]


def test_a_text_the_model_refuses_is_a_bad_row_and_a_stopped_run_resumes_with_skip(tmp_path):
    source = write(tmp_path / "in.txt", "好\n" + "长" * 50 + "\n差\n")
    calls = []

    def refuses_long(text):
        calls.append(text)
        if len(text) > 20:
            raise InputError("The input needs 60 tokens but the context window holds 32.")
        return fake_label(text)

    target = tmp_path / "out.csv"
    with pytest.raises(InputError, match="line 2: The input needs 60 tokens"):
        classify_file(source, target, refuses_long)
    summary = classify_file(source, target, refuses_long, on_error="skip")
    assert summary.resumed == 1 and summary.bad_rows == (
        (2, "The input needs 60 tokens but the context window holds 32."),
    )
    assert calls.count("好") == 1, "the row done before the stop is not done again"
    with target.open(encoding="utf-8") as file:
        assert [row["text"] for row in csv.DictReader(file)] == ["好", "差"]


def test_unsupported_output_type(tmp_path):
    source = write(tmp_path / "in.txt", "好\n")
    with pytest.raises(InputError, match="output"):
        classify_file(source, tmp_path / "out.xlsx", fake_label)


def test_interrupted_run_resumes_without_losing_or_repeating_rows(tmp_path):
    texts = [f"第{i}条{'好' if i % 2 else '差'}" for i in range(50)]
    source = write(tmp_path / "in.txt", "\n".join(texts) + "\n")
    target = tmp_path / "out.jsonl"
    seen = []

    def dies_at_row_20(text):
        if len(seen) == 20:
            raise KeyboardInterrupt
        seen.append(text)
        return fake_label(text)

    with pytest.raises(KeyboardInterrupt):
        classify_file(source, target, dies_at_row_20)
    assert not target.exists(), "no half output under the final name"

    second = []
    summary = classify_file(source, target, lambda t: (second.append(t), fake_label(t))[1])
    assert summary.resumed == 20 and summary.done == 30
    assert second == texts[20:], "only unfinished rows are classified again"
    out = [json.loads(line)["text"] for line in target.read_text(encoding="utf-8").splitlines()]
    assert out == texts
    assert not (tmp_path / "out.jsonl.partial.jsonl").exists()


def test_torn_last_journal_line_is_redone(tmp_path):
    source = write(tmp_path / "in.txt", "好\n差\n好\n")
    target = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.partial.jsonl"
    calls = []
    with pytest.raises(RuntimeError):
        classify_file(
            source,
            target,
            lambda t: (
                (_ for _ in ()).throw(RuntimeError)
                if calls
                else (calls.append(t), fake_label(t))[1]
            ),
        )
    with journal.open("a", encoding="utf-8") as log:
        log.write('{"row": 1, "record": {"te')  # a kill in the middle of a write
    classify_file(source, target, fake_label)
    assert len(target.read_text(encoding="utf-8").splitlines()) == 3


def test_changed_input_refuses_to_resume_until_restart(tmp_path):
    source = write(tmp_path / "in.txt", "好\n差\n")
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        classify_file(source, target, lambda t: (_ for _ in ()).throw(RuntimeError))
    write(source, "完全不同的文件\n好\n差\n")
    with pytest.raises(InputError, match="--restart"):
        classify_file(source, target, fake_label)
    assert classify_file(source, target, fake_label, restart=True).done == 3
