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

A turn is written twice, each time in one transaction: begun (`in_progress`, its input) and
finished (its output, `completed` or `incomplete`). A process killed in between leaves it
`in_progress` for good, with no output: it is shown as unfinished, never as completed.
Deleting a conversation deletes its turns; a branch that chained through them keeps working,
its chain simply starts later.

Default place: $XDG_DATA_HOME/allinone/conversations.sqlite3 (~/.local/share/...), next to the
user heads; `--store PATH` or ALLINONE_STORE moves it.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.config import Settings, default_store_path
from app.errors import InputError
from app.roles.store_file import APPLICATION, SCHEMA_VERSION, StoreError, StoreFile

__all__ = [
    "APPLICATION",
    "Conversation",
    "ConversationNotFound",
    "ConversationStore",
    "NameTaken",
    "SCHEMA_VERSION",
    "Status",
    "StoreError",
    "StoredTurn",
    "TurnNotFound",
    "default_store_path",
    "open_store",
    "store_path",
]

Status = Literal["in_progress", "completed", "incomplete", "failed"]
TITLE_CHARS = 60

# The tables queried here are made by MIGRATIONS in app/roles/store_file.py.

# A chain walked back from each start turn, one row per turn with its distance from the start.
_CHAIN = """WITH RECURSIVE chain(start, id, previous_id, depth) AS (
    SELECT id, id, previous_id, 0 FROM turns WHERE id IN ({starts})
    UNION ALL
    SELECT chain.start, turns.id, turns.previous_id, chain.depth + 1
    FROM chain JOIN turns ON turns.id = chain.previous_id
)"""
_TURN_COLUMNS = (
    "id, conversation_id, previous_id, created_at, status, input_items, output_items, "
    "instructions, role, model, verdict, usage"
)


class TurnNotFound(StoreError, LookupError):
    """No turn with that id (deleted, or never made); the server answers 404."""

    exit_code = 5


class ConversationNotFound(StoreError, LookupError):
    """No conversation with that id or name."""

    exit_code = 5


class NameTaken(StoreError):
    """Another conversation already has that name (names are unique)."""

    exit_code = 5


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
    turn_count: int  # turns in its chain (what `turns` returns), a branch's earlier ones too


def store_path(settings: Settings) -> Path:
    """Where the settings put the store: `settings.store`, else the default."""
    return Path(settings.store or default_store_path()).expanduser()


def open_store(settings: Settings) -> ConversationStore:
    """The store the settings name, pruned by their `keep_days`."""
    return ConversationStore(store_path(settings), keep_days=settings.keep_days)


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


class ConversationStore:
    """The conversations kept in one SQLite file; safe to share between threads and processes
    (app/roles/store_file.py keeps the file). Each write is one transaction: all or none."""

    def __init__(self, path: Path, keep_days: float | None = None) -> None:
        self.path = Path(path)
        self._file = StoreFile(self.path)
        if keep_days is not None:
            self.prune(keep_days)

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every thread's connection (a thread that uses the store again reopens one)."""
        self._file.close()

    # -- conversations -------------------------------------------------------------------

    def create_conversation(self, name: str | None = None) -> Conversation:
        """A new conversation with no turns yet; NameTaken if `name` is another's."""
        if name is not None:
            name = _check_name(name)

        def create(db: sqlite3.Connection) -> str:
            if name is not None:
                _require_free_name(db, name)
            return _insert_conversation(db, name, time.time())

        return self._conversation_by_id(self._file.write(create))

    def conversation(self, key: str) -> Conversation | None:
        """By id, else by name; None when there is none."""

        def find(db: sqlite3.Connection) -> list[Conversation]:
            row = _find(db, key)
            return [] if row is None else _conversations(db, "WHERE c.id = ?", (row["id"],))

        found = self._file.read(find)
        return found[0] if found else None

    def conversations(self) -> list[Conversation]:
        """Every conversation, the most recently updated first."""
        return self._file.read(_conversations)

    def rename(self, key: str, name: str) -> Conversation:
        name = _check_name(name)

        def rename(db: sqlite3.Connection) -> str:
            row = _require(db, key)
            if row["name"] != name:
                _require_free_name(db, name)
                db.execute("UPDATE conversations SET name = ? WHERE id = ?", (name, row["id"]))
            return row["id"]

        return self._conversation_by_id(self._file.write(rename))

    def delete_conversation(self, key: str) -> bool:
        """Delete it and its turns; False when there was none. Branches that chained through
        its turns keep theirs (their chain starts later)."""

        def delete(db: sqlite3.Connection) -> bool:
            row = _find(db, key)
            if row is not None:
                _delete_conversations(db, [row["id"]])
            return row is not None

        return self._file.write(delete)

    # -- turns ---------------------------------------------------------------------------

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
    ) -> StoredTurn:
        """Keep a new turn, `in_progress`, as its conversation's head.

        With `conversation_id` (an id or a name) and no `previous_id`, it follows that
        conversation's head. With only `previous_id`: it joins that turn's conversation when the
        turn is its head, else it starts a new conversation (a branch). With neither: a new
        conversation. TurnNotFound / ConversationNotFound when what is named is not there.
        """
        turn_id = new_id("resp_")
        inputs = json.dumps(input_items, ensure_ascii=False)
        about = (instructions, role, model, _json(verdict))

        def begin(db: sqlite3.Connection) -> sqlite3.Row:
            now = time.time()
            conversation, previous = _place(db, conversation_id, previous_id, now)
            db.execute(
                "INSERT INTO turns (id, conversation_id, previous_id, created_at, status, "
                "input_items, instructions, role, model, verdict) "
                "VALUES (?, ?, ?, ?, 'in_progress', ?, ?, ?, ?, ?)",
                (turn_id, conversation, previous, now, inputs, *about),
            )
            db.execute(
                "UPDATE conversations SET head_id = ?, updated_at = ?, title = CASE "
                "WHEN title = '' THEN ? ELSE title END WHERE id = ?",
                (turn_id, now, title_of(input_items), conversation),
            )
            return _turn_row(db, turn_id)

        return _turn(self._file.write(begin))

    def finish_turn(
        self,
        turn_id: str,
        output_items: list[dict[str, Any]],
        *,
        status: Status = "completed",
        usage: dict[str, Any] | None = None,
    ) -> StoredTurn:
        """Write the turn's output, status and usage at once; TurnNotFound if it is gone."""
        outputs = json.dumps(output_items, ensure_ascii=False)

        def finish(db: sqlite3.Connection) -> sqlite3.Row:
            updated = db.execute(
                "UPDATE turns SET output_items = ?, status = ?, usage = ? WHERE id = ?",
                (outputs, status, _json(usage), turn_id),
            )
            if updated.rowcount == 0:
                raise TurnNotFound(f"No turn {turn_id!r} in {self.path} (deleted meanwhile?).")
            db.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = "
                "(SELECT conversation_id FROM turns WHERE id = ?)",
                (time.time(), turn_id),
            )
            return _turn_row(db, turn_id)

        return _turn(self._file.write(finish))

    def turn(self, turn_id: str) -> StoredTurn | None:
        row = self._file.read(lambda db: _turn_row(db, turn_id))
        return None if row is None else _turn(row)

    def chain(self, turn_id: str) -> list[StoredTurn]:
        """The turns that led to `turn_id`, oldest first, ending with it (across the
        conversations a branch runs through); empty when there is no such turn."""
        query = (
            _CHAIN.format(starts="?")
            + f" SELECT {_prefixed(_TURN_COLUMNS)} FROM chain JOIN turns ON turns.id = chain.id"
            " ORDER BY chain.depth DESC"
        )
        return [_turn(row) for row in self._file.read(lambda db: db.execute(query, (turn_id,)))]

    def turns(self, key: str) -> list[StoredTurn]:
        """A conversation's chain, oldest first, to its head; empty when there is none."""
        found = self._file.read(lambda db: _find(db, key))
        if found is None or found["head_id"] is None:
            return []
        return self.chain(found["head_id"])

    def delete_turn(self, turn_id: str) -> bool:
        """Delete one turn; turns that followed it keep theirs (their chain starts later). Its
        conversation's head moves back to its previous turn (when that one is the same
        conversation's), and a conversation left with no turns and no name goes too."""

        def delete(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT conversation_id, previous_id FROM turns WHERE id = ?", (turn_id,)
            ).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM turns WHERE id = ?", (turn_id,))
            conversation = row["conversation_id"]
            db.execute(
                "UPDATE conversations SET head_id = (SELECT id FROM turns WHERE id = ? AND "
                "conversation_id = ?) WHERE id = ? AND head_id = ?",
                (row["previous_id"], conversation, conversation, turn_id),
            )
            db.execute(
                "DELETE FROM conversations WHERE id = ? AND name IS NULL AND NOT EXISTS "
                "(SELECT 1 FROM turns WHERE conversation_id = ?)",
                (conversation, conversation),
            )
            return True

        return self._file.write(delete)

    def prune(self, keep_days: float) -> int:
        """Delete the conversations untouched for more than `keep_days`; how many went."""
        cutoff = time.time() - keep_days * 86_400

        def prune(db: sqlite3.Connection) -> int:
            rows = db.execute("SELECT id FROM conversations WHERE updated_at < ?", (cutoff,))
            old = [row["id"] for row in rows]
            _delete_conversations(db, old)
            return len(old)

        return self._file.write(prune)

    # -- plumbing ------------------------------------------------------------------------

    def _conversation_by_id(self, conversation_id: str) -> Conversation:
        found = self._file.read(lambda db: _conversations(db, "WHERE c.id = ?", (conversation_id,)))
        if not found:
            raise ConversationNotFound(f"No conversation {conversation_id!r} in {self.path}.")
        return found[0]


# -- rows ----------------------------------------------------------------------------------


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _prefixed(columns: str) -> str:
    return ", ".join(f"turns.{name.strip()}" for name in columns.split(","))


def _turn_row(db: sqlite3.Connection, turn_id: str) -> sqlite3.Row | None:
    return db.execute(f"SELECT {_TURN_COLUMNS} FROM turns WHERE id = ?", (turn_id,)).fetchone()


def _turn(row: sqlite3.Row) -> StoredTurn:
    return StoredTurn(
        id=row["id"],
        conversation_id=row["conversation_id"],
        previous_id=row["previous_id"],
        created_at=row["created_at"],
        status=row["status"],
        input_items=json.loads(row["input_items"]),
        output_items=json.loads(row["output_items"]),
        instructions=row["instructions"],
        role=row["role"],
        model=row["model"],
        verdict=None if row["verdict"] is None else json.loads(row["verdict"]),
        usage=None if row["usage"] is None else json.loads(row["usage"]),
    )


def title_of(items: Sequence[dict[str, Any]]) -> str:
    """The first user message's text, on one line, cut to 60 characters ('' when none)."""
    for item in items:
        if item.get("type", "message") == "message" and item.get("role") == "user":
            content = item.get("content")
            parts = [content] if isinstance(content, str) else content or []
            text = " ".join(
                part if isinstance(part, str) else str(part.get("text", ""))
                for part in parts
                if isinstance(part, str | dict)
            )
            line = " ".join(text.split())
            if line:
                return line[:TITLE_CHARS]
    return ""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InputError("A conversation's name needs some text.")
    return name.strip()


def _find(db: sqlite3.Connection, key: str) -> sqlite3.Row | None:
    """By id first, so a name can never hide another conversation's id."""
    row = db.execute("SELECT * FROM conversations WHERE id = ?", (key,)).fetchone()
    return row or db.execute("SELECT * FROM conversations WHERE name = ?", (key,)).fetchone()


def _require(db: sqlite3.Connection, key: str) -> sqlite3.Row:
    row = _find(db, key)
    if row is None:
        raise ConversationNotFound(
            f"No conversation {key!r} (see the list with `allinone sessions list`)."
        )
    return row


def _require_free_name(db: sqlite3.Connection, name: str) -> None:
    if db.execute("SELECT 1 FROM conversations WHERE name = ?", (name,)).fetchone():
        raise NameTaken(f"Another conversation is already named {name!r}; choose another name.")


def _insert_conversation(db: sqlite3.Connection, name: str | None, now: float) -> str:
    conversation_id = new_id("conv_")
    db.execute(
        "INSERT INTO conversations (id, name, created_at, updated_at) VALUES (?, ?, ?, ?)",
        (conversation_id, name, now, now),
    )
    return conversation_id


def _place(
    db: sqlite3.Connection, conversation_key: str | None, previous_id: str | None, now: float
) -> tuple[str, str | None]:
    """The conversation a new turn joins (made here when it is new) and the turn it follows."""
    if previous_id is not None:
        previous = db.execute(
            "SELECT conversation_id FROM turns WHERE id = ?", (previous_id,)
        ).fetchone()
        if previous is None:
            raise TurnNotFound(
                f"No turn {previous_id!r} to continue from (deleted, or never made)."
            )
    if conversation_key is not None:
        conversation = _require(db, conversation_key)
        return conversation["id"], previous_id if previous_id else conversation["head_id"]
    if previous_id is not None:
        owner = db.execute(
            "SELECT id FROM conversations WHERE id = ? AND head_id = ?",
            (previous["conversation_id"], previous_id),
        ).fetchone()
        if owner is not None:
            return owner["id"], previous_id
    return _insert_conversation(db, None, now), previous_id


def _conversations(
    db: sqlite3.Connection, where: str = "", parameters: tuple[Any, ...] = ()
) -> list[Conversation]:
    rows = db.execute(
        f"SELECT * FROM conversations c {where} ORDER BY c.updated_at DESC, c.id", parameters
    ).fetchall()
    heads = [row["head_id"] for row in rows if row["head_id"] is not None]
    counts: dict[str, int] = {}
    for start in range(0, len(heads), 500):  # SQLite's limit on parameters per statement
        batch = heads[start : start + 500]
        query = _CHAIN.format(starts=", ".join("?" * len(batch)))
        query += " SELECT start, count(*) FROM chain GROUP BY start"
        counts.update((row[0], row[1]) for row in db.execute(query, batch))
    return [
        Conversation(
            id=row["id"],
            name=row["name"],
            title=row["title"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            head_id=row["head_id"],
            turn_count=counts.get(row["head_id"], 0),
        )
        for row in rows
    ]


def _delete_conversations(db: sqlite3.Connection, ids: Sequence[str]) -> None:
    for conversation_id in ids:
        db.execute("DELETE FROM turns WHERE conversation_id = ?", (conversation_id,))
        db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
