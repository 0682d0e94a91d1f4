"""`allinone sessions`: the stored conversations (`chat --session`, the server's Responses API
and chat page) listed, shown, deleted and exported.

It reads the store only, so no model is loaded and every command answers at once.
"""

from __future__ import annotations

import json
import time
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import app.cli.common as common
from app.config import Settings, default_store_path

if TYPE_CHECKING:
    from app.roles.conversations import Conversations
    from app.roles.store import StoredTurn

_STORE_HELP = (
    f"{Settings.model_fields['store'].description} "
    f"[default: {default_store_path()}; env: ALLINONE_STORE]"
)
store_option = click.option(
    "--store", type=click.Path(path_type=Path, dir_okay=False), help=_STORE_HELP
)
_SPEAKERS = {"user": "你", "assistant": "助手"}
_UNFINISHED = {
    "in_progress": "（未完成：回复没有写完，写它的进程可能已退出）",
    "incomplete": "（未完成：回复被中断）",
    "failed": "（失败）",
}


def open_conversations(store: Path | None) -> Conversations:
    """The conversations of the store that --store or ALLINONE_STORE names, without a model."""
    from app.config import load_settings
    from app.roles.conversations import Conversations
    from app.roles.store import open_store

    return Conversations(None, open_store(load_settings(store=store)))


@click.group()
def sessions() -> None:
    """Stored conversations: list, show, delete, export (no model is loaded).

    A conversation is kept by `allinone chat --session NAME`, by the server's Responses API
    and by its chat page, all in one store; NAME below is a conversation's name or id.
    """


@sessions.command("list")
@store_option
@common.handle_errors
def list_sessions(store: Path | None) -> None:
    """List the conversations, newest first.

    One line each: its name (or id), its turns, when it was last updated, its title."""
    conversations = open_conversations(store)
    found = conversations.list()
    if not found:
        click.echo(
            f"No conversations yet in {conversations.store.path}. "
            "Start one with `allinone chat --session NAME`."
        )
        return
    rows = [("NAME", "TURNS", "UPDATED", "TITLE")]
    rows += [(c.name or c.id, str(c.turn_count), _when(c.updated_at), c.title) for c in found]
    widths = [max(_width(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [_pad(cell, width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[3]]).rstrip())


@sessions.command("show")
@click.argument("name")
@store_option
@common.handle_errors
def show_session(name: str, store: Path | None) -> None:
    """Show each turn of NAME.

    The message, its mood badge when one was felt, the reply, and a mark on a turn whose reply
    did not finish."""
    conversations = open_conversations(store)
    conversation = conversations.get(name)
    turns = conversations.open(conversation.id)
    label = conversation.name or conversation.id
    click.echo(f"对话 {label}（{len(turns)} 轮，{_when(conversation.updated_at)}）")
    for turn in turns:
        click.echo()
        _show_turn(turn)


@sessions.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Delete without asking. [default: ask first]")
@store_option
@common.handle_errors
def delete_session(name: str, yes: bool, store: Path | None) -> None:
    """Delete NAME and its turns (asks first unless --yes)."""
    conversations = open_conversations(store)
    conversation = conversations.get(name)
    if not yes:
        click.confirm(f"Delete conversation {name} ({conversation.turn_count} turns)?", abort=True)
    conversations.delete(conversation.id)
    click.echo(f"Deleted conversation {name}.", err=True)


@sessions.command("export")
@click.argument("name")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the JSONL to this file (whole or not at all). [default: stdout]",
)
@store_option
@common.handle_errors
def export_session(name: str, output: Path | None, store: Path | None) -> None:
    """Write NAME as JSONL, one message a line.

    Each line: role, content, the mood verdict on the messages that had one, turn id, status."""
    from app.atomic import atomic_open

    conversations = open_conversations(store)
    lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in conversations.export(name))
    if output is None:
        for line in lines:
            click.echo(line, nl=False)
        return
    conversations.get(name)  # a missing name fails before the file is touched
    with atomic_open(output, "w", encoding="utf-8", fsync=True) as file:
        file.writelines(lines)
    click.echo(f"Wrote {output}.", err=True)


def _show_turn(turn: StoredTurn) -> None:
    for item in turn.input_items:
        _show_item(item)
    if turn.verdict is not None:
        label, confidence = turn.verdict.get("label"), turn.verdict.get("confidence", 0.0)
        click.echo(f"[情感: {label} {float(confidence):.2f}]")
    if turn.status != "in_progress":
        for item in turn.output_items:
            _show_item(item)
    if turn.status in _UNFINISHED:
        click.echo(_UNFINISHED[turn.status])


def _show_item(item: dict[str, Any]) -> None:
    from app.roles.conversations import message_text

    kind = item.get("type", "message")
    if kind == "message":
        role = str(item.get("role"))
        click.echo(f"{_SPEAKERS.get(role, role)} > {message_text(item)}")
    elif kind == "function_call":
        click.echo(f"[调用 {item.get('name')}({item.get('arguments', '')})]")
    elif kind == "function_call_output":
        click.echo(f"[结果 {item.get('output', '')}]")


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _width(text: str) -> int:
    """Columns on a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))
