"""The measuring commands: `eval` (sentiment methods side by side), `eval-chat` (chat-quality
proxies) and `bench` (speed and memory against llama.cpp's floor).

This is the one module outside app/measure that imports it: the measuring code is a tool of the
project's own claims, not part of what the assistant needs to run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import app.cli.common as common
from app.cli.progress import follow_steps, progress_bar
from app.errors import InputError

if TYPE_CHECKING:
    from app.measure.chat_quality import Reply


@click.command(name="eval")
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
@common.settings_options
@common.handle_errors
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
    from app.measure import evaluation, report

    examples = evaluation.load_labelled(data, limit)
    train = train or evaluation.DEFAULT_TRAIN
    unknown = set(names) - set(evaluation.ALL_METHODS)
    if unknown:
        raise InputError(
            f"Unknown method(s) {sorted(unknown)}; choose from {evaluation.ALL_METHODS}."
        )
    needs_model = any(name in evaluation.LLM_METHODS for name in names)
    assistant = common.load_assistant(settings) if needs_model else None
    predictors = {
        name: evaluation.build_method(name, assistant=assistant, train=train, role=role)
        for name in names
    }
    with progress_bar(total=len(examples), unit="row") as bar:
        results = evaluation.run(examples, predictors, progress=bar.update)
    if not no_probe:
        for result in progress_bar(results, desc="cold start / RSS"):
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


# `bench --only` names -> the parts app.measure.bench.run knows
BENCH_PARTS = {
    "core": "core",
    "batched": "batched",
    "tools-block": "tools block",
    "follow-up": "follow-up turn",
}


@click.command()
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
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(list(BENCH_PARTS)),
    help="Run only these parts (repeat the flag): core (every in-process measure, fresh CLI "
    "runs and the classified file), batched (1, 2 and 4 replies at once beside llama.cpp's "
    "llama-batched-bench, built by scripts/build_llama_bench.py), tools-block and follow-up "
    "(a served allinone). "
    "[default: all]",
)
@common.settings_options
@common.handle_errors
def bench(
    data: Path | None, limit: int | None, out_dir: Path, only: tuple[str, ...], **settings: Any
) -> None:
    """Speed and memory against llama.cpp's own floor and the article's method, in one run.

    Prints a table of ratios with their targets and writes Markdown, a PNG chart and JSON.
    Takes about 20 minutes on the whole dev set (the article's method reads every prompt whole).
    """
    from app.config import load_settings
    from app.measure import batched, evaluation
    from app.measure import bench as benchmark
    from app.models import resolve_model_path

    parts = [BENCH_PARTS[name] for name in only] or list(benchmark.PARTS)
    source = data or evaluation.DEFAULT_DEV
    examples = evaluation.load_labelled(source, limit) if "core" in parts else []
    # The served parts start their own server: no model in this process unless core runs.
    in_process = {"core", "batched"} & set(parts)
    assistant = common.load_assistant(settings) if in_process else None
    chosen = load_settings(**settings)
    served = len(set(parts) - in_process)
    total = (4 * len(examples) + 5 if "core" in parts else 0) + served
    total += batched.ROUNDS if "batched" in parts else 0
    with progress_bar(total=total, unit="step") as bar:
        results = benchmark.run(assistant, examples, settings, follow_steps(bar), only=parts)
    model_path = assistant.engine.model_path if assistant else resolve_model_path(chosen)
    model_mb = model_path.stat().st_size / 2**20
    rows = benchmark.checks(results, model_mb)
    context = (
        f"Model: {model_path.name} ({model_mb:.0f} MB), "
        f"{chosen.n_threads} threads, n_ctx {chosen.n_ctx}; "
        + (f"{len(examples)} texts of {source}." if examples else f"parts: {', '.join(parts)}.")
    )
    click.echo(context)
    click.echo(benchmark.table(rows))
    written = benchmark.write(out_dir, context, rows, results, chosen)
    click.echo("Wrote " + ", ".join(str(path) for path in written), err=True)


DEFAULT_CHAT_MESSAGES = (
    Path(__file__).resolve().parents[2] / "tests" / "data" / "chat_messages.jsonl"
)


@click.command(name="eval-chat")
@click.argument("messages", type=click.Path(path_type=Path), required=False)
@click.option(
    "--limit", type=click.IntRange(1), help="Use only the first N messages. [default: all]"
)
@click.option(
    "--samples",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Replies per message, sampled at the chat role's own temperature with the seeds "
    "SEED, SEED+1, ... (SEED: --seed, else 7); every reply is checked.",
)
@click.option(
    "--rescore",
    type=click.Path(path_type=Path),
    help="Count the replies an earlier run saved in this results.json again with today's "
    "checks; loads no model (MESSAGES, if given, supplies moods an older file lacks; --prompts "
    "gives the examples a reply must not copy). [default: off: answer MESSAGES]",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Folder for report.md and results.json. [default: reports/eval-chat; with --rescore: "
    "none, only the table is printed]",
)
@common.settings_options
@common.handle_errors
def eval_chat(
    messages: Path | None,
    limit: int | None,
    samples: int,
    rescore: Path | None,
    out_dir: Path | None,
    **settings: Any,
) -> None:
    """Chat-quality checks over everyday MESSAGES (.jsonl: text, kind, mood, optional history).

    [default MESSAGES: tests/data/chat_messages.jsonl]. Prints the table (each check's share
    and its failing replies) and writes report.md and results.json (every reply with its
    message, kind, mood and history, for a later --rescore).
    """
    from app.measure import chat_quality

    if rescore:
        _rescore_chat(rescore, messages, limit, samples, out_dir, settings)
        return
    path = messages or DEFAULT_CHAT_MESSAGES
    items = chat_quality.load_messages(path, limit)
    assistant = common.load_assistant(settings)
    common.prepare_bank(assistant)
    seed = assistant.settings.seed if assistant.settings.seed is not None else 7
    with progress_bar(total=len(items) * samples, unit="reply") as bar:
        replies = chat_quality.collect(
            assistant, items, seed=seed, progress=bar.update, samples=samples
        )
    summary = chat_quality.summarise(replies, chat_quality.example_texts(assistant.roles))
    click.echo(chat_quality.table(summary))
    folder = out_dir or Path("reports") / "eval-chat"
    command = f"allinone eval-chat {path} --samples {samples} --seed {seed}"
    _write_chat_report(folder, command, summary, replies)
    click.echo(f"Wrote {folder / 'report.md'}, {folder / 'results.json'}", err=True)


def _rescore_chat(
    saved: Path,
    messages: Path | None,
    limit: int | None,
    samples: int,
    out_dir: Path | None,
    settings: dict[str, Any],
) -> None:
    """The table of an earlier run's replies, counted with today's checks, without a model."""
    from app.config import load_settings
    from app.measure import chat_quality
    from app.roles.prompts import load_roles

    if limit or samples != 1:
        raise InputError(
            "--limit and --samples shape a new run; --rescore counts every saved reply."
        )
    labels = chat_quality.load_messages(messages) if messages else []
    replies = chat_quality.load_replies(saved, labels)
    roles = load_roles(load_settings(**settings).prompts, heads=False)
    summary = chat_quality.summarise(replies, chat_quality.example_texts(roles))
    click.echo(chat_quality.table(summary))
    if out_dir:
        _write_chat_report(out_dir, f"allinone eval-chat --rescore {saved}", summary, replies)
        click.echo(f"Wrote {out_dir / 'report.md'}, {out_dir / 'results.json'}", err=True)


def _write_chat_report(
    folder: Path, command: str, summary: dict[str, float], replies: list[Reply]
) -> None:
    """report.md (the table and every reply) and results.json (the same, for a program and for
    a later --rescore)."""
    from app.measure import chat_quality

    folder.mkdir(parents=True, exist_ok=True)
    samples = "\n".join(
        f"- [{r.message.kind}] {r.message.text} -> ({r.detected}) {r.text}" for r in replies
    )
    (folder / "report.md").write_text(
        f"# Chat quality checks\n\n`{command}`\n\n"
        f"{chat_quality.table(summary)}\n\n"
        f"## Replies\n\n{samples}\n",
        encoding="utf-8",
    )
    (folder / "results.json").write_text(
        json.dumps(
            {
                "command": command,
                "summary": summary,
                "replies": [chat_quality.record(r) for r in replies],
            },
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
