"""A corpus: a file or a folder of .txt/.csv/.jsonl/.parquet, cut into numbered blocks, with a
journal of one file per finished block.

This is the bookkeeping of a run too big for one machine (app/jobs/ray_classify.py runs it).
The driver reads every row once with the single-machine readers (app/jobs/files.py), so a bad row is
named by file and line exactly as `allinone classify FILE` names it, gives each row an id (its
place in the corpus: files in name order, rows in file order) and each `window` consecutive rows
of one file a block id. Only the rows to label leave the driver: their ids and texts, never the
other columns. A finished block lands in `OUT.partial/block-NNNNNNN.json` with one atomic
rename, so a driver killed mid-run and started again skips every block it had finished. At the
end the inputs are read a second time and joined with the labels by row id: OUT keeps the input
order and every column (Parquet types too), and the journal holds no records (Parquet values
need not be JSON).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.atomic import atomic_open, atomic_path
from app.errors import InputError
from app.jobs.files import (
    INPUT_FORMATS,
    OnError,
    Row,
    Summary,
    bad_row_error,
    read_rows,
    write_output,
)

FORMATS = (*INPUT_FORMATS, ".parquet")
OUT_FORMATS = (".csv", ".jsonl", ".parquet")
PARQUET_HINT = 'Reading and writing .parquet needs pyarrow: pip install "allinone[ray]"'


@dataclass(frozen=True)
class Work:
    """One row for the model: its id, its block, its file (index into Plan.files), its line."""

    row: int
    block: int
    file: int
    line: int
    text: str


@dataclass
class Plan:
    """What a run has to do, read from the inputs alone (the same inputs give the same plan)."""

    root: Path  # the input file, or the input folder
    files: list[Path]
    work: list[Work] = field(default_factory=list)
    block_sizes: dict[int, int] = field(default_factory=dict)  # block id -> rows to label
    summaries: list[Summary] = field(default_factory=list)  # per file: empty and unreadable rows
    rows: int = 0  # every row of every file, empty and bad ones too

    def name(self, file: int) -> str:
        """The file as the user knows it: its path below the input folder."""
        path = self.files[file]
        return str(path.relative_to(self.root)) if path != self.root else path.name

    def bad_row(self, file: int, line: int, problem: str) -> InputError:
        return bad_row_error(self.files[file], line, problem)


def input_files(source: Path) -> list[Path]:
    """The input file, or every file of a known type below the folder, in name order."""
    if source.is_file():
        if source.suffix.lower() not in FORMATS:
            raise InputError(f"{source}: unsupported input type; use {', '.join(FORMATS)}.")
        return [source]
    if not source.is_dir():
        raise InputError(f"{source}: no such file or folder.")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
    if not files:
        raise InputError(f"{source}: the folder holds no {', '.join(FORMATS)} file.")
    return files


def corpus_rows(path: Path, *, records: bool = True) -> Iterator[Row]:
    """Rows of one input file; Parquet rows are numbered from 1 like lines, and read with only
    their text column unless `records`."""
    if path.suffix.lower() != ".parquet":
        yield from read_rows(path)
        return
    table = _read_parquet(path, None if records else ["text"])
    for number, record in enumerate(table.to_pylist(), start=1):
        text = record.get("text")
        if text is None:
            yield Row(number, record, "")
        elif not isinstance(text, str):
            yield Row(number, {}, "", "the 'text' column must hold strings")
        else:
            yield Row(number, record, text)


def make_plan(source: Path, window: int, on_error: OnError) -> Plan:
    """Every row of the corpus, numbered; rows that cannot be read follow `on_error` now,
    before any cluster time is spent on them."""
    plan = Plan(root=source, files=input_files(source))
    block = 0
    for file, path in enumerate(plan.files):
        skipped: list[int] = []
        bad: list[tuple[int, str]] = []
        count = 0
        for index, row in enumerate(corpus_rows(path, records=False)):
            count = index + 1
            if index and index % window == 0:
                block += 1
            if row.problem:
                if on_error == "stop":
                    raise plan.bad_row(file, row.line, row.problem)
                bad.append((row.line, row.problem))
            elif not row.text.strip():
                skipped.append(row.line)
            else:
                plan.work.append(Work(plan.rows + index, block, file, row.line, row.text))
                plan.block_sizes[block] = plan.block_sizes.get(block, 0) + 1
        plan.rows += count
        block += 1  # a block never spans two files
        plan.summaries.append(Summary(skipped_lines=tuple(skipped), bad_rows=tuple(bad)))
    return plan


class BlockJournal:
    """Finished blocks of one run, one small JSON file each, in a folder beside the output."""

    def __init__(self, folder: Path, header: dict[str, Any], *, restart: bool = False) -> None:
        self.folder = folder
        if restart and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / "header.json"
        if marker.exists():
            if json.loads(marker.read_text(encoding="utf-8")) != header:
                raise InputError(
                    f"{folder} belongs to a different or changed input, or to other settings "
                    "(--window, --role, --decode). Run again with --restart to start over."
                )
        else:
            _write_atomically(marker, header)

    def done(self) -> dict[int, list[dict[str, Any]]]:
        """Entries of every finished block, by block id (a torn write never has a name)."""
        return {
            int(path.stem.split("-")[1]): json.loads(path.read_text(encoding="utf-8"))
            for path in self.folder.glob("block-*.json")
        }

    def write(self, block: int, entries: list[dict[str, Any]]) -> None:
        _write_atomically(self.folder / f"block-{block:07d}.json", entries)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def journal_header(plan: Plan, **settings: object) -> dict[str, Any]:
    """What must not change between a run and its resumption."""
    inputs = [[plan.name(i), path.stat().st_size] for i, path in enumerate(plan.files)]
    return {"source": str(plan.root.resolve()), "inputs": inputs, **settings}


def output_paths(plan: Plan, target: Path) -> list[Path]:
    """One output file for all inputs (OUT has a known suffix), or a folder that mirrors the
    input folder (.txt becomes .jsonl: a label needs a column)."""
    if target.suffix.lower() in OUT_FORMATS:
        return [target]
    if target.suffix:
        raise InputError(f"{target}: unsupported output type; use .csv, .jsonl or .parquet.")
    names = [Path(plan.name(i)) for i in range(len(plan.files))]
    return [target / (n.with_suffix(".jsonl") if n.suffix.lower() == ".txt" else n) for n in names]


def check_target(plan: Plan, target: Path) -> None:
    """OUT may not overwrite an input, nor sit inside the input folder (the next run would
    read it as input)."""
    outputs = {p.resolve() for p in output_paths(plan, target)}
    inside = plan.root.is_dir() and target.resolve().is_relative_to(plan.root.resolve())
    if inside or outputs & {p.resolve() for p in plan.files}:
        raise InputError("The output must differ from the input, and lie outside its folder.")


def write_outputs(plan: Plan, target: Path, results: dict[int, dict[str, Any]]) -> None:
    """Join the inputs with their labels (by row id) and write OUT; unlabelled rows are left
    out. Each output file appears in one atomic replace."""
    outputs = output_paths(plan, target)
    first = 0
    parts: list[list[dict[str, Any]]] = []
    for path in plan.files:
        labelled = []
        count = 0
        for index, row in enumerate(corpus_rows(path)):
            count = index + 1
            entry = results.get(first + index)
            if entry and "label" in entry:
                labelled.append({**entry, "record": row.record, "index": index})
        first += count
        parts.append(labelled)
    if len(outputs) == 1:
        _write_one(outputs[0], plan.files, parts)
        return
    for path, output, labelled in zip(plan.files, outputs, parts, strict=True):
        output.parent.mkdir(parents=True, exist_ok=True)
        _write_one(output, [path], [labelled])


def _write_one(target: Path, sources: list[Path], parts: list[list[dict[str, Any]]]) -> None:
    if target.suffix.lower() != ".parquet":
        write_output(target, [entry for part in parts for entry in part])
        return
    pa, pq = _pyarrow()
    tables = []
    for source, labelled in zip(sources, parts, strict=True):
        if source.suffix.lower() == ".parquet":  # keep the input's column types
            table = _read_parquet(source).take([entry["index"] for entry in labelled])
        else:
            table = pa.Table.from_pylist([entry["record"] for entry in labelled])
        for name in ("label", "confidence"):
            if name in table.column_names:
                table = table.drop_columns([name])
        table = table.append_column("label", pa.array([e["label"] for e in labelled], pa.string()))
        table = table.append_column(
            "confidence", pa.array([e["confidence"] for e in labelled], pa.float64())
        )
        tables.append(table)
    table = pa.concat_tables(tables, promote_options="permissive")
    with atomic_path(target, ".tmp") as temp:
        pq.write_table(table, temp)


def _read_parquet(path: Path, columns: list[str] | None = None):  # -> pyarrow.Table
    _, pq = _pyarrow()
    try:
        names = pq.read_schema(path).names
        if "text" not in names:
            found = ", ".join(names) or "none"
            raise InputError(f"{path}: no 'text' column (columns found: {found}).")
        return pq.read_table(path, columns=columns)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"{path}: not a readable Parquet file ({error}).") from None


def _pyarrow():  # -> (pyarrow, pyarrow.parquet), imported only when Parquet is asked for
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(PARQUET_HINT) from None
    return pa, pq


def _write_atomically(path: Path, value: object) -> None:
    with atomic_open(path, suffix=".tmp", fsync=True, encoding="utf-8") as out:
        json.dump(value, out, ensure_ascii=False)
