"""Classify whole files: read .txt/.csv/.jsonl, write .csv/.jsonl, resume after an interruption.

Input rows keep all their columns; the output adds `label` and `confidence`. Progress goes to a
journal next to the output (`OUT.partial.jsonl`, one JSON line per finished row, flushed as it
goes). If the run stops (Ctrl-C, kill, power cut), the next run with the same arguments reads the
journal, drops a half-written last line, and carries on from the first unfinished row, so no row
is lost or done twice. The final file appears in one `os.replace` once every row is done.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.errors import InputError

INPUT_FORMATS = (".txt", ".csv", ".jsonl")
OUTPUT_FORMATS = (".csv", ".jsonl")
RESULT_FIELDS = ("label", "confidence")


@dataclass(frozen=True)
class Row:
    """One input row: its 1-based line number in the file, all its fields, and the text."""

    line: int
    record: dict[str, object]
    text: str


def read_rows(path: Path) -> Iterator[Row]:
    """Rows of a .txt (one text a line), .csv (a `text` column) or .jsonl (a `text` field)."""
    suffix = path.suffix.lower()
    if suffix not in INPUT_FORMATS:
        raise InputError(
            f"{path}: unsupported input type {suffix or '(none)'}; use .txt, .csv or .jsonl."
        )
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    try:
        if suffix == ".txt":
            yield from _read_txt(path)
        elif suffix == ".csv":
            yield from _read_csv(path)
        else:
            yield from _read_jsonl(path)
    except UnicodeDecodeError as error:
        raise InputError(
            f"{path}: not valid UTF-8 (byte {error.start}). Re-save the file as UTF-8."
        ) from None


def _read_txt(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8", newline="") as file:
        for number, line in enumerate(file, start=1):
            text = line.rstrip("\r\n")
            yield Row(number, {"text": text}, text)


def _read_csv(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file)
        if not reader.fieldnames or "text" not in reader.fieldnames:
            found = ", ".join(reader.fieldnames or []) or "none"
            raise InputError(f"{path}: no 'text' column (columns found: {found}).")
        for record in reader:
            yield Row(reader.line_num, dict(record), record.get("text") or "")


def _read_jsonl(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                yield Row(number, {}, "")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}, line {number}: not valid JSON ({error.msg}).") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise InputError(
                    f"{path}, line {number}: expected an object with a string 'text' field."
                )
            yield Row(number, record, record["text"])


def count_rows(path: Path) -> int:
    return sum(1 for _ in read_rows(path))


@dataclass
class Summary:
    done: int = 0
    resumed: int = 0
    skipped_lines: tuple[int, ...] = ()
    output: Path | None = None


Classifier = Callable[[str], tuple[str, float]]


def classify_file(
    source: Path,
    target: Path,
    classify: Classifier,
    *,
    restart: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """Classify every non-empty row of `source` into `target`, resuming a journal if present."""
    if target.suffix.lower() not in OUTPUT_FORMATS:
        raise InputError(f"{target}: unsupported output type; use .csv or .jsonl.")
    if target.resolve() == source.resolve():
        raise InputError("The output file must differ from the input file.")
    journal = target.with_name(target.name + ".partial.jsonl")
    header = {"source": str(source.resolve()), "size": source.stat().st_size}
    if restart:
        journal.unlink(missing_ok=True)
    finished = _read_journal(journal, header)

    summary = Summary(resumed=len(finished))
    with journal.open("a", encoding="utf-8") as log:
        if not finished:
            log.write(json.dumps({"header": header}, ensure_ascii=False) + "\n")
        for index, row in enumerate(read_rows(source)):
            if index in finished:
                if progress:
                    progress(1)
                continue
            if not row.text.strip():
                entry = {"row": index, "skip": True, "line": row.line}
            else:
                label, confidence = classify(row.text)
                entry = {
                    "row": index,
                    "record": row.record,
                    "label": label,
                    "confidence": round(confidence, 4),
                }
                summary.done += 1
            log.write(json.dumps(entry, ensure_ascii=False) + "\n")
            log.flush()
            finished[index] = entry
            if progress:
                progress(1)
    summary.skipped_lines = tuple(sorted(e["line"] for e in finished.values() if e.get("skip")))
    _write_output(target, [finished[i] for i in sorted(finished) if not finished[i].get("skip")])
    journal.unlink(missing_ok=True)
    summary.output = target
    return summary


def _read_journal(journal: Path, header: dict[str, object]) -> dict[int, dict]:
    """Rows already done, keyed by row index; a torn last line is cut off the file."""
    if not journal.exists():
        return {}
    finished: dict[int, dict] = {}
    good_bytes = 0
    with journal.open("rb") as file:
        for raw in file:
            try:
                entry = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            if not raw.endswith(b"\n"):
                break
            if "header" in entry:
                if entry["header"] != header:
                    raise InputError(
                        f"{journal} belongs to a different or changed input file. "
                        "Run again with --restart to start over."
                    )
            else:
                finished[int(entry["row"])] = entry
            good_bytes += len(raw)
    with journal.open("r+b") as file:
        file.truncate(good_bytes)
    return finished


def _write_output(target: Path, entries: list[dict]) -> None:
    partial = target.with_name(target.name + ".tmp")
    with partial.open("w", encoding="utf-8", newline="") as out:
        if target.suffix.lower() == ".jsonl":
            for entry in entries:
                record = {
                    **entry["record"],
                    "label": entry["label"],
                    "confidence": entry["confidence"],
                }
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            columns: list[str] = []
            for entry in entries:
                columns += [key for key in entry["record"] if key not in columns]
            columns += [field for field in RESULT_FIELDS if field not in columns]
            writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for entry in entries:
                writer.writerow(
                    {**entry["record"], "label": entry["label"], "confidence": entry["confidence"]}
                )
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, target)
