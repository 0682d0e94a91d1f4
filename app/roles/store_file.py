"""The conversation store's SQLite file: checked before it is touched, migrated, and shared.

Why so careful: the file is the user's; a path given by mistake may be another program's
database or any other file. So nothing is written until it is known to be ours: a file that is
not SQLite, another program's database, a damaged one (`PRAGMA quick_check`) or one from a newer
allinone (a higher schema version) is refused with a StoreError that names it and says what to
do, and is left byte for byte as it was. A file is ours when its `meta` table holds the
APPLICATION marker; an empty file is made ours by the first migration.

Why WAL and retries: several threads (a connection each) and processes share one file. WAL lets
readers go on while one writer writes; every write is one `BEGIN IMMEDIATE` transaction, so a
crash keeps all of it or none; and a writer that finds the lock taken waits (SQLite's busy
timeout), then retries with backoff for RETRY_SECONDS before it gives up with a StoreError.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from app.errors import AllInOneError

__all__ = ["APPLICATION", "MIGRATIONS", "SCHEMA_VERSION", "StoreError", "StoreFile"]

T = TypeVar("T")

APPLICATION = "allinone-conversations"  # the marker that tells our file from any other SQLite
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


class StoreError(AllInOneError):
    """The store file is not ours, is corrupt, or is from a newer version; the message names
    the file and says what to do. Never replaced silently."""

    exit_code = 7


class StoreFile:
    """The store's file, opened: checked, in WAL mode, at SCHEMA_VERSION. Safe to share between
    threads (each gets its own connection) and processes (every write one `BEGIN IMMEDIATE`
    transaction, retried while another holds the lock). Every SQLite failure leaves as a
    StoreError naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        _check_file(self.path)
        self._retrying(lambda db: _prepare(db, self.path))

    def close(self) -> None:
        """Close every thread's connection (a thread that uses the file again reopens one)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for db in opened:
            db.close()
        self._local = threading.local()

    def read(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """`work` in one read transaction: every query of it sees the same moment. A cursor it
        returns comes back as its rows."""

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

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
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

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = _connect(self.path)
            with self._lock:
                self._opened.append(db)
            self._local.db = db
        return db

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


# -- busy and failing ----------------------------------------------------------------------


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


def _materialize(result: Any) -> Any:
    """Fetch a cursor's rows inside the retry, so a busy error cannot escape later."""
    return result.fetchall() if isinstance(result, sqlite3.Cursor) else result
