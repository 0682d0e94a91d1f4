"""`classify`: label one text, every line of standard input as it comes (a pipe), every row of a
file on this machine (resumable, with a progress bar), or every row of a file or folder on a Ray
cluster (--ray). The work itself is the jobs' (app.jobs.files, app.jobs.ray_classify); this
module reads the flags and reports."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import app.cli.common as common
from app.cli.progress import follow, progress_bar
from app.errors import InputError
from app.jobs.files import (
    INPUT_FORMATS,
    WINDOW,
    Classifier,
    Row,
    Summary,
    classify_file,
    count_rows,
    label_functions,
    label_row,
    read_lines,
    read_rows,
)

if TYPE_CHECKING:
    from app.roles.assistant import Assistant

ACTOR_THREADS = 1  # --threads-per-actor: see the README's figures for 1 x 2 against 2 x 1
STDIN = "standard input"  # how a bad line of it is named


class _NeedsAFile(InputError):
    """A flag that only a file can take, given standard input: a usage error (exit 2, as
    click's own)."""

    exit_code = 2


@click.command()
@click.argument("source", metavar="[TEXT|FILE|-]", required=False)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write results here (.csv or .jsonl; with --ray also .parquet, or a folder). "
    "[default: print to stdout]",
)
@click.option("--role", help="A label role from prompts.yaml. [default: the sentiment role]")
@click.option(
    "--restart", is_flag=True, help="Ignore an interrupted run's progress and start over."
)
@click.option(
    "--on-error",
    type=click.Choice(["stop", "skip"]),
    default="stop",
    show_default=True,
    help="A bad row or line of standard input (not UTF-8, bad JSON, too long for the "
    "context): stop there, naming its line (rows done so far are kept for the next run), or "
    "skip it (listed at the end; for standard input, said on stderr as it is met).",
)
@click.option(
    "--decode",
    type=click.Choice(["auto", "logits", "grammar"]),
    default="auto",
    show_default=True,
    help="auto: the role's learned head if it has one, else the label logits; logits: label "
    "logits only (= greedy decoding under the labels' grammar); grammar: llama.cpp's GBNF "
    "sampler itself (slower; a check).",
)
@click.option(
    "--window",
    type=click.IntRange(1, 4096),
    default=WINDOW,
    show_default=True,
    help="FILE rows handed to the model at once: more rows find more texts of equal length to "
    "decode together (faster); fewer lose less work if the run is interrupted. With --ray: the "
    "rows of one block (one actor call, one journal entry).",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Run on a Ray cluster, one model per actor: local (start Ray on this machine), auto "
    "(the cluster this machine is a node of), HOST:PORT (the head, e.g. 10.0.0.5:6379) or "
    "ray://HOST:PORT (Ray Client). FILE and -o may then be folders, and .parquet. Needs "
    'pip install "allinone[ray]". [default: off: one process on this machine]',
)
@click.option(
    "--actors",
    type=click.IntRange(1, 4096),
    help="With --ray: how many actors (model copies, one process each). [default: as many as "
    "the cluster's CPUs hold at --threads-per-actor]",
)
@click.option(
    "--threads-per-actor",
    type=click.IntRange(1, 256),
    default=ACTOR_THREADS,
    show_default=True,
    help="With --ray: CPUs Ray reserves for each actor, and llama.cpp's threads in it.",
)
@common.settings_options
@common.handle_errors
def classify(
    source: str | None,
    output: Path | None,
    role: str | None,
    restart: bool,
    on_error: str,
    decode: str,
    window: int,
    ray_address: str | None,
    actors: int | None,
    threads_per_actor: int,
    **settings: Any,
) -> None:
    """Label one TEXT, every line of standard input, or every row of a .txt/.csv/.jsonl FILE.

    TEXT: prints label<TAB>confidence.

    - (or no argument, with input piped in): one text a line from standard input, and one
    label<TAB>confidence line for each, in order, printed as soon as it is labelled (a pipe that
    waits on an answer gets it). Empty lines are skipped (no output line); a bad line follows
    --on-error. For a big file, give the file: it is labelled in batches and can resume.

    FILE: prints label<TAB>confidence<TAB>text per row, or with -o writes a .csv/.jsonl
    (resumable, with a progress bar); with --ray, every row of a file or folder
    (.txt/.csv/.jsonl/.parquet) on a Ray cluster.
    """
    stdin = click.get_binary_stream("stdin")
    if source is None and stdin.isatty():
        raise click.UsageError(
            "Missing TEXT|FILE: give a text, a file, or pipe texts in, one a line (or give -)."
        )
    if source is None or source == "-":
        _check_stdin_flags(output=output, restart=restart, ray_address=ray_address)
        _print_rows(
            read_lines(stdin),
            label_functions(common.load_assistant(settings), role, decode)[0],
            source=STDIN,
            on_error=on_error,
        )
        return
    if ray_address is not None:
        _classify_on_ray(
            Path(source),
            output,
            ray_address,
            actors=actors,
            threads_per_actor=threads_per_actor,
            role=role,
            decode=decode,
            window=window,
            on_error=on_error,
            restart=restart,
            settings=settings,
        )
        return
    if actors is not None or threads_per_actor != ACTOR_THREADS:
        raise InputError("--actors and --threads-per-actor go with --ray ADDRESS.")
    path = Path(source)
    is_file = path.suffix.lower() in INPUT_FORMATS and (path.exists() or output is not None)
    if not is_file:
        if output is not None:
            raise InputError(f"{source}: file not found (-o needs an input file).")
        assistant = common.load_assistant(settings)
        verdict = assistant.classify(source, role, decode=decode)
        click.echo(f"{verdict.label}\t{verdict.confidence:.4f}")
        return
    _classify_file(
        path,
        output,
        common.load_assistant(settings),
        role=role,
        decode=decode,
        restart=restart,
        on_error=on_error,
        window=window,
    )


def _classify_file(
    path: Path,
    output: Path | None,
    assistant: Assistant,
    *,
    role: str | None,
    decode: str,
    restart: bool,
    on_error: str,
    window: int,
) -> None:
    """Every row of FILE on this machine: printed as it is labelled, or written to -o through
    the resumable journal with a progress bar."""
    label, label_many = label_functions(assistant, role, decode)
    if output is None:
        _print_rows(read_rows(path), label, source=path, on_error=on_error, with_text=True)
        return
    with progress_bar(total=count_rows(path), unit="row") as bar:
        summary = classify_file(
            path,
            output,
            label,
            restart=restart,
            on_error=on_error,
            progress=bar.update,
            classify_many=label_many,
            window=window,
        )
    _say_done(summary)
    _say_skipped(summary)


def _check_stdin_flags(*, output: Path | None, restart: bool, ray_address: str | None) -> None:
    """What standard input cannot do: be written through a journal, resumed, or split."""
    given = [
        flag for flag, on in (("-o", output), ("--restart", restart), ("--ray", ray_address)) if on
    ]
    if given:
        verb = "needs" if len(given) == 1 else "need"
        raise _NeedsAFile(
            f"{' and '.join(given)} {verb} an input file; standard input is labelled line by line "
            "onto stdout. Save the lines to a file and give it: allinone classify IN.txt -o OUT.csv"
        )


def _print_rows(
    rows: Iterable[Row],
    label: Classifier,
    *,
    source: Path | str,
    on_error: str,
    with_text: bool = False,
) -> None:
    """Each row's label<TAB>confidence (and its text) on stdout, flushed as it is labelled;
    empty rows print nothing, a bad one stops the run or is said on stderr (--on-error)."""
    for row in rows:
        result = label_row(row, label, source=source, on_error=on_error)
        if isinstance(result, str):
            click.echo(f"Skipped line {row.line}: {result}", err=True)
        elif result is not None:
            text = f"\t{row.text}" if with_text else ""
            click.echo(f"{result[0]}\t{result[1]:.4f}{text}")  # echo flushes: a pipe sees it


def _classify_on_ray(
    source: Path,
    output: Path | None,
    address: str,
    *,
    settings: dict[str, Any],
    **options: Any,
) -> None:
    """`classify --ray`: a thin shell over app.jobs.ray_classify (journal, order and policy)."""
    from app.jobs.ray_classify import classify_corpus, import_ray

    if output is None:
        raise InputError("--ray needs -o OUT: a .csv/.jsonl/.parquet file, or a folder.")
    if not source.exists():
        raise InputError(f"{source}: no such file or folder.")
    if settings.get("n_threads") is not None:
        raise InputError("--threads is one process's; with --ray use --threads-per-actor.")
    import_ray()  # the missing extra is the first thing to say
    with progress_bar(unit="row") as bar:
        plan, summary = classify_corpus(
            source, output, address=address, settings=settings, progress=follow(bar), **options
        )
    _say_done(summary)
    for file, file_summary in enumerate(plan.summaries):
        _say_skipped(file_summary, plan.name(file) if len(plan.files) > 1 else "")


def _say_done(summary: Summary) -> None:
    note = f" ({summary.resumed} resumed from an earlier run)" if summary.resumed else ""
    click.echo(f"Labelled {summary.done} rows{note} -> {summary.output}", err=True)


def _say_skipped(summary: Summary, name: str = "") -> None:
    """The empty and the bad rows a run left out; `name` the file, when there are several."""
    where = f"{name}: " if name else ""
    if summary.skipped_lines:
        lines = ", ".join(map(str, summary.skipped_lines[:10]))
        more = " ..." if len(summary.skipped_lines) > 10 else ""
        click.echo(
            f"{where}Skipped {len(summary.skipped_lines)} empty rows (lines {lines}{more}).",
            err=True,
        )
    for line, problem in summary.bad_rows[:10]:
        click.echo(f"{where}Skipped bad row, line {line}: {problem}", err=True)
    if len(summary.bad_rows) > 10:
        click.echo(f"{where}... and {len(summary.bad_rows) - 10} more bad rows.", err=True)
