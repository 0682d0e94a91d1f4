"""The corpus bookkeeping of a cluster run (app/jobs/corpus.py): row ids, blocks, the block journal
and the outputs, without a model or Ray."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.errors import InputError
from app.jobs.corpus import (
    BlockJournal,
    check_target,
    input_files,
    journal_header,
    make_plan,
    output_paths,
    write_outputs,
)
from tests.conftest import write


@pytest.fixture
def corpus(tmp_path):
    """A folder of all four input types, with an empty row and a bad JSON line."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    write(folder / "a.txt", "一\n二\n\n三\n")
    write(folder / "b.csv", "id,text\n1,四\n2,五\n")
    write(folder / "sub" / "c.jsonl", '{"text": "六", "n": 1}\n{bad\n{"text": "七", "n": 2}\n')
    pq.write_table(pa.table({"k": [10, 20], "text": ["八", None]}), folder / "d.parquet")
    write(folder / "notes.md", "not an input")
    return folder


def test_plan_numbers_rows_across_files_and_never_spans_a_block_over_two(corpus):
    plan = make_plan(corpus, window=2, on_error="skip")
    assert [plan.name(i) for i in range(len(plan.files))] == [
        "a.txt",
        "b.csv",
        "d.parquet",
        "sub/c.jsonl",
    ]
    assert [w.text for w in plan.work] == ["一", "二", "三", "四", "五", "八", "六", "七"]
    assert [w.row for w in plan.work] == [0, 1, 3, 4, 5, 6, 8, 10]
    assert plan.rows == 11
    blocks = [(w.file, w.block) for w in plan.work]
    assert len({block for _, block in blocks}) == len({(f, b) for f, b in blocks})
    assert plan.block_sizes == {
        b: sum(1 for w in plan.work if w.block == b) for b in plan.block_sizes
    }
    assert plan.summaries[0].skipped_lines == (3,)
    assert plan.summaries[2].skipped_lines == (2,)  # a null text is an empty row
    assert [line for line, _ in plan.summaries[3].bad_rows] == [2]


def test_a_row_that_cannot_be_read_stops_the_plan_naming_file_and_line(corpus):
    with pytest.raises(InputError, match=r"c\.jsonl, line 2: not valid JSON"):
        make_plan(corpus, window=2, on_error="stop")


def test_inputs_are_checked_before_any_work(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        input_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no"):
        input_files(tmp_path / "empty")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "x.parquet")
    with pytest.raises(InputError, match="no 'text' column"):
        make_plan(tmp_path / "x.parquet", window=4, on_error="stop")


def test_journal_keeps_finished_blocks_and_refuses_a_changed_input(corpus, tmp_path):
    plan = make_plan(corpus, window=2, on_error="skip")
    header = journal_header(plan, window=2, role=None, decode="auto")
    journal = BlockJournal(tmp_path / "out.partial", header)
    journal.write(3, [{"row": 4, "label": "正面", "confidence": 0.9}])
    again = BlockJournal(tmp_path / "out.partial", header)
    assert again.done() == {3: [{"row": 4, "label": "正面", "confidence": 0.9}]}
    write(corpus / "a.txt", "一\n二\n\n三\n四\n")
    changed = journal_header(make_plan(corpus, window=2, on_error="skip"), window=2)
    with pytest.raises(InputError, match="--restart"):
        BlockJournal(tmp_path / "out.partial", changed)
    assert BlockJournal(tmp_path / "out.partial", changed, restart=True).done() == {}


def _results(plan):
    return {w.row: {"row": w.row, "label": "正面", "confidence": 0.5} for w in plan.work}


def test_one_output_file_keeps_input_order_and_columns(corpus, tmp_path):
    plan = make_plan(corpus, window=2, on_error="skip")
    results = _results(plan)
    del results[4]  # a row the model refused: left out
    target = tmp_path / "out.jsonl"
    write_outputs(plan, target, results)
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == ["一", "二", "三", "五", "八", "六", "七"]
    assert rows[3] == {"id": "2", "text": "五", "label": "正面", "confidence": 0.5}
    assert rows[4] == {"k": 10, "text": "八", "label": "正面", "confidence": 0.5}

    parquet = tmp_path / "out.parquet"
    write_outputs(plan, parquet, results)
    table = pq.read_table(parquet)
    assert table.column("text").to_pylist() == [r["text"] for r in rows]
    assert table.column("label").to_pylist() == ["正面"] * 7


def test_an_output_folder_mirrors_the_input_folder(corpus, tmp_path):
    plan = make_plan(corpus, window=2, on_error="skip")
    target = tmp_path / "out"
    assert [p.relative_to(target).as_posix() for p in output_paths(plan, target)] == [
        "a.jsonl",
        "b.csv",
        "d.parquet",
        "sub/c.jsonl",
    ]
    write_outputs(plan, target, _results(plan))
    with (target / "b.csv").open(encoding="utf-8") as file:
        assert list(csv.DictReader(file)) == [
            {"id": "1", "text": "四", "label": "正面", "confidence": "0.5"},
            {"id": "2", "text": "五", "label": "正面", "confidence": "0.5"},
        ]
    table = pq.read_table(target / "d.parquet")
    assert table.schema.field("k").type == pa.int64()  # the input's own types
    assert table.column("k").to_pylist() == [10]


def test_output_must_not_overwrite_an_input(corpus):
    plan = make_plan(corpus, window=2, on_error="skip")
    with pytest.raises(InputError, match="differ"):
        check_target(plan, corpus)
    with pytest.raises(InputError, match="unsupported output type"):
        output_paths(plan, corpus / "x.xlsx")
