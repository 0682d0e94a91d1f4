"""The commands that answer one message at a time: `chat` (a conversation, or one --once
message; kept in the conversation store under --session NAME) and `run` (any role of
prompts.yaml on one text)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

import app.cli.common as common
from app.errors import InputError

if TYPE_CHECKING:
    from app.roles.assistant import Assistant, Turn
    from app.roles.store import ConversationStore


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
    "--session",
    metavar="NAME",
    help="Keep this conversation in the store (--store) under NAME: continued if it is there, "
    "created if not; see `allinone sessions`. [default: none: nothing is kept]",
)
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
    session: str | None,
    no_sentiment: bool,
    temperature: float | None,
    max_tokens: int | None,
    candidates: int | None,
    **settings: Any,
) -> None:
    """Chat in Chinese: shows each message's sentiment, then streams the reply.

    One conversation needs no slots for replies side by side: --parallel is 1 here unless given.
    Without --session nothing is kept; with it, each turn is kept as it is said.
    """
    if once is not None and not once.strip():
        raise InputError('--once needs some text, e.g. --once "今天又被老板骂了。"')
    store = None
    if session is not None:  # opened before the model loads: a bad store fails at once
        store = open_session(session, settings)
    assistant = common.load_assistant(one_conversation(settings, candidates or 1))
    if not no_sentiment:
        common.prepare_bank(assistant)
    sampling = {"temperature": temperature, "max_tokens": max_tokens, "candidates": candidates}
    talk = Talk(assistant, sampling, steer=not no_sentiment, store=store, session=session)
    if once is not None:
        talk.answer(once)
        return
    kept = "/reset 清空对话" if session is None else f"对话保存为 {session}"
    click.echo(f"输入消息开始聊天；{kept}，/exit 或 Ctrl-D 退出。", err=True)
    while True:
        try:
            text = click.prompt("你", prompt_suffix=" > ", default="", show_default=False)
        except (EOFError, click.Abort):
            click.echo()
            return
        if text.strip() in {"/exit", "/quit"}:
            return
        if text.strip() == "/reset":
            click.echo(talk.reset())
            continue
        if text.strip():
            talk.answer(text)


def open_session(session: str, settings: dict[str, Any]) -> ConversationStore:
    """The store of `--session NAME`, saying on stderr whether NAME is new or continued."""
    from app.config import load_settings
    from app.roles.store import open_store

    if not session.strip():
        raise InputError("--session needs a name, e.g. --session work")
    store = open_store(load_settings(**settings))
    found = store.conversation(session)
    if found is None:
        click.echo(f"新对话 {session}", err=True)
    else:
        click.echo(f"继续对话 {session}（{found.turn_count} 轮）", err=True)
    return store


class Talk:
    """One chat's turns: kept in memory, or in the store when a --session names them."""

    def __init__(
        self,
        assistant: Assistant,
        sampling: dict[str, Any],
        *,
        steer: bool,
        store: ConversationStore | None = None,
        session: str | None = None,
    ) -> None:
        from app.roles.conversations import Conversations

        self.assistant = assistant
        self.sampling = sampling
        self.steer = steer
        self.session = session
        self.conversations = None if store is None else Conversations(assistant, store)
        self.history: list[Turn] = []

    def answer(self, text: str) -> None:
        """Print the mood badge (when steered), then stream the reply."""
        from app.roles.assistant import Turn

        if self.conversations is not None:
            said = self.conversations.say(
                self.session, text, steer=self.steer, create_as=self.session, **self.sampling
            )
            verdict, stream = said.verdict, said.stream
        elif self.steer:
            verdict, stream = self.assistant.respond(text, self.history, **self.sampling)
        else:
            verdict, stream = None, self.assistant.reply(text, self.history, **self.sampling)
        if verdict is not None:
            click.echo(f"[情感: {verdict.label} {verdict.confidence:.2f}]")
        pieces = []
        for piece in stream:
            pieces.append(piece)
            click.echo(piece, nl=False)
        click.echo()
        self.history.extend([Turn("user", text), Turn("assistant", "".join(pieces))])

    def reset(self) -> str:
        """Forget the turns so far; a stored session is kept (a new name starts afresh)."""
        if self.conversations is not None:
            return (
                f"（对话 {self.session} 已保存，/reset 不会清空它；"
                "换一个 --session 名字开始新对话，或用 allinone sessions delete 删除）"
            )
        self.history.clear()
        return "（对话已清空）"


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
