"""Classify whole files: read .txt/.csv/.jsonl, write .csv/.jsonl, resume after an interruption
(and standard input, read as a .txt file's rows, each line as it comes: `read_lines`).

Input rows keep all their columns; the output adds `label` and `confidence`. Progress goes to a
journal next to the output (`OUT.partial.jsonl`, one JSON line per finished row, flushed as it
goes). If the run stops (Ctrl-C, kill, power cut), the next run with the same arguments reads the
journal, drops a half-written last line, and carries on from the first unfinished row, so no row
is lost or done twice. The final file appears in one `os.replace` once every row is done.

A bad row (bytes that are not UTF-8, a JSONL line that is not an object with a `text`, a text
the model cannot take) is named by its line number, and either stops the run (`stop`, the
default; rows done so far stay in the journal) or is left out of the output and listed at the
end (`skip`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from app.atomic import atomic_open
from app.errors import InputError
from app.roles.labelling import windows

INPUT_FORMATS = (".txt", ".csv", ".jsonl")
OUTPUT_FORMATS = (".csv", ".jsonl")
RESULT_FIELDS = ("label", "confidence")
OnError = Literal["stop", "skip"]
NOT_UTF8 = "not valid UTF-8 (re-save the file as UTF-8)"


@dataclass(frozen=True)
class Row:
    """One input row: its 1-based line number, all its fields, the text, and what is wrong with
    it if it cannot be used (then `text` is empty)."""

    line: int
    record: dict[str, object]
    text: str
    problem: str | None = None


def _undecodable(*values: object) -> bool:
    """True if a value read with errors="surrogateescape" holds bytes that were not UTF-8."""
    return any(
        isinstance(value, str) and any("\udc80" <= char <= "\udcff" for char in value)
        for value in values
    )


def read_rows(path: Path) -> Iterator[Row]:
    """Rows of a .txt (one text a line), .csv (a `text` column) or .jsonl (a `text` field)."""
    suffix = path.suffix.lower()
    if suffix not in INPUT_FORMATS:
        raise InputError(
            f"{path}: unsupported input type {suffix or '(none)'}; use .txt, .csv or .jsonl."
        )
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    if suffix == ".txt":
        yield from _read_txt(path)
    elif suffix == ".csv":
        yield from _read_csv(path)
    else:
        yield from _read_jsonl(path)


def _open(path: Path, encoding: str = "utf-8"):  # -> TextIO
    # surrogateescape: a row with bad bytes becomes a bad row, not the end of the whole file.
    return path.open(encoding=encoding, errors="surrogateescape", newline="")


def _read_txt(path: Path) -> Iterator[Row]:
    with _open(path) as file:
        for number, line in enumerate(file, start=1):
            yield _txt_row(number, line)


def read_lines(stream: BinaryIO) -> Iterator[Row]:
    """One text a line from a stream (standard input), as a .txt file's rows, each yielded as
    soon as its line has arrived: a slow pipe gets each answer before it sends the next line."""
    for number, raw in enumerate(iter(stream.readline, b""), start=1):
        yield _txt_row(number, raw.decode("utf-8", errors="surrogateescape"))


def _txt_row(number: int, line: str) -> Row:
    text = line.rstrip("\r\n")
    if _undecodable(text):
        return Row(number, {}, "", NOT_UTF8)
    return Row(number, {"text": text}, text)


def _read_csv(path: Path) -> Iterator[Row]:
    with _open(path, "utf-8-sig") as file:
        reader = csv.DictReader(file)
        if not reader.fieldnames or "text" not in reader.fieldnames:
            found = ", ".join(reader.fieldnames or []) or "none"
            raise InputError(f"{path}: no 'text' column (columns found: {found}).")
        if _undecodable(*reader.fieldnames):
            raise InputError(f"{path}: the header row is {NOT_UTF8}.")
        for record in reader:
            if _undecodable(*record.values()):
                yield Row(reader.line_num, {}, "", NOT_UTF8)
            else:
                yield Row(reader.line_num, dict(record), record.get("text") or "")


def _read_jsonl(path: Path) -> Iterator[Row]:
    with _open(path) as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                yield Row(number, {}, "")
            elif _undecodable(line):
                yield Row(number, {}, "", NOT_UTF8)
            else:
                yield _jsonl_row(number, line)


def _jsonl_row(number: int, line: str) -> Row:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return Row(number, {}, "", f"not valid JSON ({error.msg})")
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        return Row(number, {}, "", "expected an object with a string 'text' field")
    return Row(number, record, record["text"])


def count_rows(path: Path) -> int:
    return sum(1 for _ in read_rows(path))


@dataclass
class Summary:
    done: int = 0
    resumed: int = 0
    skipped_lines: tuple[int, ...] = ()  # empty rows
    bad_rows: tuple[tuple[int, str], ...] = ()  # (line, problem), left out under on_error="skip"
    output: Path | None = None


Classifier = Callable[[str], tuple[str, float]]
ManyClassifier = Callable[[list[str]], list[tuple[str, float]]]
WINDOW = 256  # rows per classify_many call


def label_functions(
    assistant: Any, role: str | None, decode: str = "auto"
) -> tuple[Classifier, ManyClassifier | None]:
    """An Assistant's (classify, classify_many) for a label role, as the file policy takes
    them: the list path only for decode="auto" (the head or logits), as a single text would."""

    def label(text: str) -> tuple[str, float]:
        verdict = assistant.classify(text, role, decode=decode)
        return verdict.label, verdict.confidence

    def label_many(texts: list[str]) -> list[tuple[str, float]]:
        return [(v.label, v.confidence) for v in assistant.classify_many(texts, role)]

    return label, (label_many if decode == "auto" else None)


def label_row(
    row: Row, classify: Classifier, *, source: Path | str, on_error: OnError
) -> tuple[str, float] | str | None:
    """One row, by the file policy: None for an empty row, else (label, confidence).

    A bad row (unreadable, or refused by the model, e.g. too long for the context) raises an
    InputError naming its line under on_error="stop", and returns what is wrong with it under
    "skip".
    """
    if not row.problem and not row.text.strip():
        return None
    problem = row.problem
    if problem is None:
        try:
            return classify(row.text)
        except InputError as error:  # this row only: the run may go on
            problem = str(error)
    if on_error == "stop":
        raise bad_row_error(source, row.line, problem)
    return problem


def bad_row_error(source: Path | str, line: int, problem: str) -> InputError:
    """The one message for a bad row under on_error="stop", whoever found it (`source` is a
    file, or a name such as "standard input")."""
    where = "row" if str(source).lower().endswith(".parquet") else "line"  # Parquet has no lines
    return InputError(
        f"{source}, {where} {line}: {problem.rstrip('.')}. Fix or remove that row, or run "
        "again with --on-error skip to leave such rows out (rows already done are kept)."
    )


def label_window(
    rows: list[Row],
    classify: Classifier,
    classify_many: ManyClassifier | None,
    *,
    source: Path,
    on_error: OnError,
) -> Iterator[tuple[str, float] | str | None]:
    """`label_row` for each row, in order, the good rows first tried together in one
    `classify_many` call (the engine then decodes texts of equal length together)."""
    together = _label_together(rows, classify_many) if classify_many else [None] * len(rows)
    for row, done in zip(rows, together, strict=True):
        yield done or label_row(row, classify, source=source, on_error=on_error)


def classify_file(
    source: Path,
    target: Path,
    classify: Classifier,
    *,
    restart: bool = False,
    on_error: OnError = "stop",
    progress: Callable[[int], None] | None = None,
    classify_many: ManyClassifier | None = None,
    window: int = WINDOW,
) -> Summary:
    """Classify every non-empty row of `source` into `target`, resuming a journal if present.

    With `classify_many`, the good rows of each `window` rows are classified in one
    call (the engine then decodes texts of equal length together); rows are still written to
    the journal one by one, in order, and a window with a bad row falls back to row by row.
    """
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
        for rows in windows(enumerate(read_rows(source)), window):
            if progress:
                progress(sum(1 for index, _ in rows if index in finished))
            todo = [(index, row) for index, row in rows if index not in finished]
            results = label_window(
                [row for _, row in todo],
                classify,
                classify_many,
                source=source,
                on_error=on_error,
            )
            for (index, row), result in zip(todo, results, strict=True):
                if result is None:
                    entry = {"row": index, "skip": True, "line": row.line}
                elif isinstance(result, str):
                    entry = {"row": index, "bad": result, "line": row.line}
                else:
                    label, confidence = result
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
    summary.bad_rows = tuple(sorted((e["line"], e["bad"]) for e in finished.values() if "bad" in e))
    labelled = [finished[i] for i in sorted(finished) if "label" in finished[i]]
    write_output(target, labelled)
    journal.unlink(missing_ok=True)
    summary.output = target
    return summary


def _label_together(
    rows: list[Row], classify_many: ManyClassifier
) -> list[tuple[str, float] | None]:
    """(label, confidence) per row for the rows with text (None for the others), or all None
    if any of them is refused."""
    good = [i for i, row in enumerate(rows) if not row.problem and row.text.strip()]
    together: list[tuple[str, float] | None] = [None] * len(rows)
    try:
        results = classify_many([rows[i].text for i in good]) if good else []
    except InputError:
        return together  # label_row takes them one by one and applies the error policy
    for i, result in zip(good, results, strict=True):
        together[i] = result
    return together


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


def write_output(target: Path, entries: list[dict]) -> None:
    """`entries` ({record, label, confidence}) as .csv or .jsonl, in one atomic replace."""
    with atomic_open(target, suffix=".tmp", fsync=True, encoding="utf-8", newline="") as out:
        if target.suffix.lower() == ".jsonl":
            for entry in entries:
                record = {
                    **entry["record"],
                    "label": entry["label"],
                    "confidence": entry["confidence"],
                }
                out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
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
