"""The conversation store: every kept conversation, in one SQLite file (text only, never KV).

Why SQLite: it is in the standard library, one file, safe for several processes at once (WAL),
and a crash leaves whole transactions or none. The KV cache stays a cache: a conversation's
next turn is rebuilt from this text, and the engine's slots reuse what they still hold.

The model: a *turn* is one request and its answer (a Responses API response, one CLI or page
message). It holds the input items that were sent, the output items made, the mood verdict when
the role was steered, and a status. Turns chain by `previous_id`; a *conversation* is a named
pointer to the newest turn of one chain (its head). Continuing from a turn that is not a head
starts a new conversation (a branch) whose chain runs back through the old one.

Items are kept in OpenAI's Responses shapes, so `input_items` can be served as they are:
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "..."}]}
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "..."}]}
    {"type": "function_call", "call_id": "...", "name": "...", "arguments": "{...}"}
    {"type": "function_call_output", "call_id": "...", "output": "..."}

Default place: $XDG_DATA_HOME/allinone/conversations.sqlite3 (~/.local/share/...), next to the
user heads; `--store PATH` or ALLINONE_STORE moves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.config import Settings
from app.errors import AllInOneError

Status = Literal["in_progress", "completed", "incomplete", "failed"]


class StoreError(AllInOneError):
    """The store file is not ours, is corrupt, or is from a newer version; the message names
    the file and says what to do. Never replaced silently."""

    exit_code = 7


@dataclass(frozen=True)
class StoredTurn:
    id: str  # "resp_" + 24 hex: the Responses API id
    conversation_id: str
    previous_id: str | None
    created_at: float  # unix seconds
    status: Status
    input_items: list[dict[str, Any]]
    output_items: list[dict[str, Any]]
    instructions: str | None = None
    role: str | None = None  # the prompts.yaml role that answered
    model: str = ""
    verdict: dict[str, Any] | None = None  # {"label": "负面", "confidence": 0.93}
    usage: dict[str, Any] | None = None  # Responses usage shape


@dataclass(frozen=True)
class Conversation:
    id: str  # "conv_" + 24 hex
    name: str | None  # unique when set (the CLI's --session NAME, a rename on the page)
    title: str  # the first user message, cut to 60 characters
    created_at: float
    updated_at: float
    head_id: str | None  # its newest turn
    turn_count: int


def default_store_path() -> Path:
    """$XDG_DATA_HOME/allinone/conversations.sqlite3 (~/.local/share/allinone/...)."""
    raise NotImplementedError


def store_path(settings: Settings) -> Path:
    """Where the settings put the store: `settings.store`, else the default."""
    raise NotImplementedError


class ConversationStore:
    """One SQLite file; safe to share between threads and processes."""

    def __init__(self, path: Path) -> None:
        raise NotImplementedError

    # conversations
    def create_conversation(self, name: str | None = None) -> Conversation: ...
    def conversation(self, key: str) -> Conversation | None: ...  # by id or name
    def conversations(self) -> list[Conversation]: ...  # newest first
    def rename(self, key: str, name: str) -> Conversation: ...
    def delete_conversation(self, key: str) -> bool: ...

    # turns
    def begin_turn(
        self,
        conversation_id: str | None,
        previous_id: str | None,
        input_items: list[dict[str, Any]],
        *,
        instructions: str | None = None,
        role: str | None = None,
        model: str = "",
        verdict: dict[str, Any] | None = None,
    ) -> StoredTurn: ...
    def finish_turn(
        self,
        turn_id: str,
        output_items: list[dict[str, Any]],
        *,
        status: Status = "completed",
        usage: dict[str, Any] | None = None,
    ) -> StoredTurn: ...
    def turn(self, turn_id: str) -> StoredTurn | None: ...
    def chain(self, turn_id: str) -> list[StoredTurn]: ...  # oldest first, ending at turn_id
    def turns(self, key: str) -> list[StoredTurn]: ...  # a conversation's chain to its head
    def delete_turn(self, turn_id: str) -> bool: ...
    def prune(self, keep_days: float) -> int: ...  # conversations untouched that long
