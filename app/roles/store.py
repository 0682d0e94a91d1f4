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
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from app.config import Settings, default_store_path
from app.errors import AllInOneError, InputError

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
T = TypeVar("T")

APPLICATION = "allinone-conversations"  # the marker that tells our file from any other SQLite
TITLE_CHARS = 60
BUSY_TIMEOUT_MS = 30_000  # SQLite's own wait for a lock, before our retries
RETRY_SECONDS = 300.0  # then our retries, with backoff, until this much time has passed
_SQLITE_HEADER = b"SQLite format 3\x00"
_WHAT_TO_DO = (
    "it was left as it is. Move it aside (e.g. rename it to {name}.bak) to start a new store, "
    "or point --store or ALLINONE_STORE at another file."
)

# Forward migrations: MIGRATIONS[n] takes the schema from version n to n + 1, in one transaction.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"INSERT INTO meta VALUES ('application', '{APPLICATION}')",
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            name TEXT UNIQUE,
            title TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            head_id TEXT
        )""",
        """CREATE TABLE turns (
            id TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL,
            previous_id TEXT,
            created_at REAL NOT NULL,
            status TEXT NOT NULL,
            input_items TEXT NOT NULL,
            output_items TEXT NOT NULL DEFAULT '[]',
            instructions TEXT,
            role TEXT,
            model TEXT NOT NULL DEFAULT '',
            verdict TEXT,
            usage TEXT
        )""",
        "CREATE INDEX turns_by_conversation ON turns(conversation_id)",
        "CREATE INDEX turns_by_previous ON turns(previous_id)",
        "CREATE INDEX conversations_by_update ON conversations(updated_at)",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

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


class StoreError(AllInOneError):
    """The store file is not ours, is corrupt, or is from a newer version; the message names
    the file and says what to do. Never replaced silently."""

    exit_code = 7


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
    """One SQLite file; safe to share between threads (a connection each) and processes (WAL,
    every write one `BEGIN IMMEDIATE` transaction, and retries while another holds the lock)."""

    def __init__(self, path: Path, keep_days: float | None = None) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        _check_file(self.path)
        self._retrying(lambda db: _prepare(db, self.path))
        if keep_days is not None:
            self.prune(keep_days)

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every thread's connection (a thread that uses the store again reopens one)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for db in opened:
            db.close()
        self._local = threading.local()

    # -- conversations -------------------------------------------------------------------

    def create_conversation(self, name: str | None = None) -> Conversation:
        """A new conversation with no turns yet; NameTaken if `name` is another's."""
        if name is not None:
            name = _check_name(name)

        def create(db: sqlite3.Connection) -> str:
            if name is not None:
                _require_free_name(db, name)
            return _insert_conversation(db, name, time.time())

        return self._conversation_by_id(self._write(create))

    def conversation(self, key: str) -> Conversation | None:
        """By id, else by name; None when there is none."""

        def find(db: sqlite3.Connection) -> list[Conversation]:
            row = _find(db, key)
            return [] if row is None else _conversations(db, "WHERE c.id = ?", (row["id"],))

        found = self._read(find)
        return found[0] if found else None

    def conversations(self) -> list[Conversation]:
        """Every conversation, the most recently updated first."""
        return self._read(_conversations)

    def rename(self, key: str, name: str) -> Conversation:
        name = _check_name(name)

        def rename(db: sqlite3.Connection) -> str:
            row = _require(db, key)
            if row["name"] != name:
                _require_free_name(db, name)
                db.execute("UPDATE conversations SET name = ? WHERE id = ?", (name, row["id"]))
            return row["id"]

        return self._conversation_by_id(self._write(rename))

    def delete_conversation(self, key: str) -> bool:
        """Delete it and its turns; False when there was none. Branches that chained through
        its turns keep theirs (their chain starts later)."""

        def delete(db: sqlite3.Connection) -> bool:
            row = _find(db, key)
            if row is not None:
                _delete_conversations(db, [row["id"]])
            return row is not None

        return self._write(delete)

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

        return _turn(self._write(begin))

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

        return _turn(self._write(finish))

    def turn(self, turn_id: str) -> StoredTurn | None:
        row = self._read(lambda db: _turn_row(db, turn_id))
        return None if row is None else _turn(row)

    def chain(self, turn_id: str) -> list[StoredTurn]:
        """The turns that led to `turn_id`, oldest first, ending with it (across the
        conversations a branch runs through); empty when there is no such turn."""
        query = (
            _CHAIN.format(starts="?")
            + f" SELECT {_prefixed(_TURN_COLUMNS)} FROM chain JOIN turns ON turns.id = chain.id"
            " ORDER BY chain.depth DESC"
        )
        return [_turn(row) for row in self._read(lambda db: db.execute(query, (turn_id,)))]

    def turns(self, key: str) -> list[StoredTurn]:
        """A conversation's chain, oldest first, to its head; empty when there is none."""
        found = self._read(lambda db: _find(db, key))
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

        return self._write(delete)

    def prune(self, keep_days: float) -> int:
        """Delete the conversations untouched for more than `keep_days`; how many went."""
        cutoff = time.time() - keep_days * 86_400

        def prune(db: sqlite3.Connection) -> int:
            rows = db.execute("SELECT id FROM conversations WHERE updated_at < ?", (cutoff,))
            old = [row["id"] for row in rows]
            _delete_conversations(db, old)
            return len(old)

        return self._write(prune)

    # -- plumbing ------------------------------------------------------------------------

    def _conversation_by_id(self, conversation_id: str) -> Conversation:
        found = self._read(lambda db: _conversations(db, "WHERE c.id = ?", (conversation_id,)))
        if not found:
            raise ConversationNotFound(f"No conversation {conversation_id!r} in {self.path}.")
        return found[0]

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = _connect(self.path)
            with self._lock:
                self._opened.append(db)
            self._local.db = db
        return db

    def _read(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """`work` in one read transaction: every query of it sees the same moment."""

        def transaction(db: sqlite3.Connection) -> Any:
            db.execute("BEGIN")
            try:
                result = _materialize(work(db))
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return self._retrying(transaction)

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in one BEGIN IMMEDIATE transaction: all of it is kept, or none."""

        def transaction(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result

        return self._retrying(transaction)

    def _retrying(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` again while another process holds the lock longer than the busy timeout;
        every other SQLite failure leaves as a StoreError naming the file."""
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.005
        while True:
            try:
                return work(self._connection())
            except sqlite3.OperationalError as error:
                if not _is_busy(error) or time.monotonic() > deadline:
                    raise _store_error(self.path, error) from None
            except sqlite3.Error as error:
                raise _store_error(self.path, error) from None
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.25)


# -- opening and checking the file ---------------------------------------------------------


def _check_file(path: Path) -> None:
    """Refuse what cannot be our store before SQLite touches it; make missing folders."""
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a store file. Give a file path with --store.")
    if path.exists():
        try:
            with path.open("rb") as file:
                header = file.read(len(_SQLITE_HEADER))
        except OSError as error:
            raise StoreError(f"Cannot read the conversation store {path}: {error}.") from None
        if header and header != _SQLITE_HEADER:
            message = f"{path} is not a SQLite file, so not a conversation store; "
            raise StoreError(message + _WHAT_TO_DO.format(name=path.name))
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(
            f"Cannot create the folder for the conversation store {path}: {error}. "
            "Give a writable place with --store PATH or ALLINONE_STORE."
        ) from None


def _connect(path: Path) -> sqlite3.Connection:
    # Each thread queries only its own connection; close() may come from another thread.
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    """Check the file is ours and whole (reading only), then turn WAL on and bring the schema
    up to date, one transaction per migration."""
    rows = db.execute("PRAGMA quick_check").fetchall()
    if [tuple(row) for row in rows] != [("ok",)]:
        detail = "; ".join(str(row[0]) for row in rows[:3])
        raise StoreError(f"{path} is damaged ({detail}); " + _WHAT_TO_DO.format(name=path.name))
    _schema_version(db, path)  # raises for a foreign file before anything is written
    db.execute("PRAGMA journal_mode = WAL")
    for target in range(1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            if _schema_version(db, path) < target:
                for statement in MIGRATIONS[target - 1]:
                    db.execute(statement)
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(target),)
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _schema_version(db: sqlite3.Connection, path: Path) -> int:
    """0 for an empty file; StoreError for another program's database or a newer schema."""
    tables = {
        row[0]
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if not tables:
        return 0
    marker = None
    if "meta" in tables:
        rows = db.execute(
            "SELECT key, value FROM meta WHERE key IN ('application', 'schema_version')"
        )
        marker = dict(tuple(row) for row in rows)
    if not marker or marker.get("application") != APPLICATION:
        message = f"{path} is a SQLite database of another program, not a conversation store; "
        raise StoreError(message + _WHAT_TO_DO.format(name=path.name))
    version = int(marker.get("schema_version", 0))
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer allinone (store schema {version}; this one knows "
            f"{SCHEMA_VERSION}). Upgrade allinone, or point --store or ALLINONE_STORE at "
            "another file."
        )
    return version


def _is_busy(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _store_error(path: Path, error: sqlite3.Error) -> StoreError:
    text = str(error)
    if "readonly" in text or "unable to open" in text or "disk i/o" in text.lower():
        return StoreError(
            f"Cannot write the conversation store {path} ({text}). Give a writable place with "
            "--store PATH or ALLINONE_STORE."
        )
    if isinstance(error, sqlite3.OperationalError) and _is_busy(error):
        return StoreError(
            f"The conversation store {path} stayed locked by another process for "
            f"{RETRY_SECONDS:.0f} s ({text}); try again when it is done."
        )
    return StoreError(f"{path}: {text}; " + _WHAT_TO_DO.format(name=path.name))


# -- rows ----------------------------------------------------------------------------------


def _materialize(result: Any) -> Any:
    """Fetch a cursor's rows inside the retry, so a busy error cannot escape later."""
    return result.fetchall() if isinstance(result, sqlite3.Cursor) else result


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
