"""The commands that answer one message at a time: `chat` (a conversation, or one --once
message) and `run` (any role of prompts.yaml on one text)."""

from __future__ import annotations

import os
from typing import Any

import click

import app.cli.common as common
from app.errors import InputError


def one_conversation(settings: dict[str, Any], drafts: int = 1) -> dict[str, Any]:
    """Settings for a command that answers one message at a time (chat, run): no slots for
    replies side by side (~100 MB) unless --parallel or ALLINONE_PARALLEL asks for them, or
    `drafts` of each reply are written together."""
    if settings.get("parallel") is None and "ALLINONE_PARALLEL" not in os.environ:
        return {**settings, "parallel": drafts}
    return settings


@click.command()
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
@common.settings_options
@common.handle_errors
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
    assistant = common.load_assistant(one_conversation(settings, candidates or 1))
    if not no_sentiment:
        common.prepare_bank(assistant)
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


@click.command()
@click.argument("role")
@click.argument("text")
@common.settings_options
@common.handle_errors
def run(role: str, text: str, **settings: Any) -> None:
    """Run any ROLE from prompts.yaml on TEXT (label roles print label + confidence);
    --parallel is 1 here unless given (one reply)."""
    from app.roles.assistant import Verdict

    result = common.load_assistant(one_conversation(settings)).run(role, text)
    if isinstance(result, Verdict):
        click.echo(f"{result.label}\t{result.confidence:.4f}")
        return
    for piece in result:
        click.echo(piece, nl=False)
    click.echo()
